"""What a run did, as typed records: one FileEvent per action on a file, StoreEvents for the stores, and
the Report that gathers them. The CLI, the daemon's log, the metrics and library callbacks all read
this one stream."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ingest.interrupt import EXIT_CODES

# What happened to a file: the one vocabulary of `sync -v`, `--json`, the daemon's log and the metrics.
UPLOADED = "uploaded"  # a new file is indexed
REPLACED = "replaced"  # a changed file's new version is indexed (and its old one retired)
MOVED = "moved"  # renamed or moved: its attributes follow, nothing is uploaded
ATTRIBUTES = "attributes"  # same content, new attributes (a touched mtime, a new static value)
DELETED = "deleted"  # gone locally: its remote copy goes
EXCLUDED = "excluded"  # still there, but an include/exclude rule now leaves it out: its remote copy goes
REJECTED = "rejected"  # not a document file_search takes (type, size, encoding, a FIFO, a symlink out)
FAILED = "failed"  # the upload or the indexing failed, or the file or its folder cannot be read
FAILED_EARLIER = "failed_earlier"  # refused by the remote in an earlier run: not retried without --retry-failed
HELD = "held"  # a deletion held back (a missing root, a scan with errors, a mass deletion)
RETRIED = "retried"  # a failure of an earlier run tried again, or a file indexed again after a server error
INDEXING = "indexing"  # uploaded, still indexing when the wait ended: the next run checks it
SKIPPED = "skipped"  # left for the next run (vanished before its upload, changed while it was sent)
FILE_ACTIONS = (
    UPLOADED,
    REPLACED,
    MOVED,
    ATTRIBUTES,
    DELETED,
    EXCLUDED,
    REJECTED,
    FAILED,
    FAILED_EARLIER,
    HELD,
    RETRIED,
    INDEXING,
    SKIPPED,
)
WARNINGS = frozenset({REJECTED, FAILED, HELD})  # logged at WARNING by the daemon

# What happened to a store.
CREATED = "created"
RECREATED = "recreated"  # deleted or expired remotely: made again, its files uploaded again
ADOPTED = "adopted"  # found by its creation token after a crash left it unrecorded
REBUILDING = "rebuilding"  # its chunking or attribute schema changed: refilled beside the old one
REBUILD_DUE = "rebuild_due"  # (a dry run) the next run rebuilds it
REBUILD_WAITING = "rebuild_waiting"  # the new store is not complete yet: searches keep the old one
REBUILT = "rebuilt"  # the new store replaced the old one: a new vector store id
MASS_DELETE_HELD = "mass_delete_held"  # more than the allowed share of the store would have gone
RENAMED = "renamed"  # all of its files now go to a store of another name: renamed in place (reason: the old name)
RENAME_DUE = "rename_due"  # (a dry run) the next run renames it in place
LEFT_EMPTY = "left_empty"  # no file is in it and nothing is synced to it: `ingest store remove` deletes it
STORE_ACTIONS = (
    CREATED,
    RECREATED,
    ADOPTED,
    REBUILDING,
    REBUILD_DUE,
    REBUILD_WAITING,
    REBUILT,
    MASS_DELETE_HELD,
    RENAMED,
    RENAME_DUE,
    LEFT_EMPTY,
)
STORE_WARNINGS = frozenset({RECREATED, MASS_DELETE_HELD})
# News even to a run that changed no file (reindex from cron speaks only of news): not CREATED (its
# files are counted) nor LEFT_EMPTY (a standing state, which every night's mail would repeat).
STORE_NEWS = frozenset(STORE_ACTIONS) - {CREATED, LEFT_EMPTY}

# Things about the run as a whole.
STOPPED = "stopped"  # stopped (SIGTERM) while files were indexing
RETIRE_FAILED = "retire_failed"  # a remote file to delete refused for now: tried again next run
FOLDERS = "folders"  # a folder named is left out by an exclude, or no longer
LEFT_BEHIND = "left_behind"  # a file moved to another store is still attached to the old one: detached next run


@dataclass(frozen=True)
class FileEvent:
    """One action on one file. path is relative to root ('' for the root itself)."""

    path: str
    root: str
    action: str
    store: str | None = None
    file_id: str | None = None
    reason: str = ""

    @property
    def shown(self) -> str:
        return os.path.join(self.root, self.path) if self.path else self.root

    def describe(self) -> str:
        return f"{self.shown}: {self.reason}" if self.reason else f"{self.shown}: {self.action}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StoreEvent:
    """Something that happened to a logical store or one of its vector stores."""

    store: str
    action: str
    vector_store_id: str | None = None
    old_vector_store_id: str | None = None
    count: int = 0  # files concerned (a held mass deletion)
    reason: str = ""  # why: "deleted" or "expired" for a recreated store

    def describe(self) -> str:
        name, new, old = self.store, self.vector_store_id, self.old_vector_store_id
        return {
            CREATED: f"store {name!r}: created {new}",
            RECREATED: f"store {name!r} ({old}) was {self.reason} remotely; "
            "it is recreated and its files uploaded again",
            ADOPTED: f"store {name!r}: adopted {new}, whose creation an interrupted run left unrecorded",
            REBUILDING: f"store {name!r}: configuration changed; rebuilding into {new}",
            REBUILD_DUE: f"store {name!r}: configuration changed; the next run rebuilds it",
            REBUILD_WAITING: f"store {name!r}: rebuild not finished yet; searches keep using {old}",
            REBUILT: f"store {name!r}: rebuilt; the vector store id is now {new}",
            MASS_DELETE_HELD: f"store {name!r}: {self.count} deletions held back (too large a share of the store)",
            RENAMED: f"store {self.reason!r} renamed to {name!r} in place",
            RENAME_DUE: f"store {self.reason!r} would be renamed to {name!r} in place",
            LEFT_EMPTY: f"store {name!r} is empty and nothing is synced to it any more; "
            f"'ingest store remove {name}' deletes it",
        }[self.action]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Note:
    """Something about the run as a whole, for the summary and the log."""

    kind: str
    detail: str
    file_id: str | None = None

    def describe(self) -> str:
        return self.detail

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Event = FileEvent | StoreEvent | Note
OnEvent = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The callback when nobody listens."""


