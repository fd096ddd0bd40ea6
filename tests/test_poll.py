"""The stat poller that watches network roots: which paths it reports, and that it keeps reporting."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ingest.config import Root
from ingest.poll import StatPoller, gone
from ingest.scan import walk_rules
from tests.conftest import as_unprivileged
from tests.test_scan import shared_root, touch  # noqa: F401  (a fixture)


def poller(root: Path, changes: list[tuple], threads: int = 4) -> StatPoller:
    r = Root(root, "docs")
    return StatPoller(r, lambda *change: changes.append(change), 3600.0, threads, *walk_rules(r))


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
    changes: list[tuple] = []
    p = poller(root, changes)
    p._snapshot, _ = p.take()
    assert p.poll() == [] and changes == []
    bump(root / "a.md", "two\n")
    (root / "b.md").unlink()
    (root / "old").rename(root / "new")
    touch(root / "keep" / "fresh.md")
    touch(root / ".~lock.a.md#")  # ignored by default: never reported
    assert sorted(p.poll()) == ["a.md", "b.md", "keep/fresh.md", "new", "old"]
    told = {rel: fingerprint for rel, _, fingerprint in changes}
    st = (root / "a.md").stat()
    assert told["a.md"] == (st.st_size, st.st_mtime_ns), "the stat the change was seen with"
    assert told["b.md"] == told["old"] == ("gone",) and told["new"] is None
    assert p.poll() == [], "a change is reported once"


def test_a_folder_that_cannot_be_listed_this_time_is_not_reported_gone(shared_root):  # noqa: F811
    touch(shared_root / "open.md").chmod(0o644)
    locked = shared_root / "locked"
    touch(locked / "inside.md").chmod(0o644)
    locked.chmod(0o755)

    def passes():
        changes: list[tuple] = []
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
    assert gone(p._snapshot, current, unlisted) == []
    assert gone(p._snapshot, current, []) == ["locked/inside.md"]


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

    def on_change(rel: str, at: float, fingerprint: tuple | None) -> None:
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


def test_a_polled_change_settles_from_when_it_was_seen_and_a_later_write_starts_again(tmp_path):
    from ingest.watch import DirtySet

    now = [100.0]
    dirty = DirtySet(clock=lambda: now[0])
    doc = touch(tmp_path / "a.md", "one\n")
    st = doc.stat()
    dirty.add(str(tmp_path), "a.md", seen_at=97.0, fingerprint=(st.st_size, st.st_mtime_ns))
    assert dirty.take_ready(2.0) == {str(tmp_path): {"a.md"}}, "quiet since it was seen 3 s ago"

    dirty.add(str(tmp_path), "a.md", seen_at=97.0, fingerprint=(st.st_size, st.st_mtime_ns))
    bump(doc, "two\n")  # written again after the poller saw it
    assert dirty.take_ready(2.0) == {}
    now[0] = 101.5
    assert dirty.take_ready(2.0) == {}, "the quiet period restarted at 100"
    now[0] = 102.0
    assert dirty.take_ready(2.0) == {str(tmp_path): {"a.md"}}


def test_changes_are_told_in_the_order_their_folders_are_read_breadth_first(tmp_path):
    """The pool fetches folders in the order their parents list them; the pass reads them in that order
    too, so a change is told (and its quiet period starts) about when its stat was taken: a folder
    fetched first and read last would tell its change a pass late."""
    root = tmp_path / "docs"
    for n in range(8):
        touch(root / f"team-{n}" / "notes.md", "one\n")
    changes: list[tuple] = []
    p = poller(root, changes, threads=1)
    p._snapshot, _ = p.take()
    for n in range(8):
        bump(root / f"team-{n}" / "notes.md", "two\n")
    listed = [entry.name for entry in os.scandir(root)]
    assert p.poll() == [f"{name}/notes.md" for name in listed]
