"""scan → Observed: what each file under a root is now (stat, hash, verdict, store), hashing and
judging only what the observe rule says may have changed."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from ingest import scan as scanning
from ingest.config import Root, Settings
from ingest.manifest import ERROR, REJECTED, FileRow, Manifest
from ingest.mounts import is_network_fs
from ingest.observe import digest_context, needs_hash
from ingest.plan import Observed, Plan, restat_due
from ingest.stores import attributes, route
from ingest.validate import Validator


class Survey:
    """scan → Observed: what each file under the roots is now (stat, hash, verdict, store)."""

    def __init__(self, settings: Settings, manifest: Manifest):
        self.settings, self.manifest = settings, manifest
        self.validator = Validator(settings.types, settings.max_size)
        self._network: dict[str, bool] = {}

    def network(self, root: Root) -> bool:
        return self._network.setdefault(root.key, is_network_fs(root.path))

    def store_rules(self, root: Root) -> tuple[bool, dict[str, bool]]:
        """Whether any store takes files by path, and which stores (of this root) set static attributes."""
        routed = any(spec.paths for spec in self.settings.stores)
        static = {
            name: bool(self.settings.store_spec(name).attributes)
            for name in {root.store, *(spec.name for spec in self.settings.stores)}
        }
        return routed, static

    def settled(self, root: Root) -> tuple[dict[str, tuple], list[str]]:
        """The root's rows a stat match may vouch for, and the paths of its other rows."""
        routed, static = self.store_rules(root)
        return self.manifest.settled(
            root.key, self.network(root), store=None if routed else root.store, attributes=any(static.values())
        )

    def digests(self, root: Root) -> scanning.FolderDigests | None:
        """The folder digests recorded for root, where they can speak for its rows: not where routes or
        static attributes are compared file by file (calm below)."""
        routed, static = self.store_rules(root)
        if routed or any(static.values()):
            return None
        context = digest_context(root.store, self.network(root))
        return scanning.FolderDigests(self.manifest.folder_digests(root.key), context)

    def settled_for(
        self, root: Root, digests: scanning.FolderDigests | None
    ) -> Callable[[Mapping[str, int]], tuple[dict[str, tuple], list[str]]]:
        """settled() outside the folders the walk vouched for, read once (later calls give the same).
        With no digest to compare, nothing is vouched for: read beside the walk (settled_beside)."""
        if digests is None or not digests.known:
            beside = self.settled_beside(root)
            return lambda vouched: beside()
        read: list[tuple[dict[str, tuple], list[str]]] = []

        def reading(vouched: Mapping[str, int]) -> tuple[dict[str, tuple], list[str]]:
            if not read:
                read.append(
                    self.manifest.settled(root.key, self.network(root), root.store, attributes=False, vouched=vouched)
                )
            return read[0]

        return reading

    def settled_beside(self, root: Root) -> Callable[[], tuple[dict[str, tuple], list[str]]]:
        """settled(), read while the caller walks the root: call the result for it."""
        routed, static = self.store_rules(root)
        return self.manifest.settled_beside(
            root.key, self.network(root), store=None if routed else root.store, attributes=any(static.values())
        )

    def calm(
        self, root: Root, result: scanning.ScanResult, settled: Mapping[str, tuple]
    ) -> tuple[list[scanning.Entry], list[str], list[str]]:
        """The scan's entries to look at, the paths left calm (their stat matched a settled row, and
        their store and static attributes are still what the configuration says), and the paths of
        those whose store or attributes moved: entries to look at too, whose rows are to be read."""
        routed, static = self.store_rules(root)
        if not routed and not any(static.values()):
            return result.entries, result.calm, []  # the store was matched in SQL: nothing else can differ
        fresh, calm, moved = list(result.entries), [], []
        for path in result.calm:
            known = settled[path]
            store = route(self.settings, root, path) if routed else root.store
            if known[3] != store or (static.get(store) and self.static_moved(store, known[4])):
                fresh.append(scanning.Entry(root.key, path, *known[:3]))  # the stat matched these
                moved.append(path)
            else:
                calm.append(path)
        return fresh, calm, moved

    def static_moved(self, store: str | None, attributes: str | None) -> bool:
        static = self.settings.store_spec(store or "").attributes
        if not static:
            return False
        current = json.loads(attributes) if attributes else {}
        return any(current.get(k) != v for k, v in static.items())

    def attributes(self, root: Root, obs: Observed) -> dict:
        """The attributes a file is attached with, as it is now."""
        return attributes(root, obs.path, obs.mtime_ns, obs.sha256 or "", self.settings.store_spec(obs.store))

    def attributes_due(self, root: Root, obs: Observed, row: FileRow) -> bool:
        """Whether a file of unchanged content has other attributes now than it was attached with: looked
        at only when its stat moved (a touch moves the mtime attribute) or its store's static values did."""
        if not (restat_due(obs, row) or self.static_moved(row.store, row.attributes)):
            return False
        return self.attributes(root, obs) != row.attrs()

    def look(
        self, root: Root, entry: scanning.Entry, row: FileRow | None, rehash: bool
    ) -> Observed | scanning.Problem | None:
        """observe(), where a file it cannot read is gone since the walk listed it (None, as the next
        scan would say) or unreadable now (a Problem: permissions, a share hiccup; an error, not a
        verdict on the file, so its indexed version stays and deletions are held)."""
        obs = self.observe(root, entry, row, rehash)
        if obs.ok or not obs.reason.startswith("cannot read"):
            return obs
        if not os.path.lexists(root.path / entry.path):
            return None
        return scanning.Problem(root.key, entry.path, obs.reason, True)

    def observe(self, root: Root, entry: scanning.Entry, row: FileRow | None, rehash: bool) -> Observed:
        store = route(self.settings, root, entry.path)
        full = root.path / entry.path
        sha, hashed_at = (row.sha256, row.hashed_at_ns) if row else (None, None)
        must_hash = (
            rehash
            or row is None
            or needs_hash(entry, row.size, row.mtime_ns, row.inode, row.hashed_at_ns, self.network(root))
        )
        seen = (root.key, entry.path, entry.size, entry.mtime_ns, entry.inode)
        data = None
        if must_hash:
            try:  # a small text file is read once, for its verdict and its hash
                hashed_at = time.time_ns()
                data = self.validator.read_small(full, entry.size)
            except OSError as exc:
                return Observed(*seen, None, None, "", False, f"cannot read: {exc.strerror or exc}", store)
        if must_hash or row is None or row.state in (REJECTED, ERROR):
            verdict = self.validator.check(full, entry.size, data)
            if not verdict.ok:
                return Observed(*seen, None, None, verdict.mime, False, verdict.reason, store)
            mime = verdict.mime
        else:
            mime = row.mime or ""
        if must_hash:
            try:
                if data is None:
                    hashed_at = time.time_ns()
                    sha = sha256_file(full)
                else:
                    import hashlib  # here: a pass with nothing to hash does not import it

                    sha = hashlib.sha256(data).hexdigest()
            except OSError as exc:
                return Observed(*seen, None, None, mime, False, f"cannot read: {exc.strerror or exc}", store)
        return Observed(*seen, hashed_at, sha, mime, True, "", store)