@dataclass
class Report:
    """What one sync did: counts, and every event, in the order they happened."""

    counts: dict[str, int] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    planned: dict[str, list[str]] = field(default_factory=dict)  # a dry run's plan, by kind
    dry_run: bool = False
    seconds: float = 0.0
    newly_rejected: int = 0  # rejections that are news: a new file, or a new reason
    interrupted: str | None = None  # the signal that ended the run early (SIGINT, SIGTERM)
    unreachable: str | None = None  # the server stopped answering, which ended the run early: how

    def of(self, *actions: str) -> list[FileEvent]:
        return [e for e in self.events if isinstance(e, FileEvent) and e.action in actions]

    @property
    def files(self) -> list[FileEvent]:
        return [e for e in self.events if isinstance(e, FileEvent)]

    @property
    def failures(self) -> list[FileEvent]:
        return self.of(FAILED)

    @property
    def rejected(self) -> list[FileEvent]:
        return self.of(REJECTED)

    @property
    def held(self) -> list[FileEvent]:
        return self.of(HELD)

    @property
    def kept_failed(self) -> list[FileEvent]:
        """Failures of earlier runs that are not retried (the remote refused the file): like rejections,
        reported every time, but they do not fail this run."""
        return self.of(FAILED_EARLIER)

    @property
    def still_indexing(self) -> list[str]:
        return [e.shown for e in self.of(INDEXING)]

    @property
    def notes(self) -> list[Event]:
        """Events the summary mentions once each: store events, run notes, files left for the next run."""
        return [
            e
            for e in self.events
            if (isinstance(e, FileEvent) and e.action == SKIPPED)
            or isinstance(e, Note)
            or (isinstance(e, StoreEvent) and e.action != CREATED)
        ]

    @property
    def store_news(self) -> list[StoreEvent]:
        return [e for e in self.events if isinstance(e, StoreEvent) and e.action in STORE_NEWS]

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_CODES.get(self.interrupted, 130)
        return 1 if self.failures or self.unreachable else 0

    def as_dict(self) -> dict[str, Any]:
        listed = lambda events: [{"path": e.shown, "reason": e.reason} for e in events]  # noqa: E731
        return {
            "dry_run": self.dry_run,
            "counts": self.counts,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
            "rejected": listed(self.rejected),
            "failed": listed(self.failures),
            "held_back": listed(self.held),
            "failed_earlier": listed(self.kept_failed),
            "still_indexing": self.still_indexing,
            "notes": [e.describe() for e in self.notes],
            "files": [e.as_dict() for e in self.files],
            "stores": [e.as_dict() for e in self.events if isinstance(e, StoreEvent)],
            **({"plan": self.planned} if self.dry_run else {}),
            **({"interrupted": self.interrupted} if self.interrupted else {}),
            **({"unreachable": self.unreachable} if self.unreachable else {}),
        }
