"""A server that goes away mid-run: the run ends at once saying so, no file is marked failed for it, and
the next run (or the daemon's next pass) does what was left once the server is back."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx2
import pytest

from ingest.manifest import FAILED, INDEXED
from tests.emulator import Emulator
from tests.helpers import manifest_rows
from tests.test_watch import start_watch, until

UPLOADS = "POST /files"
FILES = 120
GONE_AT = 20  # the server goes away as this upload arrives


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "many"
    root.mkdir()
    for i in range(FILES):
        (root / f"doc-{i:03}.md").write_text(f"document {i} about the pangolin\n")
    return root


@pytest.fixture
def sent_after_outage(monkeypatch, fake_openai: Emulator):
    """The server stops as upload GONE_AT arrives; what is returned counts the uploads sent from then on."""
    gone = threading.Event()
    sent = [0]
    send = httpx2.Client.send

    def counted(self, request, *args, **kwargs):
        if gone.is_set() and request.method == "POST" and request.url.path.endswith("/files"):
            sent[0] += 1
        return send(self, request, *args, **kwargs)

    def go_away() -> None:
        gone.set()
        fake_openai.stop()  # connections refused from now on; the one arriving is dropped

    monkeypatch.setattr(httpx2.Client, "send", counted)
    fake_openai.when(UPLOADS, GONE_AT, go_away)
    return sent


def test_a_server_gone_mid_sync_ends_it_at_once_and_the_next_sync_does_the_rest(
    openai_cli, fake_openai, folder, state_dir, sent_after_outage
):
    url = fake_openai.base_url
    report = openai_cli.json("sync", str(folder), check=1)
    # Each file left would otherwise be tried with all its retries: hundreds of uploads into the void.
    assert sent_after_outage[0] <= 16, f"{sent_after_outage[0]} uploads sent after the server went away"
    assert report["unreachable"].startswith(f"the server at {url}/ stopped answering ("), report["unreachable"]
    assert report["failed"] == [] and report["counts"]["failed"] == 0
    assert FILES - GONE_AT <= report["counts"]["left"] <= FILES
    assert not [row for row in manifest_rows(state_dir, "openai").values() if row.state == FAILED]
    summary = openai_cli("sync", str(folder), check=1)  # still away: said the same way, in words
    assert f"the server at {url}/ stopped answering (connection refused)" in summary.stdout, summary.stdout
    assert not [row for row in manifest_rows(state_dir, "openai").values() if row.state == FAILED]

    fake_openai.start()  # back, at the same address
    report = openai_cli.json("sync", str(folder))
    assert "unreachable" not in report and report["counts"]["failed"] == 0
    rows = manifest_rows(state_dir, "openai")
    assert len(rows) == FILES and {row.state for row in rows.values()} == {INDEXED}
    assert len({f["filename"] for f in fake_openai.files()}) == FILES


def test_the_daemon_says_once_a_pass_that_the_server_is_away_and_syncs_once_it_is_back(
    fake_openai, folder, tmp_path, monkeypatch, state_dir
):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key-0123456789")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    fake_openai.when(UPLOADS, GONE_AT, fake_openai.stop)
    log_path = tmp_path / "watch.log"
    proc = start_watch(folder, log_path)
    try:
        until(lambda: "stopped answering" in log_path.read_text(), "the pass cut short", log=log_path.read_text)
        first = log_path.read_text()
        assert first.count("stopped answering") == 1 and "left" in first, first
        assert not [row for row in manifest_rows(state_dir, "openai").values() if row.state == FAILED]
        fake_openai.start()
        until(
            lambda: (
                len(rows := manifest_rows(state_dir, "openai")) == FILES
                and all(row.state == INDEXED for row in rows.values())
            ),
            "every file indexed once the server is back",
            log=log_path.read_text,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    text = log_path.read_text()
    assert "upload failed" not in text, text


def test_only_failures_in_a_row_with_no_answer_between_trip_the_breaker():
    from ingest.remote.breaker import MIN_IN_A_ROW, Breaker

    stop = threading.Event()
    breaker = Breaker("http://server/v1/", stop, MIN_IN_A_ROW + 1)
    for _ in range(MIN_IN_A_ROW):
        breaker.failed("connection refused")
    breaker.answered()  # the server is there after all
    for _ in range(MIN_IN_A_ROW):
        breaker.failed("connection reset by peer")
    assert not breaker.tripped and not stop.is_set()
    breaker.failed("connection refused")
    assert breaker.tripped and stop.is_set() and breaker.ended_the_run()
    assert breaker.sentence() == (
        "the server at http://server/v1/ stopped answering (connection reset by peer; connection refused)"
    )
    breaker.reset()  # the next pass tries again
    assert not breaker.tripped and not stop.is_set()
    assert Breaker("u", stop, 1).in_a_row == MIN_IN_A_ROW


def test_a_signal_after_the_trip_is_the_runs_stop_and_is_not_cleared():
    from ingest.remote.breaker import Breaker

    stop = threading.Event()
    breaker = Breaker("http://server/v1/", stop, 1)
    for _ in range(breaker.in_a_row):
        breaker.failed("connection refused")
    stop.reason = "SIGTERM"  # type: ignore[attr-defined]
    assert not breaker.ended_the_run()
    breaker.reset()
    assert stop.is_set(), "a SIGTERM during the outage still ends the daemon"


def test_brief_faults_and_a_server_error_of_one_call_are_not_an_outage(fake_openai):
    from ingest.errors import RemoteError, Unreachable
    from ingest.remote.openai import OpenAIRemote

    remote = OpenAIRemote.connect("sk-test", fake_openai.base_url, attempts=6, timeout=5)
    remote.backoff.base = 0.01
    fake_openai.inject("reset", count=5, endpoint="GET /files")
    assert list(remote.list_files()) == []  # the sixth try is answered
    fake_openai.inject("500", count=6, endpoint="GET /files")
    with pytest.raises(RemoteError) as raised:
        list(remote.list_files())
    assert not isinstance(raised.value, Unreachable) and "HTTP 500" in str(raised.value)
    assert not remote.breaker.tripped and not remote.stop.is_set()
