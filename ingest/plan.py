"""Pure: (what the scan saw, what the manifest holds) → what to do. No I/O."""

from __future__ import annotations

import os
import shlex
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ingest.manifest import ACTIVE_STATES, ERROR, FAILED, INDEXED, REJECTED, FileRow
from ingest.scan import Problem

MAX_AUTO_RETRIES = 5  # retryable failures are tried again by later runs this many times, then need --retry-failed
RETRY_BASE, RETRY_CAP = 30.0, 3600.0  # seconds: the wait before a run tries a failed file again doubles from here


def retry_due(row: FileRow, now: float) -> bool:
    """A retryable failure is tried by the next run at once, then after waits that double: an outage
    over by then costs nothing, and a daemon passing every few seconds does not spend the tries."""
    wait = 0.0 if row.attempts < 2 else min(RETRY_CAP, RETRY_BASE * 2 ** (row.attempts - 2))
    return bool(row.retryable) and row.attempts < MAX_AUTO_RETRIES and (row.updated_at or 0.0) + wait <= now


@dataclass(frozen=True)
class Observed:
    """A file as this run sees it: stat, hash and verdict."""

    root: str
    path: str
    size: int
    mtime_ns: int
    inode: int
    hashed_at_ns: int | None
    sha256: str | None
    mime: str
    ok: bool
    reason: str
    store: str


def restat_due(obs: Observed, row: FileRow) -> bool:
    """An unchanged file whose row takes this run's stat (the same content, touched or hashed again)."""
    return (row.size, row.mtime_ns, row.inode, row.hashed_at_ns) != (
        obs.size,
        obs.mtime_ns,
        obs.inode,
        obs.hashed_at_ns or row.hashed_at_ns,
    )


@dataclass(frozen=True)
class RootScan:
    """What the planner needs to know about one root's scan."""

    root: str
    full: bool  # the whole root was scanned, not a few dirty paths
    missing: bool
    has_errors: bool
    entries: int


@dataclass(frozen=True)
class GuardPolicy:
    max_fraction: float = 0.2
    floor: int = 5
    allow_mass_delete: bool = False
    command: str = "sync"  # the command planning: what it is told to run to let held deletions go

    @property
    def lets_all_go(self) -> bool:
        """--allow-mass-delete, or a configuration that lets any share of a store go."""
        return self.allow_mass_delete or self.max_fraction >= 1.0

    def lift(self, root: str) -> str:
        """What lets the deletions held in root go: the command's own --allow-mass-delete, or (the
        daemon and verify have none) a sync of the root beside them."""
        if self.command in ("sync", "reindex"):
            return "run again with --allow-mass-delete"
        if self.command.startswith("watch"):
            return f"run `ingest sync {shlex.quote(root)} --allow-mass-delete --wait` beside the daemon"
        return f"run `ingest sync {shlex.quote(root)} --allow-mass-delete`"


ROOT_EMPTY = "the root is empty; is the share mounted?"


def all_excluded(lift: str) -> str:
    return (
        "every file of the root is left out by its include/exclude rules, so its remote copy is kept: nothing "
        f"was removed ({lift} to remove the copies of the files left out, or change the excludes)"
    )


