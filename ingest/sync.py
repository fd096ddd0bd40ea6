"""The one composition point: scan → observe → plan → execute → record. `Ingest` calls it."""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace

from ingest import scan as scanning
from ingest.config import Root, Settings
from ingest.errors import RemoteError, exit_code
from ingest.events import (
    ATTRIBUTES,
    DELETED,
    EXCLUDED,
    FAILED_EARLIER,
    HELD,
    MASS_DELETE_HELD,
    MOVED,
    REBUILD_DUE,
    RETRIED,
    Event,
    FileEvent,
    OnEvent,
    Report,
    StoreEvent,
    ignore,
)
from ingest.events import FAILED as EVENT_FAILED
from ingest.events import REJECTED as EVENT_REJECTED
from ingest.indexing import Indexer, Outcome, Progress
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
from ingest.plan import GuardPolicy, Observed, Plan, RootScan, make_plan
from ingest.rebuild import pending_rebuilds, rebuild
from ingest.remote.base import AuthError, Remote
from ingest.remote.profile import PROFILES, Profile
from ingest.stores import Stores, attributes, server_profile
from ingest.survey import Survey

log = logging.getLogger("ingest")
MAX_AUTO_RETRIES = 5  # retryable failures are tried again by later runs this many times, then need --retry-failed
RETRY_BASE, RETRY_CAP = 30.0, 3600.0  # seconds: the wait before a run tries a failed file again doubles from here
MISSING_ROOT = "the folder is missing, not a folder, or not mounted: nothing was synced or deleted there"


def retry_due(row: FileRow, now: float) -> bool:
    """A retryable failure is tried by the next run at once, then after waits that double: an outage
    over by then costs nothing, and a daemon passing every few seconds does not spend the tries."""
    wait = 0.0 if row.attempts < 2 else min(RETRY_CAP, RETRY_BASE * 2 ** (row.attempts - 2))
    return bool(row.retryable) and row.attempts < MAX_AUTO_RETRIES and (row.updated_at or 0.0) + wait <= now


@dataclass(frozen=True)
class Options:
    dry_run: bool = False
    allow_mass_delete: bool = False
    retry_failed: bool = False
    rehash: bool = False
    command: str = "sync"


Scopes = Mapping[str, tuple[str, ...]]  # root key → relative prefixes to look at ("" = all of it)


