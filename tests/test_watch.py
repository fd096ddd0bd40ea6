"""`ingest watch` as a real process on the embedded store: events, settle, signals, metrics, vanished roots."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from ingest.lock import ManifestLock
from ingest.manifest import INDEXED, FileRow, Manifest
from ingest.remote.local import LocalRemote
from tests.helpers import manifest_rows

T = TypeVar("T")
SETTLE = "0.3"
MODES = {"events": (), "polling": ("--polling", "--poll-interval", "0.3")}
TEMPORARIES = ("~$doc.docx", "x.tmp", "y.part", "z.crdownload", ".~lock.a.odt#", ".hidden.txt", "a.swp")


def until(condition: Callable[[], T], what: str, timeout: float = 90.0, log: Callable[[], str] = str) -> T:
    """Poll until condition() is truthy and return it; fail naming what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{log()}")
        time.sleep(0.05)


class Daemon:
    """One `ingest watch` process, with views of what it wrote."""

    def __init__(self, proc: subprocess.Popen, log_path: Path, state_dir: Path):
        self.proc, self.log_path, self.state_dir = proc, log_path, state_dir

    def log(self) -> str:
        return f"--- ingest watch log ---\n{self.log_path.read_text(errors='replace')}"

    def until(self, condition: Callable[[], T], what: str, timeout: float = 90.0) -> T:
        return until(condition, what, timeout, self.log)

    def rows(self) -> dict[str, FileRow]:
        return manifest_rows(self.state_dir)

    def row_where(self, path: str, test: Callable[[FileRow], bool], what: str) -> FileRow:
        return self.until(lambda: (row := self.rows().get(path)) is not None and test(row) and row, what)

    def heartbeat(self) -> dict:
        try:
            return json.loads((self.state_dir / "local" / "daemon.json").read_text())
        except (OSError, ValueError):
            return {}

    def metrics_port(self) -> int:
        """The port the daemon was given by the kernel for --metrics-port 0, from its log."""
        found = self.until(
            lambda: re.search(r"serving /metrics and /healthz on 127\.0\.0\.1:(\d+)", self.log_path.read_text()),
            "the metrics server to start",
        )
        return int(found.group(1))

    def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def uploads_of(state_dir: Path, path: str) -> list[dict]:
    m = Manifest(state_dir / "local" / "manifest.db")
    try:
        return list(m.db.query("select * from uploads where path = ?", [path]))
    finally:
        m.close()


def remote_files(state_dir: Path) -> dict[str, str]:
    """file id → filename of every file in the embedded store."""
    remote = LocalRemote(state_dir / "local" / "store")
    try:
        return {f.id: f.filename for f in remote.list_files()}
    finally:
        remote.close()


def indexed(row: FileRow) -> bool:
    return row.state == INDEXED and row.old_file_id is None


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def start_watch(root: Path, log_path: Path, *args: str, settle: str = SETTLE) -> subprocess.Popen:
    """`ingest watch ROOT --settle S …` in a process of its own, its log (stderr) in log_path."""
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "ingest", "watch", str(root), "--settle", settle, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


@pytest.fixture
def watch(state_dir, tmp_path):
    """Starts `ingest watch ROOT …` and waits for its first full sync; every daemon is killed at teardown."""
    started: list[Daemon] = []

    def start(root: Path, *args: str, settle: str = SETTLE, first: str = "full sync:") -> Daemon:
        log_path = tmp_path / f"watch-{len(started)}.log"
        proc = start_watch(root, log_path, *args, settle=settle)
        daemon = Daemon(proc, log_path, state_dir)
        started.append(daemon)
        daemon.until(lambda: first in daemon.log() or proc.poll() is not None, f"{first!r} in the log")
        assert proc.poll() is None, f"ingest watch exited with {proc.returncode}\n{daemon.log()}"
        return daemon

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


