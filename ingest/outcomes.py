"""What became of each attached file: recorded in the manifest and told as an event, on the caller's
thread (the only one that writes the manifest); and what a plan tells before anything is done (the
roots missing or empty, the files turned away, the deletions held back)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ingest.events import FAILED as EVENT_FAILED
from ingest.events import (
    HELD,
    LEFT_BEHIND,
    MASS_DELETE_HELD,
    MOVED,
    REPLACED,
    Event,
    FileEvent,
    Note,
    OnEvent,
    StoreEvent,
)
from ingest.events import REJECTED as EVENT_REJECTED
from ingest.events import UPLOADED as EVENT_UPLOADED
from ingest.manifest import FAILED as ROW_FAILED
from ingest.manifest import INDEXED, REJECTED, RETIRE, FileRow, Manifest
from ingest.remote.base import AuthError, Remote, RemoteError

if TYPE_CHECKING:
    from ingest.plan import Observed, Plan, RootScan

log = logging.getLogger("ingest")


@dataclass
class Outcome:
    uploaded: int = 0
    indexed: int = 0
    deleted_remote: int = 0
    duplicates_removed: int = 0


def event(row: FileRow, action: str, reason: str = "") -> FileEvent:
    return FileEvent(row.path, row.root, action, row.store, row.file_id, reason)


def event_of(item: Observed | FileRow, action: str, row: FileRow | None, reason: str = "") -> FileEvent:
    """An event for the file `item` names; the store and file id are those `row` held."""
    store = item.store or (row.store if row else None)
    return FileEvent(item.path, item.root, action, store, row.file_id if row else None, reason)


MISSING_ROOT = (
    "the folder is missing, not a folder, or not mounted: nothing was synced or deleted there"
    " (gone for good? `ingest forget PATH --dry-run` shows what forgetting it would remove)"
)
EMPTY_ROOT = (
    "the folder is empty, as an unmounted share would be: nothing was deleted there (emptied for good?"
    " `ingest forget PATH --dry-run` shows what forgetting it would remove)"
)


def plan_events(plan: Plan, scans: list[RootScan]) -> tuple[list[Event], int]:
    """What the plan alone says, before anything is done: missing roots, rejections, unreadable files,
    held deletions; and how many of the rejections are news (a new file, or a new reason)."""
    from ingest.plan import ROOT_EMPTY

    events: list[Event] = [
        FileEvent("", s.root, EVENT_FAILED, reason=MISSING_ROOT) for s in scans if s.missing and s.full
    ]
    # A root held as empty fails the run as a missing one does, so that cron and systemd see it.
    for root in dict.fromkeys(row.root for row, why in plan.held if why == ROOT_EMPTY):
        events.append(FileEvent("", root, EVENT_FAILED, reason=EMPTY_ROOT))
    events += [event_of(obs, EVENT_REJECTED, row, obs.reason) for obs, row in plan.rejected]
    for problems, action in ((plan.refused, EVENT_REJECTED), (plan.unreadable, EVENT_FAILED)):
        events += [FileEvent(p.path, p.root, action, row.store if row else None, None, p.reason) for p, row in problems]
    events += [event_of(row, HELD, row, why) for row, why in plan.held]
    events += [StoreEvent(store, MASS_DELETE_HELD, count=count) for store, count in plan.mass_held.items()]
    news = sum(
        1
        for seen, row in plan.rejected + plan.refused
        if row is None or row.state != REJECTED or row.reason != seen.reason
    )
    return events, news


class Outcomes:
    """Records each file's end in the manifest and tells it as an event, on the caller's thread."""

    def __init__(self, manifest: Manifest, remote: Remote, emit: OnEvent, outcome: Outcome):
        self.manifest, self.remote, self.emit, self.outcome = manifest, remote, emit, outcome
        self.moved: frozenset[str] = frozenset()  # file ids attached again for new attributes: told as moves

    def detach(self, store_id: str, file_id: str, then: str) -> bool:
        """Detach, where a refusal is no reason to stop: `then` says what happens next instead."""
        try:
            self.remote.detach(store_id, file_id)
        except AuthError:
            raise
        except RemoteError as exc:
            log.info("detach of %s failed (%s); %s", file_id, exc, then)
            return False
        return True

    def _left(self, store_id: str, file_id: str, row: FileRow) -> bool:
        """A file that moved store leaves the old one: only now that the new one has indexed it."""
        if self.detach(store_id, file_id, "it is detached next run"):
            return True
        self.emit(Note(LEFT_BEHIND, f"{os.path.join(row.root, row.path)}: still in its old store {store_id}"))
        return False

    def indexed(self, row: FileRow) -> None:
        if row.old_file_id:
            # Make before break: the old version goes only now that the new one is searchable.
            self.manifest.ledger_set(row.old_file_id, RETIRE)
        kept = row.old_vector_store_id  # left set when the detach fails: the next run detaches it
        if kept and (kept == row.vector_store_id or not row.file_id or self._left(kept, row.file_id, row)):
            kept = None
        if row.old_vector_store_id:
            self.emit(event(row, MOVED, "to another store, with its file id"))
        elif row.known_file_id not in self.moved:
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

    def fail(self, row: FileRow, reason: str, code: str | None, retryable: bool) -> None:
        row = self.manifest.update(row, state=ROW_FAILED, reason=reason, error_code=code, retryable=int(retryable))
        self.emit(event(row, EVENT_FAILED, reason))
