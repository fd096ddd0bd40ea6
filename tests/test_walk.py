"""The parallel walk gives exactly what the serial one gives: files, stats, problems, order."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ingest import walk
from ingest.config import Root
from ingest.scan import scan
from ingest.walk import Walker, threads_for
from tests.conftest import as_unprivileged
from tests.test_scan import shared_root, touch  # noqa: F401  (a fixture)


class _Stale:
    """A directory entry whose lstat fails, as one on a share does when the file went away meanwhile."""

    def __init__(self, entry: os.DirEntry):
        self._entry = entry
        self.name, self.path = entry.name, entry.path

    def is_dir(self, follow_symlinks: bool = True) -> bool:
        return self._entry.is_dir(follow_symlinks=follow_symlinks)

    def stat(self, follow_symlinks: bool = True):
        raise OSError(errno.ESTALE, os.strerror(errno.ESTALE), self.path)


class _Listing:
    def __init__(self, path):
        self._it = _real_scandir(path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._it.close()

    def __iter__(self):
        for entry in self._it:
            yield _Stale(entry) if entry.name.startswith("stale") else entry


_real_scandir = os.scandir


def _tricky_tree(root: Path, outside: Path) -> None:
    touch(root / "readme.md")
    for d in range(6):
        for f in range(walk.CHUNK * 2 + 5 if d == 2 else 7):  # one folder spread over several tasks
            touch(root / f"d{d}" / f"sub{f % 3}" / f"n{f:03d}.txt")
    touch(root / "d1" / ".hidden.md")
    touch(root / "d1" / "~$lock.docx")
    touch(root / ".git" / "objects" / "index.md")
    touch(root / "lost+found" / "x.md")
    touch(root / "d3" / "skip.tmp")
    touch(root / "d4" / "stale-file.md")
    touch(root / "d4" / "stale-folder" / "inside.md")
    touch(outside / "secret.md")
    (root / "d0" / "link-in.md").symlink_to(root / "readme.md")
    (root / "d0" / "link-out.md").symlink_to(outside / "secret.md")
    (root / "d0" / "link-dir").symlink_to(root / "d1")
    (root / "d0" / "broken.md").symlink_to(root / "nowhere.md")
    (root / "d0" / "loop.md").symlink_to(root / "d0" / "loop.md")
    os.mkfifo(root / "d5" / "pipe.md")
    touch(root / "d5" / "line\nbreak.md")
    name = os.fsdecode(b"caf\xe9")
    touch(root / "d5" / (name + ".md"))
    touch(root / "d5" / name / "below.md")
    touch(root / "locked" / "inside.md").chmod(0o644)
    touch(root / "d3" / "secret.md").chmod(0o000)
    for folder, dirs, _ in os.walk(root):
        for d in dirs:
            os.chmod(os.path.join(folder, d), 0o755)
    (root / "locked").chmod(0o000)


def _outcome(result) -> tuple:
    # In order of paths: a walk's order is the listing's (the filesystem's), which nothing relies on,
    # and a walk spread over processes (on an idle machine, see ingest/spread.py) merges its shares.
    return (
        result.missing,
        sorted(result.entries),
        sorted(result.problems, key=lambda p: (p.path, p.reason)),
        sorted(result.calm),
    )


@pytest.mark.parametrize("prefixes", [("",), ("d2", "d0/link-dir", "d4", "d5/pipe.md", "gone")])
def test_a_parallel_walk_gives_the_serial_walks_result(shared_root, monkeypatch, prefixes):  # noqa: F811
    outside = shared_root.parent / "outside"
    _tricky_tree(shared_root, outside)
    monkeypatch.setattr(os, "scandir", _Listing)
    root = Root(shared_root, "docs", exclude=("lost+found/**", "**/*.tmp"))
    first = scan(root, network=False, threads=1)
    settled = {e.path: (e.size, e.mtime_ns, e.inode) for e in first.entries[::2]}  # half known unchanged

    def both():
        serial = scan(root, prefixes, network=False, settled=settled, threads=1)
        parallel = scan(root, prefixes, network=False, settled=lambda vouched: settled, threads=8)
        return _outcome(serial), _outcome(parallel)

    serial, parallel = as_unprivileged(both)
    assert parallel == serial
    _, entries, problems, calm = serial
    if prefixes == ("",):  # the tree holds what the test means it to
        reasons = {p.path: p.reason for p in problems}
        assert reasons["locked"].startswith("cannot list folder")
        assert reasons["d3/secret.md"].startswith("cannot read")
        assert reasons["d4/stale-file.md"].startswith("cannot read") and "d4/stale-folder" in reasons
        assert {"d0/link-out.md", "d0/broken.md", "d0/loop.md", "d5/pipe.md", "d5/line\nbreak.md"} <= set(reasons)
        assert sum(1 for p in reasons if p.startswith("d5/caf")) == 2
        paths = {e.path for e in entries} | set(calm)
        assert "d0/link-in.md" in paths and "d2/sub0/n000.txt" in paths
        assert not any(p.startswith((".git", "lost+found", "d0/link-dir/")) for p in paths)
        assert not any(p.endswith((".tmp", ".hidden.md", "lock.docx")) for p in paths)
        assert calm and entries


def test_a_walker_hands_out_each_folder_with_its_stats_in_listing_order(tmp_path):
    for i in range(walk.CHUNK * 3):
        touch(tmp_path / f"f{i:03d}")
    with Walker(threads=4) as walker:
        pairs = list(walker.folder(tmp_path, ""))
    listed = [e.name for e in os.scandir(tmp_path)]
    assert [e.name for e, _ in pairs] == listed
    assert all(st.st_ino == os.lstat(e.path).st_ino for e, st in pairs)


def test_an_unlistable_folder_raises_before_the_first_entry(tmp_path):
    for threads in (1, 4):
        with Walker(threads=threads) as walker, pytest.raises(FileNotFoundError):
            walker.folder(tmp_path / "gone", "gone")


def test_threads_only_where_calls_wait_on_a_server():
    assert threads_for("ext4", network=False) == 1
    assert threads_for("tmpfs", network=False) == 1
    assert threads_for("nfs4", network=True) == walk.NETWORK_THREADS
    assert threads_for("fuse.sshfs", network=True) == walk.NETWORK_THREADS
    assert threads_for("fuse.rclone", network=False) == walk.NETWORK_THREADS
