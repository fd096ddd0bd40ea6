"""The typed records of a run: one vocabulary, a Report built from the stream, JSON from the records."""

from __future__ import annotations

import json

from ingest.events import (
    CREATED,
    FAILED,
    FAILED_EARLIER,
    FILE_ACTIONS,
    HELD,
    INDEXING,
    REBUILT,
    RECREATED,
    REJECTED,
    SKIPPED,
    STOPPED,
    STORE_ACTIONS,
    UPLOADED,
    FileEvent,
    Note,
    Report,
    StoreEvent,
)


def test_the_report_is_read_from_its_events():
    events = [
        FileEvent("a.md", "/docs", UPLOADED, "docs", "file-1"),
        FileEvent("b.txt", "/docs", REJECTED, "docs", None, "empty file"),
        FileEvent("c.md", "/docs", HELD, "docs", "file-3", "the scan of this root had errors"),
        FileEvent("d.md", "/docs", FAILED_EARLIER, "docs", "file-4", "indexing failed: unsupported_file"),
        FileEvent("e.md", "/docs", INDEXING, "docs", "file-5", "still indexing after 600 s"),
        FileEvent("f.md", "/docs", SKIPPED, "docs", None, "vanished before it could be uploaded"),
        StoreEvent("docs", CREATED, "vs_1"),
        StoreEvent("docs", REBUILT, "vs_2", "vs_1"),
        Note(STOPPED, "stopped while files were indexing; the next run checks them"),
    ]
    report = Report(events=events)
    assert report.exit_code == 0, "rejections, held deletions and earlier failures do not fail a run"
    assert [e.path for e in report.rejected] == ["b.txt"] and [e.path for e in report.held] == ["c.md"]
    assert [e.path for e in report.kept_failed] == ["d.md"] and report.still_indexing == ["/docs/e.md"]
    assert len(report.files) == 6
    assert [n.describe() for n in report.notes] == [
        "/docs/f.md: vanished before it could be uploaded",
        "store 'docs': rebuilt; the vector store id is now vs_2",
        "stopped while files were indexing; the next run checks them",
    ], "a store's creation is no news; its rebuild is"
    report.events.append(FileEvent("", "/gone", FAILED, reason="the folder is missing"))
    assert report.exit_code == 1 and report.failures[0].shown == "/gone"


def test_the_json_form_names_every_file_with_its_fields():
    report = Report(counts={"new": 1}, events=[FileEvent("a.md", "/docs", UPLOADED, "docs", "file-1")])
    data = json.loads(json.dumps(report.as_dict()))
    assert data["files"] == [
        {"path": "a.md", "root": "/docs", "action": "uploaded", "store": "docs", "file_id": "file-1", "reason": ""}
    ]
    assert data["counts"] == {"new": 1} and data["exit_code"] == 0 and "plan" not in data


def test_every_store_action_has_a_sentence_and_the_vocabulary_is_unique():
    for action in STORE_ACTIONS:
        text = StoreEvent("kb", action, "vs_new", "vs_old", count=3, reason="expired").describe()
        assert "'kb'" in text
    assert "was expired remotely" in StoreEvent("kb", RECREATED, None, "vs_old", reason="expired").describe()
    assert len(set(FILE_ACTIONS)) == len(FILE_ACTIONS) and not set(FILE_ACTIONS) & set(STORE_ACTIONS)
