"""Issue 7 P2: cold sync of small files against the emulator (100 ms latency, 100 uploads/s, 429 above),
against the SDK's own upload_and_poll in the same run; each run on a fresh emulator."""

from __future__ import annotations

import json
import select
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import INGEST, PYTHON, ROOT, Context, Outcome, isolated_env, run_child
from bench.corpus import small_files

LATENCY_MS = 100
UPLOAD_RPS = 100
SPEEDUP = 2.5
SHARE_OF_BOUND = 0.9
TRIED = (8, 16, 32)


@contextmanager
def emulator(ctx: Context) -> Iterator[str]:
    """A fresh `python -m tests.emulator` subprocess; yields its base URL."""
    log = open(ctx.work / "emulator.log", "a")
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "tests.emulator",
            "--port",
            "0",
            "--latency-ms",
            str(LATENCY_MS),
            "--upload-rps",
            str(UPLOAD_RPS),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("listening on "):
            raise RuntimeError(f"the emulator did not start: {line!r}")
        yield line.split()[-1]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def run(ctx: Context) -> Outcome:
    from ingest.config import Settings

    default = Settings().upload_concurrency
    concurrency = sorted({default, *TRIED})
    out = Outcome()
    count = 1000 if ctx.quick else 2000
    folder = small_files(ctx, count)
    bound = count / UPLOAD_RPS
    out.details.update(files=count, bound_s=bound, latency_ms=LATENCY_MS, upload_rps=UPLOAD_RPS)

    ctx.log(f"upload: SDK baseline, upload_and_poll of {count} files (max_concurrency=5, max_retries=2)")
    base = _sdk(ctx, folder)
    out.details["sdk"] = base
    base_s = base.get("seconds")
    out.add(
        "upload",
        f"SDK upload_and_poll, {count} files (defaults: 5 at once, 2 retries)",
        base_s,
        "s",
        None,
        f"{base.get('completed', 0)} completed, {base.get('failed_files', '?')} failed, "
        f"{base.get('retries', 0)} retries" + (f"; {base['error']}" if base.get("error") else ""),
    )
    runs = {}
    for n in concurrency:
        ctx.log(f"upload: ingest sync of {count} files with upload_concurrency = {n}")
        runs[n] = r = _ingest(ctx, folder, count, n)
        out.details[f"ingest_c{n}"] = r
        label = f"upload_concurrency={n}" + (" (default)" if n == default else "")
        out.add(
            "upload",
            f"ingest sync, {count} files, {label}",
            r["seconds"],
            "s",
            ("<=", round(bound / SHARE_OF_BOUND, 1)),
            f"{r['indexed']} indexed, {r['failed']} failed, {r['http_429']} × 429; first upload at "
            f"{r['first_upload_s']:.1f} s; {count / r['seconds']:.0f} files/s vs the {UPLOAD_RPS}/s bound",
        )
        speedup = base_s / r["seconds"] if base_s and base.get("ok") else None
        out.add("upload", f"  speed-up over the SDK, {label}", speedup, "x", (">=", SPEEDUP))
        out.add("upload", f"  failures, {label}", r["failed"] + (count - r["indexed"]), "files", ("<=", 0))
    good = [
        n
        for n in concurrency
        if runs[n]["seconds"] <= bound / SHARE_OF_BOUND and runs[n]["failed"] == 0 and runs[n]["indexed"] == count
    ]
    fastest = min(concurrency, key=lambda n: runs[n]["seconds"])
    out.notes.append(
        f"upload: the bound is {count} files / {UPLOAD_RPS} per s = {bound:g} s; "
        + (
            f"upload_concurrency {', '.join(map(str, good))} reached ≥ {SHARE_OF_BOUND:.0%} of it"
            if good
            else f"no concurrency tried reached {SHARE_OF_BOUND:.0%} of it"
        )
        + f"; fastest: upload_concurrency={fastest} ({runs[fastest]['seconds']:.1f} s)"
    )
    if base_s and base.get("ok"):
        # The emulator's bucket starts full (UPLOAD_RPS tokens), then refills at UPLOAD_RPS per second.
        floor = (count - UPLOAD_RPS) / UPLOAD_RPS
        out.notes.append(
            f"upload: at {UPLOAD_RPS} uploads/s no client can finish under ≈ {floor:g} s, so the most "
            f"any client can gain over this SDK run is ≈ {base_s / floor:.1f}x"
        )
    return out


