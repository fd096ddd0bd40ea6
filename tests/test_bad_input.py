"""Hostile and odd input: every case gets a clear recorded reason or message, the run goes on, nothing is lost.

Mostly on the embedded store (no key), driving the CLI in-process; the OpenAI-only cases (a refused key,
a store deleted mid-run) run against the emulator.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

from ingest import survey as surveying
from ingest import validate as validation
from ingest.manifest import INDEXED, REJECTED, SCHEMA_VERSION, Manifest
from ingest.remote.local import LocalRemote
from ingest.survey import Survey
from ingest.validate import Validator
from tests.conftest import Cli, as_unprivileged
from tests.helpers import manifest_rows as rows
from tests.test_crash import audit

BATCHES = "POST /vector_stores/{vector_store_id}/file_batches"
UPLOADS = "POST /files"


# ---- helpers -------------------------------------------------------------------------------------------
@pytest.fixture
def root(tmp_path) -> Path:
    """A folder with two good documents that every case must leave indexed."""
    root = tmp_path / "in"
    root.mkdir()
    (root / "keep.md").write_text("# Keep\n\nThe wombat document must survive every bad neighbour.\n")
    (root / "sub").mkdir()
    (root / "sub" / "keep.txt").write_text("The pangolin notes stay indexed too.\n")
    return root


def indexed(state_dir: Path) -> dict[str, str]:
    """path attribute → file id of every completed file in the local stores."""
    remote = LocalRemote(state_dir / "local" / "store")
    m = Manifest(state_dir / "local" / "manifest.db")
    try:
        return {
            sf.attributes["path"]: sf.file_id
            for store in m.stores()
            for sf in remote.list_store_files(store.id)
            if sf.status == "completed"
        }
    finally:
        m.close()


def sync(ingest: Cli, root: Path, *args: str, code: int = 0) -> dict:
    return ingest.json("sync", str(root), *args, check=code)


def reasons(report: dict, root: Path, kind: str = "rejected") -> dict[str, str]:
    return {os.path.relpath(item["path"], root): item["reason"] for item in report[kind]}


def assert_kept(state_dir: Path, *extra: str) -> None:
    """Nothing lost: the good documents (and any extra paths) are indexed, and their rows say so."""
    found = indexed(state_dir)
    manifest = rows(state_dir)
    for path in ("keep.md", "sub/keep.txt", *extra):
        assert path in found, f"{path} is not indexed; indexed: {sorted(found)[:20]}"
        assert manifest[path].state == INDEXED and manifest[path].file_id == found[path]


# ---- content -------------------------------------------------------------------------------------------
def test_wrong_magic_is_rejected_by_content(ingest, root, state_dir):
    (root / "report.pdf").write_text("just text pretending to be a PDF\n")
    (root / "slides.docx").write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 200)
    report = sync(ingest, root)
    why = reasons(report, root)
    assert "not a PDF document" in why["report.pdf"] and "text/plain" in why["report.pdf"]
    assert "not a Word document" in why["slides.docx"]
    assert rows(state_dir)["report.pdf"].state == REJECTED
    assert_kept(state_dir)


def test_binary_content_under_a_text_extension(ingest, root, state_dir):
    (root / "photo.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    why = reasons(sync(ingest, root), root)
    assert "not text as .txt should be" in why["photo.txt"]
    assert_kept(state_dir)


def test_unsupported_and_missing_extensions(ingest, root, state_dir):
    (root / "table.csv").write_text("a,b\n1,2\n")
    (root / "Makefile").write_text("all:\n\techo hi\n")
    why = reasons(sync(ingest, root), root)
    assert "type .csv is not supported by file_search" in why["table.csv"]
    assert "(no extension)" in why["Makefile"]
    assert_kept(state_dir)


def test_too_big_by_the_configured_limit_is_rejected_without_reading(ingest, root, state_dir, tmp_path):
    (tmp_path / "ingest.toml").write_text('[limits]\nmax_size = "1MB"\n')
    with open(root / "huge.txt", "wb") as fh:
        fh.truncate(3 * 1024 * 1024)  # sparse: 3 MB of nothing on disk
    why = reasons(sync(ingest, root), root)
    assert why["huge.txt"] == "too large: 3,145,728 bytes, the limit is 1,048,576 bytes"
    assert_kept(state_dir)


def test_over_512mb_is_rejected_by_default_without_reading_it(ingest, root, state_dir, monkeypatch):
    with open(root / "enormous.md", "wb") as fh:
        fh.truncate(600 * 1024 * 1024)  # sparse
    read: list[str] = []
    real_open, real_hash, real_magic = builtins.open, surveying.sha256_file, Validator._magic

    def spy_open(file, *args, **kwargs):
        read.append(os.fspath(file))
        return real_open(file, *args, **kwargs)

    class SpyMagic:
        def __init__(self, inner):
            self.inner = inner

        def from_file(self, target):
            read.append(os.fspath(target))
            return self.inner.from_file(target)

        def from_buffer(self, data):  # the bytes of a file open() was seen reading
            return self.inner.from_buffer(data)

    monkeypatch.setattr(validation, "open", spy_open, raising=False)
    monkeypatch.setattr(surveying, "sha256_file", lambda path, *a: read.append(os.fspath(path)) or real_hash(path, *a))
    monkeypatch.setattr(Validator, "_magic", lambda self: tuple(SpyMagic(m) for m in real_magic(self)))
    why = reasons(sync(ingest, root), root)
    assert why["enormous.md"].startswith("too large: 629,145,600 bytes")
    assert any(path.endswith("keep.md") for path in read), "the spies must see the files that are read"
    assert not [path for path in read if path.endswith("enormous.md")], "a too-large file is refused from its size"
    assert_kept(state_dir)


def test_empty_file(ingest, root, state_dir):
    (root / "blank.md").write_bytes(b"")
    report = sync(ingest, root)
    assert reasons(report, root)["blank.md"] == "empty file" and report["exit_code"] == 0
    assert ingest.json("status")["problems"][0]["reason"] == "empty file"
    assert_kept(state_dir)


def test_invalid_utf8_is_rejected_and_picked_up_once_fixed(ingest, root, state_dir):
    (root / "latin1.txt").write_bytes("Prix: 12 € — café crème, naïve façade\n".encode("cp1252"))
    why = reasons(sync(ingest, root), root)
    assert "not valid UTF-8, UTF-16 or ASCII" in why["latin1.txt"] and "save it as UTF-8" in why["latin1.txt"]
    (root / "latin1.txt").write_text("Prix: 12 € — café crème, now UTF-8\n")
    again = sync(ingest, root)
    assert again["counts"]["new"] == 1 and not again["rejected"]
    assert_kept(state_dir, "latin1.txt")


def test_utf16_text_is_accepted_and_searchable(ingest, root, state_dir):
    (root / "wide.txt").write_bytes("UTF-16 text about a quetzal in the cloud forest\n".encode("utf-16"))
    report = sync(ingest, root)
    assert not report["rejected"] and report["counts"]["indexed"] == 3
    assert ingest.json("search", "quetzal")[0]["path"].endswith("wide.txt")
    assert_kept(state_dir, "wide.txt")


# ---- names and paths -------------------------------------------------------------------------------------
def test_names_with_spaces_unicode_and_leading_dashes(ingest, root, state_dir):
    names = ["with spaces in it.md", "résumé – Ünïcødé 日本語 🦊.txt", "-rf.txt", "--help.md", "ümlaut dir/ü.md"]
    for i, name in enumerate(names):
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_text(f"odd name number {i} about the jerboa{i}\n")
    report = sync(ingest, root)
    assert report["counts"]["new"] == len(names) + 2 and not report["rejected"] and not report["failed"]
    assert_kept(state_dir, *names)
    hit = ingest.json("search", "jerboa1")[0]
    assert hit["path"].endswith("résumé – Ünïcødé 日本語 🦊.txt")
    assert sync(ingest, root)["counts"]["unchanged"] == len(names) + 2


def test_newline_in_a_name_is_refused_with_a_reason(ingest, root, state_dir):
    (root / "two\nlines.txt").write_text("a name with a line break\n")
    report = sync(ingest, root)
    assert reasons(report, root)["two\nlines.txt"] == "file names with line breaks are not supported"
    assert report["exit_code"] == 0
    assert_kept(state_dir)


def test_a_name_that_is_not_utf8_is_refused_and_the_run_goes_on(ingest, root, state_dir):
    folder = os.fsencode(root)
    with open(os.path.join(folder, b"latin1-caf\xe9.txt"), "wb") as fh:
        fh.write(b"a document whose name is not UTF-8\n")
    report = sync(ingest, root)
    assert report["exit_code"] == 0
    counts = report["counts"]
    assert counts["rejected"] == 1 and counts["scanned"] == counts["new"] + counts["rejected"], "seen: it counts"
    found = reasons(report, root)
    assert list(found) == ["latin1-caf\\xe9.txt"] and "not valid UTF-8" in found["latin1-caf\\xe9.txt"]
    assert "rename" in found["latin1-caf\\xe9.txt"]
    assert_kept(state_dir)
    assert "latin1-caf\\xe9.txt" in ingest("status").stdout
    assert sync(ingest, root)["counts"]["new"] == 0


def test_status_counts_no_change_for_files_refused_before_upload(ingest, root, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("not under the root\n")
    (root / "out.txt").symlink_to(outside)
    (root / "new\nline.txt").write_text("a name with a newline\n")
    report = sync(ingest, root)
    assert set(reasons(report, root)) >= {"out.txt"}, "refused, and recorded without a store"
    changes = ingest.json("status")["local_changes"]
    assert (changes["new"], changes["changed"], changes["deleted"]) == (0, 0, 0)
    shown = ingest("status").stdout
    assert "not in any store (rejected or unreadable): 2 rejected" in shown and "store (not" not in shown
    assert sync(ingest, root)["counts"]["deleted"] == 0, "the next sync agrees: nothing to delete"


def test_a_folder_renamed_to_a_name_that_is_not_utf8_deletes_nothing(ingest, root, state_dir):
    sync(ingest, root)
    folder = os.fsencode(root)
    os.rename(os.path.join(folder, b"sub"), os.path.join(folder, b"sub-\xff"))  # a share remounted with another charset
    report = sync(ingest, root, code=1)  # its files cannot be seen: an error, loud until fixed
    assert report["counts"]["deleted"] == 0 and "not valid UTF-8" in reasons(report, root, "failed")["sub-\\xff"]
    os.rename(os.path.join(folder, b"sub-\xff"), os.path.join(folder, b"sub"))
    assert sync(ingest, root)["counts"]["unchanged"] >= 2
    assert_kept(state_dir)


def test_very_long_path_near_path_max(ingest, root, state_dir):
    folder, name = root, "n" * 200 + ".md"
    while len(str(folder / name)) + 201 < 3950:  # 3,950 characters whatever the temporary folder's own length
        folder = folder / ("d" * 200)
    folder = folder / ("d" * (3950 - len(str(folder / name)) - 1))
    folder.mkdir(parents=True)
    (folder / name).write_text("deeply nested document about the axolotl\n")
    rel = (folder / name).relative_to(root).as_posix()
    assert len(str(folder / name)) > 3800
    report = sync(ingest, root)
    assert report["counts"]["indexed"] == 3 and not report["failed"]
    manifest = rows(state_dir)
    assert manifest[rel].state == INDEXED
    attrs = json.loads(manifest[rel].attributes)
    assert len(attrs["path"]) <= 256 and attrs["path"].endswith(name), "the tail of a long path is kept"
    assert ingest.json("search", "axolotl")[0]["path"].endswith(name)


# ---- links and special files -------------------------------------------------------------------------------
def test_symlink_loops_are_refused_not_followed(ingest, root, state_dir):
    os.symlink("loop2.txt", root / "loop1.txt")
    os.symlink("loop1.txt", root / "loop2.txt")
    os.symlink(".", root / "sub" / "self")  # a folder that contains itself
    os.symlink("missing.txt", root / "dangling.txt")
    report = sync(ingest, root)
    why = reasons(report, root)
    assert why["loop1.txt"] == why["loop2.txt"] == why["dangling.txt"] == "broken symlink or symlink loop"
    assert not any(p.startswith("sub/self") for p in rows(state_dir))
    assert_kept(state_dir)


def test_symlink_out_of_the_root_is_never_uploaded(ingest, root, state_dir, tmp_path):
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("the okapi password is hunter2\n")
    os.symlink(secret, root / "leak.txt")
    os.symlink(secret.parent, root / "leakdir")
    os.symlink("/dev/null", root / "null.txt")  # device-like entry: outside the root too
    report = sync(ingest, root)
    why = reasons(report, root)
    assert why["leak.txt"] == why["leakdir"] == why["null.txt"] == "symlink points outside the root: not followed"
    assert not ingest.json("search", "okapi")
    blobs = LocalRemote(state_dir / "local" / "store").blobs
    assert all(b"okapi" not in p.read_bytes() for p in blobs.iterdir() if p.is_file())
    assert_kept(state_dir)


def test_symlink_inside_the_root_is_indexed(ingest, root, state_dir):
    os.symlink("keep.md", root / "alias.md")
    report = sync(ingest, root)
    assert not report["rejected"] and report["counts"]["indexed"] == 3
    assert_kept(state_dir, "alias.md")


def test_fifo_is_refused_and_does_not_hang_the_run(ingest, root, state_dir):
    os.mkfifo(root / "pipe.txt")
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.update(report=sync(ingest, root)), daemon=True)
    worker.start()
    worker.join(120)  # a hang detector with room for a busy machine
    assert not worker.is_alive(), "the run blocked on the FIFO"
    assert reasons(outcome["report"], root)["pipe.txt"] == "not a regular file (FIFO, socket or device)"
    assert_kept(state_dir)


def test_hard_links_are_two_documents(ingest, root, state_dir):
    os.link(root / "keep.md", root / "hardlink.md")
    report = sync(ingest, root)
    assert report["counts"]["indexed"] == 3
    manifest = rows(state_dir)
    assert manifest["hardlink.md"].inode == manifest["keep.md"].inode
    assert_kept(state_dir, "hardlink.md")
    assert sync(ingest, root)["counts"]["unchanged"] == 3


def test_case_only_rename_is_a_move(ingest, root, state_dir):
    (root / "readme.txt").write_text("case-sensitive names: the ibis file\n")
    sync(ingest, root)
    before = rows(state_dir)["readme.txt"].file_id
    (root / "readme.txt").rename(root / "README.txt")
    report = sync(ingest, root)
    assert report["counts"]["moved"] == 1 and report["counts"]["uploaded"] == 0
    assert report["counts"]["deleted"] == 0
    found = indexed(state_dir)
    assert found.get("README.txt") == before and "readme.txt" not in found
    assert_kept(state_dir, "README.txt")


# ---- permissions -------------------------------------------------------------------------------------------
needs_non_root = pytest.mark.skipif(
    os.geteuid() == 0,
    reason="root reads any file whatever its mode; privileges cannot be dropped inside the test process",
)


@needs_non_root
def test_unreadable_file_is_an_error_that_keeps_its_remote_copy(ingest, root, state_dir):
    sync(ingest, root)
    (root / "keep.md").chmod(0)
    try:
        report = sync(ingest, root, code=1)
        assert "permission denied" in reasons(report, root, "failed")["keep.md"]
        assert rows(state_dir)["keep.md"].file_id, "the last good copy stays"
    finally:
        (root / "keep.md").chmod(0o644)
    assert_kept(state_dir)


@needs_non_root
def test_unreadable_folder_holds_deletions_back(ingest, root, state_dir):
    sync(ingest, root)
    (root / "sub").chmod(0)
    try:
        report = sync(ingest, root, code=1)
        assert "cannot list folder" in reasons(report, root, "failed")["sub"]
        assert report["counts"]["deleted"] == 0
    finally:
        (root / "sub").chmod(0o755)
    assert_kept(state_dir)


# ---- files that move under the tool's feet ---------------------------------------------------------------
def test_file_vanishing_between_scan_and_read_is_gone_not_failed(ingest, root, state_dir, monkeypatch):
    (root / "keep.md").write_text("stays put\n")
    (root / "ghost.md").write_text("listed by the scan, deleted before it is read\n")
    real = Survey.observe

    def observe(self, root, entry, row, rehash):
        if entry.path == "ghost.md":
            (root.path / entry.path).unlink()
        return real(self, root, entry, row, rehash)

    monkeypatch.setattr(Survey, "observe", observe)
    report = sync(ingest, root)
    assert report["exit_code"] == 0 and report["failed"] == []
    assert "ghost.md" not in rows(state_dir) and "keep.md" in rows(state_dir)
    assert_kept(state_dir)


def test_file_vanishing_between_scan_and_upload(ingest, root, state_dir, monkeypatch):
    (root / "ghost.md").write_text("here at scan time, gone at upload time\n")
    real = LocalRemote.upload

    def upload(self, path, filename):
        if filename == "ghost.md":
            Path(path).unlink()
        return real(self, path, filename)

    monkeypatch.setattr(LocalRemote, "upload", upload)
    report = sync(ingest, root)
    assert any("ghost.md: vanished before it could be uploaded" in n for n in report["notes"])
    assert_kept(state_dir)
    monkeypatch.setattr(LocalRemote, "upload", real)
    report = sync(ingest, root)
    assert "ghost.md" not in rows(state_dir) and report["exit_code"] == 0
    assert "ghost.md" not in indexed(state_dir)


def test_file_changing_during_upload_is_synced_again_next_run(ingest, root, state_dir, monkeypatch):
    target = root / "live.txt"
    target.write_text("first draft about the tapir\n")
    real = LocalRemote.upload

    def upload(self, path, filename):
        result = real(self, path, filename)
        if filename == "live.txt":
            with open(path, "a") as fh:
                fh.write("second draft mentions the dugong\n")
        return result

    monkeypatch.setattr(LocalRemote, "upload", upload)
    report = sync(ingest, root)
    assert any("live.txt: changed during upload" in n for n in report["notes"])
    monkeypatch.setattr(LocalRemote, "upload", real)
    report = sync(ingest, root)
    assert report["counts"]["changed"] == 1 and report["counts"]["uploaded"] == 1
    row = rows(state_dir)["live.txt"]
    assert row.sha256 == hashlib.sha256(target.read_bytes()).hexdigest()
    assert ingest.json("search", "dugong")[0]["path"].endswith("live.txt")
    assert_kept(state_dir, "live.txt")


def test_thousands_of_entries_in_one_folder(ingest, tmp_path, state_dir):
    big = tmp_path / "big"
    big.mkdir()
    for i in range(3_000):  # past SQLite's 999 bound variables per statement, three times over
        (big / f"n{i:05d}.txt").write_text(f"note {i}\n")
    report = sync(ingest, big)  # how long it takes is a row of scripts/bench (big-folder), not a test
    assert report["counts"]["indexed"] == 3_000 and report["exit_code"] == 0
    assert len(indexed(state_dir)) == 3_000


# ---- configuration and state ------------------------------------------------------------------------------
def test_unknown_config_key_names_file_and_key(ingest, root, tmp_path):
    (tmp_path / "ingest.toml").write_text("upload_concurency = 4\n")
    result = ingest("sync", str(root), check=2)
    assert "ingest.toml: upload_concurency: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "text, key, words",
    [
        ('upload_concurrency = "eight"\n', "upload_concurrency", "whole number"),
        ("index_timeout = -5\n", "index_timeout", "must be a number"),
        ('[limits]\nmax_size = "lots"\n', "limits.max_size", "byte count"),
        ('backend = "cloud"\n', "backend", "must be one of"),
        ("roots = 3\n", "roots", "array of tables"),
        ("upload_concurrency = \n", "", "not valid TOML"),
    ],
)
def test_ill_typed_config_names_file_and_key(ingest, root, tmp_path, text, key, words):
    (tmp_path / "ingest.toml").write_text(text)
    result = ingest("sync", str(root), check=2)
    assert "ingest.toml" in result.stderr and key in result.stderr and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("case", ["state folder not creatable", "state folder read-only", "manifest read-only"])
def test_a_state_folder_or_manifest_this_user_cannot_write_is_one_sentence_not_damage(shared_dir, monkeypatch, case):
    docs = shared_dir / "docs"
    docs.mkdir(mode=0o755)
    (docs / "a.txt").write_text("a document about the dugong\n")
    state = shared_dir / "state"
    if case != "state folder not creatable":
        state.mkdir(mode=0o755)
        (state / "ingest" / "local").mkdir(parents=True, mode=0o755)
        monkeypatch.setenv("XDG_STATE_HOME", str(state))
        Cli()("sync", str(docs))  # as root: a good manifest this user may not write
        monkeypatch.setenv("XDG_STATE_HOME", str(state))
        for folder in (state, state / "ingest", state / "ingest" / "local"):
            folder.chmod(0o755 if case == "state folder read-only" else 0o777)
        manifest = state / "ingest" / "local" / "manifest.db"
        manifest.chmod(0o644)
        before = manifest.read_bytes()
    else:
        state.mkdir(mode=0o755)  # root's: nobody may create ingest/ in it
        monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(shared_dir / "config"))

    def attempt():
        result = Cli()("sync", str(docs), check=None)
        return result.exit_code, result.stderr

    code, err = as_unprivileged(attempt)
    assert code == 2, err
    assert "Traceback" not in err and "damaged" not in err and len(err.strip().splitlines()) <= 2, err
    assert "cannot" in err and str(state) in err, err
    if case != "state folder not creatable":
        assert manifest.read_bytes() == before, "the manifest is left as it was"


def test_corrupt_manifest_stops_with_exit_2_and_keeps_the_bytes(ingest, root, state_dir):
    sync(ingest, root)
    manifest = state_dir / "local" / "manifest.db"
    for extra in ("-wal", "-shm"):
        Path(str(manifest) + extra).unlink(missing_ok=True)
    garbage = b"this is not an SQLite database, it was overwritten by a backup tool\n" * 200
    manifest.write_bytes(garbage)
    result = ingest("sync", str(root), check=2)
    assert "manifest is damaged" in result.stderr and str(manifest) in result.stderr
    assert "Traceback" not in result.stderr
    assert manifest.read_bytes() == garbage, "a damaged manifest is left exactly as it was"
    assert ingest("status", check=2).exit_code == 2


def test_manifest_from_a_newer_version(ingest, root, state_dir):
    sync(ingest, root)
    manifest = state_dir / "local" / "manifest.db"
    db = sqlite3.connect(manifest)
    db.execute(
        "insert into _sqlite_migrations (migration_set, name, applied_at) "
        "values ('ingest', 'm999_from_the_future', '2030-01-01T00:00:00')"
    )
    db.commit()
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")  # as the newer version leaves it
    db.close()
    before = manifest.read_bytes()
    result = ingest("sync", str(root), check=2)
    assert "written by a newer version of ingest" in result.stderr and "m999_from_the_future" in result.stderr
    assert "upgrade ingest" in result.stderr
    assert manifest.read_bytes() == before


def test_libmagic_missing_stops_with_the_install_sentence(ingest, root, monkeypatch):
    monkeypatch.setitem(sys.modules, "magic", None)  # `import magic` now fails as it does without libmagic
    result = ingest("sync", str(root), check=2)
    assert "libmagic is not installed" in result.stderr
    assert "apt-get install libmagic1" in result.stderr and "brew install libmagic" in result.stderr
    assert "Traceback" not in result.stderr


def test_openai_backend_without_a_key(ingest, root):
    result = ingest("--backend", "openai", "sync", str(root), check=2)
    assert "needs an API key: set OPENAI_API_KEY" in result.stderr
    assert "Traceback" not in result.stderr


# ---- the OpenAI path ---------------------------------------------------------------------------------------


def test_key_refused_mid_run_is_one_message_without_a_retry_storm(openai_cli, fake_openai, root, state_dir):
    for i in range(60):
        (root / f"n{i}.md").write_text(f"note {i} about the numbat\n")
    seen: dict = {}

    def revoke():
        seen["requests"] = sum(fake_openai.counters()["requests"].values())
        fake_openai.configure(rejected_keys={"sk-test-key-0123456789"})

    fake_openai.when(UPLOADS, 5, revoke)  # the key is refused as the fifth upload arrives
    result = openai_cli("sync", str(root), check=2)
    assert result.stderr.count("refused the API key") == 1, result.stderr
    assert "sk-test-key-0123456789" not in result.stdout + result.stderr
    after = sum(fake_openai.counters()["requests"].values()) - seen["requests"]
    assert after <= 2 * 8 + 2, f"{after} requests after the key was refused (uploads in flight at most)"
    assert fake_openai.counters()["status"][401] <= 2 * 8 + 1
    fake_openai.configure(rejected_keys=())
    report = openai_cli.json("sync", str(root))
    assert report["exit_code"] == 0
    paths = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    result = audit(fake_openai.snapshot(), state_dir / "manifest.db", {str(root): paths})
    assert result.clean, result.summary()


def test_vector_store_deleted_remotely_mid_run(openai_cli, fake_openai, root, state_dir):
    for i in range(30):
        (root / f"m{i}.txt").write_text(f"memo {i} about the kinkajou\n")
    deleted: list[str] = []

    def delete_store():
        store = fake_openai.stores()[0]["id"]
        fake_openai.delete_store(store)
        deleted.append(store)

    fake_openai.when(BATCHES, 1, delete_store)  # the store is gone as the first batch arrives
    first = openai_cli("sync", str(root), check=None)
    assert deleted, "the store was not deleted during the run"
    assert "Traceback" not in first.stderr, first.stderr
    assert first.exit_code == 1, "files that were not indexed make the run fail, not pass with a note"
    assert "gone remotely" in first.stdout and "uploaded again next run" in first.stdout
    second = openai_cli.json("sync", str(root))
    assert any("was deleted remotely; it is recreated" in n for n in second["notes"])
    paths = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert all(r.state == INDEXED for r in rows(state_dir, "openai").values())
    stores = fake_openai.stores()
    assert len(stores) == 1 and stores[0]["id"] != deleted[0]
    result = audit(fake_openai.snapshot(), state_dir / "manifest.db", {str(root): paths})
    assert result.clean, result.summary()


def test_a_folder_named_on_the_command_line_that_does_not_exist_is_a_usage_error(ingest, tmp_path):
    result = ingest("sync", str(tmp_path / "nope"), check=2)
    assert "does not exist" in result.stderr and "nope" in result.stderr


def test_a_server_that_cannot_be_reached_is_named_in_the_message(ingest, root, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key-0123456789")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # the discard port: nothing listens
    config = tmp_path / "once.toml"
    config.write_text("request_retries = 0\n")
    result = ingest("--config", str(config), "sync", str(root), check=1)
    assert "connection error" in result.stderr and "http://127.0.0.1:9/v1" in result.stderr, result.stderr
    assert "sk-test-key-0123456789" not in result.stderr + result.stdout
