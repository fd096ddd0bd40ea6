"""The whole lifecycle against the emulator's llama-stack profile: a server that differs from OpenAI in the
thirteen ways ../shared/llama-stack.md lists (tests/emulator/llama.py), and what ingest does about each."""

from __future__ import annotations

import hashlib
import os

import pytest

from ingest.manifest import FAILED, INDEXED, Manifest
from ingest.remote.profile import COMPATIBLE, PROFILES
from ingest.remote.retry import server_message as _server_message
from ingest.singles import Limit
from ingest.stores import remember_profile, server_profile
from tests.docs import make_docx
from tests.emulator import Emulator
from tests.test_sync_openai import rows

ATTACH = "POST /vector_stores/{vector_store_id}/files"
BATCHES = "POST /vector_stores/{vector_store_id}/file_batches"
DETACH = "DELETE /vector_stores/{vector_store_id}/files/{file_id}"


def records(emu: Emulator) -> dict[str, dict]:
    """The store's own records, by the path ingest gave each file."""
    (store,) = emu.stores()
    return {sf["attributes"]["path"]: sf for sf in emu.store_files(store["id"])}


def test_first_sync_attaches_each_file_with_its_attributes(llama_cli, llama, docs_root, state_dir):
    make_docx(docs_root / "report.docx", ["The pangolin budget for next year."])
    report = llama_cli.json("sync", str(docs_root))
    assert report["exit_code"] == 0 and report["counts"]["indexed"] == 5
    requests = llama.counters()["requests"]
    assert requests[ATTACH] == 5 and BATCHES not in requests, "one-file attaches, no refused batch"
    assert 500 not in llama.counters()["status"], "the fresh server's files table was made before the uploads"
    local, remote = rows(state_dir), records(llama)
    assert set(remote) == set(local)
    for path, sf in remote.items():
        assert sf["status"] == "completed" and sf["id"] == local[path].file_id
        assert sf["attributes"]["folder"] == os.path.dirname(path) and sf["attributes"]["sha256"] == local[path].sha256
    status = llama_cli("status").stdout
    assert "llama-stack 0.7.3" in status and "usage: unknown" in status and "$0.0000" not in status


def test_unreadable_types_go_up_as_text_with_the_real_path(llama_cli, llama, docs_root, state_dir):
    make_docx(docs_root / "report.docx", ["The pangolin budget for next year."])
    llama_cli("sync", str(docs_root))
    names = {f["filename"]: f["id"] for f in llama.files()}
    assert {"report.docx.txt", "faq.html.txt", "install.md"} <= set(names), "DOCX and HTML as text, Markdown as is"
    assert b"pangolin budget" in llama.file_bytes(names["report.docx.txt"])
    assert b"<html>" not in llama.file_bytes(names["faq.html.txt"])
    row = rows(state_dir)["report.docx"]
    assert row.state == INDEXED and row.sha256 == hashlib.sha256((docs_root / "report.docx").read_bytes()).hexdigest()
    hits = llama_cli.json("search", "pangolin")
    assert hits[0]["path"] == str(docs_root / "report.docx")
    assert hits[0]["score"] > 1, "a distance score is shown as the server gives it"
    assert set(hits[0]["attributes"]) == {"path", "folder", "ext", "mtime", "sha256", "root"}
    assert isinstance(hits[0]["attributes"]["mtime"], int), "the server's 2024.0 is shown as ingest set it: 2024"


def test_rename_reattaches_so_search_filters_see_the_new_folder(llama_cli, llama, docs_root, state_dir):
    llama_cli("sync", str(docs_root))
    uploads = llama.counters()["uploads"]
    (docs_root / "archive").mkdir()
    (docs_root / "guides" / "install.md").rename(docs_root / "archive" / "install.md")
    report = llama_cli.json("sync", str(docs_root))
    assert report["counts"]["moved"] == 1 and report["exit_code"] == 0
    assert llama.counters()["uploads"] == uploads, "the same uploaded file, attached again"
    hits = llama_cli.json("search", "zebrafish", "--filter", "folder=archive")
    assert [h["path"] for h in hits] == [str(docs_root / "archive" / "install.md")]
    assert llama_cli.json("search", "zebrafish", "--filter", "folder=guides") == []
    assert llama_cli.json("verify")["in_sync"]


