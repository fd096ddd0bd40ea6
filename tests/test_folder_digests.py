"""Folder digests: a no-op compares one digest per folder instead of a row per file, and every new,
changed, renamed and deleted file is still found, on both backends; a digest that is stale or that
nothing keeps true is never taken for "unchanged"."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from ingest import scan as scanning
from ingest.config import Root
from ingest.manifest import Manifest
from ingest.observe import digest_context
from ingest.schema import DIGEST_TRIGGER
from tests.helpers import manifest_rows

OLD = time.time() - 3600  # outside the racy window: rows of these files are settled once indexed
FOLDERS = ("a", "a/b", "c")
PER = 3


@pytest.fixture(params=["local", "openai"])
def backend(request, tmp_path):
    """(cli, path of its manifest): the embedded store, or the OpenAI path against the emulator."""
    if request.param == "local":
        return request.getfixturevalue("ingest"), request.getfixturevalue("state_dir") / "local" / "manifest.db"
    return request.getfixturevalue("openai_cli"), request.getfixturevalue("state_dir") / "manifest.db"


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "tree"
    for folder in ("", *FOLDERS):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(PER):
            write(root / folder / f"n{i}.txt", f"note {i} in {folder or 'top'}: the walrus and the tern\n")
    return root


def write(path: Path, text: str, mtime: float = OLD) -> None:
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def digests(manifest: Path) -> dict[str, tuple[str, int]]:
    m = Manifest(manifest)
    try:
        (root,) = {r[0] for r in m.rows()}
        return m.folder_digests(root)
    finally:
        m.close()


def synced(cli, tree: Path, manifest: Path) -> None:
    """Indexed, then a no-op that records every folder's digest."""
    assert cli.json("sync", str(tree))["counts"]["indexed"] == PER * 4
    assert cli.json("sync", str(tree))["counts"]["unchanged"] == PER * 4
    recorded = {folder: files for folder, (_, files) in digests(manifest).items()}
    assert recorded == {"": PER, "a/": PER, "a/b/": PER, "c/": PER}


@pytest.fixture
def digested(backend, tree):
    """backend's (cli, manifest) after a sync and a no-op that recorded every folder's digest."""
    synced(backend[0], tree, backend[1])
    return backend


@pytest.fixture
def reads(monkeypatch) -> list[int]:
    """How many settled rows each sync read from the manifest."""
    seen: list[int] = []
    real = Manifest.settled

    def settled(self, *args, **kwargs):
        found = real(self, *args, **kwargs)
        seen.append(len(found[0]) + len(found[1]))
        return found

    monkeypatch.setattr(Manifest, "settled", settled)
    return seen


def test_a_noop_with_digests_reads_no_row(digested, tree, reads):
    cli, _ = digested
    reads.clear()
    report = cli.json("sync", str(tree))
    assert report["counts"]["unchanged"] == PER * 4 and report["counts"]["uploaded"] == 0
    assert reads == [0], "every folder was vouched for by its digest"


def edit_in_place(path: Path) -> None:
    path.write_text(path.read_text().upper())  # the same length, the mtime now
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))


