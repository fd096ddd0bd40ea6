"""Issues 3, 14 and 15: the embedded store on real documents — `ingest sync` throughput, search latency,
and how well hybrid search finds pages for questions in people's own words (bench/questions.py) and
for page titles, beside the same documents searched by words alone."""

from __future__ import annotations

import json
import os
import random
import re
import statistics
import time
from pathlib import Path

from bench.common import (
    INGEST,
    Context,
    Outcome,
    installed_env,
    isolated_env,
    patched_environ,
    percentile,
    run_child,
    user_command,
)
from bench.corpus import MIN_DOCS, python_docs
from bench.questions import HELD_OUT

QUERIES = 120
CLI_SEARCHES = 11
_ROLE = re.compile(r":[\w:]+:`~?([^`<]+?)(?:\s*<[^>]*>)?`")
_UNDERLINE = re.compile(r"^([=\-~*#^\"'`+])\1{2,}\s*$")


def run(ctx: Context) -> Outcome:
    out = Outcome()
    corpus = python_docs(ctx)
    out.details["corpus"] = {
        "path": str(corpus.path),
        "files": corpus.files,
        "bytes": corpus.bytes,
        "label": corpus.label,
    }
    if not corpus.real:
        out.notes.append(f"corpus: {corpus.label}")
    home = ctx.scratch("local")
    # The hybrid sync waits for all its documents: end to end is until the last one is searchable
    # (at the default 600 s a first hybrid sync of these documents stops waiting half way).
    (home / "ingest.toml").write_text("index_timeout = 7200\n")
    env = isolated_env(home, INGEST_SEMANTIC="on", INGEST_CONFIG=str(home / "ingest.toml"))
    words_home = ctx.scratch("local-words")
    words_env = isolated_env(words_home, INGEST_SEMANTIC="off")
    label = "python3.11-doc" if corpus.real else "replicated examples (fallback)"
    model = _model_present(env, home)
    # Without the model the "hybrid" store is one by words alone: its rows are shown, not judged.
    hybrid = "hybrid" if model else "no model installed, so by words alone; not judged"
    if not model:
        out.notes.append(
            "the embedding model is not installed: the hybrid rows are by words alone and not judged"
            " (INGEST_SEMANTIC=on scripts/bench --only local installs it)"
        )

    ctx.log(f"local: ingest sync of {corpus.files} documents ({corpus.bytes / 1e6:.1f} MB), by words alone")
    words_child, words_counts = _sync(corpus.path, words_env, words_home)
    ctx.log(f"local: ingest sync of {corpus.files} documents, hybrid" + ("" if model else " (no model installed)"))
    child, counts = _sync(corpus.path, env, home)
    indexed = counts.get("indexed", 0)
    out.details["sync"] = {
        "wall_s": child.seconds,
        "counts": counts,
        "exit_code": child.returncode,
        "maxrss_mb": child.maxrss_mb,
        "stderr_tail": child.stderr[-500:],
        "words_alone_wall_s": words_child.seconds,
    }
    out.add(
        "local",
        f"indexing (first sync, {hybrid}): {label}, {corpus.files} docs",
        indexed / child.seconds,
        "docs/s",
        (">=", 20.0) if model else None,
        f"{indexed} indexed, {counts.get('failed', '?')} failed, exit {child.returncode}, "
        f"CPU {child.cpu_s:.0f} s over {child.seconds:.0f} s wall on {os.cpu_count()} cores",
    )
    out.add(
        "local",
        "indexing (first sync) by words alone (INGEST_SEMANTIC=off)",
        words_counts.get("indexed", 0) / words_child.seconds,
        "docs/s",
        (">=", 60.0),
        f"CPU per doc {1000 * words_child.cpu_s / max(1, words_counts.get('indexed', 0)):.0f} ms; "
        f"{corpus.bytes / 1e6 / words_child.seconds:.1f} MB/s",
    )
    if indexed < MIN_DOCS:
        out.notes.append(f"only {indexed} documents were indexed (wanted ≥ {MIN_DOCS})")
    for name, folder, docs in (
        (hybrid, home, indexed),
        ("by words alone", words_home, words_counts.get("indexed", 0)),
    ):
        size = sum(f.stat().st_size for f in (folder / "state" / "ingest" / "local" / "store").glob("store.db*"))
        out.add(
            "local",
            f"store size on disk per 1,000 documents ({name})",
            size / 1e6 / max(docs, 1) * 1000,
            "MB",
            None,
            f"store.db {size / 1e6:.0f} MB for {docs} docs ({corpus.bytes / 1e6:.0f} MB of sources); blobs apart",
        )

    queries = _queries(corpus.path)
    out.details["queries"] = len(queries)
    with patched_environ(env, home):
        times, first_ms, found, lib_times = _search(home, queries)
    out.add(
        "local",
        f"search p50 ({len(times)} queries, LocalRemote.search, {hybrid})",
        percentile(times, 50),
        "ms",
        ("<=", 50.0) if model else None,
        f"first query {first_ms:.1f} ms",
    )
    out.add("local", "search p95", percentile(times, 95), "ms", None, f"max {max(times):.1f} ms")
    out.add(
        "local",
        "search p50 via search.search_stores (CLI's library path)",
        percentile(lib_times, 50),
        "ms",
        None,
        "adds the manifest's path lookup",
    )
    out.add(
        "local",
        f"keyword recall: a page's title finds the page in the top 10 ({hybrid})",
        100.0 * found / len(queries),
        "%",
        (">=", 95.0) if model else None,
        f"{len(queries)} titles of random pages",
    )
    with patched_environ(words_env, words_home):
        words_times, _, words_found, _ = _search(words_home, queries)
    out.add(
        "local",
        "  the same titles by words alone",
        100.0 * words_found / len(queries),
        "%",
        None,
        f"search p50 by words alone {percentile(words_times, 50):.1f} ms",
    )
    if corpus.real:
        with patched_environ(env, home):
            recall = _recall(home)
        with patched_environ(words_env, words_home):
            words_recall = _recall(words_home)
        out.add(
            "local",
            f"paraphrase recall@5 ({len(HELD_OUT)} held-out questions, {hybrid})",
            recall,
            "",
            (">=", 0.8) if model else None,
            f"the same questions by words alone: {words_recall:.2f}",
        )
    if model:
        with patched_environ(env, home):
            costs = _model_costs(home)
        out.details["model"] = costs
        out.add(
            "local",
            "  the model: load, and one query's vector",
            costs["load_ms"],
            "ms",
            None,
            f"a query's vector {costs['query_ms']:.1f} ms (p50); chunks embedded {costs['chunks_per_s']:.1f}/s "
            f"in-process, {costs['chunks']:,} chunks in the store: {costs['chunks'] / costs['chunks_per_s']:.0f} s "
            f"of the sync's {child.seconds:.0f} s",
        )
    cli_ms, note = _cli_search(ctx, env, home, [q for q, _ in queries])
    out.add(
        "local",
        f"`ingest search` CLI incl. process start-up, median of {CLI_SEARCHES}" + (" (hybrid)" if model else ""),
        cli_ms,
        "ms",
        ("<=", 150.0),
        note,
    )
    words_cli_ms, words_note = _cli_search(ctx, words_env, words_home, [q for q, _ in queries])
    out.add("local", "  the same by words alone", words_cli_ms, "ms", None, words_note)
    return out


