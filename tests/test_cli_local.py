"""End-to-end: the whole CLI flow on the embedded local store, with no API key."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from ingest.lock import ManifestLock
from ingest.manifest import INDEXED, REJECTED, Manifest
from ingest.remote.local import LocalRemote
from tests.helpers import manifest_rows

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def store_files(state_dir: Path) -> dict[str, dict]:
    """Every file attached to any local store, by its path attribute."""
    remote = LocalRemote(state_dir / "local" / "store")
    m = Manifest(state_dir / "local" / "manifest.db")
    try:
        out = {}
        for store in m.stores():
            for sf in remote.list_store_files(store.id):
                out[sf.attributes.get("path")] = {
                    "file_id": sf.file_id,
                    "status": sf.status,
                    "attributes": dict(sf.attributes),
                }
        return out
    finally:
        m.close()


def test_first_sync_indexes_everything_and_second_uploads_nothing(ingest, docs_root, state_dir):
    first = ingest.json("sync", str(docs_root))
    assert first["counts"]["new"] == 4 and first["counts"]["indexed"] == 4 and first["exit_code"] == 0
    rows = manifest_rows(state_dir)
    assert {p: r.state for p, r in rows.items()} == {
        "guides/install.md": INDEXED,
        "guides/usage.txt": INDEXED,
        "faq.html": INDEXED,
        "notes.py": INDEXED,
    }
    assert all(r.file_id and r.vector_store_id and len(r.sha256) == 64 for r in rows.values())
    remote = store_files(state_dir)
    assert set(remote) == set(rows) and all(f["status"] == "completed" for f in remote.values())
    attrs = remote["guides/install.md"]["attributes"]
    assert attrs["folder"] == "guides" and attrs["ext"] == "md" and attrs["sha256"] == rows["guides/install.md"].sha256

    second = ingest.json("sync", str(docs_root))
    assert second["counts"]["uploaded"] == 0 and second["counts"]["unchanged"] == 4
    assert store_files(state_dir) == remote


def test_search_finds_documents_and_respects_filters(ingest, docs_root):
    ingest("sync", str(docs_root))
    hits = ingest.json("search", "zebrafish installer")
    assert hits[0]["path"].endswith("guides/install.md")
    assert not ingest.json("search", "scriptword"), "script text of HTML must not be indexed"
    filtered = ingest.json("search", "quokka zebrafish", "--filter", "ext=txt")
    assert filtered and all(h["attributes"]["ext"] == "txt" for h in filtered)
    out = ingest("search", "narwhal").stdout
    assert "faq.html" in out and "score" in out


def test_search_gives_as_many_documents_as_asked_when_one_document_has_many_matching_chunks(ingest, tmp_path):
    docs = tmp_path / "many"
    docs.mkdir()
    (docs / "long.txt").write_text(
        "\n\n".join(f"Section {n}: the axolotl regrows its limbs, axolotl after axolotl. " * 30 for n in range(12))
    )
    (docs / "short.txt").write_text("A short note that names the axolotl once.\n")
    ingest("sync", str(docs))
    hits = ingest.json("search", "axolotl", "-n", "2")
    assert sorted(Path(h["path"]).name for h in hits) == ["long.txt", "short.txt"]


def test_edit_replaces_the_old_version_after_the_new_one_is_indexed(ingest, docs_root, state_dir):
    ingest("sync", str(docs_root))
    old_id = manifest_rows(state_dir)["guides/usage.txt"].file_id
    target = docs_root / "guides" / "usage.txt"
    target.write_text("Usage notes: the platypus command replaced the old one.\n")
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    report = ingest.json("sync", str(docs_root))
    assert report["counts"]["changed"] == 1 and report["counts"]["uploaded"] == 1
    assert report["counts"]["remote_deleted"] == 1
    row = manifest_rows(state_dir)["guides/usage.txt"]
    assert row.file_id != old_id and row.state == INDEXED and row.old_file_id is None
    assert ingest.json("search", "platypus")[0]["path"].endswith("usage.txt")
    assert not ingest.json("search", "quokka"), "the old version must no longer be searchable"
    remote = LocalRemote(state_dir / "local" / "store")
    assert old_id not in {f.id for f in remote.list_files()}


def test_rename_is_an_attribute_update_not_an_upload(ingest, docs_root, state_dir):
    ingest("sync", str(docs_root))
    before = manifest_rows(state_dir)["notes.py"].file_id
    (docs_root / "archive").mkdir()
    (docs_root / "notes.py").rename(docs_root / "archive" / "old_notes.py")
    report = ingest.json("sync", str(docs_root))
    assert report["counts"]["moved"] == 1 and report["counts"]["uploaded"] == 0
    assert report["counts"]["deleted"] == 0
    rows = manifest_rows(state_dir)
    assert "notes.py" not in rows and rows["archive/old_notes.py"].file_id == before
    remote = store_files(state_dir)
    assert remote["archive/old_notes.py"]["file_id"] == before
    assert remote["archive/old_notes.py"]["attributes"]["folder"] == "archive"


def test_delete_removes_the_document_from_search(ingest, docs_root, state_dir):
    ingest("sync", str(docs_root))
    gone_id = manifest_rows(state_dir)["faq.html"].file_id
    (docs_root / "faq.html").unlink()
    report = ingest.json("sync", str(docs_root))
    assert report["counts"]["deleted"] == 1 and report["counts"]["remote_deleted"] == 1
    assert "faq.html" not in manifest_rows(state_dir)
    assert not ingest.json("search", "narwhal")
    assert gone_id not in {f.id for f in LocalRemote(state_dir / "local" / "store").list_files()}


def test_bad_files_are_rejected_with_reasons_and_picked_up_once_fixed(ingest, tmp_path, state_dir):
    root = tmp_path / "mixed"
    shutil.copytree(EXAMPLES / "bad", root)
    (root / "good.txt").write_text("a perfectly fine document about capybaras\n")
    report = ingest.json("sync", str(root))
    assert report["exit_code"] == 0, "rejections are reported, not failures"
    reasons = {Path(r["path"]).name: r["reason"] for r in report["rejected"]}
    assert "not a PDF" in reasons["program.pdf"]
    assert "not a Word document" in reasons["archive.docx"]
    assert reasons["empty.txt"] == "empty file"
    assert "UTF-8" in reasons["latin1.txt"]
    assert "not supported" in reasons["data.csv"] and "not supported" in reasons["photo.png"]
    rows = manifest_rows(state_dir)
    assert all(rows[name].state == REJECTED and rows[name].file_id is None for name in reasons)
    assert set(store_files(state_dir)) == {"good.txt", "README.md"}

    (root / "latin1.txt").write_text("café, now saved as UTF-8\n", encoding="utf-8")
    again = ingest.json("sync", str(root))
    assert again["counts"]["new"] == 1 and manifest_rows(state_dir)["latin1.txt"].state == INDEXED
    assert ingest.json("search", "café")[0]["path"].endswith("latin1.txt")


def test_oversize_file_is_rejected_by_the_configured_limit(ingest, tmp_path, docs_root):
    config = tmp_path / "ingest.toml"
    config.write_text('[limits]\nmax_size = "1KB"\n')
    (docs_root / "big.txt").write_text("word " * 1000)
    report = ingest.json("--config", str(config), "sync", str(docs_root))
    big = [r for r in report["rejected"] if r["path"].endswith("big.txt")]
    assert big and "too large" in big[0]["reason"]


def test_dry_run_prints_the_plan_and_changes_nothing(ingest, docs_root, state_dir):
    ingest("sync", str(docs_root))
    (docs_root / "notes.py").unlink()
    (docs_root / "new.md").write_text("# brand new page about okapis\n")
    out = ingest("sync", str(docs_root), "--dry-run").stdout
    assert "new       " in out and "new.md" in out and "deleted" in out and "notes.py" in out
    rows = manifest_rows(state_dir)
    assert "notes.py" in rows and "new.md" not in rows
    assert not ingest.json("search", "okapis")


def test_mass_deletion_is_held_back_unless_allowed(ingest, tmp_path, state_dir):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(12):
        (root / f"doc{i}.txt").write_text(f"document number {i} about lemurs\n")
    ingest("sync", str(root))
    for i in range(10):
        (root / f"doc{i}.txt").unlink()
    report = ingest.json("sync", str(root))
    assert report["counts"]["deleted"] == 0 and len(report["held_back"]) == 10
    assert "allow-mass-delete" in report["held_back"][0]["reason"]
    assert len(store_files(state_dir)) == 12
    text = ingest("sync", str(root)).stdout  # ten files, one reason: said once, not ten times
    assert text.count("would be deleted") == 1 and "10 files: more than 20%" in text, text
    report = ingest.json("sync", str(root), "--allow-mass-delete")
    assert report["counts"]["deleted"] == 10 and len(store_files(state_dir)) == 2


def test_emptied_or_missing_root_deletes_nothing(ingest, docs_root, state_dir, tmp_path):
    ingest("sync", str(docs_root))
    config = tmp_path / "ingest.toml"
    config.write_text(f'[[roots]]\npath = "{docs_root}"\n')
    hidden = tmp_path / "unmounted"
    docs_root.rename(hidden)
    report = ingest.json("--config", str(config), "sync", check=1)  # a missing root is a failure cron sees
    assert report["counts"]["deleted"] == 0 and len(report["held_back"]) == 4
    assert "missing" in report["held_back"][0]["reason"]
    assert report["failed"] == [
        {
            "path": str(docs_root),
            "reason": "the folder is missing, not a folder, or not mounted: nothing was synced or deleted there"
            " (gone for good? `ingest forget PATH --dry-run` shows what forgetting it would remove)",
        }
    ]
    docs_root.mkdir()  # a mount point with nothing mounted on it: a failure cron sees too
    report = ingest.json("--config", str(config), "sync", check=1)
    assert report["counts"]["deleted"] == 0 and "empty" in report["held_back"][0]["reason"]
    assert [f["path"] for f in report["failed"]] == [str(docs_root)] and "empty" in report["failed"][0]["reason"]
    assert len(store_files(state_dir)) == 4
    out = ingest("--config", str(config), "reindex", check=1).stdout
    assert "empty" in out and len(store_files(state_dir)) == 4


def test_second_writer_gets_a_clear_message(ingest, docs_root, state_dir):
    ingest("sync", str(docs_root))
    lock = ManifestLock(state_dir / "local" / "manifest.db", "watch").acquire()
    try:
        result = ingest("sync", str(docs_root), check=1)
        assert "in use by 'ingest watch'" in result.stderr and "--wait" in result.stderr
    finally:
        lock.release()


def test_config_errors_name_the_file_and_key(ingest, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("upload_concurrency = 'lots'\n")
    result = ingest("--config", str(config), "sync", ".", check=2)
    assert "bad.toml" in result.stderr and "upload_concurrency" in result.stderr
    config.write_text("[[roots]]\npath = '.'\ncolour = 'blue'\n")
    result = ingest("--config", str(config), "sync", check=2)
    assert "roots[0].colour" in result.stderr and "unknown key" in result.stderr


def test_status_reports_stores_runs_and_problems(ingest, docs_root):
    (docs_root / "empty.txt").write_text("")
    ingest("sync", str(docs_root))
    data = ingest.json("status")
    store = data["stores"][0]
    assert store["name"] == "docs" and store["files"] == {"indexed": 4, "rejected": 1}
    assert store["vector_store_ids"] and store["cost_per_day_usd"] == 0.0
    assert data["recent_runs"][0]["counts"]["new"] == 4
    assert data["problems"] == [
        {"path": str(docs_root / "empty.txt"), "state": "rejected", "reason": "empty file", "error_code": None}
    ]
    text = ingest("status").stdout
    assert "store docs" in text and "empty file" in text


def test_status_shows_a_run_without_an_end_as_running_while_its_process_holds_the_lock(ingest, docs_root, state_dir):
    ingest("sync", str(docs_root))
    manifest_path = state_dir / "local" / "manifest.db"
    m = Manifest(manifest_path)
    try:
        m.start_run("sync")  # a sync under way: it has no end yet
    finally:
        m.close()
    with ManifestLock(manifest_path, "sync").acquire():
        runs = ingest.json("status")["recent_runs"]
        assert [r["state"] for r in runs[:2]] == ["running", "finished"]
        text = ingest("status").stdout
        assert "sync running" in text and "nothing to do" not in text
    # Its process gone without a word (the lock is free): killed or crashed, not finished.
    assert ingest.json("status")["recent_runs"][0]["state"] == "ended"
    assert "sync ended without recording an end" in ingest("status").stdout


def test_manifest_and_state_dir_are_private(ingest, docs_root, state_dir):
    ingest("sync", str(docs_root))
    assert (state_dir.stat().st_mode & 0o777) == 0o700
    assert ((state_dir / "local" / "manifest.db").stat().st_mode & 0o777) == 0o600


def test_verify_reports_deletions_that_were_held_back(ingest, tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(12):
        (root / f"doc{i}.txt").write_text(f"document number {i} about tapirs\n")
    ingest("sync", str(root))
    for i in range(10):
        (root / f"doc{i}.txt").unlink()
    ingest("sync", str(root))
    report = ingest.json("verify", check=1)
    held = [d for d in report["drift"] if "held back" in d["detail"]]
    assert len(held) == 10


def test_a_file_turned_invalid_loses_its_remote_copy_once(ingest, docs_root, state_dir):
    ingest("sync", str(docs_root))
    (docs_root / "notes.py").write_bytes(b"\x7fELF" + bytes(range(256)) * 8)
    first = ingest.json("sync", str(docs_root))
    assert first["counts"]["remote_deleted"] == 1 and first["counts"]["rejected"] == 1
    row = manifest_rows(state_dir)["notes.py"]
    assert row.state == REJECTED and row.file_id is None and row.vector_store_id is None
    again = ingest.json("sync", str(docs_root))
    assert again["counts"]["remote_deleted"] == 0 and again["counts"]["held"] == 0


def test_a_new_static_attribute_value_reaches_the_store(ingest, docs_root, tmp_path, state_dir):
    config = tmp_path / "ingest.toml"
    config.write_text(
        f'[[roots]]\npath = "{docs_root}"\nstore = "kb"\n'
        '[[stores]]\nname = "kb"\nattributes = {{ team = "red" }}\n'.replace("{{", "{").replace("}}", "}")
    )
    ingest("sync")
    assert {f["attributes"]["team"] for f in store_files(state_dir).values()} == {"red"}
    config.write_text(config.read_text().replace('"red"', '"blue"'))
    report = ingest.json("sync")
    assert report["counts"]["uploaded"] == 0
    assert {f["attributes"]["team"] for f in store_files(state_dir).values()} == {"blue"}
    assert ingest.json("search", "zebrafish", "--filter", "team=blue")


def test_a_touched_file_gets_its_new_mtime_attribute_without_an_upload(ingest, docs_root, state_dir):
    ingest("sync", str(docs_root))
    target = docs_root / "faq.html"
    later = time.time_ns() + 86_400 * 10**9
    os.utime(target, ns=(later, later))
    plan = ingest.json("sync", str(docs_root), "--dry-run")  # the plan says what the run does: a remote call
    assert (plan["counts"]["attributes"], plan["counts"]["unchanged"]) == (1, 3), plan["counts"]
    assert plan["plan"]["attributes"] == [str(target)] and str(target) not in plan["plan"]["unchanged"]
    assert "1 with new attributes, 0 deleted, 3 unchanged" in ingest("sync", str(docs_root), "--dry-run").stdout
    report = ingest.json("sync", str(docs_root))
    assert report["counts"]["uploaded"] == 0
    assert (report["counts"]["attributes"], report["counts"]["unchanged"]) == (1, 3), report["counts"]
    assert store_files(state_dir)["faq.html"]["attributes"]["mtime"] == later // 10**9
    assert ingest.json("sync", str(docs_root), "--dry-run")["counts"]["attributes"] == 0, "done"


def test_a_same_size_edit_within_the_racy_window_is_caught_and_settled_files_are_trusted_by_stat(
    ingest, tmp_path, state_dir
):
    root = tmp_path / "racy"
    root.mkdir()
    racy, settled = root / "racy.txt", root / "settled.txt"
    racy.write_text("version 1 of the racy note\n")
    settled.write_text("version 1 of the old note\n")
    past = time.time_ns() - 60 * 10**9
    os.utime(settled, ns=(past, past))
    ingest("sync", str(root))

    def hashes() -> dict[str, str]:
        m = Manifest(state_dir / "local" / "manifest.db")
        try:
            return {row.path: row.sha256 for row in m.rows().values()}
        finally:
            m.close()

    # Rewritten within the same mtime (same size, mtime put back): it was hashed too close to its
    # mtime for the stat fingerprint to be trusted, so it is hashed again and the edit is found.
    racy_mtime = racy.stat().st_mtime_ns
    racy.write_text("version 2 of the racy note\n")
    os.utime(racy, ns=(racy_mtime, racy_mtime))
    # The same trick on a file hashed long after its mtime: stat is trusted (as git and rsync do).
    settled.write_text("version 2 of the old note\n")
    os.utime(settled, ns=(past, past))
    counts = ingest.json("sync", str(root))["counts"]
    assert (counts["changed"], counts["unchanged"]) == (1, 1), counts
    assert hashes() == {"racy.txt": sha256(racy), "settled.txt": sha256_text("version 1 of the old note\n")}

    counts = ingest.json("reindex", "--rehash")["sync"]["counts"]
    assert (counts["changed"], counts["unchanged"], counts["uploaded"]) == (1, 1, 1), (
        "--rehash ignores the stat fingerprint and finds the edit stat could not see"
    )
    assert hashes()["settled.txt"] == sha256(settled)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_new_store_route_moves_the_files_it_covers_and_leaves_the_rest_alone(ingest, docs_root, tmp_path, state_dir):
    config = tmp_path / "ingest.toml"
    config.write_text(f'[[roots]]\npath = "{docs_root}"\nstore = "kb"\n')
    ingest("sync")
    before = rows_by_path(state_dir)
    config.write_text(
        config.read_text() + '[[stores]]\nname = "kb"\n[[stores]]\nname = "guides"\npaths = ["guides/**"]\n'
    )
    report = ingest.json("sync")
    assert report["counts"]["unchanged"] == 2, report["counts"]
    after = rows_by_path(state_dir)
    assert {p: r.store for p, r in after.items()} == {
        "guides/install.md": "guides",
        "guides/usage.txt": "guides",
        "faq.html": "kb",
        "notes.py": "kb",
    }
    assert all(r.state == INDEXED for r in after.values())
    assert after["faq.html"].file_id == before["faq.html"].file_id, "a file whose route stayed is not touched"
    hits = ingest.json("search", "zebrafish", "--store", "guides")
    assert hits and hits[0]["path"].endswith("guides/install.md")
    assert not ingest.json("search", "zebrafish", "--store", "kb")


def rows_by_path(state_dir: Path) -> dict:
    m = Manifest(state_dir / "local" / "manifest.db")
    try:
        return {r.path: r for r in m.rows().values()}
    finally:
        m.close()


def test_a_run_without_the_config_rebuilds_nothing_and_reindex_keeps_the_excludes(
    ingest, docs_root, tmp_path, state_dir
):
    (docs_root / "drafts").mkdir()
    (docs_root / "drafts" / "wip.md").write_text("An unfinished draft about the tapir.\n")
    config = tmp_path / "kb.toml"  # not ./ingest.toml, which a run would find by itself
    config.write_text(
        f'[[roots]]\npath = "{docs_root}"\nstore = "kb"\nexclude = ["drafts/**"]\n'
        '[[stores]]\nname = "kb"\nattributes = { team = "red" }\n'
        'chunking = { type = "static", max_chunk_size_tokens = 200, chunk_overlap_tokens = 50 }\n'
    )
    ingest("--config", str(config), "sync")
    store_ids = ingest.json("status")["stores"][0]["vector_store_ids"]

    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "note.txt").write_text("A note synced with no config at all.\n")
    report = ingest.json("sync", str(other))  # no --config: the kb store is none of its business
    assert not report["notes"], report["notes"]
    repairs = ingest.json("reindex")  # no --config: the roots as they were last synced
    assert repairs["sync"]["counts"]["new"] == 0 and not repairs["sync"]["notes"], repairs
    status = {s["name"]: s for s in ingest.json("status")["stores"]}
    assert status["kb"]["vector_store_ids"] == store_ids, "the configured store was not rebuilt"
    assert "drafts/wip.md" not in rows_by_path(state_dir), "the exclude still holds"
    assert ingest.json("search", "zebrafish", "--filter", "team=red")


def test_search_in_a_store_that_does_not_exist_names_the_stores_there_are(ingest, docs_root):
    ingest("sync", str(docs_root))
    result = ingest("search", "zebrafish", "--store", "nosuch", check=2)
    assert "no store named 'nosuch'; the stores are: docs" in result.stderr


def test_verify_is_not_in_sync_while_a_root_cannot_be_read(ingest, docs_root, tmp_path):
    config = tmp_path / "roots.toml"
    config.write_text(f'[[roots]]\npath = "{docs_root}"\n')
    ingest("--config", str(config), "sync")
    docs_root.rename(tmp_path / "unmounted")
    report = ingest.json("--config", str(config), "verify", check=1)
    assert report["in_sync"] is False and report["counts"].get("unreadable") == 1, report["counts"]
    assert [d["path"] for d in report["drift"] if d["kind"] == "unreadable"] == [str(docs_root)]


def test_removing_a_routed_store_entry_sends_files_back_to_the_root_store(ingest, docs_root, tmp_path, state_dir):
    config = tmp_path / "ingest.toml"  # found in the working folder by every run below
    base = f'[[roots]]\npath = "{docs_root}"\nstore = "kb"\n'
    config.write_text(base + '[[stores]]\nname = "guides"\npaths = ["guides/**"]\n')
    ingest("sync")
    assert rows_by_path(state_dir)["guides/install.md"].store == "guides"
    config.write_text(base)  # the user drops the route
    ingest("sync")
    after = rows_by_path(state_dir)
    assert after["guides/install.md"].store == "kb", "removed [[stores]] entry still routes files"


def test_two_configs_sharing_the_default_manifest_do_not_route_each_others_files(
    ingest, docs_root, tmp_path, state_dir
):
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.md").write_text("# A\n\nalpha text here\n")
    a = tmp_path / "a.toml"
    a.write_text(f'[[roots]]\npath = "{other}"\nstore = "private"\n[[stores]]\nname = "private"\npaths = ["**/*.md"]\n')
    ingest("-c", str(a), "sync")
    b = tmp_path / "b.toml"
    b.write_text(f'[[roots]]\npath = "{docs_root}"\nstore = "public"\n')
    ingest("-c", str(b), "sync")
    after = rows_by_path(state_dir)
    assert after["guides/install.md"].store == "public", after["guides/install.md"].store


def test_a_run_without_the_config_naming_the_root_keeps_its_store_and_excludes(
    ingest, docs_root, tmp_path, state_dir, monkeypatch
):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "ingest.toml").write_text(f'[[roots]]\npath = "{docs_root}"\nstore = "kb"\nexclude = ["notes.py"]\n')
    monkeypatch.chdir(conf)
    ingest("sync")
    before = rows_by_path(state_dir)
    assert "notes.py" not in before and before["faq.html"].store == "kb"
    elsewhere = tmp_path / "cron"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # cron: no ./ingest.toml here
    ingest("sync", str(docs_root))
    after = rows_by_path(state_dir)
    assert after["faq.html"].store == "kb", after["faq.html"].store
    assert "notes.py" not in after, "an excluded file was uploaded"


STATIC = 'chunking = { type = "static", max_chunk_size_tokens = 200, chunk_overlap_tokens = 50 }\n'


def rechunked(tmp_path: Path) -> tuple[Path, str]:
    """A config with one store over one file, synced once; the same store with other chunking."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("narwhals\n")
    config = tmp_path / "ingest.toml"
    # One file and a short wait: a store that indexes while it is polled has the file done at the
    # first poll, however slow the machine; one that does not leaves the rebuild waiting.
    base = 'index_timeout = 1\n[[roots]]\npath = "docs"\n[[stores]]\nname = "docs"\n'
    config.write_text(base)
    return config, base + STATIC