@dataclass
class Plan:
    uploads: list[tuple[Observed, FileRow | None]] = field(default_factory=list)  # new or changed
    resumes: list[tuple[Observed, FileRow]] = field(default_factory=list)  # half-done, same content
    # Failed before with the same content and not due another try (refused for good, or its tries
    # spent): reported again, left alone until the file changes or --retry-failed.
    kept_failed: list[tuple[Observed, FileRow]] = field(default_factory=list)
    moves: list[tuple[Observed, FileRow]] = field(default_factory=list)
    # Same bytes, another store: attached there with the file id it has, then detached from the old one.
    transfers: list[tuple[Observed, FileRow]] = field(default_factory=list)
    unchanged: list[tuple[Observed, FileRow]] = field(default_factory=list)
    # Same content, other attributes than it was attached with (a touched mtime, a new static value, a
    # new root): updated in place, a remote call each.
    refreshes: list[tuple[Observed, FileRow]] = field(default_factory=list)
    rejected: list[tuple[Observed, FileRow | None]] = field(default_factory=list)
    refused: list[tuple[Problem, FileRow | None]] = field(default_factory=list)  # FIFOs, symlinks out…
    unreadable: list[tuple[Problem, FileRow | None]] = field(default_factory=list)
    deletes: list[FileRow] = field(default_factory=list)
    excluded: list[FileRow] = field(default_factory=list)  # still there, but the configuration leaves them out
    ignored: list[tuple[str, str]] = field(default_factory=list)  # acknowledged by `ingest ignore`: left alone
    held: list[tuple[FileRow, str]] = field(default_factory=list)
    # Unchanged by stat fingerprint, no row loaded: (root, its paths, its files counted but not listed),
    # a tuple a root rather than a file.
    quiet: list[tuple[str, list[str], int]] = field(default_factory=list)
    mass_held: dict[str, int] = field(default_factory=dict)  # store → deletions held as too large a share of it
    # New files of a first sync still unread when its uploads ended (a stop: see survey.Later): found,
    # new and left for the next run, judged by none.
    unread: int = 0

    def new_stores(self, failed_moves: Sequence[tuple[Observed, FileRow]] = ()) -> Counter[str]:
        """Per store, the files of the plan (and the moves the remote refused) not in it yet: what
        Stores.reserve creates stores for."""
        return Counter(
            obs.store
            for obs, prior in [*self.uploads, *self.resumes, *failed_moves, *self.transfers]
            if prior is None or not prior.vector_store_id or prior.store != obs.store
        )

    def changes_rows(self) -> bool:
        """Whether carrying the plan out writes the manifest or tells of a file, remote calls aside
        (see Engine._remote_work): a failure told again, a stat to record, a rejection, a deletion."""
        return bool(
            self.kept_failed or self.rejected or self.refused or self.unreadable or self.deletes or self.excluded
        ) or any(restat_due(obs, row) for obs, row in [*self.unchanged, *self.refreshes])

    @property
    def quiet_count(self) -> int:
        return sum(len(paths) + unlisted for _, paths, unlisted in self.quiet)

    def counts(self) -> dict[str, int]:
        changed = sum(1 for _, row in self.uploads if row is not None and row.file_id)
        return {
            "scanned": len(self.uploads)
            + len(self.resumes)
            + len(self.kept_failed)
            + len(self.moves)
            + len(self.transfers)
            + len(self.unchanged)
            + len(self.refreshes)
            + len(self.rejected)
            + len(self.refused)  # seen and turned away: a bad name, a FIFO (an unreadable folder is no file)
            + len(self.ignored)
            + self.quiet_count
            + self.unread,
            "new": len(self.uploads) - changed + self.unread,
            "changed": changed,
            "resumed": len(self.resumes),
            "moved": len(self.moves),
            "moved_store": len(self.transfers),
            "attributes": len(self.refreshes),
            "deleted": len(self.deletes),
            "excluded": len(self.excluded),
            "ignored": len(self.ignored),
            "unchanged": len(self.unchanged) + self.quiet_count,
            "rejected": len(self.rejected) + len(self.refused),
            "unreadable": len(self.unreadable),
            "held": len(self.held),
        }

    def left(self, rows_at: Callable[[str, list[str]], Mapping[tuple[str, str], FileRow]]) -> int:
        """Of the files this plan uploads, resumes or moves, those whose rows (as rows_at reads them
        now) are not settled, and those not read yet: what a stopped run leaves for the next one."""
        todo: dict[str, list[str]] = defaultdict(list)
        for obs, _ in [*self.uploads, *self.resumes, *self.moves, *self.transfers]:
            todo[obs.root].append(obs.path)
        left = self.unread
        for root, paths in todo.items():
            rows = rows_at(root, paths)
            left += sum(1 for p in paths if (row := rows.get((root, p))) is None or row.state in ACTIVE_STATES)
        return left

    def describe(self) -> dict[str, list[str]]:
        """What a dry run lists: each kind of file of the plan by its root and path."""
        return {
            "new": [_shown(o) for o, r in self.uploads if r is None or not r.file_id],
            "changed": [_shown(o) for o, r in self.uploads if r is not None and r.file_id],
            "moved": [f"{_shown(r)} -> {o.path}" for o, r in self.moves],
            "moved_store": [f"{_shown(o)}: {r.store} -> {o.store}" for o, r in self.transfers],
            "attributes": [_shown(o) for o, _ in self.refreshes],
            "deleted": [_shown(r) for r in self.deletes],
            "excluded": [_shown(r) for r in self.excluded],
            "ignored": [os.path.join(r, p) for r, p in self.ignored],
            "unchanged": [_shown(o) for o, _ in self.unchanged]
            + [os.path.join(r, p) for r, paths, _ in self.quiet for p in paths],
            "rejected": [_shown(o) for o, _ in self.rejected] + [_shown(p) for p, _ in self.refused],
            "resumed": [_shown(o) for o, r in self.resumes if r.state != FAILED],
            "retry_failed": [_shown(o) for o, r in self.resumes if r.state == FAILED],  # a --json key since before
            "kept_failed": [_shown(o) for o, _ in self.kept_failed],
            "held_back": [_shown(r) for r, _ in self.held],
        }

    def retirements(self) -> list[FileRow]:
        """Rows whose remote file must go: deleted locally, or now rejected or refused."""
        gone = list(self.deletes) + list(self.excluded)
        gone += [row for _, row in self.rejected if row is not None and row.file_id]
        gone += [row for _, row in self.refused if row is not None and row.file_id]
        return gone


