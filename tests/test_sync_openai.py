"""End-to-end on the OpenAI path: the real SDK against the HTTP emulator on 127.0.0.1."""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from ingest.manifest import FAILED, INDEXED, Manifest
from ingest.plan import RETRY_CAP
from ingest.stores import CHECK_EVERY
from tests.emulator import Emulator
from tests.helpers import manifest_rows
from tests.test_noop import age_store_checks

BATCHES = "POST /vector_stores/{vector_store_id}/file_batches"
UPLOADS = "POST /files"


rows = functools.partial(manifest_rows, backend="openai")


def remote_by_path(emu: Emulator) -> dict[str, dict]:
    out = {}
    for store in emu.stores():
        for sf in emu.store_files(store["id"]):
            out[sf["attributes"]["path"]] = sf
    return out


def test_first_sync_then_nothing_to_do(openai_cli, fake_openai, docs_root, state_dir):
    report = openai_cli.json("sync", str(docs_root))
    assert report["counts"]["indexed"] == 4 and report["exit_code"] == 0
    stores = fake_openai.stores()
    assert [s["name"] for s in stores] == ["docs"] and stores[0]["metadata"]["managed_by"] == "ingest"
    remote = remote_by_path(fake_openai)
    local = rows(state_dir)
    assert set(remote) == set(local)
    for path, sf in remote.items():
        assert sf["status"] == "completed" and sf["id"] == local[path].file_id
        assert sf["attributes"]["sha256"] == local[path].sha256
    assert {f["filename"] for f in fake_openai.files()} == {"install.md", "usage.txt", "faq.html", "notes.py"}

    uploads = fake_openai.counters()["uploads"]
    again = openai_cli.json("sync", str(docs_root))
    assert again["counts"]["unchanged"] == 4 and fake_openai.counters()["uploads"] == uploads


def test_edit_rename_delete_propagate(openai_cli, fake_openai, docs_root, state_dir):
    openai_cli("sync", str(docs_root))
    before = rows(state_dir)
    target = docs_root / "guides" / "usage.txt"
    target.write_text("entirely new usage text\n")
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    (docs_root / "notes.py").rename(docs_root / "moved.py")
    (docs_root / "faq.html").unlink()
    report = openai_cli.json("sync", str(docs_root))
    c = report["counts"]
    assert (c["changed"], c["moved"], c["deleted"], c["uploaded"]) == (1, 1, 1, 1)
    remote = remote_by_path(fake_openai)
    assert set(remote) == {"guides/install.md", "guides/usage.txt", "moved.py"}
    assert remote["moved.py"]["id"] == before["notes.py"].file_id
    file_ids = {f["id"] for f in fake_openai.files()}
    assert before["guides/usage.txt"].file_id not in file_ids, "the old version is deleted"
    assert before["faq.html"].file_id not in file_ids, "the deleted document's file is deleted"
    assert file_ids == {r.file_id for r in rows(state_dir).values()}


def test_batches_hold_at_most_500_files(openai_cli, fake_openai, tmp_path, state_dir):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(520):
        (root / f"d{i:04}.txt").write_text(f"document {i}\n")
    report = openai_cli.json("sync", str(root))
    assert report["counts"]["indexed"] == 520
    sizes = [len(b.file_ids) for b in fake_openai.state.batches.values()]
    # A full batch as soon as there is one; what is left once the last uploads are under way, and those.
    assert max(sizes) == 500 and sum(sizes) == 520 and len(sizes) <= 3
    assert len(fake_openai.store_files(fake_openai.stores()[0]["id"], "completed")) == 520


def test_indexing_server_error_is_retried_then_reported(openai_cli, fake_openai, docs_root, state_dir):
    fake_openai.configure(index_fail_names={"usage.txt"}, index_fail_times=1)
    report = openai_cli.json("sync", str(docs_root))
    assert report["exit_code"] == 0 and rows(state_dir)["guides/usage.txt"].state == INDEXED
    assert fake_openai.counters()["requests"]["DELETE /vector_stores/{vector_store_id}/files/{file_id}"] == 1, (
        "the failed store file is detached before the file is attached again"
    )

    fake_openai.configure(index_fail_names={"install.md"}, index_fail_times=None)
    (docs_root / "guides" / "install.md").write_text("# Install v2\n")
    report = openai_cli.json("sync", str(docs_root), check=1)
    row = rows(state_dir)["guides/install.md"]
    assert row.state == FAILED and row.error_code == "server_error" and row.retryable == 1
    assert "server_error" in report["failed"][0]["reason"]