def test_a_chunking_change_rebuilds_the_embedded_store_within_the_one_sync(ingest, tmp_path, state_dir):
    config, changed = rechunked(tmp_path)
    ingest("--config", str(config), "sync")
    [old] = ingest.json("status")["stores"][0]["vector_store_ids"]
    config.write_text(changed)

    report = ingest.json("--config", str(config), "sync")

    [new] = ingest.json("status")["stores"][0]["vector_store_ids"]
    assert new != old, report["notes"]
    assert f"store 'docs': rebuilt; the vector store id is now {new}" in report["notes"], report["notes"]
    assert {r.vector_store_id for r in rows_by_path(state_dir).values()} == {new}, "searches use the new store"
    remote = LocalRemote(state_dir / "local" / "store")
    try:
        assert [sf.status for sf in remote.list_store_files(new)] == ["completed"]
        assert old not in {s.id for s in remote.list_stores()}, "the old store is deleted once replaced"
    finally:
        remote.close()
    hits = ingest.json("--config", str(config), "search", "narwhals")
    assert [h["path"] for h in hits] == [str(tmp_path / "docs" / "a.md")], hits


def test_reindex_says_when_it_rebuilt_a_store(ingest, tmp_path):
    config, changed = rechunked(tmp_path)
    ingest("--config", str(config), "sync")
    config.write_text(changed)
    out = ingest("--config", str(config), "reindex").stdout
    [new] = ingest.json("status")["stores"][0]["vector_store_ids"]
    assert f"store 'docs': rebuilt; the vector store id is now {new}" in out, out


