"""scripts/bench [--quick] [--only NAME…] [--json PATH]: run the benchmarks, print a table, write JSON.

Every figure comes from this run. Targets are printed beside the values with PASS/MISS; the exit
status is 0 whatever they say (a measurement, not a test); a benchmark that breaks is reported in
the notes and the JSON, and the others still run.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.common import ROOT, Context, Outcome, Result, remove_tree

BENCHES = {  # name: (module, what it measures)
    "local": ("bench.local_store", "issue 3: embedded store, indexing throughput and search latency"),
    "extract": ("bench.extract_quality", "issue 14: the embedded store's PDF text against pypdf's, speed and quality"),
    "watch": ("bench.watch_latency", "issue 4: ingest watch, event → indexed latency"),
    "noop": ("bench.noop", "issue 7 P1: no-op resync of a large tree vs a bare stat walk"),
    "upload": ("bench.upload", "issue 7 P2: cold sync against the emulator vs the SDK's upload_and_poll"),
    "memory": ("bench.memory", "issue 7 P3: peak RSS of the large no-op and of hashing a 2 GB file"),
    "big-folder": ("bench.big_folder", "one folder of 10,000 tiny files: scan and first sync"),
    "share": ("bench.share", "issue 14: no-op rescan and polling daemon on a simulated network share"),
}
ALIASES = {"p1": "noop", "p2": "upload", "p3": "memory", "search": "local"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes (10,000-file tree, 500 uploads, fewer samples): a few minutes",
    )
    p.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help=f"run only these: {', '.join(BENCHES)} (aliases: "
        + ", ".join(f"{a}={b}" for a, b in ALIASES.items())
        + ")",
    )
    p.add_argument(
        "--json",
        dest="json_path",
        type=Path,
        default=ROOT / "bench-results" / "bench.json",
        help="where to write the results (default bench-results/bench.json)",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ingest-bench",
        help="generated trees and downloads, reused between runs (default ~/.cache/ingest-bench)",
    )
    args = p.parse_args(argv)
    names = []
    for raw in args.only or list(BENCHES):
        name = ALIASES.get(raw.lower(), raw.lower())
        if name not in BENCHES:
            p.error(f"unknown benchmark {raw!r}; known: {', '.join(BENCHES)}")
        if name not in names:
            names.append(name)
    args.names = [n for n in BENCHES if n in names]  # always in the documented order
    return args


def machine() -> dict:
    def git(*cmd: str) -> str:
        done = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _cells(r: Result) -> tuple[str, str, str, str, str, str]:
    target = f"{r.target[0]} {fmt(r.target[1])} {r.unit}" if r.target else ""
    return r.bench, r.metric, f"{fmt(r.value)} {r.unit}", target, r.verdict, r.note


def table(results: list[Result]) -> str:
    rows = [("bench", "metric", "measured", "target", "", "note")] + [_cells(r) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(cell.ljust(widths[i]) if i != 2 else cell.rjust(widths[i]) for i, cell in enumerate(row)).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(results: list[Result]) -> str:
    lines = ["| bench | metric | measured | target | | note |", "|---|---|--:|---|---|---|"]
    for cells in map(_cells, results):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    out_dir = args.json_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    ctx = Context(quick=args.quick, cache=args.cache, out=out_dir, work=work)
    info = machine()
    command = "scripts/bench" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    ctx.log(
        f"{command}: {', '.join(args.names)} on {info['cores']} cores, Python {info['python']}; "
        f"cache {args.cache}, scratch {work}"
    )
    document: dict = {"command": command, "quick": args.quick, "machine": info, "benches": {}}
    results: list[Result] = []
    notes: list[str] = []
    broken = False
    started_all = time.perf_counter()
    try:
        for name in args.names:
            module, what = BENCHES[name]
            ctx.log(f"== {name}: {what}")
            started = time.perf_counter()
            try:
                outcome: Outcome = importlib.import_module(module).run(ctx)
            except Exception as exc:  # one broken bench must not hide the others' figures
                broken = True
                traceback.print_exc()
                outcome = Outcome(notes=[f"{name}: the benchmark itself failed: {type(exc).__name__}: {exc}"])
            seconds = time.perf_counter() - started
            ctx.log(f"== {name} took {seconds:.0f} s")
            results += outcome.results
            notes += outcome.notes
            document["benches"][name] = {
                "what": what,
                "seconds": round(seconds, 1),
                "results": [r.as_dict() for r in outcome.results],
                "notes": outcome.notes,
                "details": outcome.details,
            }
            args.json_path.write_text(json.dumps(document, indent=2, default=str))  # partial results survive
    finally:
        remove_tree(work)
    document["seconds"] = round(time.perf_counter() - started_all, 1)
    args.json_path.write_text(json.dumps(document, indent=2, default=str))
    args.json_path.with_suffix(".md").write_text(
        f"`{command}` on {info['cores']} cores, {info['memory_gb']} GB, Python {info['python']}, "
        f"SQLite {info['sqlite']}, {info['date'][:10]}, commit {info['git_commit']}"
        f"{' (dirty)' if info['git_dirty'] else ''}; took {document['seconds'] / 60:.1f} min.\n\n"
        + markdown(results)
        + "\n"
    )

    print(f"ingest benchmarks — {command}")
    print(
        f"{info['cores']} cores, {info['memory_gb']} GB, Python {info['python']}, SQLite {info['sqlite']}, "
        f"{info['platform']}, {info['date']}, commit {info['git_commit']}{' (dirty)' if info['git_dirty'] else ''}"
    )
    print()
    print(table(results))
    if notes:
        print()
        for note in notes:
            print(f"- {note}")
    print()
    timing = ", ".join(f"{n} {document['benches'][n]['seconds']:.0f} s" for n in document["benches"])
    print(
        f"took {document['seconds']:.0f} s ({timing}); JSON: {args.json_path}, "
        f"Markdown table: {args.json_path.with_suffix('.md')}"
    )
    if broken:
        print("one or more benchmarks broke: see the notes above and the traceback on stderr")
    return 0
