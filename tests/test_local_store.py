"""The embedded store behaves like an OpenAI vector store: states, failures, search, removal."""

from __future__ import annotations

import random
import sqlite3
import stat
import threading

import pytest

from ingest.remote.base import AttachItem, NotFound, RemoteError
from ingest.remote.local import LocalRemote
from tests.docs import make_docx, make_pdf

WORDS = [
    "river",
    "mountain",
    "budget",
    "meeting",
    "report",
    "garden",
    "window",
    "engine",
    "paper",
    "coffee",
    "ladder",
    "signal",
    "forest",
    "orbit",
    "pencil",
    "harbor",
    "ticket",
    "valley",
    "marble",
    "canvas",
    "lantern",
]


@pytest.fixture
def remote(tmp_path):
    r = LocalRemote(tmp_path / "store")
    yield r
    r.close()


@pytest.fixture
def store(remote):
    return remote.create_store("docs", {"project": "test"}, None, None)


@pytest.fixture
def docs_root(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    return root


def _write(root, name, text):
    path = root / name
    path.write_text(text, encoding="utf-8")
    return path


def _filler(seed: int, words: int = 300) -> str:
    rnd = random.Random(seed)
    return " ".join(rnd.choice(WORDS) for _ in range(words)) + "."


def _add(remote, store, path, attributes=None, chunking=None):
    """Upload, attach and index one file; return its file id."""
    f = remote.upload(path, path.name)
    batch = remote.attach_batch(store.id, [AttachItem(f.id, attributes or {}, chunking)])
    assert remote.get_batch(store.id, batch.id).status == "completed"
    return f.id


def test_attach_is_in_progress_then_completed(remote, store, docs_root):
    a = remote.upload(_write(docs_root, "a.txt", "alpha document"), "a.txt")
    b = remote.upload(_write(docs_root, "b.md", "# beta document"), "b.md")
    assert a.id.startswith("file-local-") and a.bytes == len("alpha document")
    batch = remote.attach_batch(store.id, [AttachItem(a.id, {"n": 1}), AttachItem(b.id, {})])
    assert batch.id.startswith("vsfb_local_")
    assert (batch.status, batch.in_progress, batch.total) == ("in_progress", 2, 2)
    [listed] = remote.list_stores()  # a listing of every store indexes nothing
    assert listed.file_counts["in_progress"] == 2

    done = remote.get_batch(store.id, batch.id)
    assert (done.status, done.completed, done.failed, done.total) == ("completed", 2, 0, 2)
    info = remote.get_store(store.id)
    assert info.status == "completed"
    assert info.file_counts == {"in_progress": 0, "completed": 2, "failed": 0, "cancelled": 0, "total": 2}
    assert info.usage_bytes == len("alpha document") + len("# beta document")
    assert info.metadata == {"project": "test"}
    assert remote.get_store_file(store.id, a.id).attributes == {"n": 1}


def test_reading_a_store_indexes_nothing_and_a_wait_on_its_counts_does(tmp_path, docs_root):
    # A status or a verify reads the store (GET vector_stores/{id}, a listing of its files): pending
    # files stay pending. A rebuild waits on the counts and asks for the work (index_pending): a budget
    # of no time still indexes a file per call, so the counts move every time.
    remote = LocalRemote(tmp_path / "store", work_budget_s=0.0)
    try:
        store = remote.create_store("docs", {}, None, None)
        ids = [remote.upload(_write(docs_root, f"{n}.txt", f"document {n}"), f"{n}.txt").id for n in range(2)]
        remote.attach_batch(store.id, [AttachItem(i, {}) for i in ids])
        reads = [remote.get_store(store.id).file_counts["in_progress"] for _ in range(2)]
        listed = {f.status for f in remote.list_store_files(store.id)}
        assert (reads, listed) == ([2, 2], {"in_progress"})
        pending = []
        for _ in range(2):
            remote.index_pending(store.id)
            pending.append(remote.get_store(store.id).file_counts["in_progress"])
        assert pending == [1, 0]
        assert remote.get_store(store.id).status == "completed"
    finally:
        remote.close()


def test_failed_files_carry_error_code_and_message(remote, store, docs_root):
    doc = docs_root / "old.doc"
    doc.write_bytes(b"\xd0\xcf\x11\xe0" + b"\x00" * 64)
    pdf = docs_root / "broken.pdf"
    pdf.write_bytes(b"%PDF-1.4 this is not really a pdf")
    good = _write(docs_root, "fine.txt", "perfectly fine text")
    ids = [remote.upload(p, p.name).id for p in (doc, pdf, good)]
    batch = remote.attach_batch(store.id, [AttachItem(i, {}) for i in ids])
    done = remote.get_batch(store.id, batch.id)
    # Like the API, a batch completes even when some of its files failed.
    assert (done.status, done.completed, done.failed) == ("completed", 1, 2)
    failed = {f.file_id: f for f in remote.batch_files(store.id, batch.id, status="failed")}
    assert failed[ids[0]].error_code == "unsupported_file"
    assert ".docx" in failed[ids[0]].error_message
    assert failed[ids[1]].error_code == "invalid_file"
    assert failed[ids[1]].error_message
    assert remote.get_store_file(store.id, ids[2]).status == "completed"


def test_rare_term_finds_its_document_first(remote, store, docs_root):
    ids = {}
    for n in range(20):
        text = _filler(n)
        if n == 13:
            text = text[:700] + " The xylophone quartet rehearses on Tuesdays. " + text[700:]
        ids[n] = _add(remote, store, _write(docs_root, f"doc{n}.txt", text), {"n": n})
    hits = remote.search(store.id, "where does the xylophone quartet rehearse?")
    assert hits[0].file_id == ids[13]
    assert hits[0].filename == "doc13.txt"
    assert "xylophone" in hits[0].text
    assert hits[0].attributes == {"n": 13}
    scores = [h.score for h in hits]
    assert all(0 < s <= 1 for s in scores) and scores == sorted(scores, reverse=True)
    assert len(remote.search(store.id, "river mountain", max_results=3)) == 3


def test_search_pdf_and_docx_content(remote, store, docs_root):
    pdf_id = _add(remote, store, make_pdf(docs_root / "r.pdf", "Invoice for the zeppelin hangar"))
    docx_id = _add(remote, store, make_docx(docs_root / "m.docx", ["Minutes of the quokka club"]))
    assert remote.search(store.id, "zeppelin")[0].file_id == pdf_id
    assert remote.search(store.id, "quokka")[0].file_id == docx_id


def test_filters_limit_search_results(remote, store, docs_root):
    for n, lang in enumerate(["en", "fr", "en", "de"]):
        _add(remote, store, _write(docs_root, f"{n}.txt", f"shared topic number {n}"), {"lang": lang, "year": 2020 + n})
    only_en = remote.search(store.id, "shared topic", {"type": "eq", "key": "lang", "value": "en"})
    assert sorted(h.attributes["year"] for h in only_en) == [2020, 2022]
    nested = {
        "type": "or",
        "filters": [
            {"type": "eq", "key": "lang", "value": "de"},
            {
                "type": "and",
                "filters": [{"type": "eq", "key": "lang", "value": "en"}, {"type": "gt", "key": "year", "value": 2020}],
            },
        ],
    }
    assert sorted(h.attributes["year"] for h in remote.search(store.id, "topic", nested)) == [2022, 2023]
    with pytest.raises(RemoteError, match="filters"):
        remote.search(store.id, "topic", {"type": "eq", "key": "lang"})


def test_updated_attributes_are_used_by_filters(remote, store, docs_root):
    fid = _add(remote, store, _write(docs_root, "a.txt", "movable text"), {"folder": "old"})
    remote.update_attributes(store.id, fid, {"folder": "new"})
    assert remote.search(store.id, "movable", {"type": "eq", "key": "folder", "value": "new"})
    assert not remote.search(store.id, "movable", {"type": "eq", "key": "folder", "value": "old"})


def test_punctuation_in_queries_never_breaks_search(remote, store, docs_root):
    _add(remote, store, _write(docs_root, "a.txt", "C++ templates and foo_bar() calls"))
    for query in ['"unbalanced', "a AND OR NOT (", "foo_bar()", "C++ *", "NEAR(x y)", "-^:"]:
        remote.search(store.id, query)  # must not raise
    assert remote.search(store.id, "foo_bar()")[0].text.startswith("C++")
    assert remote.search(store.id, "?!*") == []


def test_detach_removes_document_from_search(remote, store, docs_root):
    keep = _add(remote, store, _write(docs_root, "keep.txt", "walrus facts and more"))
    gone = _add(remote, store, _write(docs_root, "gone.txt", "walrus rumours"))
    remote.detach(store.id, gone)
    assert [h.file_id for h in remote.search(store.id, "walrus")] == [keep]
    with pytest.raises(NotFound):
        remote.get_store_file(store.id, gone)
    # The underlying file survives a detach, as on OpenAI.
    assert gone in {f.id for f in remote.list_files()}
    remote.detach(store.id, gone)  # twice is fine


def test_delete_file_removes_it_from_every_store_and_the_disk(remote, store, docs_root):
    other = remote.create_store("other", {}, None, None)
    path = _write(docs_root, "x.txt", "pangolin census")
    f = remote.upload(path, "x.txt")
    for s in (store, other):
        remote.get_batch(s.id, remote.attach_batch(s.id, [AttachItem(f.id, {})]).id)
        assert remote.search(s.id, "pangolin")
    remote.delete_file(f.id)
    for s in (store, other):
        assert remote.search(s.id, "pangolin") == []
        assert remote.get_store(s.id).file_counts["total"] == 0
    assert f.id not in {x.id for x in remote.list_files()}
    assert not (remote.blobs / f.id).exists()
    remote.delete_file(f.id)  # twice is fine
    remote.delete_file("file-local-doesnotexist")


def test_changed_version_replaces_old_text(remote, store, docs_root):
    path = _write(docs_root, "plan.txt", "the launch is on monday")
    old = _add(remote, store, path)
    path.write_text("the launch moved to friday")
    new = _add(remote, store, path)  # make before break: index the new one, then detach
    remote.detach(store.id, old)
    hits = remote.search(store.id, "launch")
    assert [h.text for h in hits] == ["the launch moved to friday"]
    assert remote.search(store.id, "monday") == []
    assert hits[0].file_id == new


def test_store_keeps_its_own_copy_of_the_bytes(remote, store, docs_root):
    path = _write(docs_root, "a.txt", "original words")
    f = remote.upload(path, "a.txt")
    path.write_text("edited afterwards")  # before indexing even started
    remote.get_batch(store.id, remote.attach_batch(store.id, [AttachItem(f.id, {})]).id)
    assert remote.search(store.id, "original")
    assert remote.search(store.id, "edited") == []


def test_reattaching_the_same_file_replaces_it(remote, store, docs_root):
    fid = _add(remote, store, _write(docs_root, "a.txt", "capybara " * 5), {"v": 1})
    batch = remote.attach_batch(store.id, [AttachItem(fid, {"v": 2})])
    assert remote.get_batch(store.id, batch.id).status == "completed"
    assert [f.attributes for f in remote.list_store_files(store.id)] == [{"v": 2}]
    assert len(remote.search(store.id, "capybara")) == 1
    assert remote.get_store(store.id).file_counts["total"] == 1


def test_store_chunking_strategy_is_used(remote, docs_root):
    small = remote.create_store(
        "small", {}, {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}, None
    )
    _add(remote, small, _write(docs_root, "long.txt", _filler(1, 2000)))
    hits = remote.search(small.id, "river", max_results=50)
    assert len(hits) > 10 and all(len(h.text.split()) <= 100 for h in hits)
    with pytest.raises(RemoteError, match="half"):
        remote.create_store(
            "bad", {}, {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 60}}, None
        )