def test_a_new_static_attribute_on_old_files_updates_them_in_place(ingest, docs_root, tmp_path, state_dir):
    config = tmp_path / "ingest.toml"
    base = f'[[roots]]\npath = "{docs_root}"\nstore = "kb"\n[[stores]]\nname = "kb"\n'
    config.write_text(base + 'attributes = { team = "hr" }\n')
    ingest("sync")
    before = rows_by_path(state_dir)
    config.write_text(base + 'attributes = { team = "ops" }\n')
    report = ingest.json("sync")
    assert report["counts"]["uploaded"] == 0 and report["counts"]["new"] == 0, report["counts"]
    after = rows_by_path(state_dir)
    assert {p: r.file_id for p, r in after.items()} == {p: r.file_id for p, r in before.items()}
    assert all(json.loads(r.attributes)["team"] == "ops" for r in after.values())
    hits = ingest.json("search", "zebrafish", "--filter", "team=ops")
    assert [h["path"] for h in hits] == [str(docs_root / "guides" / "install.md")], "one copy, the new value"
    assert ingest.json("verify")["in_sync"] is True


def test_a_new_route_for_old_files_moves_them_with_their_ids(ingest, docs_root, tmp_path, state_dir):
    config = tmp_path / "ingest.toml"
    config.write_text(f'[[roots]]\npath = "{docs_root}"\nstore = "kb"\n')
    ingest("sync")
    before = rows_by_path(state_dir)
    config.write_text(config.read_text() + '[[stores]]\nname = "guides"\npaths = ["guides/**"]\n')
    report = ingest.json("sync")
    assert report["counts"]["uploaded"] == 0 and report["counts"]["new"] == 0, report["counts"]
    after = rows_by_path(state_dir)
    assert after["guides/install.md"].store == "guides"
    assert after["guides/install.md"].file_id == before["guides/install.md"].file_id
    assert len(ingest.json("search", "zebrafish", "--store", "guides")) == 1
    assert not ingest.json("search", "zebrafish", "--store", "kb"), "no copy left behind in the old store"
    assert ingest.json("verify")["in_sync"] is True