@pytest.mark.parametrize("mode", MODES)
def test_creates_edits_renames_deletes_and_folder_moves_are_synced(watch, docs_root, state_dir, tmp_path, mode):
    (docs_root / "archive").mkdir()
    (docs_root / "archive" / "2019.txt").write_text("Minutes of 2019: the pelican budget.\n")
    (docs_root / "archive" / "2020.txt").write_text("Minutes of 2020: the heron budget.\n")
    daemon = watch(docs_root, *MODES[mode])
    start = daemon.rows()
    assert sorted(start) == [
        "archive/2019.txt",
        "archive/2020.txt",
        "faq.html",
        "guides/install.md",
        "guides/usage.txt",
        "notes.py",
    ]
    assert all(indexed(r) and r.file_id for r in start.values()), "the first full sync indexes what exists"

    (docs_root / "new.md").write_text("# New\n\nThe ocelot chapter.\n")
    daemon.row_where("new.md", indexed, "a created file to be indexed")

    (docs_root / "guides" / "usage.txt").write_text("Usage notes: the platypus command replaced quokka.\n")
    old = start["guides/usage.txt"]
    edited = daemon.row_where(
        "guides/usage.txt",
        lambda r: indexed(r) and r.sha256 != old.sha256,
        "an edited file's new version to be indexed",
    )
    assert edited.file_id != old.file_id
    daemon.until(lambda: old.file_id not in remote_files(state_dir), "the old version to be deleted")

    (docs_root / "notes.py").rename(docs_root / "renamed.py")
    moved = daemon.row_where("renamed.py", indexed, "a renamed file to be recorded at its new path")
    assert moved.file_id == start["notes.py"].file_id, "a rename is a move, not an upload"
    assert "notes.py" not in daemon.rows()

    (docs_root / "faq.html").unlink()
    daemon.until(lambda: "faq.html" not in daemon.rows(), "a deleted file's row to go")
    daemon.until(lambda: start["faq.html"].file_id not in remote_files(state_dir), "its remote file to go")

    (docs_root / "guides").rename(docs_root / "manuals")
    daemon.until(
        lambda: {"manuals/install.md", "manuals/usage.txt"} <= set(daemon.rows()),
        "a folder moved within the root to be recorded at its new path",
    )
    rows = daemon.rows()
    assert not any(p.startswith("guides/") for p in rows)
    assert rows["manuals/install.md"].file_id == start["guides/install.md"].file_id
    assert rows["manuals/usage.txt"].file_id == edited.file_id

    outside = tmp_path / "outside"
    outside.mkdir()
    (docs_root / "archive").rename(outside / "archive")
    daemon.until(
        lambda: not any(p.startswith("archive/") for p in daemon.rows()),
        "a folder moved out of the root to have its rows deleted",
    )

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "a.txt").write_text("The incoming alpaca memo.\n")
    (incoming / "b.md").write_text("# The incoming bison memo\n")
    incoming.rename(docs_root / "incoming")
    daemon.until(
        lambda: all(p in (rows := daemon.rows()) and indexed(rows[p]) for p in ("incoming/a.txt", "incoming/b.md")),
        "a folder moved in from outside to be indexed",
    )
    assert sorted(daemon.rows()) == [
        "incoming/a.txt",
        "incoming/b.md",
        "manuals/install.md",
        "manuals/usage.txt",
        "new.md",
        "renamed.py",
    ]
    assert daemon.terminate() == 0


@pytest.mark.parametrize("mode", MODES)
def test_temporaries_are_ignored_and_a_save_by_rename_is_a_change(watch, docs_root, mode):
    (docs_root / "doc.txt").write_text("First draft about the marmot.\n")
    daemon = watch(docs_root, *MODES[mode])
    before = daemon.rows()["doc.txt"]

    for name in TEMPORARIES:
        (docs_root / name).write_text("scratch\n")
    (docs_root / "guides" / "x.tmp").write_text("scratch\n")
    # An editor's save: write a hidden swap file, then rename it over the document.
    (docs_root / ".doc.txt.swp").write_text("Second draft about the wombat.\n")
    os.replace(docs_root / ".doc.txt.swp", docs_root / "doc.txt")
    (docs_root / "sentinel.txt").write_text("written after the temporaries\n")

    after = daemon.row_where(
        "doc.txt", lambda r: indexed(r) and r.sha256 != before.sha256, "a save-by-rename to count as a change"
    )
    assert after.file_id != before.file_id
    daemon.row_where("sentinel.txt", indexed, "the file written after the temporaries")
    names = {p.rsplit("/", 1)[-1] for p in daemon.rows()}
    assert not names & set(TEMPORARIES), "temporaries must never reach the manifest"
    assert ".doc.txt.swp" not in names