def save_atomically(path: Path) -> None:
    """The same size and mtime, to the nanosecond: only the inode tells."""
    before, fresh = os.stat(path), path.with_name(".saving")
    fresh.write_text(path.read_text().upper())
    os.utime(fresh, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(fresh, path)


@pytest.mark.parametrize("edit", [edit_in_place, save_atomically])
def test_an_edit_that_keeps_the_size_is_found(digested, tree, edit):
    cli, _ = digested
    edit(tree / "a" / "b" / "n1.txt")
    report = cli.json("sync", str(tree))
    assert report["counts"]["changed"] == 1 and report["counts"]["uploaded"] == 1
    assert report["counts"]["unchanged"] == PER * 4 - 1


def test_a_file_added_to_and_one_removed_from_a_digested_folder_are_found(digested, tree):
    cli, _ = digested
    write(tree / "c" / "added.txt", "a new note about the puffin\n")
    (tree / "a" / "n2.txt").unlink()
    report = cli.json("sync", str(tree))
    assert report["counts"]["new"] == 1 and report["counts"]["deleted"] == 1
    assert report["counts"]["unchanged"] == PER * 4 - 1


def test_a_deleted_folder_is_found_deleted(digested, tree):
    cli, manifest = digested
    shutil.rmtree(tree / "a" / "b")
    report = cli.json("sync", str(tree), "--allow-mass-delete")
    assert report["counts"]["deleted"] == PER and report["counts"]["unchanged"] == PER * 3
    assert "a/b/" not in digests(manifest)


def test_a_rename_across_folders_is_a_move(digested, tree):
    cli, _ = digested
    os.rename(tree / "a" / "n1.txt", tree / "c" / "moved.txt")
    report = cli.json("sync", str(tree))
    assert report["counts"]["moved"] == 1 and report["counts"]["uploaded"] == 0
    assert report["counts"]["deleted"] == 0 and report["counts"]["new"] == 0


def test_a_folder_with_a_row_not_settled_gets_no_digest(ingest, tree, state_dir):
    manifest = state_dir / "local" / "manifest.db"
    write(tree / "c" / "racy.txt", "written just now\n", mtime=time.time())  # within the racy window
    ingest("sync", str(tree))
    assert ingest.json("sync", str(tree))["counts"]["unchanged"] == PER * 4 + 1
    assert set(digests(manifest)) == {"", "a/", "a/b/"}, "c/ holds a row the stat alone may not vouch for"


def test_any_write_to_a_row_drops_its_folders_digest_and_the_change_is_seen(ingest, tree, state_dir):
    manifest = state_dir / "local" / "manifest.db"
    synced(ingest, tree, manifest)
    m = Manifest(manifest)
    try:
        row = next(r for r in m.rows().values() if r.path == "a/b/n0.txt")
        m.update(row, hashed_at_ns=None)  # as if never hashed: its stat no longer vouches for it
        assert set(m.folder_digests(row.root)) == {"", "a/", "c/"}
        moved = next(r for r in m.rows().values() if r.path == "c/n0.txt")
        m.put(type(moved)(**{**moved.__dict__, "path": "elsewhere.txt"}))  # an insert drops the new folder's
        m.remove(moved.root, moved.path)  # a delete the old folder's
        assert set(m.folder_digests(row.root)) == {"a/"}
    finally:
        m.close()
    report = ingest.json("sync", str(tree), "--allow-mass-delete")
    # c/n0.txt lost its row, and a row names a file that is not there, with the same content: a move.
    assert report["counts"]["moved"] == 1 and report["counts"]["uploaded"] == 0
    rows = manifest_rows(state_dir)
    assert rows["a/b/n0.txt"].hashed_at_ns is not None, "hashed again: its folder's digest no longer spoke for it"


def test_digests_nothing_keeps_true_are_not_trusted(ingest, tree, state_dir):
    """A files table rebuilt without the triggers: a digest may then speak for rows that changed."""
    manifest = state_dir / "local" / "manifest.db"
    synced(ingest, tree, manifest)
    conn = sqlite3.connect(manifest)
    with conn:
        conn.execute(f"drop trigger {DIGEST_TRIGGER}_delete")
        conn.execute("delete from files where path = 'a/n0.txt'")  # its folder's digest stays
    conn.close()
    report = ingest.json("sync", str(tree))
    assert report["counts"]["new"] == 1 and report["counts"]["uploaded"] == 1


def test_a_manifest_from_before_digests_is_migrated_and_compares_row_by_row_until_it_has_them(ingest, tree, state_dir):
    manifest = state_dir / "local" / "manifest.db"
    synced(ingest, tree, manifest)
    conn = sqlite3.connect(manifest)
    with conn:  # as the version before them left it
        for event in ("insert", "update", "delete"):
            conn.execute(f"drop trigger {DIGEST_TRIGGER}_{event}")
        conn.execute("drop table folder_digests")
        conn.execute("delete from _sqlite_migrations where name = 'm009_folder_digests'")
        conn.execute("pragma user_version = 8")
    conn.close()
    write(tree / "a" / "n0.txt", "note 0 in a: edited while the old version ran\n")
    report = ingest.json("sync", str(tree))
    assert report["counts"]["changed"] == 1 and report["counts"]["unchanged"] == PER * 4 - 1
    ingest("sync", str(tree))  # the edited file's row is now settled, and its folder digested
    assert set(digests(manifest)) == {"", "a/", "a/b/", "c/"}


def test_status_counts_local_changes_in_digested_folders(ingest, tree, state_dir):
    synced(ingest, tree, state_dir / "local" / "manifest.db")
    assert ingest.json("status")["local_changes"] == {"new": 0, "changed": 0, "deleted": 0, "unreachable_roots": 0}
    write(tree / "a" / "n0.txt", "note 0 in a: THE WALRUS AND THE TERN\n", mtime=OLD + 1)
    write(tree / "a" / "b" / "fresh.txt", "a puffin\n")
    shutil.rmtree(tree / "c")
    changes = ingest.json("status")["local_changes"]
    assert changes == {"new": 1, "changed": 1, "deleted": PER, "unreachable_roots": 0}


def test_the_scan_vouches_only_for_folders_whose_digest_matches(tree):
    root = Root(tree, "s")
    context = digest_context("s", False)
    first = scanning.scan(root, network=False, digests=scanning.FolderDigests({}, context))
    assert first.vouched == {} and set(first.digests) == {"", "a/", "a/b/", "c/"}
    os.utime(tree / "c" / "n1.txt", (OLD + 1, OLD + 1))
    again = scanning.scan(root, network=False, digests=scanning.FolderDigests(first.digests, context))
    assert again.vouched == {"": PER, "a/": PER, "a/b/": PER}
    assert {e.path for e in again.entries} == {f"c/n{i}.txt" for i in range(PER)}, "no rows given for c/"
    share = scanning.scan(root, network=True, digests=scanning.FolderDigests(first.digests, digest_context("s", True)))
    assert share.vouched == {}, "taken on a local disk: another context"