def test_a_configured_folder_never_synced_and_not_there_is_a_typo(ingest, docs_root, tmp_path, state_dir):
    config = tmp_path / "typo.toml"
    config.write_text(f'[[roots]]\npath = "{docs_root}"\n[[roots]]\npath = "{tmp_path / "shrae"}"\n')
    result = ingest("--config", str(config), "sync", check=2)
    assert f"typo.toml: roots[1].path: {tmp_path / 'shrae'} does not exist" in result.stderr
    m = Manifest(state_dir / "local" / "manifest.db")
    try:
        assert m.remembered_roots() == {} and not m.has_rows(str(tmp_path / "shrae"))
    finally:
        m.close()
    (tmp_path / "shrae").mkdir()
    assert ingest.json("--config", str(config), "sync")["exit_code"] == 0
    (tmp_path / "shrae").rmdir()  # synced before: now an unmounted share, held, not a typo
    gone = ingest.json("--config", str(config), "sync", check=1)
    assert gone["counts"]["deleted"] == 0


def test_a_copy_left_in_the_old_store_is_detached_by_the_next_run(ingest, docs_root, tmp_path, state_dir, monkeypatch):
    from ingest.errors import RemoteError

    config = tmp_path / "ingest.toml"
    config.write_text(f'[[roots]]\npath = "{docs_root}"\nstore = "kb"\n')
    ingest("sync")
    real = LocalRemote.detach

    def refused(self, store_id, file_id):
        raise RemoteError("detach refused", retryable=True)

    monkeypatch.setattr(LocalRemote, "detach", refused)
    config.write_text(config.read_text() + '[[stores]]\nname = "guides"\npaths = ["guides/**"]\n')
    ingest("sync")
    assert rows_by_path(state_dir)["guides/install.md"].old_vector_store_id, "left behind (the check below can fail)"
    assert ingest.json("search", "zebrafish", "--store", "kb"), "still found in the old store"
    monkeypatch.setattr(LocalRemote, "detach", real)
    report = ingest.json("sync")
    assert report["counts"]["uploaded"] == 0 and report["exit_code"] == 0
    assert not rows_by_path(state_dir)["guides/install.md"].old_vector_store_id
    assert not ingest.json("search", "zebrafish", "--store", "kb"), "no copy left behind in the old store"
    assert len(ingest.json("search", "zebrafish", "--store", "guides")) == 1
    again = ingest.json("sync")
    assert again["counts"]["unchanged"] == 4, "settled again"


