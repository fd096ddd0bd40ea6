"""The front door: `Ingest.open()` turns settings into a backend, a lock, the manifest and a remote, and
offers one method per operation. The CLI's commands and the daemon's passes all come through here."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.backend import Backend, choose_backend, connect, ensure_state_dir, restricted, settings_for
from ingest.config import NO_CONFIG, Root, Settings, StoreSpec, default_store
from ingest.errors import ConfigError
from ingest.lock import ManifestLock
from ingest.manifest import Manifest
from ingest.remote.base import Remote

if TYPE_CHECKING:
    from ingest.engine import Engine, Scopes
    from ingest.events import OnEvent, Report
    from ingest.indexing import Progress
    from ingest.repair import Repairs
    from ingest.verify import Findings

log = logging.getLogger("ingest")


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
        # A root named with settings of its own (sync --store, --exclude) keeps them.
        roots = tuple(
            Root(r.path, **known[r.key]) if r.key in known and r == Root(r.path, default_store(r.path)) else r
            for r in settings.roots
        )
    if settings.source != NO_CONFIG or settings.stores or any(r.key not in known for r in roots):
        return replace(settings, roots=roots)  # [[stores]] given (a file, or Settings built in Python) are used alone
    specs = tuple(StoreSpec(**{**spec, "paths": tuple(spec["paths"])}) for spec in manifest.remembered_store_specs())
    return replace(settings, roots=roots, stores=specs)


class Ingest:
    """An open manifest and its remote. Use `Ingest.open()`; every method is one operation.

    `settings` are completed from the manifest (the folders and [[stores]] entries it remembers,
    see remembered()) when first asked for: a search over every store needs none of it.

    >>> with Ingest.open(["docs"]) as ingest:      # doctest: +SKIP
    ...     report = ingest.sync()
    """

    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        manifest: Manifest,
        remote: Remote,
        on_event: OnEvent | None = None,
        stop: threading.Event | None = None,
        configured: Settings | None = None,
        named: tuple[Path, ...] = (),
    ):
        self.backend, self.manifest, self.remote = backend, manifest, remote
        self._given = settings
        self._settings: Settings | None = None
        self.on_event = on_event
        self.stop = stop or threading.Event()
        self._engine: Engine | None = None
        # The configuration before the PATHs named restricted it, and those PATHs: a sync over a folder
        # inside a known root, or a parent of known roots, is worked out from both (ingest.folders).
        self.configured = configured or settings
        self.named = named

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = remembered(self._given, self.manifest)
        return self._settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        self._settings = settings

    @classmethod
    @contextmanager
    def open(
        cls,
        paths: Iterable[str | os.PathLike[str]] = (),
        *,
        config: str | os.PathLike[str] | Settings | None = None,
        backend: str = "auto",
        wait: float = 0,
        command: str = "sync",
        lock: bool = True,
        remote: Remote | None = None,
        on_event: OnEvent | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[Ingest]:
        """Resolve the settings (config file or Settings, environment, PATHs, the folders the manifest
        remembers), take the manifest's lock (waiting up to `wait` seconds; negative: for ever; not
        taken with lock=False, for read-only views), open the manifest and the remote. `backend`
        "auto" keeps the config's choice; "local" or "openai" overrides it."""
        configured = settings_for((), config, backend, "open")
        settings = restricted(configured, paths, command)
        chosen = choose_backend(settings)
        ensure_state_dir(settings.state_dir)
        guard = ManifestLock(chosen.manifest, command)
        if lock:
            guard.acquire(wait)
        try:
            manifest = Manifest(chosen.manifest)
            own = remote is None
            try:
                remote = remote or connect(settings, chosen, stop=stop)
                named = tuple(Path(p) for p in paths)
                # A remote with a stop of its own (OpenAIRemote, LocalRemote) stops with the run: a Ctrl-C
                # or SIGTERM ends its retry waits and its indexing, and nothing more is sent, as in the daemon.
                stop = stop or getattr(remote, "stop", None)
                yield cls(settings, chosen, manifest, remote, on_event, stop, configured, named)
            finally:
                if own and remote is not None and hasattr(remote, "close"):
                    remote.close()
                manifest.close()
        finally:
            guard.release()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._engine_for(self.settings)
        return self._engine

    def _engine_for(self, settings: Settings) -> Engine:
        from ingest.engine import Engine
        from ingest.events import ignore

        return Engine(settings, self.manifest, self.remote, stop=self.stop, on_event=self.on_event or ignore)

    def sync(
        self,
        *,
        dry_run: bool = False,
        allow_mass_delete: bool = False,
        scopes: Scopes | None = None,
        command: str = "sync",
        progress: Progress | None = None,
        store: str | None = None,
        exclude: tuple[str, ...] = (),
    ) -> Report:
        """Scan, plan and apply: upload what is new or changed, move what moved, delete what is gone.
        scopes (root key → relative paths) limits the run to those paths, as the daemon's passes do.
        A folder named inside a known root syncs that part of it; a parent of known roots takes their
        files over; store sends the folders named to that store; exclude leaves globs out."""
        from ingest.engine import Options
        from ingest.events import FOLDERS, Note
        from ingest.folders import adopt, readmit, remembered_excludes, target, unconfigured

        options = Options(dry_run=dry_run, allow_mass_delete=allow_mass_delete, command=command)
        typos = not command.startswith("watch")  # the daemon waits for a folder not there yet
        if scopes is not None or not (self.named or store or exclude or self.configured.roots):
            if not dry_run and scopes is None:  # not on every incremental pass of the daemon
                remember(self.settings, self.manifest)
            return self.engine.sync(options, scopes, progress=progress)
        with self.manifest.scratch() if dry_run else nullcontext():  # a dry run keeps nothing
            goal = target(self.configured, self.manifest, list(self.named), store, exclude, typos)  # raises first
            notes = readmit(self.configured, self.manifest, list(self.named))
            if notes:
                goal = target(self.configured, self.manifest, list(self.named), store, exclude, typos)
            settings = remembered(goal.settings, self.manifest)
            notes += remembered_excludes(self.configured, settings, exclude)
            engine = self._engine_for(settings)
            # planned (a dry run) as if the inner roots' files were taken over
            adopt(self.manifest, goal.adoptions)
            if goal.scopes is None and not dry_run:
                remember(settings, self.manifest)
            report = engine.sync(options, goal.scopes, progress=progress)
            if goal.scopes is None and not self.named:
                notes += unconfigured(self.configured, self.manifest)
        for note in (Note(FOLDERS, n) for n in notes):
            report.events.append(note)
            if self.on_event:
                self.on_event(note)
        return report

    def forget(self, paths: Iterable[str | os.PathLike[str]], *, dry_run: bool = False, keep_store: bool = False):
        """Stop syncing folders: retire the remote files ingest made for them, drop their records, and
        delete a store of ingest's they leave empty (unless keep_store)."""
        from ingest.folders import known
        from ingest.forget import forget, resolve

        folders = resolve([Path(p) for p in paths], set(known(self.configured, self.manifest, thorough=True)))
        return forget(self.engine, folders, dry_run, keep_store, self.configured)

    def ignore(self, paths: Iterable[str | os.PathLike[str]], *, undo: bool = False):
        """Acknowledge files with a permanent problem (or, undo, look at them again)."""
        from ingest.folders import known
        from ingest.ignores import ignore

        return ignore(
            self.manifest, set(known(self.configured, self.manifest, thorough=True)), [Path(p) for p in paths], undo
        )

    def ls(
        self, path: str | os.PathLike[str] | None = None, *, store: str | None = None, state: str | None = None
    ) -> list[dict[str, Any]]:
        """The files ingest knows (under path): store, state, file id, size, last sync and reason."""
        from ingest.folders import known
        from ingest.status import listing

        where = Path(os.path.abspath(path)) if path is not None else None
        return listing(self.manifest, known(self.configured, self.manifest, thorough=True), where, store, state)

    def rename_store(self, old: str, new: str) -> list[str]:
        """Rename a logical store and its vector stores in place."""
        from ingest.relocate import rename

        notes = rename(self.manifest, self.remote, old, new)
        for i, root in enumerate(self.configured.roots):
            if root.store == old:
                notes.append(f"{self.configured.source}: roots[{i}].store still says {old!r}: change it to {new!r}")
        return notes

    def remove_store(self, name: str) -> list[str]:
        """Delete an empty store of ingest's (one a config change left behind)."""
        from ingest.relocate import remove

        return remove(self.manifest, self.remote, name, self.settings)

    def verify(self) -> Findings:
        """Compare local files, the manifest and the remote; name every drift (read-only)."""
        from ingest.verify import verify

        return verify(self.engine)

    def reindex(
        self,
        *,
        rehash: bool = False,
        retry_failed: bool = False,
        dry_run: bool = False,
        allow_mass_delete: bool = False,
    ) -> Repairs:
        """Repair every drift verify finds, then a full sync."""
        from ingest.repair import reindex

        if allow_mass_delete:
            self.settings = replace(self.settings, max_delete_fraction=1.0)
            self._engine = None
        if not dry_run:
            remember(self.settings, self.manifest)
        return reindex(self.engine, rehash, retry_failed, dry_run)

    def gc(self, *, dry_run: bool = False) -> list[str]:
        """Delete remote files this tool created and nothing references; never any other file."""
        from ingest.repair import gc

        return gc(self.engine, dry_run)

    def status(self) -> dict[str, Any]:
        """Files by state per store, storage cost, recent runs, every problem file and the daemon."""
        from ingest.heartbeat import read_heartbeat
        from ingest.status import collect

        data = collect(self.manifest, self.remote, self.backend.kind, self.backend.manifest, self.settings)
        data["daemon"] = read_heartbeat(self.settings, self.backend.manifest)
        return data

    def search(
        self,
        query: str,
        *,
        store: str | None = None,
        filters: Mapping[str, Any] | None = None,
        max_results: int = 5,
    ) -> list[dict[str, Any]]:
        """The best chunk of each matching document, best first, across the stores (or the one named)."""
        from ingest.search import filter_schema, search_stores

        if filters:
            from ingest.remote.filters import check_filter
            from ingest.stores import ATTRIBUTE_HINTS

            try:
                filters = check_filter(filters, filter_schema(self.settings, self.manifest), ATTRIBUTE_HINTS)
            except ValueError as exc:
                raise ConfigError(f"--filter: {exc}") from None
        return search_stores(self.manifest, self.remote, query, store, filters, max_results)

    def counts(self) -> dict[str, int]:
        """Files in the manifest by state."""
        out: dict[str, int] = {}
        for group in self.manifest.counts_by_store_state():
            out[group["state"]] = out.get(group["state"], 0) + group["n"]
        return out


def sync(
    *paths: str | os.PathLike[str],
    config: str | os.PathLike[str] | Settings | None = None,
    backend: str = "auto",
    dry_run: bool = False,
    on_event: OnEvent | None = None,
) -> Report:
    """Sync folders (or the configured roots) into their vector stores: `ingest.sync("docs")`."""
    with Ingest.open(paths, config=config, backend=backend, on_event=on_event) as ingest:
        return ingest.sync(dry_run=dry_run)