def notes(tmp_path: Path, count: int) -> Path:
    root = tmp_path / "burst"
    root.mkdir()
    for i in range(count):
        (root / f"n{i}.md").write_text(f"note {i}\n")
    return root


def test_uploads_keep_to_the_rate_the_server_states(openai_cli, fake_openai, tmp_path, state_dir):
    # 50 uploads a second with a burst of 50, stated in x-ratelimit-* headers; the old fixed window
    # of 8 with no pacing sent them as fast as replies came and was refused again and again.
    fake_openai.configure(upload_rps=50)
    root = notes(tmp_path, 120)
    report = openai_cli.json("sync", str(root))
    assert report["counts"]["indexed"] == 120 and report["exit_code"] == 0
    counters = fake_openai.counters()
    assert counters["requests"]["POST /files"] - counters["rate_limited"] == 120
    assert counters["rate_limited"] <= 2, counters  # at most 2 % of the uploads refused
    assert len(fake_openai.files()) == 120


def test_refused_uploads_wait_and_all_get_through(openai_cli, fake_openai, tmp_path, state_dir):
    # 429s with Retry-After and no rate stated: the window is the lever, and every file arrives once.
    fake_openai.inject("429", count=12, endpoint="POST /files")
    root = notes(tmp_path, 30)
    report = openai_cli.json("sync", str(root))
    assert report["counts"]["indexed"] == 30 and report["exit_code"] == 0
    assert fake_openai.counters()["faults"]["429"] == 12
    assert len(fake_openai.files()) == 30


def test_lost_upload_reply_leaves_no_duplicate(openai_cli, fake_openai, docs_root, state_dir):
    fake_openai.lose_next_replies(2)
    report = openai_cli.json("sync", str(docs_root))
    assert report["counts"]["indexed"] == 4
    assert fake_openai.counters()["lost_replies"] == 2
    assert report["counts"]["duplicates_removed"] == 2
    assert sorted(f["id"] for f in fake_openai.files()) == sorted(r.file_id for r in rows(state_dir).values())


def test_rejected_key_is_one_clear_message(openai_cli, fake_openai, docs_root, monkeypatch, state_dir):
    fake_openai.configure(rejected_keys={"sk-test-key-0123456789"})
    result = openai_cli("sync", str(docs_root), check=2)
    assert f"the server at {fake_openai.base_url}/ refused the API key (401)" in result.stderr, (
        "the server asked, by its URL"
    )
    assert "sk-test-key-0123456789" not in result.stdout + result.stderr
    assert sum(fake_openai.counters()["requests"].values()) <= 3
    assert last_run(state_dir)["exit_code"] == 2, "the run that died is not recorded as a success"
    runs = openai_cli("status", check=None).stdout.split("recent runs:")[1]
    assert "sync exit 2: failed: " in runs and "refused the API key" in runs and "nothing to do" not in runs, runs


def last_run(state_dir: Path) -> dict:
    m = Manifest(state_dir / "manifest.db")
    try:
        return m.recent_runs()[0]
    finally:
        m.close()


def test_store_deleted_remotely_is_recreated(openai_cli, fake_openai, docs_root, state_dir):
    openai_cli("sync", str(docs_root))
    old_store = fake_openai.stores()[0]["id"]
    fake_openai.delete_store(old_store)
    age_store_checks(state_dir, CHECK_EVERY + 1)  # a pass with nothing to do asks only every so often
    report = openai_cli.json("sync", str(docs_root))
    assert any("recreated" in n for n in report["notes"])
    stores = fake_openai.stores()
    assert len(stores) == 1 and stores[0]["id"] != old_store
    assert len(fake_openai.store_files(stores[0]["id"], "completed")) == 4
    assert {r.vector_store_id for r in rows(state_dir).values()} == {stores[0]["id"]}
    assert len(fake_openai.files()) == 4, "the files of the lost store are deleted, not left behind"