def test_an_exclude_that_leaves_a_root_empty_says_so_and_removes_nothing_unasked(ingest, docs_root, state_dir):
    ingest("sync", str(docs_root))
    before = store_files(state_dir)
    out = ingest("sync", str(docs_root), "--exclude", "**").stdout
    assert "is the share mounted" not in out and "root is empty" not in out
    assert "left out by its include/exclude rules" in out and "nothing was removed" in out, out
    assert "--allow-mass-delete" in out and store_files(state_dir) == before, "held: nothing removed"
    gone = ingest.json("sync", str(docs_root), "--exclude", "**", "--allow-mass-delete")
    assert gone["counts"]["excluded"] == 4 and gone["counts"]["remote_deleted"] == 4 and not store_files(state_dir)


def test_a_root_that_is_really_empty_still_holds_its_deletions(ingest, docs_root, state_dir):
    """Emptied like an unmounted share, with an exclude that covers its files: they are not there to
    be left out, so the hold is the empty root's, which --allow-mass-delete does not lift."""
    ingest("sync", str(docs_root))
    for path in [p for p in docs_root.rglob("*") if p.is_file()]:
        path.unlink()
    held = ingest.json("sync", str(docs_root), "--exclude", "**", "--allow-mass-delete", check=1)
    assert held["counts"]["held"] == 4 and not held["counts"]["remote_deleted"] and len(store_files(state_dir)) == 4
    assert {h["reason"] for h in held["held_back"]} == {"the root is empty; is the share mounted?"}


