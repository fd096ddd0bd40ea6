"""Shared fixtures: a documents folder, an isolated state dir, and a CLI runner."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ingest import Ingest
from ingest.cli import cli
from ingest.config import Settings


def pytest_addoption(parser):
    parser.addoption("--soak", action="store_true", help="run the long soak versions of the suites")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with --soak (scripts/soak)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def lexical_local_store():
    """The embedded store without its embedding model (here and in the processes tests start), so tests
    of words see words only and never load the real model; tests of hybrid search pass a model of their
    own (tests/test_hybrid_search.py). Session-wide, not through a test's monkeypatch, whose undoing
    would then come after every other fixture's teardown."""
    saved = os.environ.get("INGEST_SEMANTIC")
    os.environ["INGEST_SEMANTIC"] = "off"
    yield
    if saved is None:
        os.environ.pop("INGEST_SEMANTIC", None)
    else:
        os.environ["INGEST_SEMANTIC"] = saved


@pytest.fixture
def state_dir(tmp_path, monkeypatch) -> Path:
    """XDG dirs inside the test: nothing touches the user's real state or config."""
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("INGEST_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return state / "ingest"


@pytest.fixture
def docs_root(tmp_path) -> Path:
    root = tmp_path / "docs"
    (root / "guides").mkdir(parents=True)
    (root / "guides" / "install.md").write_text("# Install\n\nRun the zebrafish installer with pip.\n")
    (root / "guides" / "usage.txt").write_text("Usage notes: the quokka command prints a summary.\n")
    (root / "faq.html").write_text(
        "<html><body><h1>FAQ</h1><p>Why is the narwhal blue?</p>"
        "<script>var hidden = 'scriptword';</script></body></html>"
    )
    (root / "notes.py").write_text("def axolotl():\n    return 'axolotl regenerates'\n")
    # Written an hour ago, as a file server's files were: a run takes each file's hash once, as it
    # would theirs (a file changed within the last seconds is hashed again by the next run).
    then = time.time_ns() - 3600 * 10**9
    for path in root.rglob("*"):
        os.utime(path, ns=(then, then))
    return root


class Cli:
    """Runs `ingest …` in-process and returns (exit code, stdout, stderr)."""

    def __init__(self, env: dict[str, str] | None = None):
        self.env = env or {}

    def __call__(self, *args: str, check: int | None = 0):
        result = CliRunner().invoke(cli, list(args), env=self.env, catch_exceptions=False)
        if check is not None and result.exit_code != check:
            raise AssertionError(
                f"ingest {' '.join(args)} exited {result.exit_code}, expected {check}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def json(self, *args: str, check: int | None = 0):
        return json.loads(self(*args, "--json", check=check).stdout)


@pytest.fixture
def ingest(state_dir) -> Cli:
    return Cli()


@pytest.fixture
def fake_openai():
    """The OpenAI emulator on 127.0.0.1, quick to index."""
    from tests.emulator import Emulator

    with Emulator(index_delay=0.05, poll_after_ms=20) as emu:
        yield emu


@pytest.fixture
def llama():
    """The emulator as llama-stack answers (tests/emulator/llama.py)."""
    from tests.emulator import Emulator

    with Emulator(index_delay=0.05, poll_after_ms=20, profile="llama-stack") as emu:
        yield emu


def server_cli(tmp_path: Path, monkeypatch, base_url: str, key: str) -> Cli:
    (tmp_path / "ingest.toml").write_text("request_timeout = 5\nindex_timeout = 30\n")
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("OPENAI_BASE_URL", base_url)
    return Cli()


@pytest.fixture
def openai_cli(state_dir, fake_openai, tmp_path, monkeypatch) -> Cli:
    """`ingest …` with a key and the emulator's URL: the OpenAI path, for real."""
    return server_cli(tmp_path, monkeypatch, fake_openai.base_url, "sk-test-key-0123456789")


@pytest.fixture
def llama_cli(state_dir, llama, tmp_path, monkeypatch) -> Cli:
    """`ingest …` against the emulator's llama-stack profile (it takes any key)."""
    return server_cli(tmp_path, monkeypatch, llama.base_url, "anything")


@pytest.fixture
def local_ingest(state_dir, docs_root):
    """An Ingest on the docs root, on the embedded store."""
    with Ingest.open([docs_root], backend="local") as opened:
        yield opened


@pytest.fixture
def emulator_env(state_dir, fake_openai, monkeypatch):
    """A key and the emulator's URL in the environment: the OpenAI path, for real."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key-0123456789")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    return lambda **settings: Settings(request_timeout=5, index_timeout=30, **settings)


@pytest.fixture
def emulated_ingest(emulator_env, docs_root):
    """An Ingest on the docs root, on the OpenAI path against the emulator."""
    with Ingest.open([docs_root], config=emulator_env()) as opened:
        yield opened


def as_unprivileged(fn):
    """Run fn as an ordinary user: root reads files whatever their mode, so forked and dropped."""
    if os.geteuid() != 0:
        return fn()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            except OSError as exc:
                payload = pickle.dumps((None, f"cannot drop privileges here: {exc}"))
            else:
                try:
                    payload = pickle.dumps((True, fn()))
                except BaseException as exc:
                    payload = pickle.dumps((False, exc))
            with os.fdopen(write, "wb") as out:
                out.write(payload)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as inp:
        ok, value = pickle.loads(inp.read())
    os.waitpid(pid, 0)
    if ok is None:
        pytest.skip(value)
    if not ok:
        raise value
    return value


@pytest.fixture
def shared_dir():
    """A folder an unprivileged user may enter (pytest's own tmp folders are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="ingest-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
