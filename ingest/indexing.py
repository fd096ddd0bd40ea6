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

from ingest.attach import Limit, attach_each
from ingest.config import Settings
from ingest.events import FAILED as EVENT_FAILED
from ingest.events import (
    INDEXING,
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
    COMPLETED,
    IN_PROGRESS,
    INVALID_FILE,
    UNSUPPORTED_FILE,
    AttachItem,
    AuthError,
    NotFound,
    Remote,
    RemoteError,
    RemoteFile,
    StoreFile,
    Unsupported,
)
from ingest.remote.local.extract import ExtractError
from ingest.remote.profile import PROFILES, Profile
from ingest.stores import Stores, remember_profile
from ingest.sweep import sweep
from ingest.text import TextUploads

PERMANENT = (UNSUPPORTED_FILE, INVALID_FILE)  # the server read the file and refused it: another try cannot help
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
    source: Path | None = None  # what was sent, when not the file itself (its extracted text)


@dataclass
class _Batch:
    store_id: str
    rows: dict[str, FileRow]  # by file id: results are matched by id, never by list order


def _fid(row: FileRow) -> str:
    assert row.file_id is not None, row  # rows past upload have one
    return row.file_id


def _sid(row: FileRow) -> str:
    assert row.vector_store_id is not None, row  # a row is placed in a store before it is uploaded
    return row.vector_store_id