def test_rejected_files_deleted_from_disk_are_counted_and_named_as_deleted(ingest, docs_root, state_dir):
    (docs_root / "empty.md").write_text("")
    (docs_root / "blob.txt").write_bytes(b"\x00\x01\x02 not text" * 50)
    assert ingest.json("sync", str(docs_root))["counts"]["rejected"] == 2
    (docs_root / "empty.md").unlink()
    (docs_root / "blob.txt").unlink()
    report = ingest.json("sync", str(docs_root))
    assert (report["counts"]["deleted"], report["counts"]["remote_deleted"], report["counts"]["rejected"]) == (2, 0, 0)
    named = {f["path"]: f for f in report["files"]}
    assert set(named) == {"empty.md", "blob.txt"} and {f["action"] for f in named.values()} == {"deleted"}
    assert named["empty.md"]["reason"] == "was rejected (empty file); nothing of it was in the store"
    out = ingest("-v", "sync", str(docs_root)).stdout
    assert "deleted" not in out.split("synced:")[0], "told once, in the run that saw them go"
    assert not ingest.json("status")["problems"], "no longer listed as problems"


def test_a_change_of_attributes_alone_is_counted_as_an_attribute_update_not_as_unchanged(
    ingest, docs_root, tmp_path, state_dir
):
    config = tmp_path / "ingest.toml"
    config.write_text(
        f'[[roots]]\npath = "{docs_root}"\nstore = "kb"\n[[stores]]\nname = "kb"\nattributes = {{ team = "red" }}\n'
    )
    ingest("sync")
    config.write_text(config.read_text().replace('"red"', '"blue"'))
    counts = ingest.json("sync")["counts"]
    assert (counts["attributes"], counts["unchanged"], counts["uploaded"]) == (4, 0, 0), counts
    later = time.time_ns() + 86_400 * 10**9
    os.utime(docs_root / "faq.html", ns=(later, later))
    out = ingest("sync").stdout
    assert out.startswith("synced: 0 new, 0 changed, 0 moved, 1 with new attributes, 0 deleted, 3 unchanged"), out
    assert "1 with new attributes" in ingest("status").stdout, "the recent runs say it too"
    assert ingest.json("sync")["counts"]["attributes"] == 0, "done once"