def test_an_embedder_outage_heals_on_the_next_sync(llama_cli, llama, docs_root, state_dir):
    llama.configure(embedder_down=True)
    report = llama_cli.json("sync", str(docs_root), check=1)
    failed = rows(state_dir)
    assert all(r.state == FAILED and r.retryable == 1 for r in failed.values())
    assert "embedding model is unreachable" in report["failed"][0]["reason"], "the reason the attach reply gave"
    llama.configure(embedder_down=False)
    detaches = llama.counters()["requests"][DETACH]
    report = llama_cli.json("sync", str(docs_root))
    assert report["exit_code"] == 0 and report["counts"]["indexed"] == 4
    assert llama.counters()["requests"][DETACH] >= detaches + 4, "each failed file is detached before it is attached"
    assert {sf["status"] for sf in records(llama).values()} == {"completed"}


def test_a_store_deleted_on_the_server_is_reported_then_recreated(llama_cli, llama, docs_root, state_dir):
    llama_cli("sync", str(docs_root))
    (old,) = llama.stores()
    llama.delete_store(old["id"])
    found = llama_cli.json("verify", check=1)
    assert found["counts"].get("store_lost") == 1
    # No local change and no store check due by the clock: verify's finding makes the next sync look.
    report = llama_cli.json("sync", str(docs_root))
    assert report["exit_code"] == 0 and report["counts"]["indexed"] == 4
    (new,) = llama.stores()
    assert new["id"] != old["id"] and len(records(llama)) == 4
    assert llama_cli.json("verify")["in_sync"]


def test_records_lost_under_load_are_not_counted_indexed(llama_cli, llama, tmp_path, state_dir):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(24):
        (root / f"n{i:02}.md").write_text(f"note {i} about the okapi\n")
    llama.configure(lose_records_every=3)
    report = llama_cli.json("sync", str(root), check=None)
    assert llama.counters()["status"][500] >= 8, "every third attach lost its record"
    llama.configure(lose_records_every=None)
    if report["exit_code"]:
        report = llama_cli.json("sync", str(root))
    local, remote = rows(state_dir), records(llama)
    assert {p for p, r in local.items() if r.state == INDEXED} == set(remote), "indexed only what the store holds"
    assert len(remote) == 24 and {sf["status"] for sf in remote.values()} == {"completed"}


def test_a_failed_file_waits_longer_before_each_later_try(llama_cli, llama, docs_root, state_dir):
    llama.configure(index_fail_names={"usage.txt"})
    llama_cli("sync", str(docs_root), check=1)
    first = llama.counters()["index_failures_injected"]
    llama_cli("sync", str(docs_root), check=1)  # tried again at once
    second = llama.counters()["index_failures_injected"]
    report = llama_cli.json("sync", str(docs_root))  # within the wait: kept as failed earlier
    assert first < second == llama.counters()["index_failures_injected"], "the third run waits"
    assert report["failed_earlier"][0]["path"].endswith("usage.txt")


def test_openai_keeps_batches_and_a_file_missing_from_the_listing_is_looked_up(openai_cli, fake_openai, tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    for i in range(12):
        (root / f"d{i:02}.txt").write_text(f"document {i} on the tapir\n")
    fake_openai.configure(lose_records_every=4)  # the batch counts them failed, its listing leaves them out
    report = openai_cli.json("sync", str(root))
    fake_openai.configure(lose_records_every=None)
    requests = fake_openai.counters()["requests"]
    assert requests[BATCHES] >= 1 and requests.get(ATTACH, 0) == 0, "OpenAI keeps per-file batches"
    assert report["exit_code"] == 0 and report["counts"]["indexed"] == 12
    (store,) = fake_openai.stores()
    assert len(fake_openai.store_files(store["id"], "completed")) == 12, "every lost record was attached again"


def test_limit_halves_on_strain_and_climbs_back():
    limit = Limit(3, 6)
    limit.strained()
    assert limit.width == 1
    for _ in range(10):
        limit.ok()
    assert 1 < limit.width <= 6
    for _ in range(200):
        limit.ok()
    assert limit.width == 6


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (
            {"errors": [{"loc": ["body", "file_ids"], "msg": "Field required", "type": "missing"}]},
            "file_ids: Field required",
        ),
        ({"detail": [{"loc": ["query", "limit"], "msg": "too big"}]}, "query.limit: too big"),
        ({"message": "Vector store vs_1 not found"}, "Vector store vs_1 not found"),
        ("Internal Server Error", "Internal Server Error"),
    ],
)
def test_error_envelopes_become_one_sentence(body, said):
    assert _server_message(body) == said


