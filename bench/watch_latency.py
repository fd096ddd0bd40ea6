"""Issue 4: how long after a file is written `ingest watch` has it indexed (native events, and polling)."""

from __future__ import annotations

import hashlib
import random
import sqlite3
import statistics
import subprocess
import time
from pathlib import Path

from bench.common import INGEST, Context, Outcome, end_process, isolated_env
from bench.corpus import WORDS

SETTLE = 2.0
POLL_INTERVAL = 2.0
SAMPLE_TIMEOUT = 30.0


def run(ctx: Context) -> Outcome:
    out = Outcome()
    samples = 5 if ctx.quick else 10
    modes = [
        ("events", [], SETTLE + 1.0, 0.3),
        ("polling", ["--polling", "--poll-interval", str(POLL_INTERVAL)], POLL_INTERVAL + SETTLE + 1.0, POLL_INTERVAL),
    ]
    for mode, flags, bound, jitter in modes:
        ctx.log(f"watch: {samples} samples with {mode} (--settle {SETTLE:g}{''.join(' ' + f for f in flags)})")
        latencies, info = _measure(ctx, mode, flags, samples, jitter)
        out.details[mode] = {"latencies_s": latencies, **info}
        done = [x for x in latencies if x is not None]
        lost = len(latencies) - len(done)
        label = (
            f"--settle {SETTLE:g}"
            if mode == "events"
            else f"--polling --poll-interval {POLL_INTERVAL:g} --settle {SETTLE:g}"
        )
        note = f"{len(done)}/{len(latencies)} samples" + (
            f", {lost} not indexed within {SAMPLE_TIMEOUT:g} s" if lost else ""
        )
        median = statistics.median(done) if done and not lost else None
        worst = max(done) if done and not lost else None
        out.add("watch", f"event → indexed, median ({label})", median, "s", ("<=", bound), note)
        out.add(
            "watch",
            f"event → indexed, max ({label})",
            worst,
            "s",
            ("<=", bound),
            f"min {min(done):.2f} s" if done else "",
        )
    return out


def _measure(ctx: Context, mode: str, flags: list[str], samples: int, jitter: float) -> tuple[list, dict]:
    home = ctx.scratch(f"watch-{mode}")
    root = (home / "watched").resolve()
    root.mkdir()
    rng = random.Random(mode)
    for i in range(20):  # something to sync at start-up, like a real folder
        (root / f"seed-{i:02d}.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(200)) + "\n")
    env = isolated_env(home)
    manifest = home / "state" / "ingest" / "local" / "manifest.db"
    log = open(home / "watch.log", "w")
    proc = subprocess.Popen(
        [*INGEST, "--backend", "local", "watch", str(root), "--settle", str(SETTLE), *flags],
        env=env,
        cwd=home,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    latencies: list[float | None] = []
    try:
        started = time.monotonic()
        db = wait_for_first_sync(manifest, proc, deadline=started + 120)
        info = {"startup_full_sync_s": round(time.monotonic() - started, 2)}
        path = None
        for i in range(samples):
            time.sleep(rng.uniform(0, jitter))  # spread the samples over the poll / tick cycle
            if i % 2 == 0 or path is None:
                path = f"sample-{i:02d}.txt"  # a new file …
            body = f"sample {i} token zq{rng.randrange(10**9)} {' '.join(rng.choice(WORDS) for _ in range(50))}\n"
            full = root / path
            with open(full, "w") as fh:  # … or, every other sample, an edit of the last new one
                fh.write(body)
            written = time.monotonic()
            want = hashlib.sha256(body.encode()).hexdigest()
            latencies.append(wait_indexed(db, str(root), path, want, written, proc))
        db.close()
    finally:
        end_process(proc, 20)
        log.close()
    info["exit_code"] = proc.returncode
    info["log_tail"] = (home / "watch.log").read_text()[-800:]
    return latencies, info


def wait_for_first_sync(manifest: Path, proc: subprocess.Popen, deadline: float) -> sqlite3.Connection:
    """The daemon's start-up full sync has finished (its run row is closed)."""
    db = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ingest watch exited with {proc.returncode} before its first sync")
        if db is None and manifest.exists():
            db = sqlite3.connect(manifest, timeout=5)
        if db is not None:
            try:
                row = db.execute(
                    "select 1 from runs where command = 'watch-full' and finished_at is not null"
                ).fetchone()
            except sqlite3.OperationalError:  # the schema is not there yet
                row = None
            if row:
                return db
        time.sleep(0.05)
    raise RuntimeError("ingest watch did not finish its first sync in time")


def wait_indexed(
    db: sqlite3.Connection,
    root: str,
    path: str,
    sha: str,
    since: float,
    proc: subprocess.Popen,
    timeout: float = SAMPLE_TIMEOUT,
) -> float | None:
    """Seconds from `since` until the manifest has this content of the file indexed; None on time-out."""
    while time.monotonic() - since < timeout:
        row = db.execute("select state, sha256 from files where root = ? and path = ?", (root, path)).fetchone()
        if row and row[0] == "indexed" and row[1] == sha:
            return round(time.monotonic() - since, 3)
        if proc.poll() is not None:
            return None
        time.sleep(0.01)
    return None
