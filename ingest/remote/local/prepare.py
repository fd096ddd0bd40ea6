"""Extraction and chunking for the embedded store, in worker processes when there is enough of it.

Parsing a document is CPU work that holds the GIL, so threads would not overlap it; worker processes
do, and the store's process only writes the results. The pool starts when the pending files add up
to `POOL_MIN_BYTES` (a worker's start-up is worth about that much extraction) and then serves the
store until it closes. A file that kills its worker (a crash in a native parser) fails alone: the
files that were in flight with it are retried one at a time in a fresh process.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ingest.limits import MAX_FILE_TOKENS
from ingest.remote.base import INVALID_FILE, SERVER_ERROR

if TYPE_CHECKING:  # the pool's modules load when a pool starts: a search never needs them
    from concurrent.futures import Future, ProcessPoolExecutor

POOL_MIN_BYTES = 2 * 1024 * 1024
# Files go to a worker in groups: one hand-over per file cost the store's process more in waking
# threads than in writing the file, and a group is written in one transaction (a segment of the
# full-text index per transaction, so fewer to merge later).
GROUP_BYTES = 512 * 1024
GROUP_FILES = 16
# Two groups per worker in flight: one being parsed, one waiting, so a worker never idles on the
# store's writes, and a deadline stops submitting with little work still queued.
IN_FLIGHT_PER_WORKER = 2


@dataclass(frozen=True)
class Job:
    """One stored file to prepare; `key` is the caller's, returned with the result."""

    key: tuple
    blob: Path
    filename: str
    rule: Mapping[str, object] | None
    size: int


@dataclass(frozen=True)
class Prepared:
    """What indexing a file produced: its chunks and usage, or why it failed (an OpenAI error code)."""

    chunks: tuple[str, ...] = ()
    usage_bytes: int = 0
    error: tuple[str, str] | None = None


def prepare(blob: Path, filename: str, rule: Mapping[str, object] | None) -> Prepared:
    """Extract and chunk one stored file. Never raises: a failure is the file's error."""
    from ingest.remote.local import chunking
    from ingest.remote.local.extract import ExtractError, extract_text

    try:
        if not blob.exists():
            raise ExtractError(SERVER_ERROR, "the local store's copy of the file is missing")
        text = extract_text(blob, Path(filename).suffix)
        # Every token is at least one character: only a longer text can be over the limit.
        if len(text) > MAX_FILE_TOKENS and (tokens := chunking.estimate_tokens(text)) > MAX_FILE_TOKENS:
            raise ExtractError(
                INVALID_FILE, f"the file is too large: about {tokens:,} tokens, the limit is {MAX_FILE_TOKENS:,}"
            )
        return Prepared(tuple(chunking.chunk_text(text, rule)), len(text.encode("utf-8")))
    except ExtractError as e:
        return Prepared(error=(e.code, e.message))
    except Exception as e:  # a library bug must fail one file, not wedge the queue forever
        return Prepared(error=(SERVER_ERROR, f"the local store could not index the file: {type(e).__name__}: {e}"))


def _prepare_group(jobs: list[Job], fn: Callable[[Path, str, Mapping[str, object] | None], Prepared]) -> list[Prepared]:
    return [fn(job.blob, job.filename, job.rule) for job in jobs]


def _groups(jobs: Sequence[Job]) -> Iterator[list[Job]]:
    """Consecutive jobs in groups of about GROUP_BYTES (at most GROUP_FILES files)."""
    group: list[Job] = []
    size = 0
    for job in jobs:
        group.append(job)
        size += job.size
        if size >= GROUP_BYTES or len(group) >= GROUP_FILES:
            yield group
            group, size = [], 0
    if group:
        yield group