def test_a_chunking_change_rebuilds_with_one_file_attaches(llama_cli, llama, docs_root, tmp_path, state_dir):
    config = tmp_path / "ingest.toml"
    config.write_text(f'request_timeout = 5\nindex_timeout = 30\n[[roots]]\npath = "{docs_root}"\nstore = "kb"\n')
    llama_cli("sync")
    (old,) = llama.stores()
    config.write_text(
        config.read_text() + '[[stores]]\nname = "kb"\n'
        'chunking = { type = "static", max_chunk_size_tokens = 200, chunk_overlap_tokens = 50 }\n'
    )
    report = llama_cli.json("sync")
    assert any("rebuilt" in n for n in report["notes"]) and report["exit_code"] == 0
    (new,) = llama.stores()
    assert new["id"] != old["id"]
    assert {sf["status"] for sf in llama.store_files(new["id"])} == {"completed"}
    assert len(llama.store_files(new["id"])) == 4 and BATCHES not in llama.counters()["requests"]


def test_the_daemons_next_pass_retries_what_failed_in_an_outage(llama_cli, llama, docs_root, state_dir):
    from ingest.config import Settings
    from ingest.engine import Engine, Options
    from ingest.remote.openai import OpenAIRemote

    llama.configure(embedder_down=True)
    llama_cli("sync", str(docs_root), check=1)
    llama.configure(embedder_down=False)
    (docs_root / "notes.py").write_text("def axolotl():\n    return 'changed'\n")
    settings = Settings(state_dir=state_dir, base_url=llama.base_url).with_paths([docs_root])
    manifest = Manifest(state_dir / "manifest.db")
    try:
        remote = OpenAIRemote.connect("anything", llama.base_url, attempts=2, timeout=5)
        report = Engine(settings, manifest, remote).sync(Options(command="watch"), {str(docs_root): ("notes.py",)})
    finally:
        manifest.close()
    assert report.exit_code == 0 and report.counts["indexed"] == 4, "the changed file and the three failed ones"
    assert {r.state for r in rows(state_dir).values()} == {INDEXED}


def test_the_server_is_found_out_once_per_base_url_and_what_it_refused_is_kept(tmp_path):
    class Server:
        kind, base_url, probes = "openai", "http://a.example/v1/", 0

        def probe(self):
            self.probes += 1
            return PROFILES[COMPATIBLE]

    manifest, remote = Manifest(tmp_path / "manifest.db"), Server()
    try:
        assert server_profile(manifest, remote).per_file_batches is None, "not tried yet"
        remember_profile(manifest, remote, server_profile(manifest, remote).with_batches(False))
        assert server_profile(manifest, remote).per_file_batches is False and remote.probes == 1
        remote.base_url = "http://b.example/v1/"
        assert server_profile(manifest, remote).per_file_batches is None and remote.probes == 2, "another server"
    finally:
        manifest.close()


def test_a_refused_per_file_batch_switches_an_unknown_server_to_one_file_attaches(llama_cli, llama, docs_root):
    llama.configure(profile="openai")  # answers /version with 404: an unknown server
    llama_cli("sync", str(docs_root / "guides"))
    llama.configure(profile="llama-stack")  # now refuses files=[…]
    (docs_root / "guides" / "new.md").write_text("# New\n\nthe capybara chapter\n")
    report = llama_cli.json("sync", str(docs_root / "guides"))
    assert report["exit_code"] == 0 and report["counts"]["indexed"] == 1
    assert llama.counters()["status"][400] >= 1 and llama.counters()["requests"][ATTACH] == 1
    assert "one-file attaches" in llama_cli("status").stdout


def test_a_server_that_could_not_say_who_it_is_is_asked_again(llama_cli, llama, docs_root):
    llama.inject("503", count=1, endpoint="GET /version")
    llama_cli("sync", str(docs_root / "guides"))
    assert "llama-stack" not in llama_cli("status").stdout, "not remembered from a 503"
    (docs_root / "guides" / "usage.txt").write_text("Usage notes, second edition: the quokka.\n")
    llama_cli("sync", str(docs_root / "guides"))
    assert "llama-stack 0.7.3" in llama_cli("status").stdout


def test_the_config_can_name_the_server(llama_cli, llama, docs_root, tmp_path):
    llama.configure(profile="openai")  # GET /version is a 404 here
    config = tmp_path / "ingest.toml"
    config.write_text(config.read_text() + 'server = "llama-stack"\n')
    llama_cli("sync", str(docs_root))
    assert "(llama-stack; one-file attaches" in llama_cli("status").stdout
    assert llama.counters()["requests"].get(BATCHES) is None and llama.counters()["requests"][ATTACH] == 4
    config.write_text(config.read_text().replace('"llama-stack"', '"nonsense"'))
    assert "server: must be one of auto, openai," in llama_cli("status", check=2).stderr
