"""What every benchmark shares: results with targets, child processes with their peak RSS, isolated state."""

from __future__ import annotations

import json
import math
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
INGEST = [PYTHON, "-m", "ingest"]


@dataclass
class Result:
    """One measured figure; `target` is (op, bound) with op '<=' or '>=', or None for information only."""

    bench: str
    metric: str
    value: float | None
    unit: str
    target: tuple[str, float] | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return "MISS"
        op, bound = self.target
        return "PASS" if (self.value <= bound if op == "<=" else self.value >= bound) else "MISS"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["target"] = None if self.target is None else {"op": self.target[0], "value": self.target[1]}
        out["verdict"] = self.verdict or None
        return out


@dataclass
class Outcome:
    """What one benchmark hands back: its figures, notes for the reader, and details for the JSON."""

    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, *args, **kwargs) -> Result:
        result = Result(*args, **kwargs)
        self.results.append(result)
        return result


@dataclass
class Context:
    quick: bool
    cache: Path  # generated trees and downloads, kept between runs
    out: Path  # bench-results/
    work: Path  # scratch for this run, removed at the end
    shared: dict[str, Any] = field(default_factory=dict)  # fixtures one bench builds and another reuses

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def scratch(self, name: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.work))
        return path


def installed_env(ctx: Context, env: dict[str, str]) -> dict[str, str]:
    """`env` with byte-code caching, as an installed ingest has it (pip compiles on install), kept in
    the bench's cache: a CLI figure is then not the compiler's. The first run of a command writes it."""
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(ctx.cache / "pycache")
    return env


def isolated_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment whose state, config and cwd-independent settings point inside `home`.

    OPENAI_* variables are dropped so a developer's real key is never used by a benchmark."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "INGEST_", "XDG_"))}
    env.update(
        XDG_STATE_HOME=str(home / "state"),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_CACHE_HOME=str(home / "cache"),
        PYTHONUNBUFFERED="1",
        # The pipeline's benchmarks measure the pipeline: the embedded store by words alone, as they
        # always were. bench/local_store.py measures hybrid search, and turns it on.
        INGEST_SEMANTIC="off",
    )
    env.update(extra)
    return env


@contextmanager
def patched_environ(env: dict[str, str], cwd: Path | None = None) -> Iterator[None]:
    """Run in-process code (ingest's library) under `env` (and in `cwd`), then restore both."""
    saved, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.clear()
    os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)  # no ./ingest.toml of the developer's is picked up
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved)


@dataclass
class Child:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    maxrss_mb: float  # the child's own peak RSS (VmHWM at exit), see bench/peakhook
    cpu_s: float = 0.0  # user + system time of the child and of the processes it waited for


PEAK_HOOK = Path(__file__).resolve().parent / "peakhook"


def run_child(
    cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 3600.0, stdin: int | None = subprocess.DEVNULL
) -> Child:
    """Run a process to its end: wall time from launch to exit, and its own peak RSS.

    Python children load bench/peakhook/sitecustomize.py, which writes VmHWM at exit; for others
    wait4()'s ru_maxrss is used, which exec() inflates to at least this process's own peak."""
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
        tempfile.NamedTemporaryFile("r", suffix=".peak") as peak,
    ):
        env = dict(
            env,
            BENCH_PEAK_FILE=peak.name,
            PYTHONPATH=os.pathsep.join(filter(None, [str(PEAK_HOOK), env.get("PYTHONPATH")])),
        )
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, stdin=stdin)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        err.seek(0)
        written = peak.read().strip()
        maxrss_kb = int(written) if written.isdigit() else usage.ru_maxrss
        cpu = usage.ru_utime + usage.ru_stime
        return Child(proc.returncode, out.read(), err.read(), seconds, maxrss_kb / 1024, cpu)


def end_process(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it is still there after `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def emulator_process(ctx: Context, *options: str) -> Iterator[str]:
    """A fresh `python -m tests.emulator` subprocess with these options; yields its base URL. Out of the
    bench's own process: its server threads would otherwise be threads of the process under test."""
    log = open(ctx.work / "emulator.log", "a")
    proc = subprocess.Popen(
        [PYTHON, "-m", "tests.emulator", "--port", "0", *options],
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
        end_process(proc, 10)
        log.close()


def emulator_counters(url: str) -> dict:
    """The counters of an emulator_process (see tests.emulator's Emulator.counters)."""
    with urllib.request.urlopen(url.removesuffix("/v1") + "/_emulator/snapshot", timeout=30) as reply:
        return json.load(reply)["counters"]


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def tree_stats(root: Path) -> tuple[int, int]:
    """(files, bytes) under root."""
    files = size = 0
    for folder, _, names in os.walk(root):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(folder, name)).st_size
    return files, size