class Preparer:
    """Prepares files in this process or in a pool of `workers` processes (0 or 1: never a pool).

    `fn` is what a worker runs (prepare, or a stand-in in tests); it must be importable by name.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        min_bytes: int = POOL_MIN_BYTES,
        fn: Callable[[Path, str, Mapping[str, object] | None], Prepared] = prepare,
    ):
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self.min_bytes = min_bytes
        self._fn = fn
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False

    def close(self) -> None:
        """Stop the workers (waiting for files in flight); later runs prepare in this process."""
        with self._lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def run(self, jobs: Sequence[Job], deadline: float) -> Generator[list[tuple[Job, Prepared]], None, None]:
        """Prepare jobs, starting new ones only until `deadline` (time.monotonic()), and at least one.

        Yields results in groups as they are ready (a group is worth one write transaction); a job
        not yielded was not started, or was dropped with the groups in flight when the caller closed
        the generator (a stop).
        """
        if not jobs:
            return
        pool = self._pool_for(jobs)
        if pool is None:
            for n, job in enumerate(jobs):
                if n and time.monotonic() > deadline:
                    return
                yield [(job, self._fn(job.blob, job.filename, job.rule))]
            return
        yield from self._run_pooled(pool, _groups(jobs), deadline)

    def _pool_for(self, jobs: Sequence[Job]) -> ProcessPoolExecutor | None:
        """The running pool, or a new one when these jobs are worth starting it for."""
        with self._lock:
            if self._pool is None and not self._closed and self.workers > 1 and len(jobs) > 1:
                if sum(job.size for job in jobs) >= self.min_bytes:
                    self._pool = _new_pool(self.workers)
                    # A store nobody closed must still stop its workers before the interpreter's
                    # exit, which races with a pool left running (CPython 3.11 reports EBADF).
                    weakref.finalize(self, self._pool.shutdown, wait=True, cancel_futures=True)
            return self._pool

    def _run_pooled(self, pool: ProcessPoolExecutor, groups: Iterator[list[Job]], deadline: float):
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        in_flight: dict[Future, list[Job]] = {}
        suspects: list[Job] = []  # in flight when a worker died
        started = False
        limit = self.workers * IN_FLIGHT_PER_WORKER
        try:
            while True:
                while len(in_flight) < limit and (not started or time.monotonic() <= deadline) and not suspects:
                    group = next(groups, None)
                    if group is None:
                        break
                    try:
                        in_flight[_submit(pool, group, self._fn)] = group
                    except BrokenProcessPool:
                        suspects.extend(group)
                        break
                    except RuntimeError:  # close() shut the pool down: leave the rest unstarted
                        groups = iter(())
                        break
                    started = True
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    group = in_flight.pop(future)
                    try:
                        yield list(zip(group, future.result(), strict=True))
                    except BrokenProcessPool:
                        suspects.extend(group)
        finally:
            for future in in_flight:
                future.cancel()
        if suspects:
            self._discard(pool)
            for job in suspects:
                yield [(job, self._isolated(job))]

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        """Forget a broken pool; the next run starts a new one."""
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def _isolated(self, job: Job) -> Prepared:
        """Prepare one file in a process of its own, so a crash is pinned on the file that caused it."""
        from concurrent.futures.process import BrokenProcessPool

        with _new_pool(1) as alone:
            try:
                return _submit(alone, [job], self._fn).result()[0]
            except BrokenProcessPool:
                return Prepared(error=(SERVER_ERROR, "the local store's extractor crashed on this file"))


def _new_pool(workers: int) -> ProcessPoolExecutor:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the store's process has threads (uploads, the daemon's watchers) whose locks a
    # forked child would inherit held.
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_exit_with_parent)


# A Ctrl-C in a terminal, and systemd's stop, signal the whole process group: the workers as well as
# the store's process. A worker that took it would die (or raise) with a job in hand, and its pool
# would lose the job or break; so the workers leave stopping to the store's process, which finishes or
# drops their jobs and shuts them down. They are started with the signals blocked (a spawned
# process inherits its starter's mask), so that none lands while the interpreter starts up, and then
# ignore them.
_STOPS = (signal.SIGINT, signal.SIGTERM)


def _submit(pool: ProcessPoolExecutor, group: list[Job], fn: Callable) -> Future:
    """pool.submit, which may start a worker, with the stop signals blocked in this thread meanwhile
    (a signal that arrives then is delivered once they are unblocked)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
    try:
        return pool.submit(_prepare_group, group, fn)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _exit_with_parent() -> None:
    """In a worker: ignore the stop signals (see _STOPS), and exit as soon as the store's process is
    gone. Killed (a SIGTERM with no handler, a SIGKILL, a crash) it tells its pool nothing, and the
    workers would wait on their queue for ever."""
    import multiprocessing

    for sig in _STOPS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # waits on the parent's end of the spawn pipe: closed by the kernel when it dies
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
