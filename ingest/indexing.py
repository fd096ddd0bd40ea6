"""Upload → attach and wait (attach.py) → retire what was replaced. State after every call."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.attach import Attacher, Progress
from ingest.config import Settings
from ingest.events import (
    RETIRE_FAILED,
    SKIPPED,
    Note,
    OnEvent,
    ignore,
)
from ingest.manifest import (
    DELETED,
    HEARTBEAT,
    PENDING,
    RETIRE,
    UPLOADED,
    UPLOADING,
    FileRow,
    Manifest,
)
from ingest.outcomes import Outcome, event
from ingest.remote.base import (
    AuthError,
    Remote,
    RemoteError,
    RemoteFile,
    Stopped,
)
from ingest.remote.local.extract import ExtractError
from ingest.remote.profile import PROFILES, Profile
from ingest.stores import Stores
from ingest.sweep import sweep
from ingest.text import TextUploads

log = logging.getLogger("ingest")


Upload = FileRow | Callable[[], FileRow]  # a row to send, or what records one in the commit that starts it


class Feed:
    """The uploads of a run in order: those planned, then those still being found while the first
    ones go out (see survey.Later). `more()` says how many may still come, 0 once none will."""

    def __init__(
        self,
        planned: Sequence[Upload],
        found: Iterable[Upload] = (),
        more: Callable[[], int] = lambda: 0,
    ):
        self._planned, self._found, self._more = planned, iter(found), more
        self.taken = 0

    def take(self) -> Upload | None:
        if self.taken < len(self._planned):
            item: Upload | None = self._planned[self.taken]
        else:
            item = next(self._found, None)
        if item is not None:
            self.taken += 1
        return item

    def all_taken(self) -> bool:
        return self.taken >= len(self._planned) and self._more() == 0

    def __len__(self) -> int:
        """The uploads taken and the most still to come (for the progress bar)."""
        return max(len(self._planned), self.taken) + self._more()


@dataclass(frozen=True)
class _InFlight:
    row: FileRow  # as recorded when its upload started
    upload_id: int  # its ledger entry
    source: Path | None = None  # what was sent, when not the file itself (its extracted text)


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
        profile = profile or PROFILES["openai"]
        self.text = TextUploads(settings, profile)
        self.stop = stop or threading.Event()  # set: start nothing new; what is recorded is resumed later
        self.progress = progress or (lambda phase, done, total: None)
        self.emit = emit
        self.outcome = Outcome()
        self.attacher = Attacher(
            settings, manifest, remote, stores, profile, self.outcome, emit, self.stop, clock, self.progress
        )

    # upload ------------------------------------------------------------------------------------
    def run(
        self,
        uploads: Sequence[Upload] | Feed,
        attach: list[FileRow],
        attaching: list[FileRow],
        moved: frozenset[str] = frozenset(),
    ) -> Outcome:
        """uploads: rows to send (state PENDING), or what records one, called in the commit that starts
        its upload; the others as Attacher.resume takes them."""
        self.attacher.resume(attach, attaching, moved)
        try:
            if uploads:
                try:
                    self._upload_all(uploads)
                finally:
                    self.text.close()
            self.attacher.finish()
        finally:
            self.attacher.calls.close()
        return self.outcome

    def _upload_all(self, rows: Sequence[Upload] | Feed) -> None:
        feed, done = rows if isinstance(rows, Feed) else Feed(rows), 0
        # A remote that paces its uploads says how many are worth having under way; the pool only
        # bounds the threads.
        pacer = getattr(self.remote, "upload_pacer", None)
        threads = pacer.ceiling if pacer is not None else self.settings.upload_concurrency
        with ThreadPoolExecutor(threads, thread_name_prefix="upload") as pool:
            pending: dict[Future[RemoteFile], _InFlight] = {}
            flushed = False
            # Keep only a window of uploads in flight: memory stays flat and the manifest says
            # "uploading" only for files that really are (or are next).
            while True:
                window = pacer.wanted if pacer is not None else self.settings.upload_concurrency
                try:  # a streamed feed reads files and makes stores here: that may fail or be stopped
                    while len(pending) < window + max(2, window // 4) and not self.stop.is_set():
                        row = feed.take()
                        if row is None:
                            break
                        future, sent = self._start(pool, row)
                        pending[future] = sent
                    if not flushed and feed.all_taken():
                        # The last uploads are under way: what is uploaded goes to be attached now, while
                        # they finish, so that the run's last batch holds only them.
                        self.attacher.flush(soon=True)
                        flushed = True
                except BaseException:
                    for future in list(pending):  # the uploads under way are recorded as they end
                        future.exception()
                        self._uploaded(future, pending.pop(future))
                    raise
                if not pending:
                    break
                calls = self.attacher.calls.under_way  # attaches and polls, answered here as they come
                finished, _ = wait([*pending, *calls], timeout=HEARTBEAT, return_when=FIRST_COMPLETED)
                self.manifest.alive()  # bounds how late a killed run can have created a file: see sweep()
                try:
                    for future in finished:
                        if future in calls:
                            self.attacher.calls.answer(future)
                            continue
                        self._uploaded(future, pending.pop(future))
                        done += 1
                        self.progress("upload", done, len(feed))
                    self.attacher.poll_soon()
                except AuthError:
                    pool.shutdown(cancel_futures=True)
                    raise
        if pacer is not None:
            log.debug("uploads: %s", pacer.describe())  # the pacing, for -vv: its counts are the process's

    def _start(self, pool: ThreadPoolExecutor, item: Upload) -> tuple[Future[RemoteFile], _InFlight]:
        with self.manifest.transaction():  # one commit, not two or three: it is paid once per file
            row = item if isinstance(item, FileRow) else item()
            path = Path(row.root) / row.path
            failed: ExtractError | OSError | None = None
            try:
                source, name = self.text.source(path, row.store or "", row.mime)
            except (ExtractError, OSError) as exc:
                source, name, failed = path, path.name, exc
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
            self.attacher.record.fail(
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
            self.attacher.record.fail(row, f"cannot read: {exc.strerror or exc}", None, retryable=True)
            return
        except AuthError:
            self.manifest.ledger_failed(upload_id, ambiguous=False)
            self.manifest.update(row, state=PENDING)
            raise
        except Stopped as exc:  # the run stopped it: not a failure, the file is the next run's
            # A try sent before (a timeout, then the stop in the retry's wait) may have left a copy:
            # the sweep looks for it, and that try counts.
            self.manifest.ledger_failed(upload_id, exc.maybe_duplicated)
            tries = row.attempts if exc.maybe_duplicated else max(0, row.attempts - 1)
            self.manifest.update(row, state=PENDING, attempts=tries)
            return
        except RemoteError as exc:
            self.manifest.ledger_failed(upload_id, exc.maybe_duplicated)
            # Only what another try can fix is retried by later runs: not a 400 or a refused file.
            self.attacher.record.fail(row, f"upload failed: {exc}", None, retryable=exc.retryable)
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
        self.attacher.queue(row)

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
            self.attacher.record.detach(upload.vector_store_id, upload.file_id, "deleting the file")
        self.remote.delete_file(upload.file_id)
        return True

    def sweep(self) -> None:
        """Delete the copies that uploads whose reply never came may have left (see ingest.sweep)."""
        self.outcome.duplicates_removed += sweep(self.settings, self.manifest, self.remote)