def make_plan(
    observed: list[Observed],
    problems: list[Problem],
    rows: dict[tuple[str, str], FileRow],
    scans: list[RootScan],
    store_sizes: Callable[[], Mapping[str, int]],
    policy: GuardPolicy,
    excluded: Callable[[FileRow], bool] = lambda row: False,
    retry: Callable[[FileRow], bool] = lambda row: True,
    present: Callable[[FileRow], bool] = lambda row: False,
    attributes_due: Callable[[Observed, FileRow], bool] = lambda obs, row: False,
) -> Plan:
    """rows holds only the manifest rows inside the scanned scope; store_sizes() counts files per
    store (asked only when there is something to delete); excluded(row) says whether a row the scan
    did not see is left out by the configuration (rather than deleted); retry(row) whether a failed
    row with unchanged content is tried again in this run; present(row) whether its file is still on
    disk (asked only of excluded rows of a root whose scan found nothing); attributes_due(obs, row)
    whether an unchanged file's remote attributes are out of date."""
    plan = Plan()
    seen: set[tuple[str, str]] = set()
    fresh: list[Observed] = []
    for obs in observed:
        key = (obs.root, obs.path)
        seen.add(key)
        row = rows.get(key)
        if not obs.ok:
            plan.rejected.append((obs, row))
        elif row is None or (row.file_id is None and row.state in (REJECTED, ERROR)):
            fresh.append(obs)
        elif row.sha256 != obs.sha256:
            plan.uploads.append((obs, row))
        elif row.store != obs.store:
            settled = row.state == INDEXED and row.file_id and not row.old_file_id and not row.old_vector_store_id
            (plan.transfers if settled else plan.uploads).append((obs, row))
        elif row.state == INDEXED and row.file_id and not row.old_file_id and not row.old_vector_store_id:
            (plan.refreshes if attributes_due(obs, row) else plan.unchanged).append((obs, row))
        elif row.state == FAILED and not retry(row):
            plan.kept_failed.append((obs, row))
        elif (
            row.state in ACTIVE_STATES
            or row.state in (FAILED, ERROR, REJECTED)
            or row.old_file_id
            or row.old_vector_store_id  # still in the store it moved from (a detach that failed): left now
        ):
            plan.resumes.append((obs, row))
        else:
            (plan.refreshes if attributes_due(obs, row) else plan.unchanged).append((obs, row))
    for problem in problems:
        key = (problem.root, problem.path)
        seen.add(key)
        (plan.unreadable if problem.is_error else plan.refused).append((problem, rows.get(key)))

    gone = [row for key, row in rows.items() if key not in seen]
    # A vanished path whose bytes reappear elsewhere in the same store is a move, not a delete + upload.
    by_content: dict[tuple[str | None, str | None], list[FileRow]] = defaultdict(list)
    trusted = {s.root for s in scans if not s.missing and not s.has_errors}
    for row in gone:
        if row.file_id and row.state == INDEXED and not row.old_file_id and row.root in trusted:
            by_content[(row.sha256, row.store)].append(row)
    moved_from: set[tuple[str, str]] = set()
    for obs in fresh:
        candidates = by_content.get((obs.sha256, obs.store))
        if candidates:
            old = candidates.pop(0)
            moved_from.add((old.root, old.path))
            plan.moves.append((obs, old))
        else:
            plan.uploads.append((obs, None))
    deletes = [row for row in gone if (row.root, row.path) not in moved_from]
    _guard(plan, deletes, scans, store_sizes, policy, excluded, present)
    plan.excluded = [row for row in plan.deletes if excluded(row)]
    plan.deletes = [row for row in plan.deletes if not excluded(row)]
    return plan


