"""The daemon's views of the event stream: one log line per event, the metrics, /metrics and /healthz."""

from __future__ import annotations

import json
import logging
import os
import re

import pytest

from ingest.daemon import EventLog, JsonFormatter, Metrics, _serve, log_event, text_formatter
from ingest.events import (
    FAILED,
    HELD,
    MASS_DELETE_HELD,
    REBUILT,
    RECREATED,
    REJECTED,
    REPLACED,
    UPLOADED,
    FileEvent,
    StoreEvent,
)
from tests.test_watch import http_get as get


@pytest.fixture
def json_log():
    """Records what the daemon logs, formatted as --log-format json formats it."""
    lines: list[dict] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(JsonFormatter().format(record)))

    handler = Collect(logging.DEBUG)
    logger = logging.getLogger("ingest.watch")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(old)


def test_each_file_event_is_one_line_with_its_fields(json_log):
    log_event(FileEvent("guides/a.md", "/docs", UPLOADED, "docs", "file-1"))
    log_event(FileEvent("b.txt", "/docs", REJECTED, "docs", None, "content is binary, not text as .txt should be"))
    log_event(FileEvent("c.md", "/docs", HELD, "docs", "file-3", "the root is missing or not mounted"))
    uploaded, rejected, held = json_log
    assert uploaded["level"] == "info" and uploaded["message"] == "uploaded /docs/guides/a.md"
    assert (uploaded["path"], uploaded["root"], uploaded["store"], uploaded["file_id"]) == (
        "guides/a.md",
        "/docs",
        "docs",
        "file-1",
    )
    assert rejected["level"] == "warning" and rejected["path"] == "b.txt" and "binary" in rejected["reason"]
    assert held["level"] == "warning" and held["action"] == "held"


def test_store_events_are_lines_of_their_own(json_log):
    log_event(StoreEvent("kb", REBUILT, "vs_new", "vs_old"))
    log_event(StoreEvent("kb", RECREATED, None, "vs_old", reason="expired"))
    log_event(StoreEvent("kb", MASS_DELETE_HELD, count=12))
    rebuilt, recreated, mass = json_log
    assert rebuilt["vector_store_id"] == "vs_new" and rebuilt["level"] == "info" and "vs_new" in rebuilt["message"]
    assert recreated["level"] == "warning" and "expired" in recreated["message"]
    assert mass["level"] == "warning" and mass["action"] == MASS_DELETE_HELD and "12 deletions" in mass["message"]


def test_a_rejection_found_again_by_a_rescan_is_no_news_until_its_reason_changes(json_log):
    listener = EventLog(Metrics.create())
    binary = FileEvent("b.txt", "/docs", REJECTED, "docs", None, "content is binary, not text as .txt should be")
    listener(binary)
    listener(binary)
    listener(FileEvent("b.txt", "/docs", REJECTED, "docs", None, "empty file"))
    assert [line["level"] for line in json_log] == ["warning", "debug", "warning"]


def test_metrics_count_the_stream_and_are_served_beside_healthz():
    metrics = Metrics.create()
    for action in (UPLOADED, REPLACED, FAILED, REJECTED, REJECTED):
        metrics.count(FileEvent("a.md", "/docs", action))
    metrics.count(StoreEvent("kb", REBUILT, "vs_2"))
    health = {"last_success_at": None, "root_missing": None, "queue": 3}
    server = _serve(0, metrics, health)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        status, text = get(f"{base}/metrics")
        assert status == 200
        assert 'ingest_file_actions_total{action="rejected"} 2.0' in text
        assert "ingest_uploads_total 2.0" in text and "ingest_failures_total 1.0" in text
        assert get(f"{base}/healthz")[0] == 503, "not healthy before a first clean sync"
        health["last_success_at"] = 1.0
        status, body = get(f"{base}/healthz")
        assert status == 200 and json.loads(body)["queue"] == 3
        assert get(f"{base}/other")[0] == 404
    finally:
        server.shutdown()


def test_the_text_log_stamps_each_line_unless_stderr_is_the_journal(tmp_path):
    """A daemon's text log going to a file or a terminal says when each line happened; journald, which
    stamps lines itself, is recognised by the JOURNAL_STREAM it sets for the stream it holds."""
    record = logging.LogRecord("ingest.watch", logging.INFO, __file__, 1, "indexed %s", ("a.txt",), None)
    with open(tmp_path / "watch.log", "w") as stream:
        st = os.fstat(stream.fileno())
        stamped = text_formatter({}, stream).format(record)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d indexed a\.txt", stamped)
        other = text_formatter({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, stream).format(record)
        assert other == stamped, "another stream in the journal: this one is not it"
        journal = text_formatter({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stream).format(record)
        assert journal == "indexed a.txt"
