"""Attach uploaded files (in batches of up to 500 with per-file attributes, or one by one where a server's
batches take none, see singles.py) and wait, bounded, until the store's own record of each says indexed
or failed."""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from ingest.calls import Calls
from ingest.config import Settings
from ingest.events import FAILED as EVENT_FAILED
from ingest.events import INDEXING, RETRIED, STOPPED, Note, OnEvent
from ingest.limits import BATCH_LIMIT
from ingest.manifest import ATTACHING, PENDING, RETIRE, UPLOADED, FileRow, Manifest
from ingest.outcomes import Outcome, Outcomes, event
from ingest.pollbudget import POLL_EVERY, PollBudget
from ingest.remote.base import (
    CANCELLED,
    COMPLETED,
    IN_PROGRESS,
    INVALID_FILE,
    UNSUPPORTED_FILE,
    AttachItem,
    AuthError,
    Batch,
    NotFound,
    Remote,
    RemoteError,
    Stopped,
    StoreFile,
    Unsupported,
)
from ingest.remote.profile import Profile
from ingest.singles import Limit, attach_each
from ingest.stores import Stores, remember_profile

log = logging.getLogger("ingest")
PERMANENT = (UNSUPPORTED_FILE, INVALID_FILE)  # the server read the file and refused it: another try cannot help
Progress = Callable[[str, int, int], None]
CALLS_AT_ONCE = 8  # attaches, batch polls and listings in flight at once (polls: as pollbudget.py allows)


@dataclass
class _Batch:
    store_id: str
    rows: dict[str, FileRow]  # by file id: results are matched by id, never by list order


def _show(row: FileRow) -> str:
    return os.path.join(row.root, row.path)


def _unchecked(what: str, exc: RemoteError) -> None:
    """A check that failed is a warning; one the run's stop kept from being sent is none (the next run checks)."""
    log.log(logging.DEBUG if isinstance(exc, Stopped) else logging.WARNING, "cannot %s: %s", what, exc)