def test_listing_returns_everything_without_pages(remote, store, docs_root):
    paths = [_write(docs_root, f"{n}.txt", f"file number {n}") for n in range(150)]
    ids = [remote.upload(p, p.name).id for p in paths]
    batch = remote.attach_batch(store.id, [AttachItem(i, {}) for i in ids])
    while remote.get_batch(store.id, batch.id).status == "in_progress":
        pass  # each poll indexes for its budget
    listed = list(remote.list_store_files(store.id))
    assert [f.file_id for f in listed] == ids
    assert all(f.status == "completed" for f in listed)
    assert list(remote.list_store_files(store.id, status="failed")) == []
    assert {f.id for f in remote.list_files()} >= set(ids)


def test_polling_indexes_a_bounded_amount_per_call(tmp_path, docs_root):
    remote = LocalRemote(tmp_path / "s", work_budget_s=0)  # one file per call
    store = remote.create_store("s", {}, None, None)
    ids = [remote.upload(_write(docs_root, f"{n}.txt", f"text {n}"), f"{n}.txt").id for n in range(3)]
    batch = remote.attach_batch(store.id, [AttachItem(i, {}) for i in ids])
    states = [remote.get_batch(store.id, batch.id) for _ in range(3)]
    assert [b.in_progress for b in states] == [2, 1, 0]
    assert states[0].poll_after_ms is not None and states[-1].status == "completed"


