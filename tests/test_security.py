"""The API key never leaks, state is private, nothing outside the root goes up, and the tool deletes only what it
created. The tool runs as a subprocess (real logging at -vv, real files) against the emulator on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.manifest import Manifest
from tests.emulator import Emulator
from tests.test_crash import audit

KEY = "sk-proj-CANARYa7f3c9e2b18d4f6a0e5c9b7d3e1f2a4c6b8d0e"
SECRET_PARTS = (KEY, KEY[8:40], KEY[-24:])  # the whole key, and long pieces a partial mask would show


@pytest.fixture
def emu():
    with Emulator(index_delay=0.05, poll_after_ms=20) as emulator:
        yield emulator


class Tool:
    """Runs `python -m ingest` with its own XDG dirs and records every byte it printed."""

    def __init__(self, tmp_path: Path, emu: Emulator):
        self.tmp = tmp_path
        self.state = tmp_path / "state"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "INGEST_", "XDG_"))}
        self.env.update(
            OPENAI_API_KEY=KEY,
            OPENAI_BASE_URL=emu.base_url,
            XDG_STATE_HOME=str(self.state),
            XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
            PYTHONUNBUFFERED="1",
        )
        (tmp_path / "ingest.toml").write_text("request_timeout = 5\nindex_timeout = 30\n")
        self.outputs: list[tuple[str, str]] = []

    def __call__(self, *args: str, code: int | None = 0, env: dict | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "ingest", *args],
            cwd=self.tmp,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.outputs.append((f"ingest {' '.join(args)} (stdout)", result.stdout))
        self.outputs.append((f"ingest {' '.join(args)} (stderr)", result.stderr))
        if code is not None:
            assert result.returncode == code, f"ingest {' '.join(args)} exited {result.returncode}\n{result.stderr}"
        return result

    @property
    def manifest(self) -> Path:
        return self.state / "ingest" / "manifest.db"

    def state_files(self) -> list[Path]:
        return [
            p for base in (self.state, self.tmp / "xdg-config") if base.exists() for p in base.rglob("*") if p.is_file()
        ]


@pytest.fixture
def docs(tmp_path) -> Path:
    root = tmp_path / "docs"
    (root / "guides").mkdir(parents=True)
    (root / "guides" / "install.md").write_text("# Install\n\nRun the zebrafish installer.\n")
    (root / "guides" / "usage.txt").write_text("Usage: the quokka command prints a summary.\n")
    (root / "notes.py").write_text("def axolotl():\n    return 'regenerates'\n")
    for i in range(7):
        (root / f"memo{i}.md").write_text(f"memo {i} about the capybara\n")
    return root


def leaks(text: str) -> bool:
    return any(part in text for part in SECRET_PARTS)


def test_the_api_key_appears_in_no_output_log_or_file(tmp_path, emu, docs):
    tool = Tool(tmp_path, emu)
    first = tool("-vv", "sync", str(docs))
    assert "HTTP Request: POST" in first.stderr, "-vv must really log the requests for this test to mean much"
    tool("-vv", "sync", str(docs), "--json")
    tool("-vv", "sync", str(docs), "--dry-run", env={"OPENAI_LOG": "debug"})  # the SDK's own debug log too
    tool("-vv", "status")
    tool("-vv", "status", "--json")
    tool("-vv", "search", "zebrafish installer")
    tool("-vv", "search", "capybara", "--json", "--filter", "ext=md")
    # A daemon pass: writes daemon.json and logs as a service would.
    watch = subprocess.Popen(
        [sys.executable, "-m", "ingest", "-vv", "watch", str(docs), "--settle", "0.1", "--log-format", "json"],
        cwd=tmp_path,
        env=tool.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    heartbeat = tool.state / "ingest" / "daemon.json"
    deadline = time.monotonic() + 120
    while not heartbeat.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    watch.send_signal(signal.SIGTERM)
    out, err = watch.communicate(timeout=30)
    tool.outputs += [("watch (stdout)", out), ("watch (stderr)", err)]
    assert heartbeat.exists(), "the daemon wrote no heartbeat"

    # The key is refused: every command's error, with and without a traceback.
    emu.configure(rejected_keys={KEY})
    (docs / "memo0.md").write_text("memo 0, edited: a pass with nothing to do would make no remote call\n")
    refused = tool("-vv", "sync", str(docs), code=2)
    assert "refused the API key" in refused.stderr
    tool("-vv", "sync", str(docs), "--json", code=2)
    tool("-vv", "search", "zebrafish", code=2)
    tool("-vv", "status", code=None)
    debug = tool("-vv", "sync", str(docs), code=2, env={"INGEST_DEBUG": "1"})
    assert "Traceback" in debug.stderr, "INGEST_DEBUG=1 shows the traceback (and it must not carry the key)"

    for what, text in tool.outputs:
        assert not leaks(text), f"the API key leaked into {what}"
    files = tool.state_files()
    assert tool.manifest in files and heartbeat in files
    for path in files:
        assert not leaks(path.read_bytes().decode("latin-1")), f"the API key leaked into {path}"

    state_dir = tool.state / "ingest"
    assert state_dir.stat().st_mode & 0o777 == 0o700
    assert tool.manifest.stat().st_mode & 0o777 == 0o600
    for extra in ("-wal", "-shm", ".lock"):
        path = Path(str(tool.manifest) + extra)
        if path.exists():
            assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"


def test_symlinks_out_of_the_root_are_never_uploaded(tmp_path, emu, docs):
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "passwords.txt").write_text("root password: wallaby-correct-horse\n")
    (outside / "nested").mkdir()
    (outside / "nested" / "id_rsa.md").write_text("-----BEGIN wallaby KEY-----\n")
    os.symlink(outside / "passwords.txt", docs / "innocent.txt")
    os.symlink(outside, docs / "shared")
    os.symlink("../../private/passwords.txt", docs / "guides" / "relative.md")
    tool = Tool(tmp_path, emu)
    report = tool("sync", str(docs), "--json")
    assert '"symlink points outside the root: not followed"' in report.stdout
    for f in emu.files():
        assert b"wallaby" not in emu.file_bytes(f["id"]), f"{f['filename']} came from outside the root"
    assert {"passwords.txt", "id_rsa.md", "innocent.txt", "relative.md"}.isdisjoint(f["filename"] for f in emu.files())


def test_only_files_the_tool_created_are_ever_deleted(tmp_path, emu, docs):
    tool = Tool(tmp_path, emu)
    # Another app's files with our documents' names: one of another size, one of the same size but old.
    foreign_other_size = emu.create_file("install.md", b"another app's install notes, a lot longer than ours are\n")
    same = (docs / "guides" / "usage.txt").read_bytes()
    foreign_old_twin = emu.create_file("usage.txt", b"x" * len(same))
    emu.state.files[foreign_old_twin].created_at -= 3600  # uploaded an hour before any run of ours
    foreign_unrelated = emu.create_file("budget.pdf", b"%PDF-1.4 not ours")
    tool("sync", str(docs))
    store = emu.stores()[0]["id"]
    stray = emu.add_stray_file(store, "notes.py", b"def stray(): pass\n", attributes={"path": "notes.py"})

    # Edits, a delete and a rename, with upload replies lost so the duplicate sweep has suspects to match.
    (docs / "guides" / "install.md").write_text("# Install v2\n\nzebrafish, now with more steps.\n")
    (docs / "guides" / "usage.txt").unlink()
    (docs / "notes.py").rename(docs / "renamed.py")
    (docs / "extra.md").write_text("a new page about the ocelot\n")
    emu.lose_next_replies(2)
    report = tool("sync", str(docs), "--json")
    assert '"duplicates_removed": 2' in report.stdout, report.stdout
    (docs / "renamed.py").unlink()
    tool("sync", str(docs))

    alive = {f["id"] for f in emu.files()}
    for planted in (foreign_other_size, foreign_old_twin, foreign_unrelated, stray):
        assert planted in alive, f"ingest deleted {planted}, a file it did not create"
    assert stray in {sf["id"] for sf in emu.store_files(store)}, "the stray store file was detached"
    paths = {p.relative_to(docs).as_posix() for p in docs.rglob("*") if p.is_file()}
    result = audit(
        emu.snapshot(),
        tool.manifest,
        {str(docs): paths},
        foreign={foreign_other_size, foreign_old_twin, foreign_unrelated, stray},
    )
    assert result.clean, result.summary()


@pytest.mark.xfail(
    strict=True,
    reason="known limit of the lost-reply sweep: another app's file with the same name "
    "and size, created in the same second (server clock) as one of our uploads whose reply "
    "was lost, cannot be told apart from our duplicate (the Files API gives no content hash)",
)
def test_a_same_second_same_name_same_size_foreign_file_survives_the_sweep(tmp_path, emu, docs):
    tool = Tool(tmp_path, emu)
    tool("sync", str(docs))
    # Every File the server makes from here on reports the same second: the twin and our lost copy are
    # simultaneous on the server's clock, whatever the machine's speed.
    emu.configure(files_created_at=int(time.time()))
    (docs / "guides" / "install.md").write_text("# Install v2\n")
    twin = emu.create_file("install.md", b"x" * len("# Install v2\n"))
    emu.lose_next_replies(1)
    tool("sync", str(docs))
    assert twin in {f["id"] for f in emu.files()}


def test_an_unmounted_share_deletes_nothing(tmp_path, emu, docs):
    tool = Tool(tmp_path, emu)
    (tmp_path / "ingest.toml").write_text(f'request_timeout = 5\nindex_timeout = 30\n\n[[roots]]\npath = "{docs}"\n')
    tool("sync")
    files_before = {f["id"] for f in emu.files()}
    assert len(files_before) == 10

    def unchanged_remote(report: subprocess.CompletedProcess, why: str) -> None:
        assert {f["id"] for f in emu.files()} == files_before, f"remote files were deleted ({why})"
        assert emu.counters()["requests"].get("DELETE /files/{file_id}", 0) == 0
        assert "held back" in report.stdout and why in report.stdout, report.stdout
        m = Manifest(tool.manifest)
        try:
            assert len(m.rows()) == 10, "the manifest forgot documents it still has remotely"
        finally:
            m.close()

    moved = tmp_path / "unmounted"
    docs.rename(moved)  # the share is gone: the mount point itself is missing
    unchanged_remote(tool("sync", code=None), "missing or not mounted")
    docs.mkdir()  # an empty mount point: the share is not mounted on it
    unchanged_remote(tool("sync", code=None), "is the share mounted?")
    (docs / "memo0.md").write_text("memo 0 about the capybara\n")  # a half-mounted share: 1 of 10
    unchanged_remote(tool("sync", code=None), "--allow-mass-delete")
    (docs / "memo0.md").unlink()
    docs.rmdir()
    moved.rename(docs)  # mounted again: nothing to do
    counts = json.loads(tool("sync", "--json").stdout)["counts"]
    # memo0.md is back with its old mtime (the half-mounted run had recorded the copy's): an attribute update
    assert (counts["unchanged"], counts["attributes"], counts["uploaded"]) == (9, 1, 0), counts
    assert {f["id"] for f in emu.files()} == files_before


def test_a_same_name_same_size_file_from_minutes_earlier_survives_the_sweep(tmp_path, emu, docs):
    tool = Tool(tmp_path, emu)
    tool("sync", str(docs))
    twin = emu.create_file("install.md", b"x" * len("# Install v2\n"))
    emu.advance_time(120)  # the other app's upload is two minutes older than ours
    (docs / "guides" / "install.md").write_text("# Install v2\n")
    emu.lose_next_replies(1)
    tool("sync", str(docs))
    ids = {f["id"] for f in emu.files()}
    assert twin in ids
    assert len([f for f in emu.files() if f["filename"] == "install.md"]) == 2  # the twin and ours, no duplicate