class Engine:
    def __init__(
        self,
        settings: Settings,
        manifest: Manifest,
        remote: Remote,
        stop: threading.Event | None = None,
        on_event: OnEvent = ignore,
        clock=time.time,
    ):
        self.settings, self.manifest, self.remote = settings, manifest, remote
        self.clock = clock
        self.profile: Profile = PROFILES["openai"]
        self.stop = stop or threading.Event()
        self.on_event = on_event
        self.survey = Survey(settings, manifest)
        self._report = Report()

    def emit(self, event: Event) -> None:
        self._report.events.append(event)
        self.on_event(event)

    def indexer(self, progress: Progress | None = None) -> Indexer:
        stores = Stores(self.settings, self.manifest, self.remote, self.emit)
        return Indexer(
            self.settings,
            self.manifest,
            self.remote,
            stores,
            progress,
            stop=self.stop,
            emit=self.emit,
            profile=self.profile,
        )

    def sync(
        self, options: Options = Options(), scopes: Scopes | None = None, progress: Progress | None = None
    ) -> Report:
        started = time.monotonic()
        report = self._report = Report(dry_run=options.dry_run)
        run_id = None if options.dry_run else self.manifest.start_run(options.command)
        died = None
        try:
            if not options.dry_run:
                self.profile = server_profile(self.manifest, self.remote)
            indexer = self.indexer(progress)
            if not options.dry_run:
                indexer.stores.check_all()
                indexer.sweep()
                if scopes is None:  # not on every incremental pass of the daemon
                    rebuild(self.settings, self.manifest, self.remote, self.stop, self.emit, profile=self.profile)
            else:
                for store in pending_rebuilds(self.settings, self.manifest):
                    self.emit(StoreEvent(store.name, REBUILD_DUE, old_vector_store_id=store.id))
            plan, scans = self._plan(options, scopes)
            report.counts = plan.counts()
            self._report_plan(plan, scans)
            if options.dry_run:
                report.planned = _describe(plan)
                return report
            self._fold(report, self._apply(plan, options, indexer))
        except BaseException as exc:
            died = exit_code(exc)  # the run ends here with an error message; its row must not read as a success
            raise
        finally:
            report.seconds = time.monotonic() - started
            if run_id is not None:
                held = [e.shown for e in report.held]
                self.manifest.finish_run(run_id, report.exit_code if died is None else died, report.counts, held)
        return report

    def _report_plan(self, plan: Plan, scans: list[RootScan]) -> None:
        """What the plan alone says: missing roots, rejections, unreadable files, held deletions."""
        for scan in scans:
            if scan.missing and scan.full:
                self.emit(FileEvent("", scan.root, EVENT_FAILED, reason=MISSING_ROOT))
        for obs, row in plan.rejected:
            self.emit(_event(obs, EVENT_REJECTED, row, obs.reason))
        for problem, row in plan.refused:
            self.emit(
                FileEvent(problem.path, problem.root, EVENT_REJECTED, row.store if row else None, None, problem.reason)
            )
        for problem, row in plan.unreadable:
            self.emit(
                FileEvent(problem.path, problem.root, EVENT_FAILED, row.store if row else None, None, problem.reason)
            )
        for row, why in plan.held:
            self.emit(_event(row, HELD, row, why))
        for store, count in plan.mass_held.items():
            self.emit(StoreEvent(store, MASS_DELETE_HELD, count=count))
        self._report.newly_rejected = sum(
            1
            for seen, row in plan.rejected + plan.refused
            if row is None or row.state != REJECTED or row.reason != seen.reason
        )

    # observe -----------------------------------------------------------------------------------
    def _plan(self, options: Options, scopes: Scopes | None) -> tuple[Plan, list[RootScan]]:
        observed, problems, scans, rows, quiet = [], [], [], {}, []
        if scopes is not None:
            scopes = self._with_retries(scopes, options)
        for root in self.settings.roots:
            prefixes = tuple(scopes.get(root.key, ())) if scopes is not None else ("",)
            if not prefixes:
                continue
            network = self.survey.network(root)
            # The common case is "nothing changed": the scan compares each file's stat with the settled
            # rows as plain tuples, and full rows are loaded only for what moved and for what is gone.
            settled, others = self.survey.settled(root)
            result = scanning.scan(root, prefixes, network, None if options.rehash else settled)
            fresh, calm = self.survey.calm(root, result, settled)
            quiet += [(root.key, p) for p in calm]
            unsure = settled.keys() - set(calm) if calm else settled.keys()
            known = self.manifest.rows_at(
                root.key, (p for p in itertools.chain(others, unsure) if _within(p, prefixes))
            )
            rows.update(known)
            for entry in fresh:
                obs = self.survey.observe(root, entry, known.get((root.key, entry.path)), options.rehash)
                if not obs.ok and obs.reason.startswith("cannot read"):
                    # Unreadable now (permissions, a share hiccup) is an error, not a verdict on the file:
                    # its indexed version stays and deletions are held.
                    result.problems.append(scanning.Problem(root.key, entry.path, obs.reason, True))
                else:
                    observed.append(obs)
            problems += result.problems
            scans.append(
                RootScan(
                    root.key,
                    prefixes == ("",),
                    result.missing,
                    result.has_errors,
                    len(result.entries) + len(result.calm),
                )
            )
        policy = GuardPolicy(
            self.settings.max_delete_fraction, self.settings.max_delete_floor, options.allow_mass_delete
        )
        plan = make_plan(observed, problems, rows, scans, self.manifest.store_sizes, policy)
        plan.quiet = quiet
        return plan, scans

    def _with_retries(self, scopes: Scopes, options: Options) -> Scopes:
        """An incremental pass looks at the changed paths, and at the failures due another try: after an
        outage the daemon's next pass indexes them, with no change to the files needed."""
        wanted = {key: list(paths) for key, paths in scopes.items()}
        now = self.clock()
        for row in self.manifest.rows_in_states([FAILED]):
            if options.retry_failed or retry_due(row, now):
                wanted.setdefault(row.root, []).append(row.path)
        return {key: tuple(paths) for key, paths in wanted.items()}

    # apply -------------------------------------------------------------------------------------
    def _apply(self, plan: Plan, options: Options, indexer: Indexer) -> Outcome:
        m, stores = self.manifest, indexer.stores
        roots = {r.key: r for r in self.settings.roots}
        stale = []
        with m.transaction():
            for obs, row in plan.unchanged:
                if (row.size, row.mtime_ns, row.inode, row.hashed_at_ns) != (
                    obs.size,
                    obs.mtime_ns,
                    obs.inode,
                    obs.hashed_at_ns or row.hashed_at_ns,
                ):
                    row = m.update(
                        row,
                        size=obs.size,
                        mtime_ns=obs.mtime_ns,
                        inode=obs.inode,
                        hashed_at_ns=obs.hashed_at_ns or row.hashed_at_ns,
                    )
                    stale.append((obs, row))
                elif self.survey.static_moved(row.store, row.attributes):
                    stale.append((obs, row))
            for row in plan.retirements():
                self._retire_ids(row)
            for obs, row in plan.rejected:
                m.put(
                    _row_from(
                        obs,
                        row,
                        state=REJECTED,
                        reason=obs.reason,
                        file_id=None,
                        old_file_id=None,
                        vector_store_id=None,
                        batch_id=None,
                    )
                )
            for problem, row in plan.refused:
                m.put(
                    FileRow(
                        problem.root,
                        problem.path,
                        REJECTED,
                        reason=problem.reason,
                        first_seen=row.first_seen if row else None,
                    )
                )
            for problem, row in plan.unreadable:
                if row is None:
                    m.put(FileRow(problem.root, problem.path, ERROR, reason=problem.reason))
                else:
                    m.update(row, reason=problem.reason)
            for row in plan.deletes:
                m.remove(row.root, row.path)
                if row.file_id or row.old_file_id:
                    # Still on disk, so an include/exclude rule now leaves it out.
                    gone = EXCLUDED if os.path.lexists(os.path.join(row.root, row.path)) else DELETED
                    self.emit(_event(row, gone, row))
        self.reattach: list[FileRow] = []
        failed_moves = self._move(plan.moves, roots)
        self._refresh(stale, roots)

        uploads: list[FileRow] = []
        attach: list[FileRow] = list(self.reattach)
        attaching: list[FileRow] = []
        stores.reserve(
            Counter(
                obs.store
                for obs, row in plan.uploads + plan.resumes + failed_moves
                if row is None or not row.vector_store_id or row.store != obs.store
            )
        )
        with m.transaction():
            for obs, row in plan.uploads + failed_moves:
                uploads.append(self._prepare_upload(obs, row, roots[obs.root], stores))
            for obs, row in plan.resumes:
                if not self._resume(obs, row, roots[obs.root], stores, options, uploads, attach, attaching):
                    self.emit(_event(obs, FAILED_EARLIER, row, row.reason or "failed"))
        indexer.run(uploads, attach, attaching, frozenset(_fid for r in self.reattach if (_fid := r.file_id)))
        indexer.retire()
        indexer.sweep()
        return indexer.outcome

    def _retire_ids(self, row: FileRow) -> None:
        for file_id in (row.file_id, row.old_file_id):
            if file_id:
                self.manifest.ledger_set(file_id, RETIRE)

    def _move(self, moves: list[tuple[Observed, FileRow]], roots: dict[str, Root]) -> list[tuple[Observed, FileRow]]:
        """Renames are attribute updates; those the remote refuses come back to be uploaded afresh."""
        again = []
        for obs, old in moves:
            attrs = self._attributes(obs, roots[obs.root])
            if not self.profile.search_sees_updates:
                with self.manifest.transaction():
                    self.manifest.remove(old.root, old.path)
                    self.reattach.append(self.manifest.put(self._to_reattach(obs, old, attrs)))
                self.emit(_event(obs, MOVED, old, f"from {os.path.join(old.root, old.path)}; attached again"))
                continue
            if not self._set_attributes(old, attrs):
                with self.manifest.transaction():
                    self.manifest.remove(old.root, old.path)
                    again.append((obs, self.manifest.put(replace(old, root=obs.root, path=obs.path))))
                continue
            with self.manifest.transaction():
                self.manifest.remove(old.root, old.path)
                self.manifest.put(_row_from(obs, old, state=INDEXED, attributes=json.dumps(attrs)))
            self.emit(_event(obs, MOVED, old, f"from {os.path.join(old.root, old.path)}"))
        return again

    def _refresh(self, stale: list[tuple[Observed, FileRow]], roots: dict[str, Root]) -> None:
        """Same content, other attributes (a touched mtime, a new static value): update them in place."""
        for obs, row in stale:
            attrs = self._attributes(obs, roots[obs.root])
            if attrs == row.attrs():
                continue
            if not self.profile.search_sees_updates:
                self.reattach.append(self.manifest.put(self._to_reattach(obs, row, attrs)))
                self.emit(_event(obs, ATTRIBUTES, row, "attached again"))
            elif self._set_attributes(row, attrs):
                self.manifest.update(row, attributes=json.dumps(attrs))
                self.emit(_event(obs, ATTRIBUTES, row))

    def _to_reattach(self, obs: Observed, row: FileRow, attrs: dict) -> FileRow:
        """Search on this server keeps the attributes a file was attached with (llama-stack): new ones
        reach it by a detach and an attach of the same uploaded file."""
        return _row_from(obs, row, state=UPLOADED, batch_id=None, attributes=json.dumps(attrs))

    def _set_attributes(self, row: FileRow, attrs: dict) -> bool:
        try:
            self.remote.update_attributes(row.vector_store_id, row.file_id, attrs)
        except AuthError:
            raise
        except RemoteError as exc:
            log.warning("%s: could not update attributes: %s", os.path.join(row.root, row.path), exc)
            return False
        return True

    def _attributes(self, obs: Observed, root: Root) -> dict:
        return attributes(root, obs.path, obs.mtime_ns, obs.sha256 or "", self.settings.store_spec(obs.store))

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
                attempts=row.attempts if same else 0,
            )
        )

    def _resume(
        self,
        obs: Observed,
        row: FileRow,
        root: Root,
        stores: Stores,
        options: Options,
        uploads: list[FileRow],
        attach: list[FileRow],
        attaching: list[FileRow],
    ) -> bool:
        """Carry a half-done row on from its state; False when it stays failed (not retried)."""
        due = row.state == FAILED and (options.retry_failed or retry_due(row, self.clock()))
        row = self.manifest.update(
            row,
            size=obs.size,
            mtime_ns=obs.mtime_ns,
            inode=obs.inode,
            hashed_at_ns=obs.hashed_at_ns or row.hashed_at_ns,
        )
        if row.state == FAILED:
            if not due:
                return False
            self.emit(_event(obs, RETRIED, row, f"failed before: {row.reason or 'unknown error'}"))
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
        return True

    def _fold(self, report: Report, outcome: Outcome) -> None:
        report.counts.update(
            uploaded=outcome.uploaded,
            indexed=outcome.indexed,
            failed=len(report.failures),
            remote_deleted=outcome.deleted_remote,
            duplicates_removed=outcome.duplicates_removed,
        )


