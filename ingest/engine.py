"""The one composition point: scan → observe → plan → execute → record. `Ingest` calls it."""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ingest import scan as scanning
from ingest.config import Settings
from ingest.errors import Stopped, error_text, exit_code
from ingest.events import (
    ATTRIBUTES,
    LEFT_EMPTY,
    REBUILD_DUE,
    RENAME_DUE,
    RENAMED,
    Event,
    OnEvent,
    Report,
    StoreEvent,
    ignore,
)
from ingest.ignores import split as split_ignored
from ingest.interrupt import reason as stopped_by
from ingest.manifest import (
    FAILED,
    RETIRE,
    FileRow,
    Manifest,
)
from ingest.outcomes import Outcome, plan_events
from ingest.plan import GuardPolicy, Plan, RootScan, make_plan, retry_due
from ingest.rebuild import pending_rebuilds, rebuild
from ingest.relocate import empty_stores, pending_renames, rename
from ingest.remote.base import Remote
from ingest.remote.breaker import Breaker
from ingest.remote.profile import PROFILES, Profile
from ingest.stores import SoonProfile, Stores, known_profile, server_profile, server_profile_soon
from ingest.survey import Later, Survey
from ingest.sweep import sweep

if TYPE_CHECKING:
    from ingest.attach import Progress
    from ingest.indexing import Indexer

log = logging.getLogger("ingest")


@dataclass(frozen=True)
class Options:
    dry_run: bool = False
    allow_mass_delete: bool = False
    retry_failed: bool = False
    rehash: bool = False
    command: str = "sync"
    check_stores: bool = False  # ask the remote about every store, however recently it was confirmed


Scopes = Mapping[str, tuple[str, ...]]  # root key → relative prefixes to look at ("" = all of it)


