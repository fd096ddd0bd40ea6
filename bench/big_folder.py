"""The timings the test suite no longer asserts: one folder of 10,000 tiny files, scanned and synced."""

from __future__ import annotations

import os
import time

from bench.common import INGEST, Context, Outcome, isolated_env, run_child, timed

FILES = 10_000
SYNC_LIMIT_S = 30.0  # the first sync of 10,000 tiny files on the embedded store (quadratic work shows at once)
SCAN_RATIO = 3.0  # ingest's scan of the folder against a bare os.scandir + lstat of it, in-process


def _bare_walk(folder: str) -> int:
    n = 0
    with os.scandir(folder) as it:
        for entry in it:
            entry.stat(follow_symlinks=False)
            n += 1
    return n


def run(ctx: Context) -> Outcome:
    from ingest.config import Root
    from ingest.scan import scan

    out = Outcome()
    count = FILES // 10 if ctx.quick else FILES
    home = ctx.scratch("big-folder")
    folder = home / "big"
    folder.mkdir()
    for i in range(count):
        (folder / f"n{i:05d}.txt").write_text(f"note {i}\n")
    _bare_walk(str(folder))  # warm the dentry cache for both walks alike
    bare, _ = timed(lambda: _bare_walk(str(folder)))
    ours, result = timed(lambda: scan(Root(folder, "big"), network=False))
    if len(result.entries) != count:
        out.notes.append(f"big-folder: the scan found {len(result.entries)} of {count} files")
    out.add(
        "big-folder",
        f"scan of one folder of {count:,} files ÷ bare scandir+lstat",
        ours / bare if bare else None,
        "×",
        ("<=", SCAN_RATIO),
        f"{ours * 1000:.0f} ms against {bare * 1000:.0f} ms",
    )
    ctx.log(f"big-folder: first sync of {count:,} tiny files in one folder on the embedded store")
    started = time.perf_counter()
    child = run_child([*INGEST, "--backend", "local", "sync", str(folder), "--json"], isolated_env(home), home)
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        out.notes.append(f"big-folder: the sync exited {child.returncode}: {child.stderr[-300:]}")
    out.add(
        "big-folder",
        f"first sync of {count:,} tiny files in one folder (embedded store, CLI)",
        seconds if child.returncode == 0 else None,
        "s",
        ("<=", SYNC_LIMIT_S * count / FILES),
        "wall time of `ingest sync`, process start included",
    )
    return out