def test_an_interrupted_sync_says_what_it_did_and_what_it_left_in_text_and_json(
    ingest, docs_root, tmp_path, state_dir, monkeypatch
):
    import signal

    for i in range(6):
        (docs_root / f"extra{i}.md").write_text(f"extra document {i}\n")
    (tmp_path / "ingest.toml").write_text(f'upload_concurrency = 1\n[[roots]]\npath = "{docs_root}"\nstore = "docs"\n')
    real, calls = LocalRemote.upload, []

    def upload(self, path, filename):
        calls.append(filename)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # as the operator would, two uploads done (one at a time)
        return real(self, path, filename)

    monkeypatch.setattr(LocalRemote, "upload", upload)
    result = ingest("sync", "--json", check=143)
    report = json.loads(result.stdout)
    counts = report["counts"]
    assert report["interrupted"] == "SIGTERM" and counts["new"] == 10
    assert counts["left"] == 10 - counts["indexed"] and counts["left"] > 0, counts
    shutil.rmtree(state_dir / "local")  # the same run again, from the start, told in text
    calls.clear()
    out = ingest("sync", check=143).stdout
    assert not out.startswith("synced:"), "it did not sync all it found"
    assert out.startswith("found: 10 new"), out
    done = out.splitlines()[1]
    uploaded, indexed = (int(done.split(f"{word} ")[1].split(",")[0]) for word in ("uploaded", "indexed"))
    assert f"interrupted by SIGTERM: {10 - indexed} files left for the next run" in out, out
    monkeypatch.setattr(LocalRemote, "upload", real)
    again = ingest.json("sync")["counts"]
    # What the stopped run uploaded is not sent again: its indexing goes on from where it was.
    assert (again["uploaded"], again["indexed"]) == (10 - uploaded, 10 - indexed) and "left" not in again, again