@pytest.mark.parametrize("mode", MODES)
def test_a_file_written_slowly_is_uploaded_once_and_whole(watch, docs_root, state_dir, ingest, mode):
    daemon = watch(docs_root, *MODES[mode], settle="2")  # ten times the writer's pauses: room for a busy machine
    target = docs_root / "guides" / "slow.txt"  # in a folder: the folder's own events must wait for it too
    with open(target, "w") as fh:
        for n in range(5):
            fh.write(f"Piece {n} of the report on harbour seals.\n")
            fh.flush()
            time.sleep(0.1)  # the slow writer under test, not a wait for an outcome
        fh.write("The last piece names the manatee.\n")
    daemon.row_where("guides/slow.txt", indexed, "the slowly written file to be indexed")

    assert len(uploads_of(state_dir, "guides/slow.txt")) == 1, "uploaded exactly once"
    assert list(remote_files(state_dir).values()).count("slow.txt") == 1
    hits = ingest.json("search", "manatee")
    assert hits and hits[0]["path"].endswith("guides/slow.txt"), "its indexed text is the whole file"


def test_the_json_log_names_each_file_acted_on_and_why(watch, docs_root):
    (docs_root / "binary.txt").write_bytes(b"\x7fELF\x00\x01" * 100)
    daemon = watch(docs_root, "--log-format", "json")

    def lines() -> list[dict]:
        return [json.loads(line) for line in daemon.log_path.read_text().splitlines() if line.startswith("{")]

    rejected = daemon.until(
        lambda: next((e for e in lines() if e.get("action") == "rejected"), None), "the rejection in the log"
    )
    assert rejected["path"] == "binary.txt" and rejected["root"] == str(docs_root) and rejected["reason"]
    assert rejected["level"] == "warning" and rejected["store"] == "docs"
    uploaded = {e["path"]: e for e in lines() if e.get("action") == "uploaded"}
    assert set(uploaded) == {"guides/install.md", "guides/usage.txt", "faq.html", "notes.py"}
    assert all(e["level"] == "info" and e["file_id"] for e in uploaded.values())
    (docs_root / "faq.html").unlink()
    deleted = daemon.until(
        lambda: next((e for e in lines() if e.get("action") == "deleted"), None), "the deletion in the log"
    )
    assert deleted["path"] == "faq.html" and deleted["file_id"] == uploaded["faq.html"]["file_id"]


def test_status_metrics_and_healthz_while_running_and_sigterm_stops_cleanly(watch, docs_root, state_dir, ingest):
    daemon_started = time.time()
    daemon = watch(docs_root, "--metrics-port", "0")
    port = daemon.metrics_port()
    status, body = until(
        lambda: (r := http_get(f"http://127.0.0.1:{port}/healthz"))[0] == 200 and r,
        "/healthz to answer 200 once synced",
        log=daemon.log,
    )
    assert json.loads(body)["ok"] is True
    status, metrics = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200 and 'ingest_files{state="indexed"} 4.0' in metrics
    assert "ingest_uploads_total 4.0" in metrics and "ingest_queue_depth" in metrics
    assert http_get(f"http://127.0.0.1:{port}/nothing")[0] == 404

    shown = daemon.until(lambda: (d := ingest.json("status")["daemon"]) and d, "the heartbeat file")
    assert shown["running"] is True and shown["pid"] == daemon.proc.pid
    assert shown["heartbeat_at"] > daemon_started and shown["mode"] == {str(docs_root): "events"}
    assert shown["metrics_port"] == port
    assert "daemon: running (pid" in ingest("status").stdout

    assert daemon.terminate() == 0, "SIGTERM ends the daemon with exit 0"
    assert daemon.heartbeat()["stopped"] is True
    assert ingest.json("status")["daemon"]["running"] is False
    assert "stopped" in daemon.log()