def _sdk(ctx: Context, folder: Path) -> dict:
    with emulator(ctx) as url:
        home = ctx.scratch("sdk")
        env = isolated_env(home, OPENAI_LOG="info")  # the SDK logs its retries at info
        launched = time.time()
        child = run_child([PYTHON, "-m", "bench.sdk_baseline", url, str(folder)], env, ROOT, timeout=1800)
        try:
            data = json.loads(child.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            data = {"ok": False, "error": f"exit {child.returncode}: {child.stderr[-300:]}"}
        data["seconds"] = data["t_end"] - launched if "t_end" in data else None
        data["wall_s"] = child.seconds
        data["retries"] = child.stderr.count("Retrying request")
        data["http_429"] = child.stderr.count("429 Too Many Requests")
        data["maxrss_mb"] = child.maxrss_mb
        data["failed_files"] = data.get("failed", "?")
        if "t_end" in data and data.get("ok"):
            data.update(_remote_counts(url))
    return data


def _ingest(ctx: Context, folder: Path, count: int, concurrency: int) -> dict:
    with emulator(ctx) as url:
        home = ctx.scratch(f"upload-c{concurrency}")
        config = home / "ingest.toml"
        config.write_text(f'backend = "openai"\nupload_concurrency = {concurrency}\n')
        env = isolated_env(home, OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=url)
        launched = time.time()
        child = run_child([*INGEST, "-v", "-c", str(config), "sync", str(folder), "--json"], env, home, timeout=1800)
        try:
            report = json.loads(child.stdout)
        except ValueError:
            report = {}
        counts = report.get("counts", {})
        last, indexed, first_upload = _manifest_times(home / "state" / "ingest" / "manifest.db")
        if last is None:  # no timestamps in the manifest: fall back to launch → exit
            last, indexed = launched + child.seconds, counts.get("indexed", 0)
        return {
            "seconds": last - launched,
            "wall_s": child.seconds,
            "first_upload_s": (first_upload - launched) if first_upload else float("nan"),
            "exit_code": child.returncode,
            "indexed": indexed,
            "failed": counts.get("failed", count),
            "uploaded": counts.get("uploaded"),
            "http_429": child.stderr.count("HTTP 429"),
            "retries": child.stderr.count("retrying"),
            "maxrss_mb": child.maxrss_mb,
            "engine_s": report.get("seconds"),
            **_remote_counts(url),
            "stderr_tail": child.stderr[-400:] if child.returncode else "",
        }


def _manifest_times(path: Path) -> tuple[float | None, int, float | None]:
    """(when the last file was indexed, how many are, when the first upload started), unix seconds."""
    try:
        db = sqlite3.connect(path)
        try:
            last, indexed = db.execute("select max(indexed_at), count(*) from files where state = 'indexed'").fetchone()
            first = db.execute("select min(started_at) from uploads").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return None, 0, None
    return last, indexed, first


def _remote_counts(url: str) -> dict:
    """What the server holds afterwards: files (duplicates would show here) and store file counts."""
    import openai

    client = openai.OpenAI(api_key="sk-bench", base_url=url, max_retries=5)
    files = sum(1 for _ in client.files.list())
    stores = list(client.vector_stores.list())
    completed = sum(s.file_counts.completed for s in stores)
    failed = sum(s.file_counts.failed for s in stores)
    return {"remote_files": files, "remote_completed": completed, "remote_failed": failed}