def _show(row: FileRow) -> str:
    return os.path.join(row.root, row.path)


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
        profile: Profile | None = None,
        emit: OnEvent = ignore,
    ):
        self.settings, self.manifest, self.remote, self.stores = settings, manifest, remote, stores
        self.profile = profile or PROFILES["openai"]
        self.text = TextUploads(settings, self.profile)
        self.limit = Limit(self.profile.attach_concurrency, self.profile.attach_max)
        self.singles: dict[str, tuple[str, FileRow]] = {}
        self.moved: frozenset[str] = frozenset()  # file id → (store id, row): attached on its own
        self.stop = stop or threading.Event()  # set: start nothing new; what is recorded is resumed later
        self.progress = progress or (lambda phase, done, total: None)
        self.clock = clock
        self.emit = emit
        self.outcome = Outcome()
        self.batches: dict[str, _Batch] = {}
        self._queue: dict[str, list[FileRow]] = defaultdict(list)
        self._index_retries: dict[str, int] = defaultdict(int)

    # upload ------------------------------------------------------------------------------------
    def run(
        self,
        uploads: list[FileRow],
        attach: list[FileRow],
        attaching: list[FileRow],
        moved: frozenset[str] = frozenset(),
    ) -> Outcome:
        """uploads: rows to send (state PENDING); attach: rows with a file id; attaching: rows in a batch
        (or, with no batch id, attached on their own); moved: file ids attached again for their new
        attributes (their event is the move, said already)."""
        self.moved = moved
        for row in attach:
            # Attached before (failed, moved, or cut off): some servers ignore a second attach of a file
            # already in the store, so it goes first. Not there is fine.
            self._detach(row.known_store_id, row.known_file_id, "attaching it anyway")
            self._queue[row.known_store_id].append(row)
        for row in attaching:
            if row.batch_id:
                self.batches.setdefault(row.batch_id, _Batch(row.known_store_id, {})).rows[row.known_file_id] = row
            else:
                self.singles[row.known_file_id] = (row.known_store_id, row)
        if uploads:
            try:
                self._upload_all(uploads)
            finally:
                self.text.close()
        for store_id in list(self._queue):
            self._flush(store_id)
        self._wait()
        return self.outcome

    def _upload_all(self, rows: list[FileRow]) -> None:
        total, done = len(rows), 0
        with ThreadPoolExecutor(self.settings.upload_concurrency, thread_name_prefix="upload") as pool:
            pending: dict[Future[RemoteFile], _InFlight] = {}
            todo = iter(rows)
            # Keep only a window of uploads in flight: memory stays flat and the manifest says
            # "uploading" only for files that really are.
            while True:
                while len(pending) < self.settings.upload_concurrency * 2 and not self.stop.is_set():
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

    def _start(self, pool: ThreadPoolExecutor, row: FileRow) -> tuple[Future[RemoteFile], _InFlight]:
        path = Path(row.root) / row.path
        failed: ExtractError | OSError | None = None
        try:
            source, name = self.text.source(path, row.store or "", row.mime)
        except (ExtractError, OSError) as exc:
            source, name, failed = path, path.name, exc
        with self.manifest.transaction():  # one commit, not two: it is paid once per file
            size = (row.size or 0) if source == path else source.stat().st_size
            upload_id = self.manifest.ledger_start(row.root, row.path, name, size, row.sha256)
            row = self.manifest.update(row, state=UPLOADING, attempts=row.attempts + 1, reason=None)
        future: Future[RemoteFile]
        if failed is not None:
            future = Future()
            future.set_exception(failed)
        else:
            future = pool.submit(self.remote.upload, source, name)
        return future, _InFlight(row, upload_id, source)

    def _uploaded(self, future: Future[RemoteFile], sent: _InFlight) -> None:
        row, upload_id = sent.row, sent.upload_id
        path = Path(row.root) / row.path
        self.text.done(sent.source)
        try:
            remote_file = future.result()
        except ExtractError as exc:
            self.manifest.ledger_failed(upload_id, ambiguous=False)
            self._fail(
                row, f"this server cannot read its type, and its text cannot be extracted: {exc}", exc.code, False
            )
            return
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
        if not rows:
            return
        if self.profile.per_file_batches is False:
            self._attach_each(store_id, rows)
            return
        chunking = self.stores.chunking(rows[0].store or "")
        items = [AttachItem(r.known_file_id, r.attrs(), chunking) for r in rows]
        try:
            batch = self.remote.attach_batch(store_id, items)
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
            elif result.error is not None:
                if result.error.retryable:
                    self._again(store_id, row, f"attach failed: {result.error}", None)
                else:
                    self._fail(row, f"attach failed: {result.error}", None, retryable=False)
            elif result.lost:
                self._again(store_id, row, "the server lost its record of the file while indexing it", None)
            elif result.store_file is not None:
                self._observed(store_id, row, result.store_file)
        for row in sent.values():  # stopping: not sent, looked up (and attached) by the next run
            self.singles[row.known_file_id] = (store_id, row)

    def _observed(self, store_id: str, row: FileRow, sf: StoreFile) -> None:
        """What the store's own record of a file says."""
        if sf.status == COMPLETED:
            self._indexed(row)
        elif sf.status == IN_PROGRESS:
            self.singles[row.known_file_id] = (store_id, row)
        elif sf.status == CANCELLED:
            self._fail(row, "indexing was cancelled", "cancelled", retryable=True)
        else:
            reason = f"indexing failed: {sf.error_code or 'the server gave no reason'}" + (
                f": {sf.error_message}" if sf.error_message else ""
            )
            if sf.error_code in PERMANENT:
                self._fail(row, reason, sf.error_code, retryable=False)
            else:  # server_error, an unknown code, or none at all (the embedder was down): may pass next time
                self._again(store_id, row, reason, sf.error_code)

    def _again(self, store_id: str, row: FileRow, reason: str, code: str | None) -> None:
        """Attach once more in this run (detached first), a bounded number of times; then fail retryably."""
        if self._index_retries[row.known_file_id] >= self.settings.server_error_retries:
            self._fail(row, reason, code, retryable=True)
            return
        self._index_retries[row.known_file_id] += 1
        # A second attach of a file already in the store is ignored by some servers: the failed one goes first.
        self._detach(store_id, row.known_file_id, "attaching it again anyway")
        self._queue[store_id].append(self.manifest.update(row, state=UPLOADED, batch_id=None))
        self.emit(event(row, RETRIED, f"{reason}; attached again"))

    def _poll_singles(self) -> None:
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
                log.warning("cannot check %s: %s", _show(row), exc)
                continue
            if sf.status != IN_PROGRESS:
                del self.singles[file_id]
                with self.manifest.transaction():
                    self._observed(store_id, row, sf)

    # wait --------------------------------------------------------------------------------------
    def _waiting(self) -> int:
        return sum(len(b.rows) for b in self.batches.values()) + len(self.singles)

    def _wait(self) -> None:
        deadline = self.clock() + self.settings.index_timeout
        total = self._waiting()
        while self.batches or self.singles or self._queue:
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
            self._poll_singles()
            for store_id in list(self._queue):
                self._flush(store_id)  # retries go out again (in a new batch, or one by one)
            self.progress("index", max(0, total - self._waiting()), total)
            if not (self.batches or self.singles or self._queue):
                break
            if self.stop.is_set():
                self.emit(Note(STOPPED, "stopped while files were indexing; the next run checks them"))
                return
            if self.clock() >= deadline:
                for tracked in self.batches.values():
                    for row in tracked.rows.values():
                        self.emit(event(row, INDEXING, f"still indexing after {self.settings.index_timeout:.0f} s"))
                for _, row in self.singles.values():
                    self.emit(event(row, INDEXING, f"still indexing after {self.settings.index_timeout:.0f} s"))
                return
            self.stop.wait(max(0.05, min(hint if hint is not None else 1.0, 10.0)))

    def _reattach(self, tracked: _Batch) -> None:
        for row in tracked.rows.values():
            self._queue[tracked.store_id].append(self.manifest.update(row, state=UPLOADED, batch_id=None))

    def _settle(self, batch_id: str, batch) -> None:
        tracked = self.batches.pop(batch_id)
        records: dict[str, StoreFile] = {}
        # Counts that account for every file as completed say so of each; anything else is read file by
        # file (llama-stack says "completed" for a batch whose files failed).
        counted = batch.completed == len(tracked.rows) and not (batch.failed or batch.cancelled or batch.in_progress)
        try:
            if not counted:
                records = {sf.file_id: sf for sf in self.remote.batch_files(tracked.store_id, batch_id)}
        except RemoteError as exc:
            log.warning("cannot list files of batch %s: %s", batch_id, exc)
            self.batches[batch_id] = tracked  # look again next round
            return
        with self.manifest.transaction():
            for file_id, row in tracked.rows.items():
                sf = records.get(file_id)
                if counted:
                    self._indexed(row)
                elif sf is None:
                    # Silence is not success: a file the listing leaves out is looked up on its own.
                    self.singles[file_id] = (tracked.store_id, row)
                elif sf.status == IN_PROGRESS:
                    self.batches.setdefault(batch_id, _Batch(tracked.store_id, {})).rows[file_id] = row
                else:
                    self._observed(tracked.store_id, row, sf)

    def _detach(self, store_id: str, file_id: str, then: str) -> None:
        """Detach, where a refusal is no reason to stop: `then` says what happens next instead."""
        try:
            self.remote.detach(store_id, file_id)
        except AuthError:
            raise
        except RemoteError as exc:
            log.info("detach of %s failed (%s); %s", file_id, exc, then)

    def _indexed(self, row: FileRow) -> None:
        if row.old_file_id:
            # Make before break: the old version goes only now that the new one is searchable.
            self.manifest.ledger_set(row.old_file_id, RETIRE)
        if row.known_file_id not in self.moved:
            self.emit(event(row, REPLACED if row.old_file_id else EVENT_UPLOADED))
        self.manifest.update(
            row,
            state=INDEXED,
            old_file_id=None,
            reason=None,
            error_code=None,
            retryable=None,
            batch_id=None,
            indexed_at=time.time(),
        )
        self.outcome.indexed += 1

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