def test_work_left_by_a_crash_is_picked_up(tmp_path, docs_root):
    first = LocalRemote(tmp_path / "s")
    store = first.create_store("s", {}, None, None)
    f = first.upload(_write(docs_root, "a.txt", "survives the crash"), "a.txt")
    first.attach_batch(store.id, [AttachItem(f.id, {})])
    first.close()  # the process dies before anything polled
    second = LocalRemote(tmp_path / "s")
    assert second.get_store_file(store.id, f.id).status == "completed"
    assert second.search(store.id, "crash")[0].file_id == f.id


def test_unknown_ids_raise_not_found(remote, store, docs_root):
    with pytest.raises(NotFound):
        remote.get_store("vs_local_nope")
    with pytest.raises(NotFound):
        remote.get_store_file(store.id, "file-local-nope")
    with pytest.raises(NotFound):
        remote.get_batch(store.id, "vsfb_local_nope")
    with pytest.raises(NotFound):
        remote.attach_batch(store.id, [AttachItem("file-local-nope", {})])
    f = remote.upload(_write(docs_root, "a.txt", "x"), "a.txt")
    with pytest.raises(NotFound):
        remote.attach_batch("vs_local_nope", [AttachItem(f.id, {})])
    with pytest.raises(NotFound):
        remote.update_attributes(store.id, f.id, {"a": 1})
    with pytest.raises(NotFound):
        remote.search("vs_local_nope", "x")
    with pytest.raises(NotFound):
        list(remote.list_store_files("vs_local_nope"))
    remote.delete_store(store.id)
    with pytest.raises(NotFound):
        remote.get_store(store.id)


