"""The CLI as a thin layer: argument parsing, exit codes from the errors, and what it prints."""

from __future__ import annotations

import json
import logging
import shutil

from ingest.lock import ManifestLock


def test_sync_verbose_prints_one_line_per_file_acted_on(ingest, docs_root):
    out = ingest("-v", "sync", str(docs_root)).stdout
    lines = [line for line in out.splitlines() if line.startswith("uploaded   ")]
    assert sorted(line.split()[1] for line in lines) == sorted(
        str(docs_root / p) for p in ("guides/install.md", "guides/usage.txt", "faq.html", "notes.py")
    )
    assert "synced: 4 new" in out, "the summary still follows"
    quiet = ingest("sync", str(docs_root)).stdout
    assert "uploaded   " not in quiet and "synced: 0 new" in quiet, "without -v only the summary"


def test_verbose_after_the_command_counts_too(ingest, docs_root):
    out = ingest("sync", "-v", str(docs_root)).stdout
    assert sum(line.startswith("uploaded   ") for line in out.splitlines()) == 4
    (docs_root / "faq.html").unlink()
    report = json.loads(ingest("sync", str(docs_root), "-v", "--json").stdout)
    assert [(f["action"], f["path"]) for f in report["files"]] == [("deleted", "faq.html")]


def test_sync_verbose_names_deletions_and_rejections_with_their_reason(ingest, docs_root):
    ingest("sync", str(docs_root))
    (docs_root / "faq.html").unlink()
    (docs_root / "blob.txt").write_bytes(b"\x00\x01\x02 not text" * 50)
    out = ingest("-v", "sync", str(docs_root)).stdout
    assert f"deleted    {docs_root / 'faq.html'}" in out
    rejected = next(line for line in out.splitlines() if line.startswith("rejected"))
    assert "blob.txt" in rejected and "(" in rejected, "the reason is on the line"


def test_sync_json_lists_every_file_acted_on(ingest, docs_root):
    report = ingest.json("-v", "sync", str(docs_root))
    files = {f["path"]: f for f in report["files"]}
    assert set(files) == {"guides/install.md", "guides/usage.txt", "faq.html", "notes.py"}
    assert all(
        f["action"] == "uploaded" and f["root"] == str(docs_root) and f["store"] == "docs" and f["file_id"]
        for f in files.values()
    )
    (docs_root / "notes.py").rename(docs_root / "guides" / "notes.py")
    moved = ingest.json("sync", str(docs_root))["files"]
    assert [(f["action"], f["path"]) for f in moved] == [("moved", "guides/notes.py")]
    assert moved[0]["file_id"] == files["notes.py"]["file_id"]


def test_json_output_is_machine_output_only(ingest, docs_root):
    result = ingest("-v", "sync", str(docs_root), "--json")
    assert len(json.loads(result.stdout)["files"]) == 4, "stdout is the JSON document and nothing else"


def test_exit_codes_come_from_the_errors(ingest, docs_root, tmp_path, state_dir):
    nothing = ingest("sync", check=2)
    assert "nothing to sync: name a folder" in nothing.stderr and "ingest reindex" in nothing.stderr
    missing = ingest("--config", str(tmp_path / "nope.toml"), "status", check=2)
    assert "config file not found" in missing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("upload_concurrency = 0\n")
    assert "upload_concurrency: must be a whole number from 1 to 64" in ingest("-c", str(bad), "status", check=2).stderr
    ingest("sync", str(docs_root))
    with ManifestLock(state_dir / "local" / "manifest.db", "test").acquire():
        busy = ingest("sync", str(docs_root), check=1)
    assert "in use by 'ingest test'" in busy.stderr
    assert "no store named 'x'" in ingest("search", "q", "--store", "x", check=2).stderr
    assert "--filter 'nokey': expected KEY=VALUE" in ingest("search", "q", "--filter", "nokey", check=2).stderr


def test_parsing_refuses_what_is_out_of_range(ingest, docs_root):
    assert ingest("search", "q", "-n", "0", check=2).exit_code == 2
    assert ingest("watch", str(docs_root), "--settle", "-1", check=2).exit_code == 2
    assert ingest("--backend", "cloud", "status", check=2).exit_code == 2
    assert ingest("sync", str(docs_root / "absent"), check=2).exit_code == 2


def test_watch_defaults_are_the_watch_options(ingest):
    from ingest.config import WatchOptions

    text = ingest("watch", "--help").stdout
    defaults = WatchOptions()
    for option, value in (("--settle", defaults.settle), ("--rescan-interval", defaults.rescan_interval)):
        assert f"[default: {value}" in text.split(option, 1)[1].split("--", 1)[0]


def test_help_lists_the_upkeep_commands_beside_the_everyday_ones(ingest):
    from ingest.cli_upkeep import COMMANDS

    text = ingest("--help").stdout
    listed = [line.split()[0] for line in text.split("Commands:", 1)[1].splitlines() if line.strip()]
    assert listed == sorted(["sync", "watch", "status", "search", "ls", *(c.name for c in COMMANDS)])
    assert "Compare local files, the manifest and the remote" in text, "with their one-line help"


def test_the_run_records_the_exit_code_the_cli_exits_with(ingest, tmp_path, state_dir, docs_root):
    ingest("sync", str(docs_root))
    status = ingest.json("status")
    assert status["recent_runs"][0]["exit_code"] == 0
    config = tmp_path / "ingest.toml"
    share = tmp_path / "unmounted"
    share.mkdir()
    (share / "a.txt").write_text("on the share\n")
    config.write_text(f'[[roots]]\npath = "{share}"\n')
    ingest("--config", str(config), "sync")
    shutil.rmtree(share)  # synced before, now not mounted
    ingest("--config", str(config), "sync", check=1)
    assert ingest.json("status")["recent_runs"][0]["exit_code"] == 1


def test_the_embedded_store_says_why_it_is_used(ingest, docs_root, monkeypatch, caplog):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with caplog.at_level(logging.WARNING, logger="ingest"):
        ingest("sync", str(docs_root))
        assert "no OPENAI_API_KEY: using the embedded local store" in caplog.text
        caplog.clear()
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        ingest("--backend", "local", "sync", str(docs_root))
    assert "the local backend was asked for: using the embedded local store" in caplog.text
