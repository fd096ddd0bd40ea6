"""Issues 7 and 14: a no-op resync of a large tree of tiny files, against a bare os.scandir stat walk of it,
from the CLI (process start included) and in-process, with where the time goes; search on that manifest."""

from __future__ import annotations

import cProfile
import io
import json
import logging
import os
import pstats
import sqlite3
import stat
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    INGEST,
    PYTHON,
    Child,
    Context,
    Outcome,
    emulator_counters,
    emulator_process,
    installed_env,
    isolated_env,
    patched_environ,
    run_child,
)
from bench.corpus import tiny_tree

RATIO = 1.5
REPEATS = 3
MAX_RSS_MB = 150.0
SEARCH_MS = 150.0
SEARCHES = 7


@dataclass
class SyncedTree:
    tree: Path
    files: int
    home: Path
    env: dict[str, str]
    initial: Child
    initial_report: dict


def tree_size(ctx: Context) -> int:
    return 10_000 if ctx.quick else 100_000


def synced_tree(ctx: Context, count: int | None = None) -> SyncedTree:
    """The tiny-file tree (of the run's size unless told) after a full initial sync on the local
    backend; built once per run."""
    count = count or tree_size(ctx)
    key = f"synced-{count}"
    if key not in ctx.shared:
        tree = tiny_tree(ctx, count)
        home = ctx.scratch(f"noop-{count}")
        env = isolated_env(home)
        ctx.log(f"noop: initial sync of {count:,} tiny files on the local backend (takes a while)")
        child = run_child([*INGEST, "--backend", "local", "sync", str(tree), "--json"], env, home)
        report = _json(child.stdout)
        if report.get("counts", {}).get("indexed") != count:
            raise RuntimeError(
                f"the initial sync indexed {report.get('counts', {}).get('indexed')} of {count} "
                f"files (exit {child.returncode}): {child.stderr[-400:]}"
            )
        ctx.shared[key] = SyncedTree(tree, count, home, env, child, report)
    return ctx.shared[key]


def noop_child(synced: SyncedTree, env: dict[str, str] | None = None) -> tuple[Child, dict]:
    command = [*INGEST, "--backend", "local", "sync", str(synced.tree), "--json"]
    child = run_child(command, env or synced.env, synced.home)
    return child, _json(child.stdout)


def run(ctx: Context) -> Outcome:
    out = Outcome()
    synced = synced_tree(ctx)
    n = synced.files
    first = synced.initial
    out.add(
        "noop",
        f"initial sync of {n:,} tiny files (local backend)",
        n / first.seconds,
        "files/s",
        None,
        f"{first.seconds:.0f} s, peak RSS {first.maxrss_mb:.0f} MB",
    )
    out.details["initial_sync"] = {
        "wall_s": first.seconds,
        "maxrss_mb": first.maxrss_mb,
        "counts": synced.initial_report.get("counts"),
    }

    ctx.log(f"noop: {REPEATS} no-op `ingest sync` subprocesses, {REPEATS} bare walks, {REPEATS} in-process syncs")
    env = installed_env(ctx, synced.env)
    warm, warm_report = noop_child(synced, env)  # warms the page cache and writes the byte-code cache
    _check_noop(warm_report, n, out)
    cli_runs, walks = [], []
    for _ in range(REPEATS):  # interleaved: a busy machine slows both alike
        child, report = noop_child(synced, env)
        _check_noop(report, n, out)
        cli_runs.append(child)
        walks.append(_walk(synced.tree)[0])
    cli_s, walk_s = statistics.median(c.seconds for c in cli_runs), statistics.median(walks)
    walked = _walk(synced.tree)[1]
    inproc, profile_text = _in_process(synced, ctx)
    inproc_s = statistics.median(inproc)
    bare_s = statistics.median(run_child([PYTHON, "-c", "pass"], env, synced.home).seconds for _ in range(REPEATS))
    start_s = statistics.median(
        run_child([PYTHON, "-c", "import ingest.cli, ingest.engine"], env, synced.home).seconds for _ in range(REPEATS)
    )
    parts = _parts(synced)
    out.details.update(
        cli_noop_s=[c.seconds for c in cli_runs],
        cli_noop_maxrss_mb=[c.maxrss_mb for c in cli_runs],
        walk_s=walk_s,
        walked_files=walked,
        in_process_s=inproc,
        python_import_s=start_s,
        python_bare_s=bare_s,
        first_noop_s=warm.seconds,
        parts_s=parts,
    )
    ctx.shared["noop_rss_mb"] = rss = max(c.maxrss_mb for c in cli_runs)

    out.add("noop", f"bare os.scandir + stat walk, {walked:,} files", walk_s, "s", None, "in-process, warm cache")
    out.add(
        "noop",
        "`ingest sync` no-op (subprocess), median",
        cli_s,
        "s",
        None,
        f"of {REPEATS}; a bare `python -c pass` {bare_s:.2f} s, with ingest's imports {start_s:.2f} s",
    )
    out.add("noop", "no-op / walk ratio, CLI", cli_s / walk_s, "x", ("<=", RATIO), "process start included")
    out.add("noop", "peak RSS of the CLI no-op", rss, "MB", ("<=", MAX_RSS_MB), f"{n:,} files")
    out.add("noop", "Engine.sync no-op (in-process), median", inproc_s, "s", None, f"of {REPEATS}")
    out.add("noop", "no-op / walk ratio, in-process Engine.sync", inproc_s / walk_s, "x", ("<=", RATIO))
    out.add(
        "noop",
        "no-op cost per file, in-process",
        inproc_s / n * 1e6,
        "µs",
        None,
        f"the walk: {walk_s / n * 1e6:.1f} µs",
    )
    out.add(
        "noop",
        "where a CLI no-op's time goes: start-up / scan / manifest read",
        cli_s,
        "s",
        None,
        f"imports + start {start_s:.2f} s; in-process: scan with folder digests (walk, digests, rows "
        f"outside) {parts['digested_s']:.2f} s; row by row: scan (walk + stat comparison) {parts['scan_s']:.2f} s, "
        f"manifest read alone {parts['read_s']:.2f} s, read beside the scan {parts['beside_s']:.2f} s",
    )
    out.add(
        "noop",
        "scan on a local disk: parallel walker / serial",
        parts["pooled_s"] / parts["scan_s"],
        "x",
        None,
        f"{parts['pool_threads']} threads {parts['pooled_s']:.2f} s, serial {parts['scan_s']:.2f} s; "
        f"{os.cpu_count()} cores: local disks walk serially",
    )
    pending_s = statistics.median(_pending_count(synced))
    out.details["status_local_changes_s"] = pending_s
    out.add(
        "noop", "`ingest status` local-changes stat pass, median", pending_s, "s", None, f"of {REPEATS}, {n:,} files"
    )
    out.add("noop", "status stat pass / walk ratio", pending_s / walk_s, "x", ("<=", RATIO))
    _openai_noop(ctx, synced, walk_s, out)
    _search(ctx, synced, env, out)
    if profile_text:
        path = ctx.out / "noop-profile.txt"
        path.write_text(profile_text)
        out.notes.append(f"noop: cProfile of the in-process no-op in {path}")
    return out