@pytest.mark.parametrize("mode", MODES)
def test_a_vanished_root_deletes_nothing_and_changes_meanwhile_sync_when_it_returns(
    watch, docs_root, state_dir, tmp_path, mode
):
    daemon = watch(docs_root, *MODES[mode], "--metrics-port", "0")
    port = daemon.metrics_port()
    before = daemon.rows()
    away = tmp_path / "unmounted"
    docs_root.rename(away)
    daemon.until(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 503, "/healthz to report the missing root")
    changed_at = time.time()
    (away / "faq.html").unlink()
    (away / "guides" / "usage.txt").write_text("Usage notes: written while the share was away.\n")
    (away / "late.txt").write_text("A document added while the share was away.\n")
    # Two heartbeats after the changes (plus settle) show the loop kept running without touching anything.
    daemon.until(lambda: daemon.heartbeat().get("heartbeat_at", 0) > changed_at + 2.5, "a later heartbeat")
    assert daemon.heartbeat()["root_missing"] == str(docs_root)
    assert daemon.rows() == before, "nothing is deleted or changed while the root is missing"

    away.rename(docs_root)
    daemon.until(
        lambda: (
            "faq.html" not in (rows := daemon.rows())
            and "late.txt" in rows
            and indexed(rows["late.txt"])
            and rows["guides/usage.txt"].sha256 != before["guides/usage.txt"].sha256
            and indexed(rows["guides/usage.txt"])
        ),
        "the changes made while the root was away to be synced",
    )
    daemon.until(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, "/healthz to recover")


def test_one_vanished_root_pauses_only_itself(watch, docs_root, state_dir, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "kept.txt").write_text("A note in the second root.\n")
    daemon = watch(docs_root, other)
    before = {p: r for p, r in daemon.rows().items() if r.root == str(docs_root)}
    away = tmp_path / "unmounted"
    docs_root.rename(away)
    daemon.until(lambda: daemon.heartbeat().get("root_missing") == str(docs_root), "the missing root noticed")
    (away / "late.txt").write_text("Added while the share was away.\n")
    (other / "fresh.txt").write_text("Added to the root that stayed.\n")
    daemon.row_where("fresh.txt", indexed, "the root that stayed to go on syncing")
    assert {p: r for p, r in daemon.rows().items() if r.root == str(docs_root)} == before, (
        "nothing of the missing root is deleted or changed"
    )

    away.rename(docs_root)
    daemon.row_where("late.txt", indexed, "the returned root's changes to be synced")
    assert set(daemon.rows()) >= set(before) | {"kept.txt", "fresh.txt"}
    assert daemon.terminate() == 0


def test_sync_runs_beside_an_idle_daemon_and_the_daemon_queues_behind_a_held_lock(watch, docs_root, state_dir, ingest):
    daemon = watch(docs_root)
    report = ingest.json("sync", str(docs_root))
    assert report["exit_code"] == 0 and report["counts"]["unchanged"] == 4, "an idle daemon holds no lock"

    lock = ManifestLock(state_dir / "local" / "manifest.db", "sync").acquire()
    try:
        (docs_root / "queued.txt").write_text("Written while another ingest held the manifest.\n")
        daemon.until(lambda: "waiting for the manifest" in daemon.log(), "the daemon's pass to queue for the lock")
        assert "queued.txt" not in daemon.rows() and daemon.proc.poll() is None
    finally:
        lock.release()
    daemon.row_where("queued.txt", indexed, "the queued change to be synced once the lock is free")


