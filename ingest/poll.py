"""Watch a root without file events: a stat pass over it every poll interval, the changes told apart.

Network shares deliver no inotify events for other clients' writes, so their roots are polled.
watchdog's PollingObserver takes its snapshot one lstat at a time: on a share with 100,000 files a
pass lasts minutes, so "every 5 s" means late. This pass is the scan's own (ingest/walk.py, the
round trips overlapped on a pool), and passes start every interval, not an interval after the
last one ended.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from ingest.config import Root
from ingest.walk import Skip, Walker

log = logging.getLogger("ingest.watch")
Snapshot = dict[str, tuple]  # relative path -> what a change of it would change


OnChange = Callable[[str, float, tuple | None], None]  # (path, when it was seen so, its (size, mtime_ns))


class StatPoller(threading.Thread):
    """Calls on_change for each path created, changed or removed since the last pass: files by (type,
    size, mtime, inode), folders only when they appear or go (their scoped scan covers the rest). A
    change is told as soon as its folder is read, with the moment its stat was taken and the stat:
    the quiet period before a sync counts from then, not from the end of a long pass."""

    def __init__(
        self,
        root: Root,
        on_change: OnChange,
        interval: float,
        threads: int,
        skip: Skip | None = None,
        descend: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(name=f"poll {root.path}", daemon=True)
        self.root, self.on_change, self.interval, self.threads = root, on_change, interval, threads
        self.skip, self.descend, self.clock = skip, descend, clock
        self.passes = 0
        self._halt = threading.Event()
        self._snapshot: Snapshot = {}

    def start(self) -> None:
        # The first snapshot before the daemon's full sync starts: a change made during that sync's
        # scan is then still a difference at the next pass, never absorbed unseen into the baseline.
        self._snapshot, _ = self.take()
        super().start()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        started = self.clock()
        while not self._halt.wait(max(0.0, started + self.interval - self.clock())):
            started = self.clock()
            try:
                self.poll()
            except Exception:  # a failing pass must not end the watch: the next one tries again
                log.exception("polling %s failed", self.root.path)

    def poll(self) -> list[str]:
        """One pass: report and return the changed paths."""
        changed: list[str] = []

        def tell(rel: str, at: float, fingerprint: tuple | None) -> None:
            changed.append(rel)
            self.on_change(rel, at, fingerprint)

        current, unlisted = self.take(self._snapshot, tell)
        at = self.clock()
        for rel in gone(self._snapshot, current, unlisted):
            tell(rel, at, ("gone",))
        for rel in unlisted:  # a folder that could not be listed this time keeps what it had
            current.update((p, v) for p, v in self._snapshot.items() if _under(p, rel))
        self._snapshot = current
        self.passes += 1
        return changed

    def take(self, before: Snapshot | None = None, tell: OnChange | None = None) -> tuple[Snapshot, list[str]]:
        """A snapshot of the root, and the folders it could not list; with `before`, each path that
        appeared or changed is told as its folder is read (not what lies under a folder that appeared)."""
        snapshot: Snapshot = {}
        unlisted: list[str] = []
        descend = self.descend or (lambda rel: True)
        fresh: set[str] = set()  # folders that appeared: their content is theirs to tell
        with Walker(self.threads, self.skip, self.descend) as walker:
            # Breadth first, in the order the pool fetches the folders ahead: a folder is read soon after
            # its listing and stats came back, so a change is told (and its quiet period starts) about
            # when its stat was taken, not a pass later for a folder fetched first and read last.
            queue = deque([(str(self.root.path), "")])
            while queue:
                folder, rel = queue.popleft()
                try:
                    pairs = walker.folder(folder, rel)
                except OSError:
                    unlisted.append(rel)
                    continue
                head = f"{rel}/" if rel else ""
                inside_fresh = rel in fresh
                for item, st in pairs:
                    path = head + item.name
                    value = _value(item.path, st)
                    snapshot[path] = value
                    is_dir = value[0] == "dir"
                    if is_dir and not descend(path):
                        continue
                    if is_dir:
                        queue.append((item.path, path))
                    if tell is None or before is None or before.get(path) == value:
                        continue
                    if is_dir:
                        fresh.add(path)
                    if not inside_fresh:
                        tell(path, self.clock(), value[1:3] if isinstance(value[0], int) else None)
        return snapshot, unlisted


def _value(path: str, st: os.stat_result | OSError) -> tuple:
    if isinstance(st, OSError):
        return ("error", st.errno)
    if stat.S_ISDIR(st.st_mode):
        return ("dir", st.st_ino)
    if stat.S_ISLNK(st.st_mode):  # a link's own stat does not move when its file is edited
        try:
            st = os.stat(path)
        except OSError:
            pass
    return (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, st.st_ino)


def gone(before: Snapshot, after: Snapshot, unlisted: Sequence[str] = ()) -> list[str]:
    """Paths that went, in order; a folder that went is one change (its scoped scan finds what was
    below it gone), and what lies under a folder that could not be listed is not gone."""
    went = sorted(p for p in before.keys() - after.keys() if not any(_under(p, rel) for rel in unlisted))
    folders = {p for p in went if before[p][0] == "dir"}
    return [p for p in went if not _parents(p) & folders]


def _parents(path: str) -> set[str]:
    parts = path.split("/")
    return {"/".join(parts[:n]) for n in range(1, len(parts))}


def _under(path: str, folder: str) -> bool:
    return folder == "" or path.startswith(folder + "/")