class Later:
    """The new files of a scan that loaded no row of its scope (a first sync, or a pass that finds only
    new files beside calm ones: no file is gone, so none can have moved), observed as
    the uploads ask for them: the first upload does not wait for the last file's hash and verdict.
    With no row a file could have moved from, each one that passes is an upload whatever the rest of
    the scan finds, so these lists are the plan make_plan would have made of them (see plan())."""

    def __init__(self, survey: Survey, fresh: list[tuple[Root, list[scanning.Entry]]], rehash: bool):
        self._survey, self._rehash = survey, rehash
        self._todo = ((root, entry) for root, entries in fresh for entry in entries)
        self._left = sum(len(entries) for _, entries in fresh)  # not observed yet
        self._ahead: Observed | None = None
        self.uploads: list[Observed] = []  # taken, in order
        self.rejected: list[Observed] = []
        self.unreadable: list[scanning.Problem] = []

    def peek(self) -> Observed | None:
        """The next file to upload, not taken yet; the files that fail on the way are set aside."""
        while self._ahead is None:
            item = next(self._todo, None)
            if item is None:
                return None
            self._left -= 1
            seen = self._survey.look(*item, None, self._rehash)
            if isinstance(seen, scanning.Problem):
                self.unreadable.append(seen)
            elif seen is not None and not seen.ok:
                self.rejected.append(seen)
            elif seen is not None:
                self._ahead = seen
        return self._ahead

    def __iter__(self) -> Iterator[Observed]:
        while (obs := self.peek()) is not None:
            self._ahead = None
            self.uploads.append(obs)
            yield obs

    def next_store(self) -> str:
        """The store of the next file to upload (there is one: see more())."""
        obs = self.peek()
        assert obs is not None
        return obs.store

    def more(self) -> int:
        """How many uploads may still come: 0 once none will."""
        return 0 if self.peek() is None else 1 + self._left

    def plan(self) -> Plan:
        """What was observed so far, as make_plan files it."""
        return Plan(
            uploads=[(obs, None) for obs in self.uploads],
            rejected=[(obs, None) for obs in self.rejected],
            unreadable=[(problem, None) for problem in self.unreadable],
            unread=self._left + (self._ahead is not None),
        )


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Stream the bytes; memory stays flat whatever the file size."""
    import hashlib  # here: a pass with nothing to hash (a no-op, a search) does not load OpenSSL

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
