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
from collections.abc import Callable, Sequence

from ingest.config import Root
from ingest.walk import Walker

log = logging.getLogger("ingest.watch")
Snapshot = dict[str, tuple]  # relative path -> what a change of it would change


class StatPoller(threading.Thread):
    """Calls on_change(rel) for each path created, changed or removed since the last pass: files by
    (type, size, mtime, inode), folders only when they appear or go (their scoped scan covers the rest)."""

    def __init__(
        self,
        root: Root,
        on_change: Callable[[str], None],
        interval: float,
        threads: int,
        skip: Callable[[str], object] | None = None,
        descend: Callable[[str], bool] | None = None,
    ):
        super().__init__(name=f"poll {root.path}", daemon=True)
        self.root, self.on_change, self.interval, self.threads = root, on_change, interval, threads
        self.skip, self.descend = skip, descend
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
        started = time.monotonic()
        while not self._halt.wait(max(0.0, started + self.interval - time.monotonic())):
            started = time.monotonic()
            try:
                self.poll()
            except Exception:  # a failing pass must not end the watch: the next one tries again
                log.exception("polling %s failed", self.root.path)

    def poll(self) -> list[str]:
        """One pass: report and return the changed paths."""
        current, unlisted = self.take()
        changed = diff(self._snapshot, current, unlisted)
        for rel in unlisted:  # a folder that could not be listed this time keeps what it had
            current.update((p, v) for p, v in self._snapshot.items() if _under(p, rel))
        self._snapshot = current
        self.passes += 1
        for rel in changed:
            self.on_change(rel)
        return changed

    def take(self) -> tuple[Snapshot, list[str]]:
        """A snapshot of the root, and the folders it could not list."""
        snapshot: Snapshot = {}
        unlisted: list[str] = []
        descend = self.descend or (lambda rel: True)
        with Walker(self.threads, self.skip, self.descend) as walker:
            stack = [(str(self.root.path), "")]
            while stack:
                folder, rel = stack.pop()
                try:
                    pairs = walker.folder(folder, rel)
                except OSError:
                    unlisted.append(rel)
                    continue
                head = f"{rel}/" if rel else ""
                for item, st in pairs:
                    path = head + item.name
                    if isinstance(st, OSError):
                        snapshot[path] = ("error", st.errno)
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        snapshot[path] = ("dir", st.st_ino)
                        if descend(path):
                            stack.append((item.path, path))
                        continue
                    if stat.S_ISLNK(st.st_mode):  # a link's own stat does not move when its file is edited
                        try:
                            st = os.stat(item.path)
                        except OSError:
                            pass
                    snapshot[path] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, st.st_ino)
        return snapshot, unlisted


def diff(before: Snapshot, after: Snapshot, unlisted: Sequence[str] = ()) -> list[str]:
    """Paths that appeared, changed or went, in order; a folder that appeared or went is one change (its
    scoped scan covers what lies below), and what lies under a folder that could not be listed is not gone."""
    changed = [p for p, v in after.items() if before.get(p) != v]
    changed += sorted(p for p in before.keys() - after.keys() if not any(_under(p, rel) for rel in unlisted))
    folders = {p for p in changed if (after.get(p) or before[p])[0] == "dir"}
    return [p for p in changed if not _parents(p) & folders]


def _parents(path: str) -> set[str]:
    parts = path.split("/")
    return {"/".join(parts[:n]) for n in range(1, len(parts))}


def _under(path: str, folder: str) -> bool:
    return folder == "" or path.startswith(folder + "/")