def test_a_search_of_a_store_deleted_remotely_says_what_to_run(openai_cli, fake_openai, docs_root):
    openai_cli("sync", str(docs_root))
    store = fake_openai.stores()[0]["id"]
    fake_openai.delete_store(store)
    failed = openai_cli("search", "axolotl", check=1).stderr
    assert f"store 'docs' ({store}) is not on the server any more" in failed, failed
    assert (
        "`ingest sync` makes it again" in failed and "`ingest verify`" in failed and "remote call failed" not in failed
    )


def test_stuck_indexing_is_bounded_and_resumed(openai_cli, fake_openai, docs_root, state_dir, tmp_path):
    (tmp_path / "ingest.toml").write_text("request_timeout = 5\nindex_timeout = 1\n")
    fake_openai.configure(stuck_batches=True)
    report = openai_cli.json("sync", str(docs_root))  # unbounded, it would wait here until the test's timeout
    assert len(report["still_indexing"]) == 4 and report["exit_code"] == 0
    fake_openai.unstick_batches()
    fake_openai.configure(stuck_batches=False)
    report = openai_cli.json("sync", str(docs_root))
    assert report["counts"]["indexed"] == 4 and report["counts"]["uploaded"] == 0
    assert all(r.state == INDEXED for r in rows(state_dir).values())


def test_a_permanent_failure_is_reported_but_does_not_fail_later_runs(openai_cli, fake_openai, docs_root, state_dir):
    fake_openai.configure(index_fail_names={"usage.txt"})
    openai_cli("sync", str(docs_root), check=1)
    m = Manifest(state_dir / "manifest.db")
    try:
        row = m.row(str(docs_root), "guides/usage.txt")
        m.update(row, error_code="unsupported_file", retryable=0, reason="indexing failed: unsupported_file")
    finally:
        m.close()
    report = openai_cli.json("sync", str(docs_root))
    assert report["exit_code"] == 0 and report["failed"] == []
    assert report["failed_earlier"][0]["path"].endswith("usage.txt")
    assert openai_cli.json("verify", check=1)["counts"] == {"failed": 1}


def test_a_file_refused_for_its_content_is_not_resumed_or_uploaded_again(openai_cli, fake_openai, docs_root, state_dir):
    fake_openai.configure(max_file_tokens=100)  # the emulator's estimate: bytes / 4
    (docs_root / "big.txt").write_text("word " * 200)
    first = openai_cli.json("sync", str(docs_root), check=1)
    assert "invalid_file" in first["failed"][0]["reason"]
    uploads = fake_openai.counters()["uploads"]
    plan = openai_cli.json("sync", "--dry-run", str(docs_root))
    assert plan["counts"].get("resumed", 0) == 0, "a refusal that is not tried again is not a resume"
    assert [p for p in plan["plan"]["kept_failed"] if p.endswith("big.txt")] and not plan["plan"]["retry_failed"]
    report = openai_cli.json("sync", str(docs_root))
    assert report["counts"].get("resumed", 0) == 0 and report["exit_code"] == 0
    assert report["failed_earlier"][0]["path"].endswith("big.txt")
    for store in fake_openai.stores():  # a store gone remotely: the same bytes would be refused again
        fake_openai.delete_store(store["id"])
    age_store_checks(state_dir, CHECK_EVERY + 1)
    report = openai_cli.json("sync", str(docs_root))
    assert report["failed_earlier"][0]["path"].endswith("big.txt")
    assert fake_openai.counters()["uploads"] == uploads + 4, "the other files, not the refused one"


def test_the_requests_are_logged_with_vv_only(openai_cli, docs_root, caplog):
    def requests(*flags: str) -> int:
        caplog.clear()
        openai_cli("sync", *flags, str(docs_root))
        (docs_root / "faq.html").write_text(f"<p>changed {len(flags)}</p>")  # work to do, requests to make
        return sum(r.getMessage().startswith("HTTP Request") for r in caplog.records)

    assert requests("-v") == 0, "-v is one line per file"
    assert requests("-vv") > 0