class Engine:
    def __init__(
        self,
        settings: Settings,
        manifest: Manifest,
        remote: Remote,
        stop: threading.Event | None = None,
        on_event: OnEvent = ignore,
        clock: Callable[[], float] = time.time,
    ):
        self.settings, self.manifest, self.remote = settings, manifest, remote
        self.clock = clock
        self.profile: Profile = PROFILES["openai"]  # until the run finds out which server this is
        self.stop = stop or threading.Event()
        self.on_event = on_event
        self.survey = Survey(settings, manifest)
        # The remote's breaker, when it has one (OpenAI's): a LazyRemote carries it unbuilt.
        self.breaker: Breaker | None = getattr(remote, "breaker", None)
        self._report = Report()

    def emit(self, event: Event) -> None:
        self._report.events.append(event)
        self.on_event(event)

    def indexer(self, progress: Progress | None = None, stores: Stores | None = None) -> Indexer:
        from ingest.indexing import Indexer  # the upload path: a pass with nothing to do never imports it

        stores = stores or Stores(self.settings, self.manifest, self.remote, self.emit)
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
        if options.dry_run:  # the plan sees the bookkeeping the run would do first (a store renamed)
            with self.manifest.scratch():
                return self._sync(options, scopes, progress)
        return self._sync(options, scopes, progress)

    def _sync(self, options: Options, scopes: Scopes | None, progress: Progress | None) -> Report:
        started = time.monotonic()
        report = self._report = Report(dry_run=options.dry_run)
        run_id = None if options.dry_run else self.manifest.start_run(options.command)
        died = None
        error: str | None = None  # what the run died of, for `status`
        plan: Plan | None = None
        try:
            if scopes is None:
                # A store renamed in the configuration is renamed in place, not refilled.
                for old, new in pending_renames(self.settings, self.manifest):
                    if options.dry_run:
                        self.manifest.rename_store(old, new)
                    else:
                        rename(self.manifest, self.remote, old, new)
                    self.emit(StoreEvent(new, RENAME_DUE if options.dry_run else RENAMED, reason=old))
            profile = self._profile_source(options)
            stores = Stores(self.settings, self.manifest, self.remote, self.emit)
            # A pass with nothing to do makes no remote call: the stores are asked about only when
            # there is work for them, when they have not been confirmed for a while, or by a reindex.
            checked = not options.dry_run and (options.check_stores or stores.check_due())
            if checked:
                stores.check_all()
            removed = 0
            if not options.dry_run:
                # remote calls only for uploads whose reply never came
                removed = sweep(self.settings, self.manifest, self.remote)
                if scopes is None and pending_rebuilds(self.settings, self.manifest):  # not on every daemon pass
                    self.profile = profile()
                    rebuild(self.settings, self.manifest, self.remote, self.stop, self.emit, profile=self.profile)
            else:
                for store in pending_rebuilds(self.settings, self.manifest):
                    self.emit(StoreEvent(store.name, REBUILD_DUE, old_vector_store_id=store.id))
            plan, scans, later = self._plan(options, scopes)
            if not options.dry_run and not checked and self._remote_work(plan, later) and stores.check_all():
                plan, scans, later = self._plan(options, scopes)  # a store gone remotely sent its files back to pending
            report.counts = plan.counts()
            self._report_plan(plan, scans)
            if options.dry_run:
                report.planned = plan.describe()
                return report
            if not self.stop.is_set():
                wanted = plan.new_stores()
                if later is not None:
                    wanted[later.next_store()] += 1
                stores.reserve(wanted)  # the stores are made while the probe may still be out
                remote_work = self._remote_work(plan, later)
                if remote_work:  # with nothing to do, the server is not asked who it is
                    self.profile = profile()
                elif isinstance(profile, SoonProfile):
                    profile.keep_answer()  # a first run's probe, already sent
                if remote_work or plan.changes_rows():
                    from ingest.execute import Executor

                    indexer = self.indexer(progress, stores)
                    indexer.outcome.duplicates_removed += removed
                    executor = Executor(
                        self.settings, self.manifest, self.remote, self.survey, self.emit, self.profile, self.clock
                    )
                    try:
                        executor.apply(plan, options, indexer, later)
                    finally:
                        if later is not None:  # what the uploads found as they went, told and counted
                            found = later.plan()
                            self._report_plan(found, [])
                            plan.uploads += found.uploads
                            plan.rejected += found.rejected
                            plan.unreadable += found.unreadable
                            plan.unread = found.unread
                            report.counts = plan.counts()
                        self._fold(report, indexer.outcome)  # what was done, also when stopped part way
                else:  # nothing to record or send: the upload path is not even imported
                    self._fold(report, Outcome(duplicates_removed=removed))
                if scopes is None:
                    for name in empty_stores(self.settings, self.manifest):
                        self.emit(StoreEvent(name, LEFT_EMPTY))
            self._wind_down(report, plan)
        except Stopped:
            # A call the stop kept from being sent (a sweep, a store check or creation): the run winds
            # down as stopped, with what it did recorded; nothing was sent, so nothing is unknown.
            self._wind_down(report, plan)
        except BaseException as exc:
            died = exit_code(exc)  # the run ends here with an error message; its row must not read as a success
            error = error_text(exc)
            if isinstance(exc, KeyboardInterrupt):
                died, report.interrupted, error = 130, stopped_by(self.stop) or "SIGINT", None
            raise
        finally:
            report.seconds = time.monotonic() - started
            if self.breaker is not None:
                self.breaker.reset()  # a daemon's next pass tries the server again
            if run_id is not None:
                held = [e.shown for e in report.held]
                self.manifest.finish_run(
                    run_id, report.exit_code if died is None else died, report.counts, held, report.interrupted, error
                )
        return report

    def _wind_down(self, report: Report, plan: Plan | None) -> None:
        """A stopped run, or one the server's outage ended, says so, and what it left: the files of its plan
        not settled yet (not uploaded, not indexed, not moved) and the remote deletions still to make; the
        next run does them."""
        report.interrupted = stopped_by(self.stop)
        if report.interrupted and self.breaker is not None and self.breaker.ended_the_run():
            report.interrupted, report.unreachable = None, self.breaker.sentence()
        if not (report.interrupted or report.unreachable) or plan is None:
            return
        report.counts.update(
            left=plan.left(self.manifest.rows_at), remote_deletes_left=len(self.manifest.ledger(RETIRE))
        )

    def _profile_source(self, options: Options) -> Callable[[], Profile]:
        """Where the run's server profile comes from. A server not met before is identified while the
        folders are scanned (see server_profile_soon); but a manifest that has stores and no profile
        for this URL (kept before profiles were, or another URL for the same server) has it asked for
        only once the plan has remote work: a pass with nothing to do makes no remote call."""
        if options.dry_run:
            return lambda: self.profile
        if known_profile(self.manifest, self.remote, self.settings.server) is None and self.manifest.stores():
            return functools.partial(server_profile, self.manifest, self.remote, self.settings.server)
        return server_profile_soon(self.manifest, self.remote, self.settings.server)

    def _report_plan(self, plan: Plan, scans: list[RootScan]) -> None:
        """What the plan alone says (see plan_events), told."""
        events, news = plan_events(plan, scans)
        for event in events:
            self.emit(event)
        self._report.newly_rejected += news

    # observe -----------------------------------------------------------------------------------
    def _plan(self, options: Options, scopes: Scopes | None) -> tuple[Plan, list[RootScan], Later | None]:
        """The plan, and the new files of a scan with no row in its scope, when there are some to upload
        (see survey.Later): observed as the uploads ask for them, not here."""
        observed, problems, scans, quiet, ignored, looks = [], [], [], [], [], []
        rows: dict[tuple[str, str], FileRow] = {}
        ignores = self.manifest.ignores()
        roots = {r.key: r for r in self.settings.roots}
        if scopes is not None:
            scopes = self._with_retries(scopes, options)
        for root in self.settings.roots:
            prefixes = tuple(scopes.get(root.key, ())) if scopes is not None else ("",)
            if not prefixes:
                continue
            network = self.survey.network(root)
            # The common case is "nothing changed": the scan compares each folder's digest with the one
            # recorded, then each other file's stat with the settled rows as plain tuples, and full rows
            # are loaded only for what moved and for what is gone.
            digests = None if options.rehash else self.survey.digests(root)
            reading = self.survey.settled_for(root, digests)
            result = scanning.scan(
                root,
                prefixes,
                network,
                None if options.rehash else _first(reading),
                digests=digests,
                list_vouched=options.dry_run,  # only a dry run lists the unchanged files
            )
            settled, others = reading(result.vouched)
            if digests is not None and not options.dry_run:
                self.manifest.record_folder_digests(root.key, result.settled_folders(settled, others))
            fresh, calm, moved = self.survey.calm(root, result, settled)
            fresh, result.problems, skipped, lapsed = split_ignored(
                root.key, root.path, fresh, result.problems, ignores
            )
            ignored += [(root.key, p) for p in skipped]
            if lapsed and not options.dry_run:
                for path in lapsed:  # changed since it was acknowledged: looked at again
                    self.manifest.unignore(root.key, path)
            quiet.append((root.key, calm, result.calm_count - len(result.calm)))
            # A root not there has every settled row looked at: its deletions are held, each one named.
            unsure = list(settled) if options.rehash or result.missing else result.unsure
            known = self.manifest.rows_at(
                root.key, (p for p in itertools.chain(others, unsure, moved) if _within(p, prefixes))
            )
            rows.update((k, v) for k, v in known.items() if k[1] not in skipped)
            looks.append((root, fresh, result, prefixes == ("",)))
        later = None
        if not rows and not options.dry_run:
            later = Later(self.survey, [(root, fresh) for root, fresh, _, _ in looks], options.rehash)
            if later.more() == 0:  # nothing to upload: planned whole, as any other scan
                observed, problems, later = later.rejected, later.unreadable, None
        else:
            for root, fresh, result, _ in looks:
                for entry in fresh:
                    seen = self.survey.look(root, entry, rows.get((root.key, entry.path)), options.rehash)
                    if isinstance(seen, scanning.Problem):
                        result.problems.append(seen)
                    elif seen is not None:
                        observed.append(seen)
        for root, _, result, full in looks:
            problems += result.problems
            scans.append(
                RootScan(root.key, full, result.missing, result.has_errors, len(result.entries) + result.calm_count)
            )
        policy = GuardPolicy(
            self.settings.max_delete_fraction,
            self.settings.max_delete_floor,
            options.allow_mass_delete,
            options.command,
        )
        plan = make_plan(
            observed,
            problems,
            rows,
            scans,
            self.manifest.store_sizes,
            policy,
            lambda row: row.root in roots and not scanning.wanted(roots[row.root], row.path),
            lambda row: options.retry_failed or retry_due(row, self.clock()),
            lambda row: row.root in roots and os.path.lexists(roots[row.root].path / row.path),
            lambda obs, row: self.survey.attributes_due(roots[obs.root], obs, row),
        )
        plan.quiet, plan.ignored = quiet, ignored
        return plan, scans, later

    def _remote_work(self, plan: Plan, later: Later | None = None) -> bool:
        """Whether carrying the plan out may call the remote: something to upload (found already, or
        by `later`), move, resume or retire, or a file whose attributes are to be updated."""
        if later is not None or plan.uploads or plan.resumes or plan.moves or plan.transfers or plan.refreshes:
            return True
        return bool(plan.retirements() or self.manifest.ledger(RETIRE))

    def _with_retries(self, scopes: Scopes, options: Options) -> Scopes:
        """An incremental pass looks at the changed paths, and at the failures due another try: after an
        outage the daemon's next pass indexes them, with no change to the files needed."""
        wanted = {key: list(paths) for key, paths in scopes.items()}
        now = self.clock()
        for row in self.manifest.rows_in_states([FAILED]):
            if options.retry_failed or retry_due(row, now):
                wanted.setdefault(row.root, []).append(row.path)
        return {key: tuple(paths) for key, paths in wanted.items()}

    def _fold(self, report: Report, outcome: Outcome) -> None:
        # A file whose attribute update the remote refused (or the stop kept back) is left as it was.
        refreshed = len(report.of(ATTRIBUTES))
        report.counts.update(
            unchanged=report.counts.get("unchanged", 0) + report.counts.get("attributes", 0) - refreshed,
            attributes=refreshed,
            uploaded=outcome.uploaded,
            indexed=outcome.indexed,
            failed=len(report.failures),
            remote_deleted=outcome.deleted_remote,
            duplicates_removed=outcome.duplicates_removed,
        )


def _first(read: Callable[[Mapping[str, int]], tuple[dict[str, tuple], list[str]]]) -> scanning.SettledFor:
    return lambda vouched: read(vouched)[0]


def _within(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(p == "" or path == p or path.startswith(p + "/") for p in prefixes)
