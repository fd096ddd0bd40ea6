"""List folders and lstat their entries, one call at a time or overlapped on a bounded pool of threads.

On a network share every listing and every stat is a round trip to the server, and a walk that waits
for each in turn spends minutes waiting on 100,000 files; rclone's checkers overlap them the same way.
The walk only gathers (entry, stat) pairs: what a file's stat means is decided by its callers, which
consume folders in exactly the order and with exactly the outcome of a serial walk (the pool only
fetches ahead), so a parallel pass gives the serial pass's result.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

# Threads for a filesystem where each call waits on a server. Local disks answer from the kernel's
# caches in a microsecond or two: threads there only add hand-offs of the interpreter lock.
NETWORK_THREADS = 32
CHUNK = 64  # entries stat-ed by one task: a large folder is spread over the pool, a small one is one task

Stat = os.stat_result | OSError  # what lstat gave: the stat, or the error to report for that entry


class Skip(Protocol):
    """The names never looked at (the default ignores)."""

    def __call__(self, name: str) -> bool: ...

    def none_in(self, names: list[str]) -> bool:
        """True when no name of the list is skipped (one test for a whole folder)."""
        ...


Descend = Callable[[str], bool]  # relative folder path -> whether the walk goes into it


def threads_for(fstype: str, network: bool) -> int:
    """Overlap the round trips where there are round trips: network filesystems and FUSE ones (sshfs,
    rclone, s3fs and their kind answer from a server); one thread where the kernel answers."""
    return NETWORK_THREADS if network or fstype.startswith("fuse.") else 1


class Walker:
    """Hands out the (entry, stat) pairs of a folder. With threads > 1, a folder's listing and stats run
    on the pool, and every subfolder the walk will enter (per `descend`) is fetched as soon as its
    parent's stats show it, so the pool stays busy however the caller orders its walk."""

    def __init__(self, threads: int = 1, skip: Skip | None = None, descend: Descend | None = None):
        self.threads, self.skip = threads, skip
        self.descend = descend or (lambda rel: True)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="walk") if threads > 1 else None
        self._ahead: dict[str, Future] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> Walker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._ahead.clear()

    def folder(self, path: str | Path, rel: str) -> Iterator[tuple[os.DirEntry, Stat]]:
        """The entries of one folder with their lstat, in listing order; OSError if it cannot be listed
        (raised before the first pair)."""
        if self._pool is None:
            return self._serial(path)
        with self._lock:
            ahead = self._ahead.pop(rel, None)
        if ahead is None:
            ahead = self._pool.submit(self._list, str(path), rel)
        chunks = ahead.result()  # raises the listing's OSError
        return _pairs(chunks)

    def _serial(self, path: str | Path) -> Iterator[tuple[os.DirEntry, Stat]]:
        with os.scandir(path) as it:
            items = self._kept(list(it))
        try:  # the common case in one comprehension; an entry that cannot be stat-ed sends it one by one
            return zip(items, [item.stat(follow_symlinks=False) for item in items], strict=True)
        except OSError:
            return _stat_each(items)

    def _kept(self, items: list[os.DirEntry]) -> list[os.DirEntry]:
        skip = self.skip
        if skip is None or skip.none_in([item.name for item in items]):
            return items
        return [item for item in items if not skip(item.name)]

    # on the pool ---------------------------------------------------------------------------------
    def _list(self, path: str, rel: str) -> list[tuple[list[os.DirEntry], Future | list[Stat]]]:
        with os.scandir(path) as it:
            items = self._kept(list(it))
        head = f"{rel}/" if rel else ""
        chunks: list[tuple[list[os.DirEntry], Future | list[Stat]]] = []
        assert self._pool is not None
        for start in range(CHUNK, len(items), CHUNK):
            part = items[start : start + CHUNK]
            chunks.append((part, self._pool.submit(self._stats, part, head)))
        first = items[:CHUNK]
        chunks.insert(0, (first, self._stats(first, head)))  # this task's own share, no hand-off
        return chunks

    def _stats(self, items: list[os.DirEntry], head: str) -> list[Stat]:
        out: list[Stat] = []
        for item in items:
            try:
                st = item.stat(follow_symlinks=False)
            except OSError as exc:
                out.append(exc)
                continue
            out.append(st)
            if stat.S_ISDIR(st.st_mode):
                rel = head + item.name
                if self.descend(rel):
                    self._fetch_ahead(item.path, rel)
        return out

    def _fetch_ahead(self, path: str, rel: str) -> None:
        assert self._pool is not None
        with self._lock:
            if rel in self._ahead:
                return
            try:
                self._ahead[rel] = self._pool.submit(self._list, path, rel)
            except RuntimeError:  # the pool is shutting down: the walk is over
                pass


def _stat_each(items: list[os.DirEntry]) -> Iterator[tuple[os.DirEntry, Stat]]:
    for item in items:
        try:
            yield item, item.stat(follow_symlinks=False)
        except OSError as exc:
            yield item, exc


def _pairs(chunks: list[tuple[list[os.DirEntry], Future | list[Stat]]]) -> Iterator[tuple[os.DirEntry, Stat]]:
    for items, stats in chunks:
        yield from zip(items, stats.result() if isinstance(stats, Future) else stats, strict=True)