def test_retryable_failures_stop_after_a_bounded_number_of_runs(openai_cli, fake_openai, docs_root, state_dir):
    fake_openai.configure(index_fail_names={"usage.txt"})
    attaches = []
    for _ in range(3):
        openai_cli("sync", str(docs_root), check=None)
        attaches.append(fake_openai.counters()["index_failures_injected"])
    assert attaches[0] < attaches[1] == attaches[2], "tried again by the next run, then after a wait"
    for _ in range(8):
        age_failures(state_dir, RETRY_CAP)  # the wait has passed
        openai_cli("sync", str(docs_root), check=None)
        attaches.append(fake_openai.counters()["index_failures_injected"])
    assert attaches[-1] == attaches[-2], "a file that always fails is not retried forever"
    row = rows(state_dir)["guides/usage.txt"]
    assert row.state == FAILED and row.attempts >= 5


def age_failures(state_dir: Path, seconds: float) -> None:
    """Time passes for the failed rows: their last try was `seconds` earlier."""
    m = Manifest(state_dir / "manifest.db")
    try:
        m.db.execute("update files set updated_at = updated_at - ? where state = ?", [seconds, FAILED])
        m.db.conn.commit()
    finally:
        m.close()


def test_a_refused_rename_is_uploaded_again_with_no_gap(openai_cli, fake_openai, docs_root, state_dir):
    openai_cli("sync", str(docs_root))
    old = rows(state_dir)["notes.py"].file_id
    fake_openai.inject("500", count=30, endpoint="POST /vector_stores/{vector_store_id}/files/{file_id}")
    (docs_root / "notes.py").rename(docs_root / "renamed.py")
    report = openai_cli.json("sync", str(docs_root))
    assert report["counts"]["uploaded"] == 1 and report["exit_code"] == 0
    new = rows(state_dir)["renamed.py"]
    assert new.state == INDEXED and new.file_id != old and "notes.py" not in rows(state_dir)
    assert old not in {f["id"] for f in fake_openai.files()}
    assert set(remote_by_path(fake_openai)) == {"guides/install.md", "guides/usage.txt", "faq.html", "renamed.py"}


def test_stop_ends_a_long_retry_after_wait_at_once(fake_openai):
    import threading

    from ingest.remote.base import RemoteError
    from ingest.remote.openai import OpenAIRemote

    remote = OpenAIRemote.connect("sk-test", fake_openai.base_url, attempts=6, timeout=5)
    fake_openai.configure(retry_after_s=60)
    fake_openai.inject("429", count=5, endpoint="GET /files")
    threading.Timer(0.5, remote.stop.set).start()
    started = time.monotonic()
    with pytest.raises(RemoteError):
        list(remote.list_files())
    # A hang detector with room for a busy machine: waiting out even one Retry-After would take 60 s.
    assert time.monotonic() - started < 45, "a SIGTERM must not wait out a 60 s Retry-After"


def test_deletions_run_several_at_a_time_and_remove_every_remote_copy(openai_cli, fake_openai, tmp_path, state_dir):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(40):
        (root / f"n{i:02}.txt").write_text(f"note {i} about the pangolin\n")
    openai_cli("sync", str(root))
    created = {f["id"] for f in fake_openai.files()}
    for path in root.iterdir():
        path.unlink()
    (root / "kept.txt").write_text("the one document left\n")
    fake_openai.configure(latency_ms=40)
    fake_openai.reset_counters()
    report = openai_cli.json("sync", str(root), "--allow-mass-delete")

    assert report["counts"]["deleted"] == 40 and report["counts"]["remote_deleted"] == 40, report["counts"]
    assert not created & {f["id"] for f in fake_openai.files()}, "every old file is deleted remotely"
    assert set(remote_by_path(fake_openai)) == {"kept.txt"}
    peak = fake_openai.counters()["peak_in_flight"]
    assert 1 < peak["DELETE /files/{file_id}"] <= 8, peak  # the pool, within upload_concurrency


CREATE_STORE = "POST /vector_stores"


def test_a_store_whose_creation_reply_was_lost_by_a_failed_run_is_adopted_not_made_again(
    openai_cli, fake_openai, docs_root, tmp_path, state_dir
):
    no_retries = tmp_path / "no-retries.toml"
    no_retries.write_text("request_retries = 0\n")
    fake_openai.lose_next_replies(1, endpoint=CREATE_STORE)
    first = openai_cli("--config", str(no_retries), "sync", str(docs_root), check=None)
    assert first.exit_code == 1, first.output
    assert len(fake_openai.stores()) == 1, "the call reached the server; its reply did not reach us"

    report = openai_cli.json("sync", str(docs_root))
    assert report["exit_code"] == 0 and report["counts"]["indexed"] == 4
    stores = fake_openai.stores()
    assert len(stores) == 1, "the store the lost call made is adopted, not made a second time"
    assert any("adopted" in note for note in report["notes"]), report["notes"]
    assert {r.vector_store_id for r in rows(state_dir).values()} == {stores[0]["id"]}


