"""Text for people, from the typed results: the per-file lines of -v, the summary, the progress bars."""

from __future__ import annotations

import io
import sys

from ingest import render
from ingest.events import DELETED, HELD, REJECTED, UPLOADED, FileEvent, Report


def test_files_prints_one_line_per_file_with_its_reason():
    report = Report(
        events=[
            FileEvent("a.md", "/docs", UPLOADED, "docs", "file-1"),
            FileEvent("b.txt", "/docs", REJECTED, "docs", None, "empty file"),
        ]
    )
    assert render.files(report).splitlines() == ["uploaded   /docs/a.md", "rejected   /docs/b.txt  (empty file)"]


def test_a_reason_shared_by_many_files_is_said_once():
    why = "more than 20% of store 'docs' would be deleted; run with --allow-mass-delete if intended"
    report = Report(
        counts={"deleted": 0, "held": 9},
        events=[FileEvent(f"f{i}.md", "/docs", HELD, "docs", f"file-{i}", why) for i in range(9)],
    )
    text = render.summary(report)
    assert f"  9 files: {why}" in text and "… and 6 more (--json lists all)" in text
    assert text.count("/docs/f") == 3


def test_the_summary_lists_failures_and_rejections_by_path():
    report = Report(
        counts={"new": 1, "deleted": 1},
        events=[
            FileEvent("gone.md", "/docs", DELETED, "docs", "file-2"),
            FileEvent("b.txt", "/docs", REJECTED, "docs", None, "empty file"),
        ],
    )
    text = render.summary(report)
    assert text.startswith("synced: 1 new,") and "rejected:\n  /docs/b.txt: empty file" in text


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_is_off_unless_asked_and_draws_each_phase_on_its_own_line(monkeypatch):
    with render.progress_bar(False) as progress:
        assert progress is None
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    with render.progress_bar(True) as progress:
        assert progress is not None
        for done in range(4):
            progress("upload", done, 3)
        progress("index", 1, 2)
    lines = screen.getvalue().split("\n")
    assert "upload" in lines[0] and "3/3" in lines[0], "the upload bar is finished before the next begins"
    assert "index" in lines[1] and "1/2" in lines[1], "a phase cut short is ended too"


def test_the_plan_and_the_summary_say_their_kinds_in_words_aligned():
    report = Report(
        dry_run=True,
        counts={"new": 1, "moved_store": 1},
        planned={"new": ["/docs/a.md"], "moved_store": ["/docs/b.md: x -> y"], "kept_failed": ["/docs/c.txt"]},
    )
    lines = render.summary(report).splitlines()
    assert lines[0] == "plan: 1 new, 1 moved store, 0 failed"
    assert lines[1:4] == [
        "  new            /docs/a.md",
        "  moved store    /docs/b.md: x -> y",
        "  failed earlier /docs/c.txt",
    ]


def test_counts_of_one_are_singular():
    from types import SimpleNamespace

    drift = SimpleNamespace(kind="missing", path="/docs/a.md", detail="not in the store")
    assert render.findings(SimpleNamespace(drifts=[drift], stores_checked=1, files_checked=1)).startswith(
        "drift: 1 problem in 1 store\n"
    )
    assert render.findings(SimpleNamespace(drifts=[], stores_checked=2, files_checked=1)) == (
        "in sync: 2 stores, 1 store file checked"
    )
    changes = {"new": 0, "changed": 0, "deleted": 0, "unreachable_roots": 1}
    data = {"backend": "local", "manifest": "m.db", "config": "c.toml", "local_changes": changes}
    data.update(stores=[], recent_runs=[], problems=[])
    text = render.status(data)
    assert "local changes not synced yet: 0; 1 folder missing" in text


def test_status_caps_the_list_of_problem_files_and_says_how_many_more_and_where_to_see_them():
    problems = [
        {"path": f"/docs/f{i}.bin.txt", "state": "rejected", "reason": f"file {i} is odd", "error_code": None}
        for i in range(3000)
    ] + [{"path": "/docs/x.pdf", "state": "failed", "reason": "indexing failed", "error_code": None}]
    data = {"backend": "local", "manifest": "m.db", "config": "c.toml", "local_changes": {}}
    data.update(stores=[], recent_runs=[], problems=problems)
    lines = render.status(data).splitlines()
    listed = lines[lines.index("problems: 3001 files") + 1 :]
    assert len(listed) == render.SHOWN_PROBLEMS, "the list is capped, not a line per file"
    shown = sum(1 for line in listed if line.startswith("  /docs/"))
    assert listed[-1] == (
        f"  … and {3001 - shown} more files "
        "(ingest status --json lists all, ingest ls --state failed or ingest ls --state rejected)"
    )
    alike = [
        {"path": f"/docs/e{i}.md", "state": "rejected", "reason": "empty file", "error_code": None} for i in range(9)
    ]
    data["problems"] = alike
    text = render.status(data)
    assert "  9 files: rejected: empty file" in text and text.count("/docs/e") == 3, "a shared reason is said once"


def test_status_reads_a_run_that_died_as_failed_with_its_error_not_as_nothing_to_do():
    run = {"started_at": 0.0, "command": "sync", "state": "finished", "interrupted": None}
    runs = [
        {**run, "exit_code": 1, "counts": {}, "error": "the remote call failed: connection refused"},
        {**run, "exit_code": 1, "counts": {"scanned": 3}, "error": "the remote call failed: timed out"},
        {**run, "exit_code": 1, "counts": {}, "error": None},  # recorded before runs kept their error
        {**run, "exit_code": 0, "counts": {}, "error": None},
    ]
    data = {"backend": "local", "manifest": "m.db", "config": "c.toml", "local_changes": {}}
    data.update(stores=[], recent_runs=runs, problems=[])
    lines = [line.split(" sync ", 1)[1] for line in render.status(data).splitlines() if " sync " in line]
    assert lines == [
        "exit 1: failed: the remote call failed: connection refused",
        "exit 1: 3 scanned; failed: the remote call failed: timed out",
        "exit 1: failed",
        "exit 0: nothing to do",
    ]


def test_forget_counts_one_remote_file_in_the_singular():
    from types import SimpleNamespace

    def told(deleted):
        done = SimpleNamespace(dry_run=False, folders=["/d"], deleted=deleted, stores_removed=[], failures=[], notes=[])
        return render.forgotten(done).splitlines()[1]

    assert told(["/d/a.md"]) == "deleted 1 remote file:"
    assert told(["/d/a.md", "/d/b.md"]) == "deleted 2 remote files:"