def _guard(
    plan: Plan,
    deletes: list[FileRow],
    scans: list[RootScan],
    store_sizes: Callable[[], Mapping[str, int]],
    policy: GuardPolicy,
    excluded: Callable[[FileRow], bool],
    present: Callable[[FileRow], bool],
) -> None:
    """Hold deletions (and exclusions: the remote copy goes all the same) back when the scan cannot
    be trusted, or when too much of a store would go."""
    by_root = {s.root: s for s in scans}
    remaining: list[FileRow] = []
    # A root whose scan found nothing looks like an unmounted share, unless a file the rules leave out
    # is still there: then the rules emptied it, and that is held as what it is.
    left_out: dict[str, bool] = {}
    for row in deletes:
        scan = by_root.get(row.root)
        if row.file_id is None and row.old_file_id is None:
            remaining.append(row)  # nothing remote to delete: only a manifest row to forget
        elif scan is None or scan.missing:
            plan.held.append((row, "the root is missing or not mounted"))
        elif scan.has_errors:
            plan.held.append((row, "the scan of this root had errors"))
        elif scan.full and scan.entries == 0:
            if row.root not in left_out:
                left_out[row.root] = any(r.root == row.root and excluded(r) and present(r) for r in deletes)
            if not left_out[row.root]:
                plan.held.append((row, ROOT_EMPTY))
            elif excluded(row) and not policy.lets_all_go:
                plan.held.append((row, all_excluded(policy.lift(row.root))))
            else:
                remaining.append(row)
        else:
            remaining.append(row)
    if not policy.allow_mass_delete:
        # A file that turned invalid loses its remote copy too: count it, or a validator gone wrong
        # (a libmagic upgrade) could empty a store unguarded.
        invalid = [(obs, row) for obs, row in plan.rejected if row is not None and row.file_id]
        per_store = Counter(row.store for row in remaining if row.file_id)
        per_store.update(row.store for _, row in invalid)
        sizes = store_sizes() if any(n > policy.floor for n in per_store.values()) else {}
        over = {
            store
            for store, n in per_store.items()
            if n > policy.floor and n > policy.max_fraction * sizes.get(store or "", 0)
        }
        for row in list(remaining):
            if row.store in over and row.file_id:
                remaining.remove(row)
                plan.mass_held[row.store or ""] = plan.mass_held.get(row.store or "", 0) + 1
                plan.held.append(
                    (
                        row,
                        ("excluded by the configuration, but " if excluded(row) else "")
                        + f"more than {policy.max_fraction:.0%} of store {row.store!r} "
                        f"would be deleted; {policy.lift(row.root)} if intended",
                    )
                )
        for obs, row in invalid:
            if row.store in over:
                plan.rejected.remove((obs, row))
                plan.mass_held[row.store or ""] = plan.mass_held.get(row.store or "", 0) + 1
                plan.held.append(
                    (
                        row,
                        f"now rejected ({obs.reason}), but more than "
                        f"{policy.max_fraction:.0%} of store {row.store!r} would go; kept",
                    )
                )
    plan.deletes = remaining


def _shown(item: Observed | FileRow | Problem) -> str:
    return os.path.join(item.root, item.path)
