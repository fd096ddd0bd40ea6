"""The one composition point: scan → observe → plan → execute → record. The CLI and the watcher call it."""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ingest import scan as scanning
from ingest.config import NO_CONFIG, Root, Settings, StoreSpec
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
    ManifestError,
)
from ingest.plan import GuardPolicy, Observed, Plan, RootScan, make_plan
from ingest.rebuild import pending_rebuilds, rebuild
from ingest.remote.base import AuthError, Remote, RemoteError
from ingest.stores import Stores, attributes, route
from ingest.validate import MagicUnavailable, Validator

log = logging.getLogger("ingest")
MAX_AUTO_RETRIES = 5  # retryable failures are tried again by later runs this many times, then need --retry-failed


@dataclass(frozen=True)
class Options:
    dry_run: bool = False
    allow_mass_delete: bool = False
    retry_failed: bool = False
    rehash: bool = False
    command: str = "sync"
    check_stores: bool = False  # ask the remote about every store, however recently it was confirmed


@dataclass
class Report:
    counts: dict[str, int] = field(default_factory=dict)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    held: list[tuple[str, str]] = field(default_factory=list)
    planned: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    still_indexing: list[str] = field(default_factory=list)
    # Failures of earlier runs that are not retried (the remote refused the file): like rejections,
    # reported every time, but they do not fail this run.
    kept_failed: list[tuple[str, str]] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0
    newly_rejected: int = 0  # rejections that are news: a new file, or a new reason

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    def as_dict(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "counts": self.counts,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
            "rejected": [{"path": p, "reason": r} for p, r in self.rejected],
            "failed": [{"path": p, "reason": r} for p, r in self.failures],
            "held_back": [{"path": p, "reason": r} for p, r in self.held],
            "failed_earlier": [{"path": p, "reason": r} for p, r in self.kept_failed],
            "still_indexing": self.still_indexing,
            "notes": self.notes,
            **({"plan": self.planned} if self.dry_run else {}),
        }


Scopes = Mapping[str, tuple[str, ...]]  # root key → relative prefixes to look at ("" = all of it)


def remember(settings: Settings, manifest: Manifest) -> None:
    """Keep this run's roots and, when it has a config file, its [[stores]] entries (those of the last
    config only) in the manifest, for the runs that come without one."""
    manifest.remember_roots(
        {
            "key": r.key,
            "store": r.store,
            "include": r.include,
            "exclude": r.exclude,
            "ignore_defaults": r.ignore_defaults,
        }
        for r in settings.roots
    )
    if settings.source != NO_CONFIG:
        manifest.remember_store_specs([asdict(spec) for spec in settings.stores])


def remembered(settings: Settings, manifest: Manifest) -> Settings:
    """A run that names no folder (a verify or reindex) works on every folder synced before, walked
    as it was (store, excludes). A run without a config file over folders synced before does what
    the configured runs did: the stores keep their last [[stores]] entries, so it rebuilds nothing,
    strips no attribute and moves no file. A folder new to the manifest gets the defaults and brings
    no other store's entries into play; a config file's own entries are used alone."""
    if settings.roots and settings.source != NO_CONFIG:
        return settings
    known = manifest.remembered_roots()
    if not settings.roots or any(r.key not in known for r in settings.roots):
        # Folders synced before the manifest kept root settings: their store, from their files (a full
        # scan of the files table, so only when needed).
        known = {**{key: {"store": store} for key, store in manifest.known_roots().items()}, **known}
    if not settings.roots:
        roots = tuple(Root(Path(key), **how) for key, how in known.items())
    else:
        roots = tuple(Root(r.path, **known[r.key]) if r.key in known else r for r in settings.roots)
    if settings.source != NO_CONFIG or any(r.key not in known for r in roots):
        return replace(settings, roots=roots)
    specs = tuple(StoreSpec(**{**spec, "paths": tuple(spec["paths"])}) for spec in manifest.remembered_store_specs())
    return replace(settings, roots=roots, stores=specs)


