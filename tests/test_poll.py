"""The stat poller that watches network roots: which paths it reports, and that it keeps reporting."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ingest.config import Root
from ingest.poll import StatPoller, diff
from ingest.scan import walk_rules
from tests.conftest import as_unprivileged
from tests.test_scan import shared_root, touch  # noqa: F401  (a fixture)


def poller(root: Path, changes: list[str], threads: int = 4) -> StatPoller:
    r = Root(root, "docs")
    return StatPoller(r, changes.append, 3600.0, threads, *walk_rules(r))


def bump(path: Path, text: str) -> None:
    """Rewrite with the same size, and an mtime that surely differs."""
    st = path.stat()
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_a_pass_reports_files_created_changed_and_removed_and_folders_whole(tmp_path):
    root = tmp_path / "docs"
    touch(root / "a.md", "one\n")
    touch(root / "b.md")
    touch(root / "old" / "x.md")
    touch(root / "old" / "deep" / "y.md")
    touch(root / "keep" / "z.md")
    changes: list[str] = []
    p = poller(root, changes)
    p._snapshot, _ = p.take()
    assert p.poll() == [] and changes == []
    bump(root / "a.md", "two\n")
    (root / "b.md").unlink()
    (root / "old").rename(root / "new")
    touch(root / "keep" / "fresh.md")
    touch(root / ".~lock.a.md#")  # ignored by default: never reported
    assert sorted(p.poll()) == ["a.md", "b.md", "keep/fresh.md", "new", "old"]
    assert p.poll() == [], "a change is reported once"


def test_a_folder_that_cannot_be_listed_this_time_is_not_reported_gone(shared_root):  # noqa: F811
    touch(shared_root / "open.md").chmod(0o644)
    locked = shared_root / "locked"
    touch(locked / "inside.md").chmod(0o644)
    locked.chmod(0o755)

    def passes():
        changes: list[str] = []
        p = poller(shared_root, changes)
        p._snapshot, _ = p.take()
        return p

    p = passes()
    locked.chmod(0o000)
    try:
        # Unprivileged, the folder cannot be listed: its files are not gone.
        current, unlisted = as_unprivileged(p.take)
    finally:
        locked.chmod(0o755)
    assert unlisted == ["locked"]
    assert diff(p._snapshot, current, unlisted) == []
    assert "locked/inside.md" in diff(p._snapshot, current, [])


def test_a_parallel_pass_takes_the_serial_snapshot(tmp_path):
    root = tmp_path / "docs"
    for d in range(5):
        for f in range(150 if d == 0 else 20):
            touch(root / f"d{d}" / f"s{f % 4}" / f"f{f}.md")
    (root / "d1" / "link.md").symlink_to(root / "d0" / "s0" / "f0.md")
    assert poller(root, [], threads=1).take() == poller(root, [], threads=8).take()


def test_the_running_poller_sees_an_edit(tmp_path):
    root = tmp_path / "docs"
    touch(root / "sub" / "a.md", "one\n")
    seen = threading.Event()
    changes: list[str] = []

    def on_change(rel: str) -> None:
        changes.append(rel)
        seen.set()

    r = Root(root, "docs")
    p = StatPoller(r, on_change, 0.01, 4, *walk_rules(r))
    p.start()
    try:
        bump(root / "sub" / "a.md", "two\n")
        assert seen.wait(120), "the poller never reported the edit"
    finally:
        p.stop()
        p.join(10)
    assert changes[0] == "sub/a.md"
    assert not p.is_alive()