class Attacher:
    """The attach and wait stages of one run; the manifest is written on the caller's thread only."""

    def __init__(
        self,
        settings: Settings,
        manifest: Manifest,
        remote: Remote,
        stores: Stores,
        profile: Profile,
        outcome: Outcome,
        emit: OnEvent,
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,
        progress: Progress | None = None,
    ):
        self.settings, self.manifest, self.remote, self.stores = settings, manifest, remote, stores
        self.profile, self.emit, self.stop, self.clock = profile, emit, stop, clock
        self.progress = progress or (lambda phase, done, total: None)
        self.limit = Limit(profile.attach_concurrency, profile.attach_max)
        self.batches: dict[str, _Batch] = {}
        self.singles: dict[str, tuple[str, FileRow]] = {}  # file id → (store id, row): attached on its own
        self._singles_due = float("-inf")  # files attached on their own are asked about once a POLL_EVERY
        self.record = Outcomes(manifest, remote, emit, outcome)  # what became of each file
        self._queue: dict[str, list[FileRow]] = defaultdict(list)
        self.calls = Calls(CALLS_AT_ONCE, "attach")  # attaches and polls sent while the uploads go on
        self._index_retries: dict[str, int] = defaultdict(int)
        self.polls = PollBudget(clock)  # when each batch is asked about: one budget for all of them

    def resume(self, attach: list[FileRow], attaching: list[FileRow], moved: frozenset[str]) -> None:
        """attach: rows with a file id; attaching: rows in a batch (or, with no batch id, attached on
        their own); moved: file ids attached again for their new attributes (their event is the move)."""
        self.record.moved = moved
        for row in attach:
            # Attached before (failed, moved, or cut off): some servers ignore a second attach of a file
            # already in the store, so it goes first. Not there is fine.
            self.record.detach(row.known_store_id, row.known_file_id, "attaching it anyway")
            self._queue[row.known_store_id].append(row)
        for row in attaching:
            if row.batch_id:
                if row.batch_id not in self.batches:
                    self.batches[row.batch_id] = _Batch(row.known_store_id, {})
                    self.polls.track(row.batch_id)
                self.batches[row.batch_id].rows[row.known_file_id] = row
            else:
                self.singles[row.known_file_id] = (row.known_store_id, row)

    def queue(self, row: FileRow) -> None:
        """A file just uploaded: attached with the next full batch (sent while uploads go on), or by finish()."""
        self._queue[row.known_store_id].append(row)
        if len(self._queue[row.known_store_id]) >= BATCH_LIMIT:
            self._flush(row.known_store_id, soon=True)

    def flush(self, soon: bool = False) -> None:
        """Attach what is queued, full batches or not; soon: on the pool, answered through calls."""
        for store_id in list(self._queue):
            self._flush(store_id, soon)

    def poll_soon(self, waiting: bool = False) -> None:
        """Ask about the batches due, as the budget allows (pollbudget.py): while uploads go on, each at
        most every POLL_EVERY s; waiting, as often as the server says."""
        for batch_id in self.polls.take(waiting):
            tracked = self.batches[batch_id]
            call = functools.partial(self.remote.get_batch, tracked.store_id, batch_id)
            self.calls.submit(call, functools.partial(self._polled, batch_id, tracked))

    def finish(self) -> None:
        self.flush(soon=True)  # not behind an answer still on its way: each is handled as it comes
        self.wait()

    def _flush(self, store_id: str, soon: bool = False) -> None:
        rows = self._queue.pop(store_id, [])
        for start in range(0, len(rows), BATCH_LIMIT):
            self._attach(store_id, rows[start : start + BATCH_LIMIT], soon)

    def _attach(self, store_id: str, rows: list[FileRow], soon: bool = False) -> None:
        if not rows:
            return
        if self.profile.per_file_batches is False:
            self._attach_each(store_id, rows)
            return
        chunking = self.stores.chunking(rows[0].store or "")
        items = [AttachItem(r.known_file_id, r.attrs(), chunking) for r in rows]
        call = functools.partial(self.remote.attach_batch, store_id, items)
        if soon:  # the rows stay "uploaded" until the reply: a crash meanwhile leaves them to be attached again
            self.calls.submit(call, functools.partial(self._made, store_id, rows))
        else:
            self._made(store_id, rows, call)

    def _made(self, store_id: str, rows: list[FileRow], answer: Callable[[], Batch]) -> None:
        try:
            batch = answer()
        except AuthError:
            raise
        except Unsupported as exc:
            log.info("%s; attaching one file at a time from now on", exc)
            self.profile = self.profile.with_batches(False)
            remember_profile(self.manifest, self.remote, self.profile)
            self._attach_each(store_id, rows)
            return
        except NotFound:
            self._gone(rows)  # a file id of ours is gone remotely: the whole batch is refused
            return
        except Stopped:
            return  # never sent: still uploaded, attached by the next run
        except RemoteError as exc:
            for row in rows:
                self.record.fail(row, f"attach failed: {exc}", None, retryable=True)
            return
        tracked = _Batch(store_id, {})
        with self.manifest.transaction():
            for row in rows:
                tracked.rows[row.known_file_id] = self.manifest.update(row, state=ATTACHING, batch_id=batch.id)
                self.manifest.ledger_set(row.known_file_id, "live", store_id)
        self.batches[batch.id] = tracked
        self.polls.track(batch.id)
        self.poll_soon()  # answered with the others, whatever this caller is doing meanwhile

    def _gone(self, rows: list[FileRow]) -> None:
        """The vector store or the uploaded file is gone remotely: upload these again."""
        with self.manifest.transaction():
            for row in rows:
                self.manifest.ledger_set(row.known_file_id, RETIRE)
                self.manifest.update(row, state=PENDING, file_id=None, batch_id=None)
        # Not indexed is a failure (exit 1), even though the next run repairs it on its own.
        for row in rows:
            self.emit(
                event(
                    row,
                    EVENT_FAILED,
                    "not attached: the vector store or the uploaded file was gone remotely; "
                    "it is uploaded again next run",
                )
            )

    def _attach_each(self, store_id: str, rows: list[FileRow]) -> None:
        """One call per file, so each keeps its own attributes; the row is recorded as each one answers."""
        chunking = self.stores.chunking(rows[0].store or "")
        sent: dict[str, FileRow] = {}
        with self.manifest.transaction():  # attaching before the call: a crash leaves it to be looked up
            for row in rows:
                sent[row.known_file_id] = self.manifest.update(row, state=ATTACHING, batch_id=None)
                self.manifest.ledger_set(row.known_file_id, "live", store_id)
        items = [AttachItem(r.known_file_id, r.attrs(), chunking) for r in sent.values()]
        for result in attach_each(self.remote, store_id, items, self.limit, self.stop):
            row = sent.pop(result.file_id)
            if isinstance(result.error, NotFound):
                self._gone([row])
            elif isinstance(result.error, Stopped):
                self.singles[row.known_file_id] = (store_id, row)  # not sent: looked up by the next run
            elif result.error is not None:
                if result.error.retryable:
                    self._again(store_id, row, f"attach failed: {result.error}", None)
                else:
                    self.record.fail(row, f"attach failed: {result.error}", None, retryable=False)
            elif result.lost:
                self._again(store_id, row, "the server lost its record of the file while indexing it", None)
            elif result.store_file is not None:
                self._observed(store_id, row, result.store_file)
        for row in sent.values():  # stopping: not sent, looked up (and attached) by the next run
            self.singles[row.known_file_id] = (store_id, row)

    def _observed(self, store_id: str, row: FileRow, sf: StoreFile) -> None:
        """What the store's own record of a file says."""
        if sf.status == COMPLETED:
            self.record.indexed(row)
        elif sf.status == IN_PROGRESS:
            self.singles[row.known_file_id] = (store_id, row)
        elif sf.status == CANCELLED:
            self.record.fail(row, "indexing was cancelled", "cancelled", retryable=True)
        else:
            reason = f"indexing failed: {sf.error_code or 'the server gave no reason'}" + (
                f": {sf.error_message}" if sf.error_message else ""
            )
            if sf.error_code in PERMANENT:
                self.record.fail(row, reason, sf.error_code, retryable=False)
            else:  # server_error, an unknown code, or none at all (the embedder was down): may pass next time
                self._again(store_id, row, reason, sf.error_code)

    def _again(self, store_id: str, row: FileRow, reason: str, code: str | None) -> None:
        """Attach once more in this run (detached first), a bounded number of times; then fail retryably."""
        if self._index_retries[row.known_file_id] >= self.settings.server_error_retries:
            self.record.fail(row, reason, code, retryable=True)
            return
        self._index_retries[row.known_file_id] += 1
        # A second attach of a file already in the store is ignored by some servers: the failed one goes first.
        self.record.detach(store_id, row.known_file_id, "attaching it again anyway")
        self._queue[store_id].append(self.manifest.update(row, state=UPLOADED, batch_id=None))
        self.emit(event(row, RETRIED, f"{reason}; attached again"))

    def _poll_singles(self) -> None:
        if self.clock() < self._singles_due:
            return
        self._singles_due = self.clock() + POLL_EVERY
        for file_id, (store_id, row) in list(self.singles.items()):
            try:
                sf = self.remote.get_store_file(store_id, file_id)
            except NotFound:
                del self.singles[file_id]
                self._again(store_id, row, "the store has no record of the file", None)
                continue
            except AuthError:
                raise
            except RemoteError as exc:
                _unchecked(f"check {_show(row)}", exc)
                continue
            if sf.status != IN_PROGRESS:
                del self.singles[file_id]
                with self.manifest.transaction():
                    self._observed(store_id, row, sf)

    def _waiting(self) -> int:
        return sum(len(b.rows) for b in self.batches.values()) + len(self.singles)

    def wait(self) -> None:
        deadline = self.clock() + self.settings.index_timeout
        total = self._waiting()
        while self.batches or self.singles or self._queue or self.calls.under_way:
            self.poll_soon(waiting=True)  # those due together, in one round trip, as the budget allows
            # Answers are handled as they come, and what they make due (a batch just attached) is asked
            # about on the next turn, not after the slowest question under way.
            self.calls.answer_some(self._pause())
            total = max(total, self._waiting())
            self._poll_singles()
            for store_id in list(self._queue):
                self._flush(store_id)  # retries go out again (in a new batch, or one by one)
            self.progress("index", max(0, total - self._waiting()), total)
            if not (self.batches or self.singles or self._queue or self.calls.under_way):
                break
            if self.stop.is_set() or self.clock() >= deadline:
                self.calls.drain()  # what was sent is recorded before the run goes on
            if self.stop.is_set():
                if self.batches or self.singles or self._queue:  # the answers drained may have settled them all
                    self.emit(Note(STOPPED, "stopped while files were indexing; the next run checks them"))
                return
            if self.clock() >= deadline:
                for tracked in self.batches.values():
                    for row in tracked.rows.values():
                        self.emit(event(row, INDEXING, f"still indexing after {self.settings.index_timeout:.0f} s"))
                for _, row in self.singles.values():
                    self.emit(event(row, INDEXING, f"still indexing after {self.settings.index_timeout:.0f} s"))
                return
            if not self.calls.under_way:
                self.stop.wait(self._pause())

    def _pause(self) -> float:
        return max(0.05, min(self.polls.next_in(waiting=True), 10.0))

    def _polled(self, batch_id: str, tracked: _Batch, answer: Callable[[], Batch]) -> None:
        if self.batches.get(batch_id) is not tracked:
            return
        try:
            batch = answer()
        except NotFound:
            self.polls.forget(batch_id)
            self._reattach(self.batches.pop(batch_id))
            return
        except AuthError:
            raise
        except RemoteError as exc:
            _unchecked(f"check batch {batch_id}", exc)
            self.polls.failed(batch_id)
            return
        hint = batch.poll_after_ms / 1000 if batch.poll_after_ms is not None else None
        if batch.status == IN_PROGRESS:
            self.polls.answered(batch_id, hint)
            return
        # Counts that account for every file as completed say so of each; anything else is read file by
        # file (llama-stack says "completed" for a batch whose files failed), on the pool: the uploads go on.
        if batch.completed == len(tracked.rows) and not (batch.failed or batch.cancelled or batch.in_progress):
            self._settle(batch_id, None, hint)
            return
        listing = functools.partial(_listed, self.remote, tracked.store_id, batch_id)
        self.calls.submit(listing, functools.partial(self._read, batch_id, tracked, hint))

    def _read(self, batch_id: str, tracked: _Batch, hint: float | None, answer: Callable[[], list[StoreFile]]) -> None:
        if self.batches.get(batch_id) is not tracked:
            return
        try:
            records = {sf.file_id: sf for sf in answer()}
        except AuthError:
            raise
        except RemoteError as exc:
            _unchecked(f"list files of batch {batch_id}", exc)
            self.polls.failed(batch_id)  # asked about again, after a pause
            return
        self._settle(batch_id, records, hint)

    def _reattach(self, tracked: _Batch) -> None:
        for row in tracked.rows.values():
            self._queue[tracked.store_id].append(self.manifest.update(row, state=UPLOADED, batch_id=None))

    def _settle(self, batch_id: str, records: dict[str, StoreFile] | None, hint: float | None) -> None:
        """records: the batch's files as listed; None: its counts said every file completed."""
        tracked = self.batches.pop(batch_id)
        still = _Batch(tracked.store_id, {})  # files the batch still has in progress: asked about again
        with self.manifest.transaction():
            for file_id, row in tracked.rows.items():
                sf = records.get(file_id) if records is not None else None
                if records is None:
                    self.record.indexed(row)
                elif sf is None:
                    # Silence is not success: a file the listing leaves out is looked up on its own.
                    self.singles[file_id] = (tracked.store_id, row)
                elif sf.status == IN_PROGRESS:
                    still.rows[file_id] = row
                else:
                    self._observed(tracked.store_id, row, sf)
        if still.rows:
            self.batches[batch_id] = still
            self.polls.track(batch_id, answered=True, hint=hint)
        else:
            self.polls.forget(batch_id)


def _listed(remote: Remote, store_id: str, batch_id: str) -> list[StoreFile]:
    return list(remote.batch_files(store_id, batch_id))  # every page, read on the pool