def _cli_search(ctx: Context, env: dict[str, str], home: Path, queries: list[str]) -> tuple[float, str]:
    """Median wall time of `ingest search` from the shell, beside a bare interpreter's start-up.

    The installed command (user_command), with byte-code caching (installed_env); a first untimed run
    writes it."""
    env = installed_env(ctx, env)
    search = [*user_command(ctx), "--backend", "local", "search"]
    run_child([*search, queries[0], "-n", "10"], env, home)
    cli, cpu, bare = [], [], []
    for q in queries[:CLI_SEARCHES]:
        c = run_child([*search, q, "-n", "10"], env, home)
        cli.append(c.seconds * 1000)
        cpu.append(c.cpu_s * 1000)
        bare.append(run_child([INGEST[0], "-c", "pass"], env, home).seconds * 1000)
    note = f"CPU {statistics.median(cpu):.0f} ms; a bare `python -c pass` {statistics.median(bare):.0f} ms"
    return statistics.median(cli), note


def _sync(corpus: Path, env: dict[str, str], home: Path):
    child = run_child([*INGEST, "--backend", "local", "sync", str(corpus), "--json"], env, home)
    return child, _json(child.stdout).get("counts", {})


def _model_present(env: dict[str, str], home: Path) -> bool:
    probe = "from ingest.remote.local import embed; print(embed.model_folder() is not None)"
    return run_child([INGEST[0], "-c", probe], env, home).stdout.strip() == "True"


def _store(home: Path):
    from ingest.manifest import Manifest
    from ingest.remote.local import LocalRemote

    local = home / "state" / "ingest" / "local"
    manifest = Manifest(local / "manifest.db")
    try:
        store_id = manifest.stores()[0].id
    finally:
        manifest.close()
    return LocalRemote(local / "store"), store_id