def test_sync_during_a_watch_pass_names_the_daemon_and_wait_queues_behind_it(ingest, docs_root, state_dir):
    ingest("sync", str(docs_root))
    lock = ManifestLock(state_dir / "local" / "manifest.db", "watch").acquire()
    try:
        result = ingest("sync", str(docs_root), check=1)
        assert "in use by 'ingest watch'" in result.stderr and "--wait" in result.stderr
        waiting = subprocess.Popen(
            [sys.executable, "-m", "ingest", "sync", str(docs_root), "--wait", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                waiting.wait(timeout=1.5)  # still queued while the pass holds the manifest
        except BaseException:
            waiting.kill()
            raise
    finally:
        lock.release()
    out, err = waiting.communicate(timeout=20)
    assert waiting.returncode == 0, err
    assert json.loads(out)["counts"]["unchanged"] == 4


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def mounts(tmp_path):
    """Mounts made by a test, undone at teardown; skips the test where mounting is not permitted."""
    made: list[Path] = []
    probe = tmp_path / "probe"
    probe.mkdir()
    if os.geteuid() != 0 or not _mount("-t", "tmpfs", "tmpfs", str(probe)):
        pytest.skip("needs permission to mount a tmpfs (run as root)")
    subprocess.run(["umount", str(probe)], check=True)

    def mount(*args: str) -> None:
        assert _mount(*args), f"mount {' '.join(args)} failed"
        made.append(Path(args[-1]))

    yield mount
    for point in reversed(made):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_an_unmounted_share_deletes_nothing_and_a_share_mounted_late_is_synced(watch, mounts, tmp_path, state_dir):
    share = tmp_path / "share"  # the mount point: an empty folder until something is mounted on it
    share.mkdir()
    daemon = watch(share)
    assert daemon.rows() == {}

    first = tmp_path / "first"
    first.mkdir()
    mounts("-t", "tmpfs", "tmpfs", str(first))
    (first / "a.txt").write_text("The share's alpha memo.\n")
    (first / "b.txt").write_text("The share's beta memo.\n")
    mounts("--bind", str(first), str(share))  # the share appears with its documents at once
    daemon.until(
        lambda: len(rows := daemon.rows()) == 2 and all(indexed(r) for r in rows.values()),
        "a share mounted after the daemon started to be synced",
    )
    before = daemon.rows()

    subprocess.run(["umount", str(share)], check=True)
    unmounted_at = time.time()
    daemon.until(
        lambda: (
            daemon.heartbeat().get("root_missing") == str(share)
            and daemon.heartbeat()["heartbeat_at"] > unmounted_at + 1
        ),
        "the heartbeat to report the unmounted share",
    )
    assert daemon.rows() == before, "an unmounted share deletes nothing"

    second = tmp_path / "second"  # the share comes back on another device, changed meanwhile
    second.mkdir()
    mounts("-t", "tmpfs", "tmpfs", str(second))
    (second / "a.txt").write_text("The share's alpha memo.\n")
    (second / "c.txt").write_text("The share's gamma memo.\n")
    mounts("--bind", str(second), str(share))
    daemon.until(
        lambda: sorted(rows := daemon.rows()) == ["a.txt", "c.txt"] and indexed(rows["c.txt"]),
        "the changes on the remounted share to be synced",
    )
    assert daemon.rows()["a.txt"].file_id == before["a.txt"].file_id


def test_a_root_missing_at_start_is_said_once_and_synced_when_it_appears(watch, tmp_path):
    later = tmp_path / "later"  # never existed when the daemon started: a share mounted after it
    daemon = watch(later, first="later is missing or not mounted; waiting for it")
    daemon.until(lambda: daemon.heartbeat().get("roots_missing") == [str(later)], "the missing root checked")
    later.mkdir()
    (later / "a.txt").write_text("The late folder's memo.\n")
    daemon.until(
        lambda: (row := daemon.rows().get("a.txt")) is not None and indexed(row),
        "the folder that appeared to be synced",
    )
    assert "vanished" not in daemon.log(), "a folder that never was there is not reported as vanished"
    assert daemon.log().count("later is missing or not mounted") == 1


def test_an_inotify_overflow_triggers_a_full_rescan(state_dir, docs_root):
    from ingest.configfile import load
    from ingest.engine import Report
    from ingest.watch import Watcher, WatchOptions

    calls: list = []
    stop = threading.Event()
    watcher = Watcher(
        load(None).with_paths([docs_root]),
        lambda scopes: calls.append(scopes) or Report(),
        WatchOptions(settle=0.1, tick=0.05),
        stop,
    )
    thread = threading.Thread(target=watcher.run)
    thread.start()
    try:
        until(lambda: calls == [None], "the first full sync")
        # A real overflow needs the system-wide inotify queue limit lowered; watchdog's warning is what we hear.
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost"
        )
        until(lambda: calls == [None, None], "a full rescan after the overflow")
    finally:
        stop.set()
        thread.join(10)


def test_watch_sync_and_reindex_started_together_take_turns_and_the_manifest_agrees(
    watch, docs_root, state_dir, ingest
):
    daemon = watch(docs_root)
    writer_done = threading.Event()

    def write_stream() -> None:  # keeps the daemon's passes coming while the others start
        for i in range(24):
            (docs_root / "stream" / f"s{i:02}.txt").write_text(f"Streamed note {i} about the quokka.\n")
            time.sleep(0.05)
        (docs_root / "guides" / "install.md").unlink()
        writer_done.set()

    (docs_root / "stream").mkdir()
    writer = threading.Thread(target=write_stream)
    writer.start()
    command = [sys.executable, "-m", "ingest"]
    procs = {
        name: subprocess.Popen(command + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, args in {
            "sync --wait": ["sync", str(docs_root), "--wait"],
            "reindex --wait": ["reindex", "--wait"],
            "sync": ["sync", str(docs_root)],
        }.items()
    }
    writer.join()
    results = {name: (p.wait(timeout=60), *p.communicate()) for name, p in procs.items()}
    for name in ("sync --wait", "reindex --wait"):
        assert results[name][0] == 0, f"{name}: {results[name]}"
    code, _, err = results["sync"]
    assert code == 0 or (code == 1 and "in use by 'ingest" in err and "--wait" in err), results["sync"]

    on_disk = {p.relative_to(docs_root).as_posix() for p in docs_root.rglob("*") if p.is_file()}
    daemon.until(
        lambda: set(daemon.rows()) == on_disk and all(map(indexed, daemon.rows().values())),
        "the daemon and the others together to have synced every file",
        timeout=30,
    )
    assert daemon.terminate() == 0
    rows = manifest_rows(state_dir)
    assert sorted(r.file_id for r in rows.values()) == sorted(remote_files(state_dir)), (
        "every remote file is one manifest row's, once: nothing duplicated, nothing orphaned"
    )
    assert ingest("verify").exit_code == 0


def test_the_daemon_log_has_no_line_per_http_request(fake_openai, docs_root, tmp_path, monkeypatch, state_dir):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key-0123456789")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    log_path = tmp_path / "watch.log"
    proc = start_watch(docs_root, log_path)
    try:
        until(lambda: "full sync:" in log_path.read_text(), "the first full sync", log=log_path.read_text)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    text = log_path.read_text()
    assert sum(fake_openai.counters()["requests"].values()) > 5 and "HTTP Request" not in text, text


def test_healthz_counts_a_file_failing_pass_after_pass_once(state_dir, docs_root):
    from ingest.configfile import load
    from ingest.events import FAILED, FAILED_EARLIER, UPLOADED, FileEvent, Report
    from ingest.watch import Watcher, WatchOptions

    unreadable = FileEvent("secret.md", str(docs_root), FAILED, "docs", None, "cannot read: permission denied")
    reports = iter(
        [
            Report(events=[unreadable]),  # the full sync
            Report(events=[unreadable]),  # the hourly rescan, the same failure again
            Report(events=[unreadable, FileEvent("b.md", str(docs_root), FAILED, "docs", None, "indexing failed")]),
            Report(events=[FileEvent("b.md", str(docs_root), UPLOADED, "docs", "file-2")]),  # b.md indexed now
            Report(events=[FileEvent("secret.md", str(docs_root), FAILED_EARLIER, "docs")]),  # a rescan: not failing
        ]
    )
    watcher = Watcher(
        load(None).with_paths([docs_root]), lambda scopes: next(reports), WatchOptions(), threading.Event()
    )
    seen = []
    for scopes in (None, None, {str(docs_root): {"b.md"}}, {str(docs_root): {"b.md"}}, None):
        watcher._run(scopes)
        seen.append((watcher.health["failures"], watcher.health["last_error"]))
    assert seen == [
        (1, "1 file failed"),
        (1, "1 file failed"),
        (2, "2 files failed"),
        (1, "2 files failed"),
        (0, "2 files failed"),
    ], "one failure per file failing now; last_error says what the last failing pass saw"
    assert watcher.health["failed_passes"] == 3 and watcher.health["last_success_at"] is not None


def test_an_edited_config_file_is_said_once_and_the_daemon_goes_on_with_the_settings_it_read(
    watch, docs_root, tmp_path
):
    config = tmp_path / "ingest.toml"  # ./ingest.toml: the daemon's working folder is tmp_path
    config.write_text("index_timeout = 600\n")
    daemon = watch(docs_root)
    first = daemon.until(lambda: (beat := daemon.heartbeat()) and "config_changed" in beat and beat, "a heartbeat")
    assert first["config_changed"] is False
    config.write_text("index_timeout = 300\nupload_concurrency = 4\n")
    daemon.until(lambda: daemon.heartbeat().get("config_changed") is True, "the edit to show in the heartbeat")
    log = daemon.log()
    assert f"the config file {config} changed since this daemon started" in log
    assert "restart it to apply the change" in log
    (docs_root / "later.txt").write_text("Written after the edit: still synced.\n")
    daemon.row_where("later.txt", indexed, "the file to be synced")
    assert daemon.log().count("changed since this daemon started") == 1, "said once, not every heartbeat"
