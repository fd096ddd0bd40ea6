"""The manifest keeps what was uploaded where, survives restarts, and refuses to guess when it is damaged."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import stat
from pathlib import Path

import pytest
import sqlite_utils

from ingest.manifest import (
    DELETED,
    FAILED,
    INDEXED,
    LIVE,
    PENDING,
    REJECTED,
    RETIRE,
    SCHEMA_VERSION,
    STARTED,
    FileRow,
    Manifest,
    ManifestError,
    StoreRow,
)
from ingest.schema import migration_set

migrations = migration_set()

MIGRATIONS = [m.name for m in migrations._migrations]


@pytest.fixture
def manifest_path(tmp_path) -> Path:
    return tmp_path / "state" / "ingest" / "manifest.db"


@pytest.fixture
def manifest(manifest_path):
    m = Manifest(manifest_path)
    yield m
    m.close()


def reopen(m: Manifest) -> Manifest:
    """Close and open again: what a later run sees."""
    m.close()
    return Manifest(m.path)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# the file ----------------------------------------------------------------------------------------


def test_migrations_are_recorded(manifest, manifest_path):
    db = sqlite3.connect(manifest_path)
    applied = db.execute("select migration_set, name from _sqlite_migrations order by id").fetchall()
    tables = {r[0] for r in db.execute("select name from sqlite_master where type = 'table'")}
    db.close()
    assert applied == [("ingest", name) for name in MIGRATIONS]
    assert applied[0] == ("ingest", "m001_initial")
    assert {"files", "stores", "uploads", "runs"} <= tables


@pytest.mark.skipif(len(MIGRATIONS) < 2, reason="only one migration so far")
def test_a_manifest_from_the_first_version_is_upgraded_in_place(manifest_path):
    manifest_path.parent.mkdir(parents=True)
    old = sqlite_utils.Database(manifest_path)
    migrations.apply(old, stop_before=MIGRATIONS[1])
    old["files"].insert({"root": "/docs", "path": "a.md", "state": INDEXED, "file_id": "file-1"})
    old.close()
    m = Manifest(manifest_path)
    try:
        assert [a.name for a in migrations.applied(m.db)] == MIGRATIONS
        assert m.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert m.row("/docs", "a.md").file_id == "file-1", "the rows written by the old version are kept"
    finally:
        m.close()


def test_a_manifest_stamped_by_an_older_version_is_checked_and_stamped(manifest, manifest_path):
    manifest.put(FileRow("/docs", "a.md", INDEXED, file_id="file-1"))
    manifest.execute("PRAGMA user_version = 0")  # versions before the stamp never set it
    manifest.close()
    again = Manifest(manifest_path)
    try:
        assert [a.name for a in migrations.applied(again.db)] == MIGRATIONS, "none applied twice"
        assert again.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert again.row("/docs", "a.md").file_id == "file-1"
    finally:
        again.close()


def test_opening_again_applies_nothing_twice(manifest, manifest_path):
    manifest.put(FileRow("/docs", "a.md", INDEXED, file_id="file-1"))
    again = reopen(manifest)
    try:
        count = again.db.execute("select count(*) from _sqlite_migrations").fetchone()[0]
        assert count == len(MIGRATIONS)
        assert again.row("/docs", "a.md").file_id == "file-1"
    finally:
        again.close()


def test_the_manifest_uses_wal(manifest, manifest_path):
    db = sqlite3.connect(manifest_path)
    try:
        assert db.execute("pragma journal_mode").fetchone()[0] == "wal", "WAL lets status read during a sync"
    finally:
        db.close()


def test_the_manifest_and_its_folder_are_private(tmp_path):
    path = tmp_path / "state" / "ingest" / "manifest.db"
    old = os.umask(0)  # the modes must not depend on the user's umask
    try:
        m = Manifest(path)
        m.put(FileRow("/docs", "a.md", PENDING))
    finally:
        os.umask(old)
    try:
        assert mode(path) == 0o600
        assert mode(path.parent) == 0o700
        wal = Path(str(path) + "-wal")
        assert wal.exists() and mode(wal) == 0o600
    finally:
        m.close()


def test_a_corrupt_manifest_is_kept_as_it_is_and_explained(manifest_path):
    manifest_path.parent.mkdir(parents=True)
    garbage = random.Random(7).randbytes(8192)
    manifest_path.write_bytes(garbage)
    with pytest.raises(ManifestError) as info:
        Manifest(manifest_path)
    message = str(info.value)
    assert str(manifest_path) in message
    assert "damaged" in message and "left as it is" in message
    assert f"mv '{manifest_path}' '{manifest_path}.broken'" in message and "ingest reindex" in message
    assert manifest_path.read_bytes() == garbage, "the damaged file must not be touched"


def test_a_manifest_from_a_newer_version_is_refused(manifest, manifest_path):
    manifest.put(FileRow("/docs", "a.md", INDEXED, file_id="file-1"))
    manifest.db["_sqlite_migrations"].insert(
        {"migration_set": "ingest", "name": "m999_from_the_future", "applied_at": "2030-01-01 00:00:00"}
    )
    manifest.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")  # as the newer version leaves it
    manifest.close()
    with pytest.raises(ManifestError) as info:
        Manifest(manifest_path)
    message = str(info.value)
    assert "newer version of ingest" in message and "m999_from_the_future" in message
    assert "upgrade ingest" in message
    db = sqlite3.connect(manifest_path)
    try:
        assert db.execute("select file_id from files").fetchall() == [("file-1",)], "nothing was changed"
    finally:
        db.close()


# files -------------------------------------------------------------------------------------------


def test_a_row_survives_a_restart(manifest):
    row = FileRow(
        "/docs",
        "guides/a.md",
        INDEXED,
        store="docs",
        size=12,
        mtime_ns=5,
        inode=9,
        hashed_at_ns=6,
        sha256="abc",
        mime="text/markdown",
        file_id="file-1",
        vector_store_id="vs_1",
        attributes=json.dumps({"path": "guides/a.md"}),
    )
    written = manifest.put(row)
    manifest = reopen(manifest)
    try:
        got = manifest.row("/docs", "guides/a.md")
        assert got == written
        assert got.attrs() == {"path": "guides/a.md"}
        assert got.first_seen is not None and got.updated_at >= got.first_seen
        assert got.attempts == 0
    finally:
        manifest.close()


def test_an_update_keeps_when_the_file_was_first_seen(manifest):
    first = manifest.put(FileRow("/docs", "a.md", PENDING))
    later = manifest.update(first, state=INDEXED, file_id="file-1")
    assert manifest.row("/docs", "a.md").state == INDEXED
    assert later.first_seen == first.first_seen


def test_rows_by_root_and_by_state(manifest):
    manifest.put(FileRow("/docs", "a.md", INDEXED, file_id="f1", old_file_id="f0", vector_store_id="vs_1"))
    manifest.put(FileRow("/docs", "b.md", FAILED, reason="indexing failed: server_error"))
    manifest.put(FileRow("/hr", "c.md", REJECTED, reason="empty file"))
    assert set(manifest.rows("/docs")) == {("/docs", "a.md"), ("/docs", "b.md")}
    assert len(manifest.rows()) == 3
    assert [r.path for r in manifest.rows_in_states([FAILED, REJECTED])] == ["b.md", "c.md"]
    assert [(r.root, r.path) for r in manifest.iter_problem_rows()] == [("/docs", "b.md"), ("/hr", "c.md")]
    assert manifest.referenced_ids() == {"f1", "f0"}
    assert manifest.count_in_store("vs_1") == 1
    assert [r.path for r in manifest.rows_in_store("vs_1")] == ["a.md"]


def test_the_rows_of_remote_files_are_found_by_their_id_current_or_replaced(manifest):
    manifest.put(FileRow("/docs", "a.md", INDEXED, file_id="f1", old_file_id="f0"))
    manifest.put(FileRow("/docs", "b.md", INDEXED, file_id="f2"))
    found = manifest.rows_of_files(["f0", "f2", "f-unknown"])
    assert {file_id: row.path for file_id, row in found.items()} == {"f0": "a.md", "f2": "b.md"}
    assert manifest.rows_of_files(f"f{n}" for n in range(3, 1203)) == {}, "more ids than one statement takes"


def test_a_write_commits_at_once_and_a_failed_transaction_leaves_nothing(manifest, manifest_path):
    manifest.put(FileRow("/docs", "a.md", INDEXED, file_id="f1"))
    other = sqlite3.connect(manifest_path)
    try:
        assert other.execute("select count(*) from files").fetchone() == (1,), "seen by another connection"
        with pytest.raises(RuntimeError), manifest.transaction():
            manifest.put(FileRow("/docs", "b.md", INDEXED, file_id="f2"))
            with manifest.transaction():  # a savepoint inside
                manifest.put(FileRow("/docs", "c.md", INDEXED, file_id="f3"))
            raise RuntimeError("stop")
        assert other.execute("select path from files").fetchall() == [("a.md",)]
        with manifest.transaction():
            manifest.put(FileRow("/docs", "b.md", INDEXED, file_id="f2"))
            with pytest.raises(RuntimeError), manifest.transaction():
                manifest.put(FileRow("/docs", "c.md", INDEXED, file_id="f3"))
                raise RuntimeError("only the savepoint goes")
        assert sorted(other.execute("select path from files").fetchall()) == [("a.md",), ("b.md",)]
    finally:
        other.close()


def test_a_removal_inside_a_transaction_lasts(manifest):
    manifest.put(FileRow("/docs", "a.md", INDEXED, file_id="f1"))
    manifest.put(FileRow("/docs", "b.md", INDEXED, file_id="f2"))
    with manifest.transaction():
        manifest.remove("/docs", "a.md")
    manifest = reopen(manifest)
    try:
        assert set(manifest.rows()) == {("/docs", "b.md")}
    finally:
        manifest.close()


def test_a_removal_lasts_on_its_own(manifest):
    manifest.put(FileRow("/docs", "a.md", INDEXED, file_id="f1"))
    manifest.remove("/docs", "a.md")
    manifest = reopen(manifest)
    try:
        assert manifest.rows() == {}, "a removal outside a transaction must not wait for a later commit"
    finally:
        manifest.close()


def test_a_transaction_commits_together_or_not_at_all(manifest):
    kept = manifest.put(FileRow("/docs", "a.md", INDEXED, file_id="f1"))
    manifest.ledger_done(manifest.ledger_start("/docs", "a.md", "a.md", 1, None), "f1")
    with pytest.raises(RuntimeError), manifest.transaction():
        manifest.put(FileRow("/docs", "b.md", INDEXED, file_id="f1"))
        manifest.ledger_set("f1", RETIRE)
        manifest.remove("/docs", "a.md")
        raise RuntimeError("crash half-way through a move")
    manifest = reopen(manifest)
    try:
        assert manifest.rows() == {("/docs", "a.md"): kept}, "half a move would lose or duplicate the file"
        assert [u.file_id for u in manifest.ledger(LIVE)] == ["f1"]
    finally:
        manifest.close()


def test_stores_are_listed_by_status(manifest):
    manifest.add_store(StoreRow("vs_2", "docs", 2, "active"))
    manifest.add_store(StoreRow("vs_1", "docs", 1, "active", fingerprint="fp"))
    manifest.add_store(StoreRow("vs_9", "hr", 1, "active"))
    manifest.set_store_status("vs_9", "lost")
    assert [s.id for s in manifest.stores("docs")] == ["vs_1", "vs_2"]
    assert [s.id for s in manifest.stores()] == ["vs_1", "vs_2"]
    assert [s.id for s in manifest.stores(status="lost")] == ["vs_9"]


# the ledger of remote files ----------------------------------------------------------------------


def test_an_upload_is_recorded_before_its_id_is_known(manifest):
    upload_id = manifest.ledger_start("/docs", "a.md", "a.md", 12, "abc")
    started = manifest.ledger(STARTED)
    assert [u.id for u in started] == [upload_id]
    assert started[0].file_id is None and started[0].filename == "a.md" and started[0].bytes == 12


def test_a_finished_upload_is_live(manifest):
    upload_id = manifest.ledger_start("/docs", "a.md", "a.md", 12, "abc")
    manifest.ledger_done(upload_id, "file-1")
    assert manifest.ledger(STARTED) == []
    live = manifest.ledger(LIVE)
    assert [(u.file_id, u.suspect) for u in live] == [("file-1", 0)]
    assert live[0].finished_at is not None
    assert manifest.ledger_ids() == {"file-1"}
    assert manifest.ledger_suspects() == []


def test_a_retried_upload_is_a_suspect_until_resolved(manifest):
    upload_id = manifest.ledger_start("/docs", "a.md", "a.md", 12, "abc")
    manifest.ledger_done(upload_id, "file-1", suspect=True)
    suspects = manifest.ledger_suspects()
    assert [u.file_id for u in suspects] == ["file-1"]
    manifest.ledger_resolved(suspects[0])
    assert manifest.ledger_suspects() == []
    assert [u.file_id for u in manifest.ledger(LIVE)] == ["file-1"], "the kept file stays live"


def test_a_clean_failure_leaves_nothing_to_sweep(manifest):
    upload_id = manifest.ledger_start("/docs", "a.md", "a.md", 12, "abc")
    manifest.ledger_failed(upload_id, ambiguous=False)
    assert manifest.ledger(STARTED) == [] and manifest.ledger_suspects() == []
    assert [u.id for u in manifest.ledger(DELETED)] == [upload_id]


def test_an_ambiguous_failure_is_kept_for_the_sweep_once(manifest):
    upload_id = manifest.ledger_start("/docs", "a.md", "a.md", 12, "abc")
    manifest.ledger_failed(upload_id, ambiguous=True)
    to_sweep = manifest.ledger(STARTED) + manifest.ledger_suspects()
    assert [u.id for u in to_sweep] == [upload_id], "the sweep looks for it, and only once"
    assert to_sweep[0].suspect == 1 and to_sweep[0].finished_at is not None
    manifest.ledger_resolved(to_sweep[0])
    assert manifest.ledger(STARTED) == [] and manifest.ledger_suspects() == []
    assert [u.id for u in manifest.ledger(DELETED)] == [upload_id]


def test_ledger_status_follows_the_file_id(manifest):
    for name, file_id in (("a.md", "file-a"), ("b.md", "file-b")):
        manifest.ledger_done(manifest.ledger_start("/docs", name, name, 1, None), file_id)
    manifest.ledger_set("file-a", LIVE, "vs_1")
    manifest.ledger_set("file-b", RETIRE)
    assert [(u.file_id, u.vector_store_id) for u in manifest.ledger(LIVE)] == [("file-a", "vs_1")]
    assert [u.file_id for u in manifest.ledger(RETIRE)] == ["file-b"]
    manifest = reopen(manifest)
    try:
        assert [u.file_id for u in manifest.ledger(RETIRE)] == ["file-b"], "a status change lasts"
    finally:
        manifest.close()


# runs --------------------------------------------------------------------------------------------


def test_runs_are_recorded_newest_first(manifest):
    first = manifest.start_run("sync")
    manifest.finish_run(first, 0, {"new": 3}, [])
    second = manifest.start_run("watch")
    manifest.finish_run(second, 1, {"new": 0, "held": 2}, ["/docs/a.md", "/docs/b.md"])
    runs = manifest.recent_runs()
    assert [r["command"] for r in runs] == ["watch", "sync"]
    assert runs[0]["exit_code"] == 1 and json.loads(runs[0]["counts"]) == {"new": 0, "held": 2}
    assert json.loads(runs[0]["held"]) == ["/docs/a.md", "/docs/b.md"]
    assert runs[1]["finished_at"] >= runs[1]["started_at"]
    assert len(manifest.recent_runs(limit=1)) == 1


def test_an_unfinished_run_shows_as_unfinished(manifest):
    manifest.start_run("sync")
    manifest = reopen(manifest)
    try:
        run = manifest.recent_runs()[0]
        assert run["finished_at"] is None and run["exit_code"] is None
    finally:
        manifest.close()


def test_the_settled_rows_read_beside_a_walk_see_the_writes_of_an_open_transaction(tmp_path):
    from ingest.manifest import INDEXED, FileRow, Manifest

    m = Manifest(tmp_path / "manifest.db")
    try:
        row = FileRow("/r", "a.md", INDEXED, "docs", 5, 1_000, 7, 10_000_000_000, "ab", file_id="file-1")
        m.put(row)
        assert set(m.settled_beside("/r", False, "docs", False)()[0]) == {"a.md"}, "committed: read beside"
        with m.transaction():
            m.put(FileRow("/r", "b.md", INDEXED, "docs", 5, 1_000, 8, 10_000_000_000, "cd", file_id="file-2"))
            assert set(m.settled_beside("/r", False, "docs", False)()[0]) == {"a.md", "b.md"}
    finally:
        m.close()
