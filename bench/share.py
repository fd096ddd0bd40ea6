"""Issue 14 (2): the no-op rescan and the polling daemon on a simulated network share.

The share is bench/simshare.c, a FUSE passthrough that waits ROUND_TRIP_US on every lookup, getattr
and readdir with nothing cached by the kernel, compiled here against libfuse 3 (Debian: libfuse3-dev).
The tree under it is a hard-linked copy of the no-op benchmark's synced tree (same inodes and
mtimes, so that benchmark's manifest, with its root moved to the mount, is a no-op here too); an
edit replaces a file by rename, which leaves the cached original alone.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import statistics
import subprocess
import time
from pathlib import Path

from bench.common import INGEST, Context, Outcome, end_process, run_child
from bench.noop import _json, _walk, synced_tree
from bench.watch_latency import wait_for_first_sync, wait_indexed

ROUND_TRIP_US = 500
NOOP_RATIO = 0.2
POLL_INTERVAL, SETTLE = 5.0, 2.0
EDIT_BOUND_S = 8.0  # at 10,000 files
SAMPLE_TIMEOUT = 120.0
SOURCE = Path(__file__).resolve().parent / "simshare.c"


def run(ctx: Context) -> Outcome:
    out = Outcome()
    binary = _compile(ctx)
    sizes = [10_000] if ctx.quick else [10_000, 100_000]
    for n in sizes:
        _one_size(ctx, out, binary, n)
    return out


def _one_size(ctx: Context, out: Outcome, binary: Path, n: int) -> None:
    synced = synced_tree(ctx, n)
    work = ctx.scratch(f"share-{n}")
    source, mount, home = work / "source" / synced.tree.name, work / "mnt" / synced.tree.name, work / "home"
    ctx.log(f"share: a hard-linked copy of the {n:,}-file tree, its manifest moved to the mount")
    source.parent.mkdir()
    mount.mkdir(parents=True)
    subprocess.run(["cp", "-al", str(synced.tree), str(source)], check=True)
    shutil.copytree(synced.home, home, symlinks=True)
    _move_root(home, str(synced.tree), str(mount))
    env = dict(synced.env, **{k: str(home / v) for k, v in _xdg(synced.env, synced.home).items()})
    server = _mount(binary, source, mount, ROUND_TRIP_US, work / "simshare.log")
    try:
        ctx.log(f"share {n:,}: serial os.scandir + lstat walk of the mount ({ROUND_TRIP_US} µs per round trip)")
        walk_s, walked = _walk(mount)
        ctx.log(f"share {n:,}: `ingest sync` no-op over the mount")
        child = run_child([*INGEST, "--backend", "local", "sync", str(mount), "--json"], env, home)
        counts = _json(child.stdout).get("counts", {})
        if counts.get("unchanged") != n:
            out.notes.append(f"share {n:,}: the rescan was not a pure no-op: {counts} {child.stderr[-300:]}")
        out.add("share", f"serial scandir+lstat walk of the share, {walked:,} files", walk_s, "s", None)
        out.add("share", f"`ingest sync` no-op over the share, {n:,} files", child.seconds, "s", None, "from the CLI")
        out.add(
            "share",
            f"no-op / serial walk, share of {n:,} files",
            child.seconds / walk_s,
            "x",
            ("<=", NOOP_RATIO),
            f"{ROUND_TRIP_US / 1000:g} ms per round trip; peak RSS {child.maxrss_mb:.0f} MB",
        )
        out.details[f"share_{n}"] = {"walk_s": walk_s, "noop_s": child.seconds, "counts": counts}
        samples = 5 if n <= 10_000 else 3
        ctx.log(f"share {n:,}: `ingest watch --polling --poll-interval {POLL_INTERVAL:g} --settle {SETTLE:g}`")
        latencies, info = _watch(source, mount, home, env, samples)
        out.details[f"share_{n}"].update(watch_latencies_s=latencies, **info)
        done = [x for x in latencies if x is not None]
        label = f"edit → indexed, polling the share of {n:,} files"
        note = f"{len(done)}/{len(latencies)} samples; daemon start-up {info.get('startup_s', 0):.0f} s"
        target = ("<=", EDIT_BOUND_S) if n <= 10_000 else None
        whole = len(done) == len(latencies)
        out.add("share", label + ", median", statistics.median(done) if whole else None, "s", target, note)
        out.add("share", label + ", max", max(done) if whole else None, "s", target)
    finally:
        _unmount(mount, server)


def _compile(ctx: Context) -> Path:
    binary = ctx.cache / "simshare"
    if binary.is_file() and binary.stat().st_mtime >= SOURCE.stat().st_mtime:
        return binary
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], capture_output=True, text=True)
    if flags.returncode != 0:
        raise RuntimeError("libfuse 3 is needed for the simulated share: apt-get install libfuse3-dev fuse3")
    subprocess.run(["cc", "-O2", "-Wall", "-o", str(binary), str(SOURCE), *flags.stdout.split()], check=True)
    return binary


def _mount(binary: Path, source: Path, mount: Path, delay_us: int, log: Path) -> subprocess.Popen:
    server = subprocess.Popen(
        [str(binary), str(source), str(mount), str(delay_us)], stdout=open(log, "w"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 30
    while not os.path.ismount(mount):
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"simshare did not mount {mount} (FUSE needs /dev/fuse and root): {log.read_text()}")
        time.sleep(0.05)
    return server


def _unmount(mount: Path, server: subprocess.Popen) -> None:
    for cmd in (["fusermount3", "-u", str(mount)], ["umount", "-l", str(mount)]):
        if subprocess.run(cmd, capture_output=True).returncode == 0:
            break
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _xdg(env: dict[str, str], home: Path) -> dict[str, str]:
    """The XDG variables of env that point into home, relative to it."""
    return {k: os.path.relpath(v, home) for k, v in env.items() if k.startswith("XDG_") and v.startswith(str(home))}


def _move_root(home: Path, old: str, new: str) -> None:
    for db in home.rglob("manifest.db"):  # the local backend's, and the OpenAI one the noop bench made
        conn = sqlite3.connect(db)
        with conn:
            conn.execute("update files set root = ? where root = ?", (new, old))
            conn.execute("update uploads set root = ? where root = ?", (new, old))
            conn.execute("update roots set key = ? where key = ?", (new, old))
        conn.close()


def _watch(source: Path, mount: Path, home: Path, env: dict[str, str], samples: int) -> tuple[list, dict]:
    manifest = Path(env["XDG_STATE_HOME"]) / "ingest" / "local" / "manifest.db"  # the local backend's
    log = open(home / "watch.log", "w")
    started = time.monotonic()
    flags = ["--polling", "--poll-interval", str(POLL_INTERVAL), "--settle", str(SETTLE)]
    proc = subprocess.Popen(
        [*INGEST, "--backend", "local", "watch", str(mount), *flags],
        env=env,
        cwd=home,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    latencies: list[float | None] = []
    info: dict = {}
    try:
        db = wait_for_first_sync(manifest, proc, deadline=started + 900)
        info["startup_s"] = round(time.monotonic() - started, 2)
        files = sorted(p for p in source.rglob("*.txt"))[:samples]
        for i, path in enumerate(files):
            time.sleep(1.3 * i % POLL_INTERVAL)  # spread the edits over the poll cycle
            body = f"edited {i} at {time.time()}\n"
            fresh = path.with_name(path.name + ".new")  # rename over: the hard-linked original stays as it was
            fresh.write_text(body)
            fresh.replace(path)
            written = time.monotonic()
            rel, sha = path.relative_to(source).as_posix(), hashlib.sha256(body.encode()).hexdigest()
            latencies.append(wait_indexed(db, str(mount), rel, sha, written, proc, SAMPLE_TIMEOUT))
        db.close()
    finally:
        end_process(proc, 60)
        log.close()
    info["log_tail"] = (home / "watch.log").read_text()[-600:]
    return latencies, info