def test_verbose_names_each_rejected_file_once_a_run(ingest, docs_root):
    (docs_root / "guides" / "empty.md").write_text("")
    out = ingest("-v", "sync", str(docs_root), str(docs_root / "guides")).stdout
    assert out.count(str(docs_root / "guides" / "empty.md")) == 1, out
    assert out.count(str(docs_root / "guides" / "install.md")) == 1, (
        "a folder named inside another is not a root of its own"
    )
    assert "1 rejected" in out and "rejected:" not in out, "the summary counts it, and names it no more"
    assert {r["store"] for r in ingest.json("ls")} == {"docs"}, "one root, one store"
    quiet = ingest("sync", str(docs_root)).stdout
    assert quiet.count("empty.md") == 1 and "rejected:" in quiet, "without -v the summary names it"


def test_ls_with_a_store_that_does_not_exist_says_so_and_exits_2(ingest, docs_root):
    ingest("sync", str(docs_root))
    result = ingest("ls", "--store", "nosuch", check=2)
    assert "no store named 'nosuch'; the stores are: docs" in result.stderr and result.stdout == ""
    assert ingest("ls", "--store", "nosuch", "--json", check=2).stdout == "", "no empty list that reads as none"
    assert len(ingest.json("ls", "--store", "docs")) == 4, "a store that exists lists its files"


def test_a_first_sync_whose_reading_fails_midway_records_the_uploads_under_way(
    ingest, docs_root, state_dir, monkeypatch
):
    from ingest.survey import Survey

    for i in range(6):
        (docs_root / f"extra{i}.md").write_text(f"extra document {i}\n")
    real, looked = Survey.look, []

    def look(self, *args, **kwargs):
        looked.append(args[1].path)
        if len(looked) == 4:  # three uploads are under way: none has been answered here yet
            raise RuntimeError("a reader that breaks")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Survey, "look", look)
    with pytest.raises(RuntimeError, match="a reader that breaks"):
        ingest("sync", str(docs_root), check=None)
    assert len(looked) == 4
    states = {row.path: row.state for row in manifest_rows(state_dir).values()}
    assert states and "uploading" not in states.values(), states
    monkeypatch.setattr(Survey, "look", real)
    assert ingest.json("sync", str(docs_root))["counts"]["failed"] == 0
