"""Upload → attach in batches → wait (bounded) for indexing → retire what was replaced. State after every call."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.config import Settings
from ingest.events import FAILED as EVENT_FAILED
from ingest.events import (
    INDEXING,
    LEFT_BEHIND,
    MOVED,
    REPLACED,
    RETIRE_FAILED,
    RETRIED,
    SKIPPED,
    STOPPED,
    FileEvent,
    Note,
    OnEvent,
    ignore,
)
from ingest.events import UPLOADED as EVENT_UPLOADED
from ingest.limits import BATCH_LIMIT
from ingest.manifest import (
    ATTACHING,
    DELETED,
    FAILED,
    HEARTBEAT,
    INDEXED,
    PENDING,
    RETIRE,
    UPLOADED,
    UPLOADING,
    FileRow,
    Manifest,
)
from ingest.remote.base import (
    CANCELLED,
    IN_PROGRESS,
    SERVER_ERROR,
    AttachItem,
    AuthError,
    NotFound,
    Remote,
    RemoteError,
    RemoteFile,
)
from ingest.stores import Stores
from ingest.sweep import sweep

log = logging.getLogger("ingest")
Progress = Callable[[str, int, int], None]


@dataclass
class Outcome:
    uploaded: int = 0
    indexed: int = 0
    deleted_remote: int = 0
    duplicates_removed: int = 0


@dataclass(frozen=True)
class _InFlight:
    row: FileRow  # as recorded when its upload started
    upload_id: int  # its ledger entry


@dataclass
class _Batch:
    store_id: str
    rows: dict[str, FileRow]  # by file id: results are matched by id, never by list order


def event(row: FileRow, action: str, reason: str = "") -> FileEvent:
    return FileEvent(row.path, row.root, action, row.store, row.file_id, reason)


class Indexer:
    def __init__(
        self,
        settings: Settings,
        manifest: Manifest,
        remote: Remote,
        stores: Stores,
        progress: Progress | None = None,
        clock: Callable[[], float] = time.monotonic,
        stop: threading.Event | None = None,
        emit: OnEvent = ignore,
    ):
        self.settings, self.manifest, self.remote, self.stores = settings, manifest, remote, stores
        self.stop = stop or threading.Event()  # set: start nothing new; what is recorded is resumed later
        self.progress = progress or (lambda phase, done, total: None)
        self.clock = clock
        self.emit = emit
        self.outcome = Outcome()
        self.batches: dict[str, _Batch] = {}
        self._queue: dict[str, list[FileRow]] = defaultdict(list)
        self._index_retries: dict[str, int] = defaultdict(int)

    # upload ------------------------------------------------------------------------------------
    def run(self, uploads: list[FileRow], attach: list[FileRow], attaching: list[FileRow]) -> Outcome:
        """uploads: rows to send (state PENDING); attach: rows with a file id; attaching: rows in a batch."""
        for row in attach:
            self._queue[row.known_store_id].append(row)
        for row in attaching:
            batch = self.batches.setdefault(row.batch_id or "", _Batch(row.known_store_id, {}))
            batch.rows[row.known_file_id] = row
        if uploads:
            self._upload_all(uploads)
        for store_id in list(self._queue):
            self._flush(store_id)
        self._wait()
        return self.outcome

    def _upload_all(self, rows: list[FileRow]) -> None:
        total, done = len(rows), 0
        # A remote that paces its uploads says how many are worth having under way; the pool only
        # bounds the threads.
        pacer = getattr(self.remote, "upload_pacer", None)
        threads = pacer.ceiling if pacer is not None else self.settings.upload_concurrency
        with ThreadPoolExecutor(threads, thread_name_prefix="upload") as pool:
            pending: dict[Future[RemoteFile], _InFlight] = {}
            todo = iter(rows)
            # Keep only a window of uploads in flight: memory stays flat and the manifest says
            # "uploading" only for files that really are (or are next).
            while True:
                window = pacer.wanted if pacer is not None else self.settings.upload_concurrency
                while len(pending) < window + max(2, window // 4) and not self.stop.is_set():
                    row = next(todo, None)
                    if row is None:
                        break
                    future, sent = self._start(pool, row)
                    pending[future] = sent
                if not pending:
                    break
                finished, _ = wait(pending, timeout=HEARTBEAT, return_when=FIRST_COMPLETED)
                self.manifest.alive()  # bounds how late a killed run can have created a file: see sweep()
                for future in finished:
                    sent = pending.pop(future)
                    try:
                        self._uploaded(future, sent)
                    except AuthError:
                        pool.shutdown(cancel_futures=True)
                        raise
                    done += 1
                    self.progress("upload", done, total)
        if pacer is not None:
            log.info("uploads: %s", pacer.describe())

    def _start(self, pool: ThreadPoolExecutor, row: FileRow) -> tuple[Future[RemoteFile], _InFlight]:
        path = Path(row.root) / row.path
        with self.manifest.transaction():  # one commit, not two: it is paid once per file
            upload_id = self.manifest.ledger_start(row.root, row.path, path.name, row.size or 0, row.sha256)
            row = self.manifest.update(row, state=UPLOADING, attempts=row.attempts + 1, reason=None)
        return pool.submit(self.remote.upload, path, path.name), _InFlight(row, upload_id)

    def _uploaded(self, future: Future[RemoteFile], sent: _InFlight) -> None:
        row, upload_id = sent.row, sent.upload_id
        path = Path(row.root) / row.path
        try:
            remote_file = future.result()
        except FileNotFoundError:
            self.manifest.ledger_failed(upload_id, ambiguous=False)
            self.manifest.update(row, state=PENDING, size=None, reason="vanished before upload")
            self.emit(event(row, SKIPPED, "vanished before it could be uploaded"))
            return
        except OSError as exc:
            self.manifest.ledger_failed(upload_id, ambiguous=False)
            self._fail(row, f"cannot read: {exc.strerror or exc}", None, retryable=True)
            return
        except AuthError:
            self.manifest.ledger_failed(upload_id, ambiguous=False)
            self.manifest.update(row, state=PENDING)
            raise
        except RemoteError as exc:
            self.manifest.ledger_failed(upload_id, exc.maybe_duplicated)
            # Only what another try can fix is retried by later runs: not a 400 or a refused file.
            self._fail(row, f"upload failed: {exc}", None, retryable=exc.retryable)
            return
        changes: dict[str, Any] = {"state": UPLOADED, "file_id": remote_file.id}
        try:
            st = os.stat(path)
            if (st.st_size, st.st_mtime_ns) != (row.size, row.mtime_ns):
                changes["hashed_at_ns"] = None  # it changed while we sent it: hash and send again next run
                self.emit(event(row, SKIPPED, "changed during upload; it is synced again next run"))
        except OSError:
            pass
        with self.manifest.transaction():  # together: a crash between them would orphan the file id
            self.manifest.ledger_done(upload_id, remote_file.id, remote_file.maybe_duplicated, remote_file.created_at)
            row = self.manifest.update(row, **changes)
        self.outcome.uploaded += 1
        self._queue[row.known_store_id].append(row)
        if len(self._queue[row.known_store_id]) >= BATCH_LIMIT:
            self._flush(row.known_store_id)

    def _fail(self, row: FileRow, reason: str, code: str | None, retryable: bool) -> None:
        row = self.manifest.update(row, state=FAILED, reason=reason, error_code=code, retryable=int(retryable))
        self.emit(event(row, EVENT_FAILED, reason))

    # attach ------------------------------------------------------------------------------------
    def _flush(self, store_id: str) -> None:
        rows = self._queue.pop(store_id, [])
        for start in range(0, len(rows), BATCH_LIMIT):
            self._attach(store_id, rows[start : start + BATCH_LIMIT])

    def _attach(self, store_id: str, rows: list[FileRow]) -> None:
        chunking = self.stores.chunking(rows[0].store or "") if rows else None
        items = [AttachItem(r.known_file_id, r.attrs(), chunking) for r in rows]
        try:
            batch = self.remote.attach_batch(store_id, items)
        except AuthError:
            raise
        except NotFound:
            # A file id of ours is gone remotely: the whole batch is refused. Upload these again.
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
            return
        except RemoteError as exc:
            for row in rows:
                self._fail(row, f"attach failed: {exc}", None, retryable=True)
            return
        tracked = _Batch(store_id, {})
        with self.manifest.transaction():
            for row in rows:
                tracked.rows[row.known_file_id] = self.manifest.update(row, state=ATTACHING, batch_id=batch.id)
                self.manifest.ledger_set(row.known_file_id, "live", store_id)
        self.batches[batch.id] = tracked

    # wait --------------------------------------------------------------------------------------
    def _wait(self) -> None:
        deadline = self.clock() + self.settings.index_timeout
        total = sum(len(b.rows) for b in self.batches.values())
        while self.batches:
            hint = None
            for batch_id in list(self.batches):
                tracked = self.batches[batch_id]
                try:
                    batch = self.remote.get_batch(tracked.store_id, batch_id)
                except NotFound:
                    self._reattach(self.batches.pop(batch_id))
                    continue
                except AuthError:
                    raise
                except RemoteError as exc:
                    log.warning("cannot check batch %s: %s", batch_id, exc)
                    continue
                if batch.status != IN_PROGRESS:
                    self._settle(batch_id, batch)
                elif batch.poll_after_ms is not None:
                    hint = batch.poll_after_ms / 1000 if hint is None else min(hint, batch.poll_after_ms / 1000)
            for store_id in list(self._queue):
                self._flush(store_id)  # server_error retries go out in a new batch
            self.progress("index", total - sum(len(b.rows) for b in self.batches.values()), total)
            if not self.batches:
                break
            if self.stop.is_set():
                self.emit(Note(STOPPED, "stopped while files were indexing; the next run checks them"))
                return
            if self.clock() >= deadline:
                for tracked in self.batches.values():
                    for row in tracked.rows.values():
                        self.emit(event(row, INDEXING, f"still indexing after {self.settings.index_timeout:.0f} s"))
                return
            self.stop.wait(max(0.05, min(hint if hint is not None else 1.0, 10.0)))

    def _reattach(self, tracked: _Batch) -> None:
        for row in tracked.rows.values():
            self._queue[tracked.store_id].append(self.manifest.update(row, state=UPLOADED, batch_id=None))

    def _settle(self, batch_id: str, batch) -> None:
        tracked = self.batches.pop(batch_id)
        outcomes: dict[str, tuple[str, str | None, str | None]] = {}
        try:
            if batch.failed or batch.cancelled or batch.in_progress:
                for sf in self.remote.batch_files(tracked.store_id, batch_id):
                    outcomes[sf.file_id] = (sf.status, sf.error_code, sf.error_message)
        except RemoteError as exc:
            log.warning("cannot list files of batch %s: %s", batch_id, exc)
            self.batches[batch_id] = tracked  # look again next round
            return
        with self.manifest.transaction():
            for file_id, row in tracked.rows.items():
                status, code, message = outcomes.get(file_id, ("completed", None, None))
                if status == IN_PROGRESS:
                    self.batches.setdefault(f"{batch_id}", _Batch(tracked.store_id, {})).rows[file_id] = row
                elif status == "completed":
                    self._indexed(row)
                elif status == CANCELLED:
                    self._fail(row, "indexing was cancelled", "cancelled", retryable=True)
                elif code == SERVER_ERROR and self._index_retries[file_id] < self.settings.server_error_retries:
                    self._index_retries[file_id] += 1
                    # What the API does with a second attach of a file already in the store is not
                    # documented: the failed store file goes first.
                    self._detach(tracked.store_id, file_id, "attaching it again anyway")
                    self._queue[tracked.store_id].append(self.manifest.update(row, state=UPLOADED))
                    self.emit(event(row, RETRIED, f"indexing failed ({code}); attached again"))
                else:
                    reason = f"indexing failed: {code or 'unknown error'}" + (f": {message}" if message else "")
                    self._fail(row, reason, code, retryable=(code == SERVER_ERROR))

    def _detach(self, store_id: str, file_id: str, then: str) -> bool:
        """Detach, where a refusal is no reason to stop: `then` says what happens next instead."""
        try:
            self.remote.detach(store_id, file_id)
        except AuthError:
            raise
        except RemoteError as exc:
            log.info("detach of %s failed (%s); %s", file_id, exc, then)
            return False
        return True

    def _indexed(self, row: FileRow) -> None:
        if row.old_file_id:
            # Make before break: the old version goes only now that the new one is searchable.
            self.manifest.ledger_set(row.old_file_id, RETIRE)
        kept = row.old_vector_store_id  # left set when the detach fails: the next run detaches it
        if kept and (kept == row.vector_store_id or not row.file_id or self._left(kept, row.file_id, row)):
            kept = None
        if row.old_vector_store_id:
            self.emit(event(row, MOVED, "to another store, with its file id"))
        else:
            self.emit(event(row, REPLACED if row.old_file_id else EVENT_UPLOADED))
        self.manifest.update(
            row,
            state=INDEXED,
            old_vector_store_id=kept,
            old_file_id=None,
            reason=None,
            error_code=None,
            retryable=None,
            batch_id=None,
            indexed_at=time.time(),
        )
        self.outcome.indexed += 1

    def _left(self, store_id: str, file_id: str, row: FileRow) -> bool:
        """A file that moved store leaves the old one: only now that the new one has indexed it."""
        if self._detach(store_id, file_id, "it is detached next run"):
            return True
        self.emit(Note(LEFT_BEHIND, f"{os.path.join(row.root, row.path)}: still in its old store {store_id}"))
        return False

    # clean-up ----------------------------------------------------------------------------------
    def retire(self) -> None:
        """Detach and delete every file id this tool created and no longer wants, several at a time
        (the remote calls run in a pool; the manifest is written here, after each one)."""
        doomed = self.manifest.ledger(RETIRE)
        if not doomed:
            return
        with ThreadPoolExecutor(self.settings.upload_concurrency, thread_name_prefix="retire") as pool:
            futures = {pool.submit(self._retire_one, upload): upload for upload in doomed}
            try:
                for future in as_completed(futures):
                    upload = futures[future]
                    try:
                        if not future.result():
                            continue  # stopping: left in the ledger for the next run
                    except AuthError:
                        raise
                    except RemoteError as exc:
                        self.emit(
                            Note(
                                RETIRE_FAILED,
                                f"could not delete remote file {upload.file_id} yet: {exc}",
                                upload.file_id,
                            )
                        )
                        continue
                    self.manifest.ledger_set(upload.known_file_id, DELETED)
                    self.outcome.deleted_remote += 1
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    def _retire_one(self, upload) -> bool:
        if self.stop.is_set():
            return False
        if upload.vector_store_id:  # an expired store refuses; deleting the file detaches it anyway
            self._detach(upload.vector_store_id, upload.file_id, "deleting the file")
        self.remote.delete_file(upload.file_id)
        return True

    def sweep(self) -> None:
        """Delete the copies that uploads whose reply never came may have left (see ingest.sweep)."""
        self.outcome.duplicates_removed += sweep(self.settings, self.manifest, self.remote)