def test_bad_attributes_are_refused_like_the_api(remote, store, docs_root):
    f = remote.upload(_write(docs_root, "a.txt", "x"), "a.txt")
    with pytest.raises(RemoteError, match="16"):
        remote.attach_batch(store.id, [AttachItem(f.id, {f"k{i}": i for i in range(17)})])
    with pytest.raises(RemoteError, match="256"):
        remote.attach_batch(store.id, [AttachItem(f.id, {"k": "x" * 257})])


def test_store_expires_after_inactivity(tmp_path):
    now = [1_000_000.0]
    remote = LocalRemote(tmp_path / "s", clock=lambda: now[0])
    s = remote.create_store("s", {}, None, expires_after_days=1)
    now[0] += 0.5 * 86400
    remote.search(s.id, "activity")  # use postpones expiry
    now[0] += 0.9 * 86400
    assert remote.get_store(s.id).status == "completed"
    now[0] += 0.2 * 86400
    assert remote.get_store(s.id).status == "expired"


def test_a_search_does_not_wait_for_a_writer_unless_its_activity_is_due(tmp_path, docs_root):
    now = [1_000_000.0]
    remote = LocalRemote(tmp_path / "s", clock=lambda: now[0])
    s = remote.create_store("s", {}, None, expires_after_days=1)
    f = remote.upload(_write(docs_root, "a.txt", "the okapi report"), "a.txt")
    assert remote.get_batch(s.id, remote.attach_batch(s.id, [AttachItem(f.id, {})]).id).completed == 1
    remote._db.execute("PRAGMA busy_timeout = 0")  # waiting for the writer would fail at once
    writer = sqlite3.connect(tmp_path / "s" / "store.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process, in the middle of a sync
    try:
        assert [h.file_id for h in remote.search(s.id, "okapi")] == [f.id]
        now[0] += 120  # activity is due: this search records it, so it needs the write lock
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            remote.search(s.id, "okapi")
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    remote.search(s.id, "okapi")
    now[0] += 86400 - 60  # a day after the store's last write, not yet a day after that search
    assert remote.get_store(s.id).status == "completed", "the search two minutes in postponed expiry"


def test_blob_folder_is_private(remote):
    assert stat.S_IMODE(remote.blobs.stat().st_mode) == 0o700
    assert (remote.directory / "store.db").exists()


def test_uploads_from_eight_threads(remote, store, docs_root):
    paths = [_write(docs_root, f"{n}.txt", f"thread document {n} okapi") for n in range(80)]
    results, errors = [], []

    def work(chunk):
        try:
            for p in chunk:
                results.append(remote.upload(p, p.name))
            remote.list_store_files(store.id)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(paths[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({r.id for r in results}) == 80
    batch = remote.attach_batch(store.id, [AttachItem(r.id, {}) for r in results])
    pollers = [threading.Thread(target=remote.get_batch, args=(store.id, batch.id)) for _ in range(8)]
    for t in pollers:
        t.start()
    for t in pollers:
        t.join()
    assert remote.get_batch(store.id, batch.id).completed == 80
    assert len(remote.search(store.id, "okapi", max_results=50)) == 50


def test_small_store_still_ranks_and_scores_common_words(remote, store, docs_root):
    # Every document says "launch": the word must still rank by how much each one says it.
    often = _add(remote, store, _write(docs_root, "a.txt", "launch launch launch checklist"))
    _add(remote, store, _write(docs_root, "b.txt", "the launch moved to friday"))
    _add(remote, store, _write(docs_root, "c.txt", "launch party on friday evening"))
    hits = remote.search(store.id, "launch")
    assert hits[0].file_id == often
    assert all(h.score > 0.1 for h in hits)
    assert {h.filename for h in remote.search(store.id, "friday launch")[:2]} == {"b.txt", "c.txt"}


def test_per_file_chunking_overrides_the_store(remote, store, docs_root):
    small = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}
    _add(remote, store, _write(docs_root, "long.txt", _filler(2, 2000)), chunking=small)
    assert len(remote.search(store.id, "river", max_results=50)) > 10


def test_a_store_made_before_its_schema_was_versioned_is_adopted_and_kept(tmp_path, docs_root):
    import sqlite3

    from ingest.remote.local.schema import MIGRATIONS

    first = LocalRemote(tmp_path / "store")
    store = first.create_store("docs", {}, None, None)
    file_id = _add(first, store, _write(docs_root, "a.txt", "the okapi lives in the forest"))
    first.close()
    db = sqlite3.connect(tmp_path / "store" / "store.db")
    # As a store written before the schema had versions: no migration record, and none of what later
    # migrations added (the chunk and title vectors).
    for statement in (
        "DROP TABLE _sqlite_migrations",
        "DROP TRIGGER chunks_title_insert",
        "DROP TRIGGER chunks_title_delete",
        "DROP TABLE title_vectors",
        "DROP TRIGGER chunks_vec_insert",
        "DROP TRIGGER chunks_vec_delete",
        "DROP TRIGGER chunks_vec_update",
        "DROP INDEX chunks_unembedded",
        "DROP TABLE settings",
        "DROP TABLE vector_gen",
        "DROP TABLE chunks_vocab",
        "ALTER TABLE chunks DROP COLUMN embedding",
    ):
        db.execute(statement)
    db.execute("PRAGMA user_version = 0")
    db.commit()
    db.close()

    for _ in range(2):  # adopted once, then nothing left to apply
        again = LocalRemote(tmp_path / "store")
        try:
            hits = again.search(store.id, "okapi", None, 5)
            assert [h.file_id for h in hits] == [file_id], "the old store's chunks are kept"
        finally:
            again.close()
        db = sqlite3.connect(tmp_path / "store" / "store.db")
        applied = [name for (name,) in db.execute("SELECT name FROM _sqlite_migrations")]
        db.close()
        assert applied == [step.__name__ for step in MIGRATIONS]


def test_a_store_a_newer_version_wrote_is_refused_and_left_as_it_is(tmp_path):
    LocalRemote(tmp_path / "store").close()
    db = sqlite3.connect(tmp_path / "store" / "store.db")
    db.execute(
        "INSERT INTO _sqlite_migrations(migration_set, name, applied_at)"
        " VALUES ('ingest-local-store', 'm099_later', 'x')"
    )
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(RemoteError, match=r"newer version of ingest \(migration m099_later\)"):
        LocalRemote(tmp_path / "store")
    db = sqlite3.connect(tmp_path / "store" / "store.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 99, "left as it was"
    db.close()


def _index(remote, store_id, path, name):
    f = remote.upload(path, name)
    assert remote.get_batch(store_id, remote.attach_batch(store_id, [AttachItem(f.id, {})]).id).completed == 1
    return f.id


def test_the_shards_of_a_store_share_one_ranking_until_the_index_changes(remote, docs_root, tmp_path):
    shards = [remote.create_store("docs", {"shard": str(n)}, None, None) for n in range(3)]
    ids = [
        _index(remote, s.id, _write(docs_root, f"{n}.txt", f"okapi field notes {n}"), f"{n}.txt")
        for n, s in enumerate(shards)
    ]
    rankings = []
    remote._db.set_trace_callback(lambda sql: rankings.append(sql) if "MATCH" in sql else None)
    assert [[h.file_id for h in remote.search(s.id, "okapi")] for s in shards] == [[i] for i in ids]
    assert len(rankings) == 1, "the same words ranked once for the three shards"
    # Another process adds a document: the next search ranks again and finds it.
    other = LocalRemote(tmp_path / "store")
    try:
        added = _index(other, shards[0].id, _write(docs_root, "new.txt", "okapi okapi sighting"), "new.txt")
    finally:
        other.close()
    assert [h.file_id for h in remote.search(shards[0].id, "okapi")] == [added, ids[0]]
    assert len(rankings) == 2
    # ...and so does a change made through this connection.
    remote.detach(shards[0].id, added)
    assert [h.file_id for h in remote.search(shards[0].id, "okapi")] == [ids[0]]
    assert len(rankings) == 3