def _openai_noop(ctx: Context, synced: SyncedTree, walk_s: float, out: Outcome) -> None:
    """The same no-op on the OpenAI backend: the local sync's manifest where the OpenAI backend keeps
    its own, an emulator as the server. A no-op makes no remote call, so the emulator only counts."""
    state = Path(synced.env["XDG_STATE_HOME"]) / "ingest"
    source, target = sqlite3.connect(state / "local" / "manifest.db"), sqlite3.connect(state / "manifest.db")
    with target:
        source.backup(target)
    source.close()
    target.close()
    ctx.log(f"noop: {REPEATS} no-op `ingest sync` subprocesses on the OpenAI backend (the emulator counting)")
    with emulator_process(ctx) as url:  # a process of its own: the in-process no-op runs in a lone thread
        env = dict(synced.env, OPENAI_API_KEY="sk-bench-noop", OPENAI_BASE_URL=url)
        command = [*INGEST, "sync", str(synced.tree), "--json"]
        cli_env = installed_env(ctx, env)
        runs = [run_child(command, cli_env, synced.home) for _ in range(REPEATS)]
        for child in runs:
            _check_noop(_json(child.stdout), synced.files, out)
        inproc, _ = _in_process(synced, ctx, env, "openai", profile=False)
        requests = sum(emulator_counters(url)["requests"].values())
    cli_s, inproc_s = statistics.median(c.seconds for c in runs), statistics.median(inproc)
    out.details.update(
        openai_cli_noop_s=[c.seconds for c in runs], openai_in_process_s=inproc, openai_requests=requests
    )
    out.add("noop", "`ingest sync` no-op, OpenAI backend (subprocess), median", cli_s, "s", None, f"of {REPEATS}")
    out.add("noop", "no-op / walk ratio, CLI, OpenAI backend", cli_s / walk_s, "x", ("<=", RATIO))
    out.add(
        "noop",
        "no-op / walk ratio, in-process Engine.sync, OpenAI backend",
        inproc_s / walk_s,
        "x",
        ("<=", RATIO),
        f"median of {REPEATS}: {inproc_s:.2f} s",
    )
    out.add(
        "noop",
        "remote requests made by the OpenAI no-ops",
        requests,
        "requests",
        ("<=", 0),
        f"{REPEATS} from the CLI, {REPEATS} in-process; peak RSS {max(c.maxrss_mb for c in runs):.0f} MB",
    )


