"""A pass with nothing to do: no remote call, no SDK or extractor import; the stores still get looked at."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from ingest.manifest import Manifest
from ingest.stores import CHECK_EVERY

# Runs `ingest ARGS` in a fresh interpreter, then names the heavy modules that got imported on stderr.
CHILD = r"""
import json, sys
from ingest.cli import cli
heavy = json.loads(sys.argv.pop(1))
try:
    cli.main(sys.argv[1:], prog_name="ingest", standalone_mode=False)
finally:
    loaded = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy))
    print("LOADED " + json.dumps(loaded), file=sys.stderr)
"""
SDK = ("openai", "ingest.remote.openai")
EXTRACTORS = ("pypdf", "pypdfium2", "docx", "pptx", "lxml")  # what extract.py reads documents with
# The manifest's and the store's table helpers: needed to migrate them, not to read them.
SQLITE_UTILS = ("sqlite_utils", "dateutil")
HEAVY = (*SDK, *EXTRACTORS, *SQLITE_UTILS, "ingest.remote.local.store")
# The upload path: a pass with nothing to record or send imports none of it.
UPLOAD_PATH = ("ingest.execute", "ingest.indexing", "ingest.attach", "ingest.text")


def run_child(*args: str, heavy: tuple[str, ...] = HEAVY) -> tuple[dict, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(heavy), *args, "--json"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    loaded = next(line for line in done.stderr.splitlines() if line.startswith("LOADED "))
    return json.loads(done.stdout), json.loads(loaded[len("LOADED ") :])


def requests(emu) -> int:
    return sum(emu.counters()["requests"].values())


def age_store_checks(state: Path, seconds: float) -> None:
    m = Manifest(state / "manifest.db")
    try:
        m.db.execute("update stores set checked_at = checked_at - ?", [seconds])
    finally:
        m.close()


def test_an_openai_noop_makes_no_remote_call_and_never_imports_the_sdk(openai_cli, fake_openai, docs_root):
    first, loaded = run_child("sync", str(docs_root))
    assert first["counts"]["indexed"] == 4
    assert "openai" in loaded, "the first sync does use the SDK (the check below can fail)"
    before = requests(fake_openai)
    again, loaded = run_child("sync", str(docs_root))
    assert again["counts"]["unchanged"] == 4 and again["exit_code"] == 0
    assert requests(fake_openai) == before, json.dumps(fake_openai.counters()["requests"])
    assert loaded == []


def test_a_first_run_with_nothing_to_do_keeps_the_servers_answer(openai_cli, fake_openai, tmp_path):
    """A first run probes the server while it scans; with nothing to upload it still records the answer,
    so that the next pass over the empty folder asks the server nothing."""
    empty = tmp_path / "empty"
    empty.mkdir()
    openai_cli("sync", str(empty))
    assert fake_openai.counters()["requests"].get("GET /version") == 1
    before = requests(fake_openai)
    openai_cli("sync", str(empty))
    assert requests(fake_openai) == before, json.dumps(fake_openai.counters()["requests"])


def test_an_openai_noop_asks_the_server_who_it_is_only_once_there_is_work(
    openai_cli, fake_openai, docs_root, state_dir
):
    run_child("sync", str(docs_root))
    m = Manifest(state_dir / "manifest.db")
    try:
        assert m.query("select * from server"), "the first sync kept the profile (the check below can fail)"
        m.execute("delete from server")  # as a manifest from before profiles were kept, or another URL
    finally:
        m.close()
    before = requests(fake_openai)
    again, loaded = run_child("sync", str(docs_root))
    assert again["counts"]["unchanged"] == 4 and again["exit_code"] == 0
    assert requests(fake_openai) == before, json.dumps(fake_openai.counters()["requests"])
    assert loaded == []
    edited = docs_root / "notes.py"
    edited.write_text("def axolotl():\n    return 'edited'\n")
    os.utime(edited, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    work = openai_cli.json("sync", str(docs_root))
    assert work["counts"]["uploaded"] == 1 and work["exit_code"] == 0
    m = Manifest(state_dir / "manifest.db")
    try:
        assert [r["profile"] for r in m.query("select profile from server")] == ["openai-compatible"]
    finally:
        m.close()


def test_a_local_noop_imports_no_extractor(ingest, docs_root):
    first, loaded = run_child("--backend", "local", "sync", str(docs_root))
    assert first["counts"]["indexed"] == 4 and "ingest.remote.local.store" in loaded
    assert "sqlite_utils" in loaded, "a new manifest is made by its migrations (the check below can fail)"
    again, loaded = run_child("--backend", "local", "sync", str(docs_root))
    assert again["counts"]["unchanged"] == 4 and loaded == []


def test_a_pass_with_nothing_to_record_imports_nothing_of_the_upload_path(ingest, docs_root):
    first, loaded = run_child("--backend", "local", "sync", str(docs_root), heavy=UPLOAD_PATH)
    assert first["counts"]["indexed"] == 4 and "ingest.execute" in loaded
    run_child("--backend", "local", "sync", str(docs_root))  # the pass that records the folders' digests
    again, loaded = run_child("--backend", "local", "sync", str(docs_root), heavy=UPLOAD_PATH)
    assert again["counts"]["unchanged"] == 4 and again["exit_code"] == 0
    assert loaded == []
    (docs_root / "notes.py").unlink()
    gone, loaded = run_child("--backend", "local", "sync", str(docs_root), heavy=UPLOAD_PATH)
    assert gone["counts"]["deleted"] == 1 and "ingest.execute" in loaded, "a deletion is carried out"


def test_a_configured_noop_rewrites_nothing_and_imports_no_table_helpers(ingest, docs_root, tmp_path, state_dir):
    config = tmp_path / "ingest.toml"
    config.write_text(
        f'[[roots]]\npath = "{docs_root}"\nstore = "handbook"\n\n'
        '[[stores]]\nname = "handbook"\npaths = ["guides/**"]\nattributes = { team = "docs" }\n'
    )
    first, _ = run_child("--backend", "local", "-c", str(config), "sync")
    assert first["counts"]["indexed"] == 4
    again, loaded = run_child("--backend", "local", "-c", str(config), "sync")
    assert again["counts"]["unchanged"] == 4 and again["exit_code"] == 0
    assert loaded == [], "the [[stores]] entries kept are the ones given: nothing to write"
    m = Manifest(state_dir / "local" / "manifest.db")
    try:
        assert [spec["attributes"] for spec in m.remembered_store_specs()] == [{"team": "docs"}]
    finally:
        m.close()


# What neither a search nor a status needs: the engine and its events, the daemon (status reads its
# heartbeat file only), the upkeep commands, the store's indexing, and the standard library's
# modules that only writing or a mistake needs.
NOT_READ = (
    "ingest.engine",
    "ingest.events",
    "ingest.stores",
    "ingest.daemon",
    "ingest.cli_upkeep",
    "ingest.remote.local.indexer",
    "ingest.remote.local.prepare",
    "prometheus_client",
    "secrets",
    "shutil",
    "difflib",
    "numpy",
)
# ...and what a search needs beyond that no more: the scan (status counts local changes with it), the
# upload path, and for a store by words alone the embedding model's module.
NOT_SEARCHED = (
    "ingest.scan",
    "ingest.walk",
    "ingest.status",
    "ingest.interrupt",
    "concurrent.futures",
    *UPLOAD_PATH,
    "ingest.remote.local.embed",
)


def test_a_first_run_migrates_the_manifest_without_importing_numpy(ingest, docs_root):
    report, loaded = run_child("--backend", "local", "sync", str(docs_root), heavy=("numpy", "pandas", *SQLITE_UTILS))
    assert report["counts"]["indexed"] == 4
    assert "sqlite_utils" in loaded, "a new manifest is migrated with sqlite-utils"
    assert "numpy" not in loaded, "sqlite-utils imported numpy (0.2 s) to store values ingest never hands it"


def test_search_and_status_import_neither_the_sdk_nor_an_extractor_nor_sqlite_utils(ingest, docs_root):
    run_child("--backend", "local", "sync", str(docs_root))
    light = (*SDK, *EXTRACTORS, *SQLITE_UTILS, *NOT_READ)
    hits, loaded = run_child("--backend", "local", "search", "zebrafish installer", heavy=(*light, *NOT_SEARCHED))
    assert hits and hits[0]["path"].endswith("install.md")
    assert loaded == []
    status, loaded = run_child("--backend", "local", "status", heavy=light)
    assert status["local_changes"]["new"] == 0 and status["stores"][0]["files"] == {"indexed": 4}
    assert loaded == []


def test_a_noop_looks_at_the_stores_once_they_were_not_confirmed_for_a_while(
    openai_cli, fake_openai, docs_root, state_dir
):
    openai_cli("sync", str(docs_root))
    (store,) = fake_openai.stores()
    fake_openai.delete_store(store["id"])
    quiet = openai_cli.json("sync", str(docs_root))
    assert quiet["counts"]["uploaded"] == 0, "checked a moment ago: not asked again yet"
    age_store_checks(state_dir, CHECK_EVERY + 1)
    noticed = openai_cli.json("sync", str(docs_root))
    assert any("was deleted remotely" in n for n in noticed["notes"])
    assert noticed["counts"]["uploaded"] == 4, "its files went back to pending and were uploaded again"
    (new,) = fake_openai.stores()
    assert new["id"] != store["id"]
    m = Manifest(state_dir / "manifest.db")
    try:
        (row,) = m.stores()
    finally:
        m.close()
    assert row.id == new["id"] and row.checked_at is not None and row.checked_at > time.time() - CHECK_EVERY


def test_a_pass_with_work_looks_at_the_stores_first(openai_cli, fake_openai, docs_root):
    openai_cli("sync", str(docs_root))
    (store,) = fake_openai.stores()
    fake_openai.delete_store(store["id"])
    edited = docs_root / "faq.html"
    edited.write_text("<p>an edit</p>")
    os.utime(edited, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    report = openai_cli.json("sync", str(docs_root))
    assert any("was deleted remotely" in n for n in report["notes"])
    assert report["counts"]["uploaded"] == 4 and report["exit_code"] == 0
    (new,) = fake_openai.stores()
    assert {sf["attributes"]["path"] for sf in fake_openai.store_files(new["id"])} == {
        "faq.html",
        "guides/install.md",
        "guides/usage.txt",
        "notes.py",
    }


# The embedded store's indexing: its worker pool, its extractors, its model.
INDEXING = ("ingest.remote.local.indexer", "ingest.remote.local.prepare", "multiprocessing", *EXTRACTORS, "numpy")


def test_reading_a_local_store_with_pending_work_does_none_of_it(ingest, docs_root, state_dir):
    """status, verify, ls and search read the store: files it has still to index (a sync cut short
    leaves them so) stay pending, and nothing of the indexing is even imported."""
    first, _ = run_child("--backend", "local", "sync", str(docs_root))
    assert first["counts"]["indexed"] == 4
    store_db = state_dir / "local" / "store" / "store.db"

    def pending() -> int:
        with sqlite3.connect(store_db) as db:
            return db.execute("select count(*) from store_files where status = 'in_progress'").fetchone()[0]

    with sqlite3.connect(store_db) as db:
        db.execute("update store_files set status = 'in_progress'")
    assert pending() == 4
    for args in (("status",), ("verify",), ("ls",), ("search", "install")):
        _, loaded = run_child("--backend", "local", *args, heavy=INDEXING)
        assert loaded == [], args
        assert pending() == 4, args
