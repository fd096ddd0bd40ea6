"""plan → the manifest and the remote: record each intent before its call, move what moved, refresh
attributes in place, and hand uploads to the indexer. Every action becomes an event."""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ingest.config import Root, Settings
from ingest.errors import AuthError, NotFound, RemoteError, Stopped
from ingest.events import ATTRIBUTES, DELETED, EXCLUDED, FAILED_EARLIER, MOVED, RETRIED, OnEvent
from ingest.indexing import Feed, Indexer, Outcome
from ingest.manifest import (
    ATTACHING,
    ERROR,
    FAILED,
    INDEXED,
    PENDING,
    REJECTED,
    RETIRE,
    UPLOADED,
    UPLOADING,
    FileRow,
    Manifest,
)
from ingest.outcomes import event_of
from ingest.plan import Observed, Plan, restat_due, retry_due
from ingest.relocate import transfer
from ingest.remote.base import Remote
from ingest.remote.profile import PROFILES, Profile
from ingest.stores import Stores, attributes
from ingest.survey import Survey

if TYPE_CHECKING:
    from ingest.engine import Options
    from ingest.survey import Later

log = logging.getLogger("ingest")


class Executor:
    def __init__(
        self,
        settings: Settings,
        manifest: Manifest,
        remote: Remote,
        survey: Survey,
        emit: OnEvent,
        profile: Profile | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.settings, self.manifest, self.remote, self.survey, self.emit = settings, manifest, remote, survey, emit
        self.profile = profile or PROFILES["openai"]
        self.clock = clock
        self.reattach: list[FileRow] = []  # same uploaded file, attached again for its new attributes

    def apply(self, plan: Plan, options: Options, indexer: Indexer, later: Later | None = None) -> Outcome:
        """Carry the plan out; with `later`, the new files it finds are uploaded as they are found, and
        those it turns away are recorded as at the start of a plan, once the uploads are done."""
        m, stores = self.manifest, indexer.stores
        roots = {r.key: r for r in self.settings.roots}
        stale = []
        with m.transaction():
            for obs, row in plan.kept_failed:
                row = self._restat(obs, row)  # the next run does not hash it again to find it the same
                self.emit(event_of(obs, FAILED_EARLIER, row, row.reason or "failed"))
            for obs, row in plan.unchanged:
                if restat_due(obs, row):
                    self._restat(obs, row)
            for obs, row in plan.refreshes:
                stale.append((obs, self._restat(obs, row) if restat_due(obs, row) else row))
            for row in plan.retirements():
                self._retire_ids(row)
            self._turned_away(plan)
            for gone, action in ((plan.deletes, DELETED), (plan.excluded, EXCLUDED)):
                for row in gone:
                    m.remove(row.root, row.path)
                    self.emit(event_of(row, action, row, "" if row.file_id or row.old_file_id else _unstored(row)))
        failed_moves = self._move(plan.moves, roots)
        self._refresh(stale, roots)

        uploads: list[FileRow | Callable[[], FileRow]] = []
        attach: list[FileRow] = list(self.reattach)
        attaching: list[FileRow] = []
        stores.reserve(plan.new_stores(failed_moves))
        # A new or changed file's intent is recorded as its turn to upload comes, in the commit that
        # starts it: the first upload goes out without waiting for the rows of all the others. One not
        # reached (stopped, killed) is left as it was, and the next run's plan finds it again.
        for obs, prior in [*plan.uploads, *failed_moves]:
            uploads.append(functools.partial(self._prepare_upload, obs, prior, roots[obs.root], stores))
        with m.transaction():
            for obs, row in plan.resumes:
                if not self._resume(obs, row, roots[obs.root], stores, options, uploads, attach, attaching):
                    self.emit(event_of(obs, FAILED_EARLIER, row, row.reason or "failed"))
        attach += transfer(m, self.settings, stores, roots, plan.transfers)
        found = () if later is None else self._found(later, roots, stores)
        feed = Feed(uploads, found, later.more if later is not None else lambda: 0)
        try:
            indexer.run(feed, attach, attaching, frozenset(r.known_file_id for r in self.reattach))
        finally:
            if later is not None:
                with m.transaction():
                    self._turned_away(later.plan())
        indexer.retire()
        indexer.sweep()
        return indexer.outcome

    def _found(self, later: Later, roots: dict[str, Root], stores: Stores) -> Iterator[Callable[[], FileRow]]:
        for obs in later:
            # Outside the commit that starts the upload: a store made here is recorded the moment it exists.
            stores.reserve({obs.store: 1})
            yield functools.partial(self._prepare_upload, obs, None, roots[obs.root], stores)

    def _turned_away(self, plan: Plan) -> None:
        """Record the plan's rejected, refused and unreadable files (in the caller's transaction)."""
        m = self.manifest
        for obs, prior in plan.rejected:
            m.put(
                _row_from(
                    obs,
                    prior,
                    state=REJECTED,
                    reason=obs.reason,
                    file_id=None,
                    old_file_id=None,
                    vector_store_id=None,
                    batch_id=None,
                )
            )
        for problem, prior in plan.refused:
            m.put(
                FileRow(
                    problem.root,
                    problem.path,
                    REJECTED,
                    reason=problem.reason,
                    first_seen=prior.first_seen if prior else None,
                )
            )
        for problem, prior in plan.unreadable:
            if prior is None:
                m.put(FileRow(problem.root, problem.path, ERROR, reason=problem.reason))
            else:
                m.update(prior, reason=problem.reason)

    def _restat(self, obs: Observed, row: FileRow) -> FileRow:
        """The row takes the stat this run saw (the same content)."""
        return self.manifest.update(
            row,
            size=obs.size,
            mtime_ns=obs.mtime_ns,
            inode=obs.inode,
            hashed_at_ns=obs.hashed_at_ns or row.hashed_at_ns,
        )

    def _retire_ids(self, row: FileRow) -> None:
        for file_id in (row.file_id, row.old_file_id):
            if file_id:
                self.manifest.ledger_set(file_id, RETIRE)

    def _move(self, moves: list[tuple[Observed, FileRow]], roots: dict[str, Root]) -> list[tuple[Observed, FileRow]]:
        """Renames are attribute updates; those the remote refuses come back to be uploaded afresh."""
        again = []
        for obs, old in moves:
            attrs = self.survey.attributes(roots[obs.root], obs)
            if not self.profile.search_sees_updates:
                with self.manifest.transaction():
                    self.manifest.remove(old.root, old.path)
                    self.reattach.append(self.manifest.put(self._to_reattach(obs, old, attrs)))
                self.emit(event_of(obs, MOVED, old, f"from {os.path.join(old.root, old.path)}; attached again"))
                continue
            try:
                taken = self._set_attributes(old, attrs)
            except Stopped:
                break  # the moves left keep their rows: the next run finds them moved again
            if not taken:
                # Re-keyed as an upload still to do, the old file serving until the new one is indexed:
                # the stat matches, so a row left "indexed" by a run that stops here is never looked at again.
                pending = replace(
                    old, root=obs.root, path=obs.path, state=PENDING, file_id=None, old_file_id=old.file_id
                )
                with self.manifest.transaction():
                    self.manifest.remove(old.root, old.path)
                    again.append((obs, self.manifest.put(replace(pending, batch_id=None, attempts=0))))
                continue
            with self.manifest.transaction():
                self.manifest.remove(old.root, old.path)
                self.manifest.put(_row_from(obs, old, state=INDEXED, attributes=json.dumps(attrs)))
            self.emit(event_of(obs, MOVED, old, f"from {os.path.join(old.root, old.path)}"))
        return again

    def _refresh(self, stale: list[tuple[Observed, FileRow]], roots: dict[str, Root]) -> None:
        """Same content, other attributes (a touched mtime, a new static value): update them in place."""
        for obs, row in stale:
            attrs = self.survey.attributes(roots[obs.root], obs)
            if not self.profile.search_sees_updates:
                self.reattach.append(self.manifest.put(self._to_reattach(obs, row, attrs)))
                self.emit(event_of(obs, ATTRIBUTES, row, "attached again"))
            else:
                try:
                    taken = self._set_attributes(row, attrs)
                except Stopped:
                    break
                if taken:
                    self.manifest.update(row, attributes=json.dumps(attrs))
                    self.emit(event_of(obs, ATTRIBUTES, row))

    def _to_reattach(self, obs: Observed, row: FileRow, attrs: dict) -> FileRow:
        """Search on this server keeps the attributes a file was attached with (llama-stack): new ones
        reach it by a detach and an attach of the same uploaded file."""
        return _row_from(obs, row, state=UPLOADED, batch_id=None, attributes=json.dumps(attrs))

    def _set_attributes(self, row: FileRow, attrs: dict) -> bool:
        """Whether the remote took them; raises Stopped when the run stopped first (nothing sent)."""
        try:
            self.remote.update_attributes(row.known_store_id, row.known_file_id, attrs)
        except (AuthError, Stopped):
            raise
        except RemoteError as exc:
            log.warning("%s: could not update attributes: %s", os.path.join(row.root, row.path), exc)
            return False
        return True

    def _prepare_upload(self, obs: Observed, row: FileRow | None, root: Root, stores: Stores) -> FileRow:
        """Record the intent before the call: a changed file keeps serving its old version until then."""
        old = None
        if row is not None:
            old = row.old_file_id if row.old_file_id else (row.file_id if row.state == INDEXED else None)
            if row.file_id and row.file_id != old:
                self.manifest.ledger_set(row.file_id, RETIRE)  # an unfinished newer version: superseded
            if old and row.store != obs.store:
                self.manifest.ledger_set(old, RETIRE)  # routed to another store: nothing to keep serving
                old = None
        spec = self.settings.store_spec(obs.store)
        store_id = (
            row.vector_store_id
            if row is not None and row.vector_store_id and row.store == obs.store
            else stores.place(obs.store)
        )
        attrs = attributes(root, obs.path, obs.mtime_ns, obs.sha256 or "", spec)
        same = row is not None and row.sha256 == obs.sha256 and row.state != INDEXED
        return self.manifest.put(
            _row_from(
                obs,
                row,
                state=PENDING,
                file_id=None,
                old_file_id=old,
                vector_store_id=store_id,
                batch_id=None,
                attributes=json.dumps(attrs),
                attempts=row.attempts if row is not None and same else 0,
            )
        )

    def _resume(
        self,
        obs: Observed,
        row: FileRow,
        root: Root,
        stores: Stores,
        options: Options,
        uploads: list[FileRow | Callable[[], FileRow]],
        attach: list[FileRow],
        attaching: list[FileRow],
    ) -> bool:
        """Carry a half-done row on from its state; False when it stays failed (not retried)."""
        due = row.state == FAILED and (options.retry_failed or retry_due(row, self.clock()))
        row = self._restat(obs, row)
        if row.state == FAILED:
            if not due:
                return False
            self.emit(event_of(obs, RETRIED, row, f"failed before: {row.reason or 'unknown error'}"))
            row = self.manifest.update(
                row, state=UPLOADED if row.file_id else PENDING, attempts=row.attempts + (1 if row.file_id else 0)
            )
        if row.state in (PENDING, UPLOADING, REJECTED, ERROR) or (row.state == UPLOADED and not row.file_id):
            uploads.append(self._prepare_upload(obs, row, root, stores))
        elif row.state == UPLOADED:
            attach.append(row)
        elif row.state == ATTACHING:
            attaching.append(row)
        elif row.state == INDEXED and row.old_file_id:
            self.manifest.ledger_set(row.old_file_id, RETIRE)
            self.manifest.update(row, old_file_id=None)
        elif row.state == INDEXED and row.old_vector_store_id and row.file_id:
            try:  # indexed in its new store already: what is left is to leave the old one
                self.remote.detach(row.old_vector_store_id, row.file_id)
            except AuthError:
                raise
            except NotFound:
                self.manifest.update(row, old_vector_store_id=None)  # not there: left already
            except RemoteError as exc:
                log.warning(
                    "%s: still in its old store %s: %s", os.path.join(row.root, row.path), row.old_vector_store_id, exc
                )
            else:
                self.manifest.update(row, old_vector_store_id=None)
        return True


def _unstored(row: FileRow) -> str:
    """Why a file counted as deleted or excluded took nothing from the store: it was never in it."""
    return f"was {row.state}" + (f" ({row.reason})" if row.reason else "") + "; nothing of it was in the store"


def _row_from(obs: Observed, row: FileRow | None, **changes: Any) -> FileRow:
    base = row or FileRow(obs.root, obs.path, PENDING)
    values: dict[str, Any] = {
        "root": obs.root,
        "path": obs.path,
        "store": obs.store,
        "size": obs.size,
        "mtime_ns": obs.mtime_ns,
        "inode": obs.inode,
        "hashed_at_ns": obs.hashed_at_ns,
        "sha256": obs.sha256,
        "mime": obs.mime,
        "reason": None,
        "error_code": None,
        "retryable": None,
    }
    values.update(changes)
    return replace(base, **values)