def _search(ctx: Context, synced: SyncedTree, env: dict[str, str], out: Outcome) -> None:
    """`ingest search` from the CLI on the tree's manifest and store: what a search pays for a large
    manifest (the rows of its hits only). Each query names one note, as a search for something
    particular does: a word found in every note measures the store's ranking of 100,000 matches."""
    search = [*INGEST, "--backend", "local", "search"]
    queries = [str(n) for n in (4711, 65488, 12345, 99999, 31337, 27182, 16180, 271)]
    run_child([*search, queries[0]], env, synced.home)  # the byte-code cache
    times = []
    for q in queries[:SEARCHES]:
        child = run_child([*search, q, "-n", "10", "--json"], env, synced.home)
        if child.returncode != 0:
            out.notes.append(f"noop: `ingest search {q}` exited {child.returncode}: {child.stderr[-300:]}")
        times.append(child.seconds * 1000)
    out.details["cli_search_ms"] = times
    out.add(
        "noop",
        f"`ingest search` CLI incl. process start-up, {synced.files:,}-file manifest, median",
        statistics.median(times),
        "ms",
        ("<=", SEARCH_MS),
        f"of {SEARCHES}, embedded store, a query matching one note each",
    )


def _parts(synced: SyncedTree) -> dict[str, float]:
    """The in-process parts of a no-op, each the median of REPEATS: the scan (walk and stat comparison)
    with the manifest's rows in hand, the manifest read alone, and the read beside the scan as
    Engine.sync does it."""
    from ingest import scan
    from ingest.api import Ingest
    from ingest.survey import Survey
    from ingest.walk import NETWORK_THREADS

    scans, reads, besides, pooled, digested = [], [], [], [], []
    with (
        patched_environ(synced.env, synced.home),
        Ingest.open([synced.tree], backend="local", lock=False, command="status") as ingest,
    ):
        root = ingest.settings.roots[0]
        survey = Survey(ingest.settings, ingest.manifest)
        network = survey.network(root)
        for _ in range(REPEATS):
            started = time.perf_counter()
            settled, _ = survey.settled(root)
            reads.append(time.perf_counter() - started)
            started = time.perf_counter()
            scan.scan(root, ("",), network, settled)
            scans.append(time.perf_counter() - started)
            started = time.perf_counter()
            reading = survey.settled_beside(root)
            scan.scan(root, ("",), network, lambda vouched, read=reading: read()[0])
            besides.append(time.perf_counter() - started)
            started = time.perf_counter()
            scan.scan(root, ("",), network, settled, threads=NETWORK_THREADS)
            pooled.append(time.perf_counter() - started)
            started = time.perf_counter()  # as Engine.sync does it: the folder digests, then the rows outside
            digests = survey.digests(root)
            reading = survey.settled_for(root, digests)
            scan.scan(root, ("",), network, lambda vouched, read=reading: read(vouched)[0], digests=digests)
            digested.append(time.perf_counter() - started)
    return {
        "scan_s": statistics.median(scans),
        "read_s": statistics.median(reads),
        "beside_s": statistics.median(besides),
        "pooled_s": statistics.median(pooled),
        "digested_s": statistics.median(digested),
        "pool_threads": NETWORK_THREADS,
    }


def _json(text: str) -> dict:
    try:
        return json.loads(text)
    except ValueError:
        return {}


def _check_noop(report: dict, n: int, out: Outcome) -> None:
    counts = report.get("counts", {})
    if counts.get("unchanged") != n or counts.get("uploaded") or counts.get("new"):
        out.notes.append(f"noop: a resync was not a pure no-op: {counts}")


def _walk(root: Path) -> tuple[float, int]:
    """The floor any resync has to pay: list every folder and lstat every entry."""
    started = time.perf_counter()
    files, stack = 0, [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode):
                    stack.append(entry.path)
                else:
                    files += 1
    return time.perf_counter() - started, files


def _pending_count(synced: SyncedTree) -> list[float]:
    """What `ingest status` pays to count the local changes not synced yet: a stat pass, no hashing."""
    from ingest.api import Ingest
    from ingest.status import local_changes

    times = []
    with (
        patched_environ(synced.env, synced.home),
        Ingest.open([synced.tree], backend="local", lock=False, command="status") as ingest,
    ):
        for _ in range(REPEATS):
            started = time.perf_counter()
            counts = local_changes(ingest.settings, ingest.manifest)
            times.append(time.perf_counter() - started)
    if any(counts.values()):
        raise RuntimeError(f"the status stat pass saw changes in an unchanged tree: {counts}")
    return times


def _in_process(
    synced: SyncedTree, ctx: Context, env: dict[str, str] | None = None, backend: str = "local", profile: bool = True
) -> tuple[list[float], str]:
    """Engine.sync timed without process start-up, then once under cProfile."""
    from ingest.api import Ingest

    times = []
    logging.getLogger("ingest").setLevel(logging.ERROR)  # the "using the embedded store" warning
    with patched_environ(env or synced.env, synced.home), Ingest.open([synced.tree], backend=backend) as ingest:
        for _ in range(REPEATS):
            started = time.perf_counter()
            ingest.sync()
            times.append(time.perf_counter() - started)
        if not profile:
            return times, ""
        profiler = cProfile.Profile()
        profiler.enable()
        ingest.sync()
        profiler.disable()
    text = io.StringIO()
    text.write(
        f"cProfile of Engine.sync, a no-op over {synced.files:,} files (unprofiled median "
        f"{statistics.median(times):.2f} s)\n\n"
    )
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)
    return times, text.getvalue()
