"""verify / reindex / gc / rebuilds against the emulator, with its state tampered behind the tool's back."""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import pytest

from ingest.manifest import Manifest
from tests import helpers
from tests.conftest import Cli


@pytest.fixture
def cli(openai_cli) -> Cli:
    return openai_cli


manifest_rows = functools.partial(helpers.manifest_rows, backend="openai")


def corpus(root: Path, n: int = 8) -> Path:
    root.mkdir()
    for i in range(n):
        (root / f"doc{i}.md").write_text(f"# Doc {i}\n\nThe keyword pangolin{i} appears here.\n")
    return root


def test_verify_reports_each_drift_and_reindex_repairs_it(cli, fake_openai, tmp_path, state_dir):
    root = corpus(tmp_path / "docs")
    cli("sync", str(root))
    assert cli.json("verify")["in_sync"] is True
    rows = manifest_rows(state_dir)
    store = fake_openai.stores()[0]["id"]
    fake_openai.delete_store_file(store, rows["doc0.md"].file_id)  # missing remotely
    fake_openai.fail_store_file(store, rows["doc1.md"].file_id)  # failed
    fake_openai.state.tamper_status(store, rows["doc4.md"].file_id, "cancelled", None)  # not searchable either
    fake_openai.set_store_file_attributes(store, rows["doc2.md"].file_id, {"path": "x"})  # attribute drift
    foreign = fake_openai.add_stray_file(store, "stray.txt")  # extra, not ours
    (root / "doc3.md").write_text("# Doc 3 edited\n")  # local change
    report = cli.json("verify", check=1)
    kinds = report["counts"]
    assert kinds == {"missing_remotely": 1, "failed": 2, "attribute_drift": 1, "extra": 1, "local_changes": 1}
    by_kind = {d["kind"]: d for d in report["drift"]}
    assert by_kind["missing_remotely"]["path"].endswith("doc0.md")
    assert by_kind["attribute_drift"]["path"].endswith("doc2.md")

    cli("reindex")
    assert cli.json("verify")["in_sync"] is True
    assert foreign in {f["id"] for f in fake_openai.files()}, "a file ingest did not create is never deleted"
    completed = fake_openai.store_files(store, "completed")
    assert sorted(sf["attributes"]["path"] for sf in completed) == sorted(manifest_rows(state_dir))


def test_expired_store_is_reported_and_recreated(cli, fake_openai, tmp_path, state_dir):
    root = corpus(tmp_path / "docs")
    cli("sync", str(root))
    old = fake_openai.stores()[0]["id"]
    fake_openai.expire_store(old)
    assert cli.json("verify", check=1)["counts"] == {"store_lost": 1}
    cli("reindex")
    assert cli.json("verify")["in_sync"] is True
    current = {r.vector_store_id for r in manifest_rows(state_dir).values()}
    assert len(current) == 1 and old not in current


def test_gc_deletes_only_unreferenced_files_it_created(cli, fake_openai, tmp_path, state_dir):
    root = corpus(tmp_path / "docs", 3)
    cli("sync", str(root))
    # An upload of ours that was never attached (a crash between upload and attach).
    m = Manifest(state_dir / "manifest.db")
    try:
        orphan = fake_openai.create_file("lost.md", b"# lost\n")
        upload_id = m.ledger_start(str(root), "lost.md", "lost.md", 7, None)
        m.ledger_done(upload_id, orphan)
    finally:
        m.close()
    foreign = fake_openai.create_file("doc0.md", b"someone else's file")
    assert cli.json("verify", check=1)["counts"] == {"orphaned": 1}
    assert cli.json("gc", "--dry-run")["files"] == [orphan]
    assert orphan in {f["id"] for f in fake_openai.files()}
    assert cli.json("gc")["files"] == [orphan]
    ids = {f["id"] for f in fake_openai.files()}
    assert orphan not in ids and foreign in ids
    assert cli.json("verify")["in_sync"] is True


def test_reindex_is_quiet_when_all_is_well_and_speaks_of_news_only(cli, tmp_path):
    root = corpus(tmp_path / "docs", 2)
    (root / "broken.pdf").write_bytes(b"not a pdf at all")
    cli("sync", str(root))
    assert cli("reindex").stdout == "", "a file rejected as before is no news for cron"
    (root / "empty.md").write_bytes(b"")
    news = cli("reindex").stdout
    assert "empty.md: empty file" in news, news
    assert cli("reindex").stdout == ""


def test_chunking_change_rebuilds_without_a_half_built_store(cli, fake_openai, tmp_path, state_dir):
    root = corpus(tmp_path / "docs", 12)
    config = tmp_path / "ingest.toml"
    config.write_text(f'request_timeout = 5\nindex_timeout = 30\n[[roots]]\npath = "{root}"\nstore = "kb"\n')
    cli("sync")
    old = fake_openai.stores()[0]["id"]
    fake_openai.configure(index_delay=0.3)
    config.write_text(
        config.read_text() + '[[stores]]\nname = "kb"\n'
        'chunking = { type = "static", max_chunk_size_tokens = 200, chunk_overlap_tokens = 50 }\n'
    )
    answers, stop = [], threading.Event()

    def query():
        # What an application does: read the current store id, search it.
        while not stop.is_set():
            m = Manifest(state_dir / "manifest.db")
            try:
                store_ids = [s.id for s in m.stores()]
            finally:
                m.close()
            for store_id in store_ids:
                store = fake_openai.store(store_id)
                complete = store["file_counts"]["completed"]
                answers.append((store_id, complete))
            stop.wait(0.05)

    watcher = threading.Thread(target=query)
    watcher.start()
    fake_openai.reset_counters()
    try:
        report = cli.json("sync")
    finally:
        stop.set()
        watcher.join()
    listings = fake_openai.counters()["requests"].get("GET /vector_stores/{vector_store_id}/files", 0)
    assert listings <= 2, f"{listings} listings of the new store: waiting must poll its counts, not list it"
    new = {r.vector_store_id for r in manifest_rows(state_dir).values()}
    assert len(new) == 1 and old not in new
    assert any("rebuilt" in n for n in report["notes"])
    assert answers and all(complete == 12 for _, complete in answers), answers
    assert [s["id"] for s in fake_openai.stores()] == list(new)
    assert len(fake_openai.store_files(new.pop(), "completed")) == 12


def test_a_file_failing_in_the_rebuilt_store_does_not_block_the_switch(cli, fake_openai, tmp_path, state_dir):
    root = corpus(tmp_path / "docs", 5)
    config = tmp_path / "ingest.toml"
    config.write_text(f'request_timeout = 5\nindex_timeout = 30\n[[roots]]\npath = "{root}"\nstore = "kb"\n')
    cli("sync")
    old = fake_openai.stores()[0]["id"]
    fake_openai.configure(index_fail_names={"doc3.md"})
    config.write_text(
        config.read_text() + '[[stores]]\nname = "kb"\nchunking = { type = "static", '
        "max_chunk_size_tokens = 300, chunk_overlap_tokens = 100 }\n"
    )
    report = cli.json("sync", check=None)
    assert any("rebuilt" in n for n in report["notes"])
    rows = manifest_rows(state_dir)
    assert {r.vector_store_id for r in rows.values()} != {old}
    assert rows["doc3.md"].state == "failed" and rows["doc0.md"].state == "indexed"