def test_a_store_creation_that_never_reached_the_server_is_forgotten(
    openai_cli, fake_openai, docs_root, tmp_path, state_dir
):
    no_retries = tmp_path / "no-retries.toml"
    no_retries.write_text("request_retries = 0\n")
    fake_openai.inject("500", 1, endpoint=CREATE_STORE)
    assert openai_cli("--config", str(no_retries), "sync", str(docs_root), check=None).exit_code == 1
    assert fake_openai.stores() == []
    assert last_run(state_dir)["exit_code"] == 1

    report = openai_cli.json("sync", str(docs_root))
    assert report["exit_code"] == 0 and report["counts"]["indexed"] == 4 and not report["notes"]
    assert len(fake_openai.stores()) == 1


# ---- what overlaps what in a cold sync --------------------------------------------------------------------


def _notes(folder: Path, count: int) -> Path:
    folder.mkdir()
    for i in range(count):
        (folder / f"n{i:03d}.txt").write_text(f"note {i} about the pangolin\n")
    return folder


def _count_observed(monkeypatch) -> list[str]:
    """The paths the run has read and judged so far, in order."""
    from ingest.survey import Survey

    seen: list[str] = []
    real = Survey.observe

    def observe(self, root, entry, *args):
        seen.append(entry.path)
        return real(self, root, entry, *args)

    monkeypatch.setattr(Survey, "observe", observe)
    return seen