def _recall(home: Path) -> float:
    """Held-out questions whose top 5 hold one of their pages."""
    remote, store_id = _store(home)
    try:
        found = 0
        for question, pages in HELD_OUT:
            hits = remote.search(store_id, question, None, 5)
            found += any(_page(h.attributes.get("path", h.filename)) in pages for h in hits)
        return found / len(HELD_OUT)
    finally:
        remote.close()


def _model_costs(home: Path, sample: int = 256) -> dict:
    """The model's load, a query's vector, and chunks embedded a second, on the store's own chunks."""
    import sqlite3

    from ingest.remote.local import embed

    started = time.perf_counter()
    model = embed.LazyModel()()
    load_ms = (time.perf_counter() - started) * 1000
    assert model is not None
    times = []
    for question, _ in HELD_OUT[:20]:
        started = time.perf_counter()
        model.encode([question])
        times.append((time.perf_counter() - started) * 1000)
    db = sqlite3.connect(home / "state" / "ingest" / "local" / "store" / "store.db")
    chunks = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    texts = [t for (t,) in db.execute("SELECT text FROM chunks ORDER BY random() LIMIT ?", (sample,))]
    db.close()
    started = time.perf_counter()
    model.encode(texts)
    per_s = len(texts) / (time.perf_counter() - started)
    return {"load_ms": load_ms, "query_ms": percentile(times, 50), "chunks_per_s": per_s, "chunks": chunks}


def _page(path: object) -> str:
    """rst/library/time.txt and html/library/time.html are both the page library/time."""
    parts = Path(str(path)).with_suffix("").parts
    return "/".join(parts[1:])


def _json(text: str) -> dict:
    try:
        return json.loads(text)
    except ValueError:
        return {}


def _queries(corpus: Path) -> list[tuple[str, str | None]]:
    """(query, the page it came from): titles of randomly chosen .rst sources, roles unwrapped."""
    titles = []
    for path in sorted(corpus.rglob("*.txt")):
        title = _title(path)
        if title and len(title.split()) >= 2:
            titles.append((title, path.stem))
    rng = random.Random(3)
    rng.shuffle(titles)
    if not titles:  # the fallback corpus has no rst titles: use words of the documents
        words = sorted(
            {
                w
                for p in sorted(corpus.rglob("*"))[:50]
                if p.is_file()
                for w in re.findall(r"[a-z]{5,}", p.read_text(errors="ignore").lower())
            }
        )
        return [(" ".join(rng.sample(words, 3)), None) for _ in range(QUERIES)]
    return (titles * (QUERIES // len(titles) + 1))[:QUERIES]


def _title(path: Path) -> str | None:
    lines = path.read_text(encoding="utf-8", errors="ignore").splitlines()[:60]
    for i in range(1, len(lines)):
        if _UNDERLINE.match(lines[i]) and lines[i - 1].strip() and not _UNDERLINE.match(lines[i - 1]):
            text = _ROLE.sub(r"\1", lines[i - 1].strip())
            text = re.sub(r"[^\w\s.]", " ", text)
            return " ".join(text.split())
    return None


def _search(home: Path, queries: list[tuple[str, str | None]]) -> tuple[list[float], float, int, list[float]]:
    from ingest.manifest import Manifest
    from ingest.remote.local import LocalRemote
    from ingest.search import search_stores

    local = home / "state" / "ingest" / "local"
    manifest = Manifest(local / "manifest.db")
    remote = LocalRemote(local / "store")
    try:
        store_id = manifest.stores()[0].id
        plain = [q for q, _ in queries]
        started = time.perf_counter()
        remote.search(store_id, plain[0], None, 10)
        first_ms = (time.perf_counter() - started) * 1000
        for q in plain[:3]:  # warm-up, not counted
            remote.search(store_id, q, None, 10)
        times, found = [], 0
        for q, stem in queries:
            started = time.perf_counter()
            hits = remote.search(store_id, q, None, 10)
            times.append((time.perf_counter() - started) * 1000)
            if stem and any(Path(h.filename).stem == stem for h in hits):
                found += 1
        lib_times = []
        for q in plain[:30]:
            started = time.perf_counter()
            search_stores(manifest, remote, q, None, None, 10)
            lib_times.append((time.perf_counter() - started) * 1000)
        return times, first_ms, found, lib_times
    finally:
        remote.close()
        manifest.close()