class Engine:
    def __init__(
        self,
        settings: Settings,
        manifest: Manifest,
        remote: Remote,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
    ):
        settings = remembered(settings, manifest)
        self.settings, self.manifest, self.remote = settings, manifest, remote
        self.progress = progress
        self.stop = stop or threading.Event()
        self.validator = Validator(settings.types, settings.max_size)
        self._network: dict[str, bool] = {}

    def sync(self, options: Options = Options(), scopes: Scopes | None = None) -> Report:
        started = time.monotonic()
        report = Report(dry_run=options.dry_run)
        run_id = None if options.dry_run else self.manifest.start_run(options.command)
        stores = Stores(self.settings, self.manifest, self.remote)
        indexer = Indexer(self.settings, self.manifest, self.remote, stores, self.progress, stop=self.stop)
        try:
            if not options.dry_run and scopes is None:  # not on every incremental pass of the daemon
                remember(self.settings, self.manifest)
            # A pass with nothing to do makes no remote call: the stores are asked about only when
            # there is work for them, when they have not been confirmed for a while, or by a reindex.
            checked = not options.dry_run and (options.check_stores or stores.check_due())
            if checked:
                report.notes += stores.check_all()
            if not options.dry_run:
                indexer.sweep()  # remote calls only for uploads whose reply never came
                if scopes is None:
                    report.notes += rebuild(self.settings, self.manifest, self.remote, self.stop)
            elif pending_rebuilds(self.settings, self.manifest):
                report.notes += [
                    f"store {s.name!r}: configuration changed; the next run rebuilds it"
                    for s in pending_rebuilds(self.settings, self.manifest)
                ]
            plan, scans = self._plan(options, scopes)
            if not options.dry_run and not checked and self._remote_work(plan):
                lost = stores.check_all()
                report.notes += lost
                if lost:  # a store gone remotely sent its files back to pending: plan again
                    plan, scans = self._plan(options, scopes)
            report.counts = plan.counts()
            report.failures = [
                (scan.root, "the folder is missing, not a folder, or not mounted: nothing was synced or deleted there")
                for scan in scans
                if scan.missing and scan.full
            ]
            report.held = [(_show(row), why) for row, why in plan.held]
            report.rejected = [(_show(o), o.reason) for o, _ in plan.rejected]
            report.rejected += [(_show(p), p.reason) for p, _ in plan.refused]
            report.newly_rejected = sum(
                1
                for seen, row in plan.rejected + plan.refused
                if row is None or row.state != REJECTED or row.reason != seen.reason
            )
            report.failures += [(_show(p), p.reason) for p, _ in plan.unreadable]
            if options.dry_run:
                report.planned = _describe(plan)
                return report
            outcome = self._apply(plan, options, stores, indexer)
            self._fold(report, outcome)
        except BaseException as exc:
            # The run ends here with an error message; its row must not read as a success.
            died = 2 if isinstance(exc, (AuthError, ManifestError, MagicUnavailable)) else 1  # as the CLI exits
            raise
        else:
            died = None
        finally:
            report.seconds = time.monotonic() - started
            if run_id is not None:
                self.manifest.finish_run(
                    run_id, report.exit_code if died is None else died, report.counts, [p for p, _ in report.held]
                )
        return report

    # observe -----------------------------------------------------------------------------------
    def _plan(self, options: Options, scopes: Scopes | None) -> tuple[Plan, list[RootScan]]:
        observed, problems, scans, rows, quiet = [], [], [], {}, []
        for root in self.settings.roots:
            prefixes = tuple(scopes.get(root.key, ())) if scopes is not None else ("",)
            if not prefixes:
                continue
            network = self._network.setdefault(root.key, scanning.is_network_fs(root.path))
            # The common case is "nothing changed": the scan compares each file's stat with the settled
            # rows as plain tuples, and full rows are loaded only for what moved and for what is gone.
            # The manifest's rows are read beside the walk, on a connection of their own.
            reading = self._settled(root, network)
            result = scanning.scan(
                root, prefixes, network, None if options.rehash else functools.partial(_first, reading)
            )
            settled, others = reading()
            fresh, calm = self._quiet(root, result, settled)
            quiet += [(root.key, p) for p in calm]
            unsure = settled.keys() - set(calm) if calm else settled.keys()
            known = self.manifest.rows_at(
                root.key, (p for p in itertools.chain(others, unsure) if _within(p, prefixes))
            )
            rows.update(known)
            for entry in fresh:
                obs = self._observe(root, entry, known.get((root.key, entry.path)), network, options)
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

    def _remote_work(self, plan: Plan) -> bool:
        """Whether carrying the plan out may call the remote: something to upload, move, resume or
        retire, or an unchanged file whose attributes are to be refreshed (see _apply)."""
        if plan.uploads or plan.resumes or plan.moves or plan.retirements() or self.manifest.ledger(RETIRE):
            return True
        return any(
            (row.size, row.mtime_ns, row.inode) != (obs.size, obs.mtime_ns, obs.inode)
            or self._static_moved(row.store, row.attributes)
            for obs, row in plan.unchanged
        )

    def _store_rules(self, root: Root) -> tuple[bool, dict[str, bool]]:
        """Whether any store takes files by path, and which stores (of this root) set static attributes."""
        routed = any(spec.paths for spec in self.settings.stores)
        static = {
            name: bool(self.settings.store_spec(name).attributes)
            for name in {root.store, *(spec.name for spec in self.settings.stores)}
        }
        return routed, static

    def _settled(self, root: Root, network: bool) -> Callable[[], tuple[dict[str, tuple], list[str]]]:
        """The root's rows a stat match may vouch for, and the paths of its other rows (read meanwhile:
        call the result for them)."""
        routed, static = self._store_rules(root)
        return self.manifest.settled_beside(
            root.key,
            scanning.RACY_NS_NETWORK if network else scanning.RACY_NS,
            store=None if routed else root.store,
            attributes=any(static.values()),
        )

    def _quiet(
        self, root: Root, result: scanning.ScanResult, settled: Mapping[str, tuple]
    ) -> tuple[list[scanning.Entry], list[str]]:
        """The scan's entries to look at, and the paths left calm: their stat matched a settled row, and
        their store and static attributes are still what the configuration says."""
        routed, static = self._store_rules(root)
        if not routed and not any(static.values()):
            return result.entries, result.calm  # the store was matched in SQL: nothing else can differ
        fresh, calm = list(result.entries), []
        for path in result.calm:
            known = settled[path]
            store = route(self.settings, root, path) if routed else root.store
            if known[3] != store or (static.get(store) and self._static_moved(store, known[4])):
                fresh.append(scanning.Entry(root.key, path, *known[:3]))  # the stat matched these
            else:
                calm.append(path)
        return fresh, calm

    def _static_moved(self, store: str | None, attributes: str | None) -> bool:
        static = self.settings.store_spec(store or "").attributes
        if not static:
            return False
        current = json.loads(attributes) if attributes else {}
        return any(current.get(k) != v for k, v in static.items())

    def _observe(
        self, root: Root, entry: scanning.Entry, row: FileRow | None, network: bool, options: Options
    ) -> Observed:
        store = route(self.settings, root, entry.path)
        full = root.path / entry.path
        sha, hashed_at = (row.sha256, row.hashed_at_ns) if row else (None, None)
        must_hash = (
            options.rehash
            or row is None
            or scanning.needs_hash(entry, row.size, row.mtime_ns, row.inode, row.hashed_at_ns, network)
        )
        verdict_needed = must_hash or row is None or row.state in (REJECTED, ERROR) or options.rehash
        if verdict_needed:
            verdict = self.validator.check(full, entry.size)
            if not verdict.ok:
                return Observed(
                    root.key,
                    entry.path,
                    entry.size,
                    entry.mtime_ns,
                    entry.inode,
                    None,
                    None,
                    verdict.mime,
                    False,
                    verdict.reason,
                    store,
                )
            mime = verdict.mime
        else:
            mime = row.mime or ""
        if must_hash:
            try:
                hashed_at = time.time_ns()
                sha = scanning.sha256_file(full)
            except OSError as exc:
                return Observed(
                    root.key,
                    entry.path,
                    entry.size,
                    entry.mtime_ns,
                    entry.inode,
                    None,
                    None,
                    mime,
                    False,
                    f"cannot read: {exc.strerror or exc}",
                    store,
                )
        return Observed(
            root.key, entry.path, entry.size, entry.mtime_ns, entry.inode, hashed_at, sha, mime, True, "", store
        )

    # apply -------------------------------------------------------------------------------------
    def _apply(self, plan: Plan, options: Options, stores: Stores, indexer: Indexer) -> Outcome:
        m = self.manifest
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
                elif self._static_moved(row.store, row.attributes):
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
        failed_moves = self._move(plan.moves, roots)
        self._refresh(stale, roots)

        uploads, attach, attaching, kept_failed = [], [], [], []
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
                    kept_failed.append((_show(row), row.reason or "failed"))
        indexer.run(uploads, attach, attaching)
        indexer.retire()
        indexer.sweep()
        indexer.outcome.kept_failed += kept_failed
        return indexer.outcome

    def _retire_ids(self, row: FileRow) -> None:
        for file_id in (row.file_id, row.old_file_id):
            if file_id:
                self.manifest.ledger_set(file_id, RETIRE)

    def _move(self, moves: list[tuple[Observed, FileRow]], roots: dict[str, Root]) -> list:
        """Renames are attribute updates; those the remote refuses come back to be uploaded afresh."""
        again = []
        for obs, old in moves:
            attrs = self._attributes(obs, roots[obs.root])
            if not self._set_attributes(old, attrs):
                with self.manifest.transaction():
                    self.manifest.remove(old.root, old.path)
                    again.append((obs, self.manifest.put(replace(old, root=obs.root, path=obs.path))))
                continue
            with self.manifest.transaction():
                self.manifest.remove(old.root, old.path)
                self.manifest.put(_row_from(obs, old, state=INDEXED, attributes=json.dumps(attrs)))
        return again

    def _refresh(self, stale: list[tuple[Observed, FileRow]], roots: dict[str, Root]) -> None:
        """Same content, other attributes (a touched mtime, a new static value): update them in place."""
        for obs, row in stale:
            attrs = self._attributes(obs, roots[obs.root])
            if attrs != row.attrs() and self._set_attributes(row, attrs):
                self.manifest.update(row, attributes=json.dumps(attrs))

    def _set_attributes(self, row: FileRow, attrs: dict) -> bool:
        try:
            self.remote.update_attributes(row.vector_store_id, row.file_id, attrs)
        except AuthError:
            raise
        except RemoteError as exc:
            log.warning("%s: could not update attributes: %s", _show(row), exc)
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
        uploads: list,
        attach: list,
        attaching: list,
    ) -> bool:
        """Carry a half-done row on from its state; False when it stays failed (not retried)."""
        row = self.manifest.update(
            row,
            size=obs.size,
            mtime_ns=obs.mtime_ns,
            inode=obs.inode,
            hashed_at_ns=obs.hashed_at_ns or row.hashed_at_ns,
        )
        if row.state == FAILED:
            if not (options.retry_failed or (row.retryable and row.attempts < MAX_AUTO_RETRIES)):
                return False
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
        report.failures += outcome.failures
        report.kept_failed = outcome.kept_failed
        report.notes += outcome.notes
        report.still_indexing = outcome.still_indexing
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


def _first(read: Callable[[], tuple[dict[str, tuple], list[str]]]) -> dict[str, tuple]:
    return read()[0]


def _within(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(p == "" or path == p or path.startswith(p + "/") for p in prefixes)


def _show(item) -> str:
    return os.path.join(item.root, item.path)


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