def test_a_first_sync_uploads_while_it_is_still_reading_the_other_files(
    openai_cli, fake_openai, tmp_path, state_dir, monkeypatch
):
    root = _notes(tmp_path / "many", 40)
    (root / "n017.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # turned away on the way
    seen = _count_observed(monkeypatch)
    at_first_upload: list[int] = []
    fake_openai.when(UPLOADS, 1, lambda: at_first_upload.append(len(seen)))
    report = openai_cli.json("sync", str(root))
    # The upload window is a handful of files: the first goes out long before the last file is read.
    assert at_first_upload and at_first_upload[0] < 20, f"{at_first_upload} of 40 read before the first upload"
    assert len(seen) == 40
    c = report["counts"]
    assert (c["scanned"], c["new"], c["rejected"], c["indexed"], report["exit_code"]) == (40, 39, 1, 39, 0)
    assert [os.path.basename(r["path"]) for r in report["rejected"]] == ["n017.txt"]
    local = rows(state_dir)
    assert local["n017.txt"].state == "rejected" and "not text" in (local["n017.txt"].reason or "")
    assert sum(r.state == INDEXED for r in local.values()) == 39 and len(fake_openai.files()) == 39


def test_a_sync_with_rows_in_its_scope_reads_every_file_before_it_uploads(
    openai_cli, fake_openai, tmp_path, state_dir, monkeypatch
):
    """A new path may be a file moved from a path now gone: only the whole scan tells, so nothing is
    uploaded before it (a move uploaded as a new file would leave a copy behind)."""
    root = _notes(tmp_path / "many", 3)
    openai_cli("sync", str(root))
    moved_id = rows(state_dir)["n001.txt"].file_id
    for i in range(3, 30):
        (root / f"n{i:03d}.txt").write_text(f"note {i} about the okapi\n")
    (root / "n001.txt").rename(root / "z-moved.txt")  # read last: the walk's order is by name
    seen = _count_observed(monkeypatch)
    at_first_upload: list[int] = []
    fake_openai.when(UPLOADS, 4, lambda: at_first_upload.append(len(seen)))
    report = openai_cli.json("sync", str(root))
    assert len(seen) >= 28 and at_first_upload == [len(seen)], "every file to read was read before the first upload"
    assert (report["counts"]["moved"], report["counts"]["new"]) == (1, 27)
    assert rows(state_dir)["z-moved.txt"].file_id == moved_id, "moved with its id, not uploaded again"


def test_a_first_sync_stopped_while_reading_leaves_the_rest_to_the_next_run(
    emulator_env, fake_openai, tmp_path, state_dir, monkeypatch
):
    from ingest import Ingest

    root = _notes(tmp_path / "many", 40)
    seen = _count_observed(monkeypatch)
    with Ingest.open([root], config=emulator_env()) as opened:
        fake_openai.when(UPLOADS, 3, opened.stop.set)
        first = opened.sync()
        assert first.interrupted and len(seen) < 40
        assert len(rows(state_dir)) < 40, "files not read yet have no row"
        opened.stop.clear()
        second = opened.sync()
    assert second.exit_code == 0 and second.counts["indexed"] + first.counts["indexed"] == 40
    local = rows(state_dir)
    assert len(local) == 40 and all(r.state == INDEXED for r in local.values())
    assert sorted(f["id"] for f in fake_openai.files()) == sorted(r.file_id for r in local.values()), "no copy left"


def test_the_store_is_made_while_the_server_is_still_being_identified(openai_cli, fake_openai, docs_root, tmp_path):
    # A probe held longer than the request timeout would be given up, and the store asked for then.
    (tmp_path / "ingest.toml").write_text("request_timeout = 60\nindex_timeout = 30\n")
    made = threading.Event()
    answered: list[bool] = []
    # The probe is answered only once the store has been asked for (or 30 s passed).
    fake_openai.when("GET /version", 1, lambda: answered.append(made.wait(30)))
    fake_openai.when("POST /vector_stores", 1, made.set)
    report = openai_cli.json("sync", str(docs_root))
    assert report["exit_code"] == 0 and report["counts"]["indexed"] == 4
    assert answered == [True], "the store was asked for only after the server said who it is"


def test_the_first_upload_goes_out_before_the_other_files_are_recorded(openai_cli, fake_openai, tmp_path, state_dir):
    root = _notes(tmp_path / "many", 60)
    recorded: list[int] = []

    def count() -> None:  # as the first upload arrives: the rows the manifest holds, as another process sees them
        db = sqlite3.connect(state_dir / "manifest.db")
        try:
            recorded.append(db.execute("select count(*) from files").fetchone()[0])
        finally:
            db.close()

    fake_openai.when(UPLOADS, 1, count)
    report = openai_cli.json("sync", str(root))
    assert report["counts"]["indexed"] == 60 and report["exit_code"] == 0
    # The first upload waits for nothing but its own row (and those started beside it, a window's worth).
    assert recorded and 1 <= recorded[0] < 60, recorded
    assert all(r.state == INDEXED for r in rows(state_dir).values()) and len(rows(state_dir)) == 60


def test_files_uploaded_are_attached_while_the_last_uploads_are_under_way(openai_cli, fake_openai, tmp_path):
    root = _notes(tmp_path / "many", 40)
    attached = threading.Event()
    held: list[bool] = []
    (tmp_path / "ingest.toml").write_text("request_timeout = 60\nindex_timeout = 30\n")  # none given up
    # The last upload is answered only once a batch has been asked for (or 30 s passed).
    fake_openai.when(UPLOADS, 40, lambda: held.append(attached.wait(30)))
    fake_openai.when(BATCHES, 1, attached.set)
    report = openai_cli.json("sync", str(root))
    assert report["counts"]["indexed"] == 40 and report["exit_code"] == 0
    assert held == [True], "the first batch waited for the last upload"
    sizes = sorted(len(b.file_ids) for b in fake_openai.state.batches.values())
    assert sum(sizes) == 40 and len(sizes) == 2 and sizes[0] < 40


def test_batches_are_asked_about_all_at_once(openai_cli, fake_openai, tmp_path, monkeypatch):
    monkeypatch.setattr("ingest.attach.BATCH_LIMIT", 4)
    # The pacer may take the calls' window down to one on latency alone (a busy machine's jitter on a
    # local server's 1 ms answers): that is its own rule, tested in test_pacing.py, not this one.
    monkeypatch.setattr("ingest.pacing.CUT_TOLERANCE", float("inf"))
    # Bounds far past the hold below, so a slow machine gives up on nothing (a hang detector only).
    (tmp_path / "ingest.toml").write_text("request_timeout = 300\nindex_timeout = 600\n")
    root = _notes(tmp_path / "many", 12)
    polls = "GET /vector_stores/{vector_store_id}/file_batches/{batch_id}"
    second = threading.Event()
    together: list[bool] = []
    # The first question is answered only once the second has arrived (or 120 s passed).
    fake_openai.when(polls, 1, lambda: together.append(second.wait(120)))
    fake_openai.when(polls, 2, second.set)
    report = openai_cli.json("sync", str(root))
    assert report["counts"]["indexed"] == 12 and report["exit_code"] == 0
    assert together == [True], "the second batch was asked about only after the first one's answer"


def test_a_refused_rename_cut_short_is_uploaded_by_the_next_run(emulated_ingest, fake_openai, docs_root, state_dir):
    """The rename's attribute update is refused and the run stops before its retry: no row at the new
    path may look indexed (its stat matches, so nothing else would look at it again). The old row
    stays, as the remote copy's attributes still say, and the next run moves the file again."""
    emulated_ingest.sync()
    old = rows(state_dir)["notes.py"].file_id
    fake_openai.inject("500", count=30, endpoint="POST /vector_stores/{vector_store_id}/files/{file_id}")
    fake_openai.when("POST /vector_stores/{vector_store_id}/files/{file_id}", 1, emulated_ingest.stop.set)
    (docs_root / "notes.py").rename(docs_root / "renamed.py")
    emulated_ingest.sync()
    cut = rows(state_dir)
    assert "renamed.py" not in cut or cut["renamed.py"].state != INDEXED
    assert cut["notes.py"].file_id == old, "the move not done: its row as it was"
    emulated_ingest.stop.clear()
    emulated_ingest.sync()
    new = rows(state_dir)["renamed.py"]
    assert new.state == INDEXED and "notes.py" not in rows(state_dir)
    assert "renamed.py" in remote_by_path(fake_openai) and "notes.py" not in remote_by_path(fake_openai)


def test_a_stop_once_every_file_is_indexed_does_not_say_files_were_left_indexing(
    emulated_ingest, fake_openai, docs_root, state_dir
):
    """The stop comes with the poll whose answer settles the batch: nothing is left indexing, so the run
    does not say so (it used to, after a pass that had indexed everything)."""
    poll = "GET /vector_stores/{vector_store_id}/file_batches/{batch_id}"
    fake_openai.configure(index_delay=0)  # the first poll finds every file indexed
    fake_openai.inject("slow", 1, endpoint=poll)  # and its answer is still under way when the run sees the stop
    fake_openai.when(poll, 1, emulated_ingest.stop.set)
    report = emulated_ingest.sync()
    assert report.interrupted and report.counts["indexed"] == 4 and report.counts["left"] == 0, report.counts
    assert all(r.state == INDEXED for r in rows(state_dir).values())
    assert not [e for e in report.notes if "left indexing" in e.describe() or "were indexing" in e.describe()]


def test_a_stop_while_batches_index_is_no_warning(emulated_ingest, fake_openai, docs_root, state_dir, caplog):
    """A poll the stop keeps from being sent is not a failed check: the next run checks the batch."""
    fake_openai.configure(index_delay=60)  # still indexing when the stop comes
    fake_openai.when("POST /vector_stores/{vector_store_id}/file_batches", 1, emulated_ingest.stop.set)
    with caplog.at_level(logging.INFO, logger="ingest"):
        report = emulated_ingest.sync()
    assert report.interrupted and report.counts["left"] == 4, report.counts
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_a_key_refused_by_openai_itself_says_openai():
    import httpx2
    import openai

    from ingest.remote.retry import remote_error

    url = "https://api.openai.com/v1/"
    refused = openai.AuthenticationError(
        "no", response=httpx2.Response(401, request=httpx2.Request("GET", url)), body=None
    )
    assert str(remote_error("get", refused, url)) == "OpenAI refused the API key (401): check OPENAI_API_KEY"


def test_a_sync_says_nothing_of_its_upload_pacing_below_debug(emulated_ingest, caplog):
    """The pacer's window and counts are for -vv: in the daemon they are the whole process's, not the pass's."""
    with caplog.at_level(logging.INFO, logger="ingest"):
        assert emulated_ingest.sync().counts["uploaded"] == 4
    assert "uploads:" not in caplog.text and "window" not in caplog.text, caplog.text
