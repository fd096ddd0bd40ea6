"""The Python API: `import ingest`, `Ingest.open()` and one method per operation, on both backends."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import ingest
from ingest import FileEvent, Ingest, IngestError, Report
from ingest.config import Settings, StoreSpec
from ingest.errors import AuthError, ConfigError, LockBusy, NothingToDo, RemoteError, UnknownStore
from ingest.events import (
    DELETED,
    FAILED,
    MASS_DELETE_HELD,
    MOVED,
    REBUILT,
    RECREATED,
    REJECTED,
    REPLACED,
    UPLOADED,
    StoreEvent,
)
from ingest.lock import ManifestLock
from ingest.stores import CHECK_EVERY

README = Path(__file__).resolve().parent.parent / "README.md"
DOCS = {"guides/install.md", "guides/usage.txt", "faq.html", "notes.py"}


@pytest.fixture(params=["local_ingest", "emulated_ingest"])
def opened(request) -> Ingest:
    return request.getfixturevalue(request.param)


def test_the_front_door_exports_what_it_says():
    assert set(ingest.__all__) >= {"Ingest", "sync", "Report", "FileEvent", "IngestError"}
    assert all(hasattr(ingest, name) for name in ingest.__all__)


def test_ingest_sync_of_a_folder_by_name(state_dir, docs_root):
    report = ingest.sync("docs")  # relative to the working folder, as a user types it
    assert isinstance(report, Report) and report.exit_code == 0
    assert {e.path for e in report.of(UPLOADED)} == DOCS
    assert all(e.root == str(docs_root) and e.file_id and e.store == "docs" for e in report.files)
    assert ingest.sync("docs").files == [], "a second run acts on nothing"


def test_on_event_is_called_as_each_file_is_acted_on(state_dir, docs_root):
    seen: list = []
    report = ingest.sync(docs_root, on_event=seen.append)
    assert [e for e in seen if isinstance(e, FileEvent)] == report.files and len(report.files) == 4
    assert any(isinstance(e, StoreEvent) and e.store == "docs" for e in seen), "the store's creation"


def test_every_action_is_an_event_with_path_store_and_reason(local_ingest, docs_root):
    local_ingest.sync()
    (docs_root / "guides" / "usage.txt").write_text("Usage notes, second edition: the quokka sleeps.\n")
    (docs_root / "notes.py").rename(docs_root / "guides" / "notes.py")
    (docs_root / "faq.html").unlink()
    (docs_root / "binary.txt").write_bytes(b"\x7fELF\x00\x01" * 100)
    report = local_ingest.sync()
    by_path = {e.path: e for e in report.files}
    assert by_path["guides/usage.txt"].action == REPLACED
    assert by_path["guides/notes.py"].action == MOVED and "notes.py" in by_path["guides/notes.py"].reason
    assert by_path["faq.html"].action == DELETED and by_path["faq.html"].file_id
    rejected = by_path["binary.txt"]
    assert rejected.action == REJECTED and rejected.reason and rejected.store == "docs"
    assert report.rejected == [rejected] and report.exit_code == 0


def test_sync_verify_reindex_gc_status_and_search(opened, docs_root):
    report = opened.sync()
    assert report.counts["indexed"] == 4 and report.exit_code == 0
    assert opened.verify().drifts == []
    repairs = opened.reindex()
    assert repairs.actions == [] and repairs.report is not None and repairs.report.counts["unchanged"] == 4
    assert opened.gc() == []
    status = opened.status()
    assert status["backend"] == opened.backend.kind and status["stores"][0]["files"] == {"indexed": 4}
    assert status["recent_runs"][0]["command"] == "reindex"
    hits = opened.search("zebrafish installer")
    assert hits and hits[0]["path"] == str(docs_root / "guides" / "install.md")
    with pytest.raises(UnknownStore, match="no store named 'nope'"):
        opened.search("zebrafish", store="nope")


def test_a_dry_run_changes_nothing(local_ingest):
    report = local_ingest.sync(dry_run=True)
    assert report.dry_run and sorted(report.planned["new"]) == sorted(
        str(Path(local_ingest.settings.roots[0].key) / p) for p in DOCS
    )
    assert local_ingest.counts() == {} and local_ingest.sync().counts["new"] == 4


def test_settings_built_in_python_default_to_the_xdg_state_folder(state_dir):
    assert Settings().state_dir == state_dir


def test_a_settings_object_is_used_as_given(state_dir, docs_root, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    with Ingest.open([docs_root], config=Settings(state_dir=elsewhere), backend="local") as opened:
        assert opened.sync().exit_code == 0
    assert (elsewhere / "local" / "manifest.db").is_file() and not state_dir.exists()


def test_errors_carry_their_exit_codes(state_dir, docs_root, tmp_path):
    with pytest.raises(NothingToDo, match=re.escape("nothing to sync: name a folder")) as nothing:
        ingest.sync()
    assert nothing.value.exit_code == 2 and isinstance(nothing.value, IngestError)
    with pytest.raises(ConfigError, match="config file not found") as missing:
        ingest.sync(docs_root, config=tmp_path / "missing.toml")
    assert missing.value.exit_code == 2
    with Ingest.open([docs_root], backend="local") as opened:
        lock = ManifestLock(opened.backend.manifest, "test")
    with lock.acquire(), pytest.raises(LockBusy, match="in use by 'ingest test'") as busy:
        ingest.sync(docs_root)
    assert busy.value.exit_code == 1
    assert AuthError("no").exit_code == 2 and RemoteError("x", retryable=True).retryable


def test_a_failure_is_an_event_and_fails_the_run(emulated_ingest, fake_openai):
    fake_openai.configure(index_fail_names={"usage.txt"}, index_fail_times=None)
    report = emulated_ingest.sync()
    failed = report.of(FAILED)
    assert [e.path for e in failed] == ["guides/usage.txt"] and "server_error" in failed[0].reason
    assert failed[0].file_id and report.exit_code == 1


def test_a_store_lost_remotely_and_a_rebuild_are_events_of_their_own(emulator_env, fake_openai, docs_root):
    with Ingest.open([docs_root], config=emulator_env()) as opened:
        opened.sync()
        old = fake_openai.stores()[0]["id"]
        fake_openai.delete_store(old)
        # A pass with nothing to do asks about its stores only once they were not confirmed for a while.
        opened.manifest.db.execute("update stores set checked_at = checked_at - ?", [CHECK_EVERY + 1])
        report = opened.sync()
    lost = [e for e in report.events if isinstance(e, StoreEvent) and e.action == RECREATED]
    assert [(e.store, e.old_vector_store_id, e.reason) for e in lost] == [("docs", old, "deleted")]
    assert {e.path for e in report.of(UPLOADED)} == DOCS, "its files are uploaded again"
    static = {"type": "static", "static": {"max_chunk_size_tokens": 300, "chunk_overlap_tokens": 100}}
    with Ingest.open([docs_root], config=emulator_env(stores=(StoreSpec("docs", chunking=static),))) as opened:
        report = opened.sync()
    rebuilt = [e for e in report.events if isinstance(e, StoreEvent) and e.action == REBUILT]
    current = {s["id"] for s in fake_openai.stores()}
    assert len(rebuilt) == 1 and {rebuilt[0].vector_store_id} == current, "the new vector store id is named"


def test_a_held_mass_deletion_is_an_event_per_file_and_one_for_the_store(local_ingest, docs_root):
    for i in range(8):
        (docs_root / f"memo{i}.md").write_text(f"memo {i} about the capybara\n")
    local_ingest.sync()
    for i in range(8):
        (docs_root / f"memo{i}.md").unlink()
    watched = local_ingest.sync(dry_run=True, command="watch-full")  # as the daemon's full pass: no such option
    assert {e.reason.split("; ")[1] for e in watched.held} == {
        f"run `ingest sync {docs_root} --allow-mass-delete --wait` beside the daemon if intended"
    }
    report = local_ingest.sync()
    assert len(report.held) == 8 and all("run again with --allow-mass-delete" in e.reason for e in report.held)
    mass = [e for e in report.events if isinstance(e, StoreEvent) and e.action == MASS_DELETE_HELD]
    assert [(e.store, e.count) for e in mass] == [("docs", 8)]


def test_the_readme_python_example_runs(state_dir, docs_root):
    text = README.read_text()
    block = re.search(r"## Python API\n.*?```python\n(.*?)```", text, re.S)
    assert block, "the README has a Python API section with an example"
    namespace: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    assert namespace["report"].exit_code == 0