def _row_from(obs: Observed, row: FileRow | None, **changes) -> FileRow:
    base = row or FileRow(obs.root, obs.path, PENDING)
    values = {
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


def _within(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(p == "" or path == p or path.startswith(p + "/") for p in prefixes)


def _show(item: Observed | FileRow | scanning.Problem) -> str:
    return os.path.join(item.root, item.path)


def _event(item: Observed | FileRow, action: str, row: FileRow | None, reason: str = "") -> FileEvent:
    """An event for the file `item` names; the store and file id are those `row` held."""
    store = item.store or (row.store if row else None)
    return FileEvent(item.path, item.root, action, store, row.file_id if row else None, reason)


def _describe(plan: Plan) -> dict[str, list[str]]:
    return {
        "new": [_show(o) for o, r in plan.uploads if r is None or not r.file_id],
        "changed": [_show(o) for o, r in plan.uploads if r is not None and r.file_id],
        "moved": [f"{_show(r)} -> {o.path}" for o, r in plan.moves],
        "deleted": [_show(r) for r in plan.deletes],
        "unchanged": [_show(o) for o, _ in plan.unchanged] + [os.path.join(r, p) for r, p in plan.quiet],
        "rejected": [_show(o) for o, _ in plan.rejected] + [_show(p) for p, _ in plan.refused],
        "resumed": [_show(o) for o, r in plan.resumes if r.state != FAILED],
        "retry_failed": [_show(o) for o, r in plan.resumes if r.state == FAILED],
        "held_back": [_show(r) for r, _ in plan.held],
    }
