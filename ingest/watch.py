"""watchdog glue: record events, wait for files to settle, run the sync engine on the dirty paths."""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from ingest.config import Root, Settings, WatchOptions
from ingest.events import FAILED, Report
from ingest.mounts import NETWORK_FS, filesystem_type
from ingest.poll import StatPoller
from ingest.remote.base import AuthError, RemoteError
from ingest.scan import walk_rules, wanted
from ingest.walk import threads_for

log = logging.getLogger("ingest.watch")
RunSync = Callable[[dict[str, tuple[str, ...]] | None], Report]  # None: a full run of every root


class Recorder(FileSystemEventHandler):
    """Runs on the observer's thread: only notes which paths moved, then returns."""

    def __init__(self, root: Root, dirty: DirtySet):
        self.root, self.dirty = root, dirty

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw:
                path = os.fsdecode(raw)
                rel = os.path.relpath(path, self.root.path).replace(os.sep, "/")
                if not rel.startswith("..") and rel != ".":
                    self.dirty.add(self.root.key, rel)


@dataclass
class _Pending:
    last_event: float
    fingerprint: tuple | None = None


@dataclass
class DirtySet:
    """Paths with recent events, keyed by root; a path is ready once it has been quiet for `settle`."""

    clock: Callable[[], float] = time.monotonic
    _items: dict[tuple[str, str], _Pending] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, root: str, rel: str, seen_at: float | None = None, fingerprint: tuple | None = None) -> None:
        """A path moved. A poller tells when it saw the path and its (size, mtime_ns) then: the quiet
        period counts from that moment, and any change since starts it again."""
        with self._lock:
            self._items[(root, rel)] = _Pending(self.clock() if seen_at is None else seen_at, fingerprint)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def take_ready(self, settle: float) -> dict[str, set[str]]:
        """Paths with no event and no change of size or mtime for `settle` seconds."""
        now, ready = self.clock(), dict[str, set[str]]()
        with self._lock:
            quiet = []
            for key, item in self._items.items():
                fingerprint = _stat(Path(key[0]) / key[1])
                if item.fingerprint is not None and fingerprint != item.fingerprint:
                    item.last_event = now  # still being written: the quiet period starts again
                item.fingerprint = fingerprint
                if now - item.last_event >= settle:
                    quiet.append(key)
            # A folder is scanned whole: it waits while a file below it is still being written,
            # or that file would be uploaded half-done through its folder's event.
            busy = {
                (root, rel.rsplit("/", n)[0])
                for root, rel in set(self._items) - set(quiet)
                for n in range(1, rel.count("/") + 1)
            }
            for key in quiet:
                if key not in busy:
                    ready.setdefault(key[0], set()).add(key[1])
                    del self._items[key]
        return ready

    def put_back(self, scopes: dict[str, set[str]]) -> None:
        for root, paths in scopes.items():
            for rel in paths:
                self.add(root, rel)


class _OverflowAlarm(logging.Handler):
    """watchdog rebuilds its watches after an inotify overflow but tells no handler: its warning is the sign."""

    def __init__(self, flag: threading.Event):
        super().__init__(logging.WARNING)
        self.flag = flag

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.flag.set()


def _stat(path: Path) -> tuple:
    try:
        st = path.stat()
        return (st.st_size, st.st_mtime_ns)
    except OSError:
        return ("gone",)


class Watcher:
    def __init__(
        self,
        settings: Settings,
        run_sync: RunSync,
        options: WatchOptions,
        stop: threading.Event,
        on_heartbeat: Callable[[dict], None] | None = None,
    ):
        self.settings, self.run_sync, self.options, self.stop = settings, run_sync, options, stop
        self.dirty = DirtySet()
        self.on_heartbeat = on_heartbeat or (lambda state: None)
        self.observers: list = []
        self.health: dict[str, Any] = {
            "started_at": time.time(),
            "last_success_at": None,
            "last_error": None,
            "runs": 0,
            "failures": 0,  # files failing now, each counted once however many passes it failed in
            "failed_passes": 0,  # passes that failed, or had a file fail
            "queue": 0,
            "mode": {},
        }
        self._devices: dict[str, tuple[int | None, bool]] = {}  # root → (st_dev, was a mount point)
        self._missing: set[str] = set()
        self._overflowed = threading.Event()
        self._backoff = 0.0
        self._failing: dict[tuple[str, str], str] = {}  # (root, path) → why, until a pass sees it otherwise

    # observers ---------------------------------------------------------------------------------
    def _start_observers(self) -> None:
        self._stop_observers()
        for root in self.settings.roots:
            if not root.path.is_dir():
                if root.key not in self._missing:
                    log.warning("root %s is missing or not mounted; waiting for it, no deletions", root.path)
                    self._missing.add(root.key)  # known missing: not reported again as vanished
                continue
            fstype = filesystem_type(root.path)
            network = fstype in NETWORK_FS
            polling = self.options.force_polling or network
            if polling:
                poller = StatPoller(
                    root,
                    functools.partial(self.dirty.add, root.key),
                    self.options.poll_interval,
                    threads_for(fstype, network),
                    *walk_rules(root),
                )
                poller.start()
                self.observers.append((root.key, poller))
            else:
                observer = Observer()
                observer.schedule(Recorder(root, self.dirty), str(root.path), recursive=True)
                observer.start()
                self.observers.append((root.key, observer))
            self.health["mode"][root.key] = "polling" if polling else "events"
            self._devices[root.key] = (_device(root.path), os.path.ismount(root.path))
            log.info("watching %s (%s)", root.path, "polling" if polling else "native events")

    def _stop_observers(self) -> None:
        for _, observer in self.observers:
            observer.stop()
        for _, observer in self.observers:
            observer.join(timeout=5)
        self.observers = []

    def _check_roots(self) -> set[str]:
        """The roots that vanished or were unmounted: nothing runs on them (so nothing is deleted)
        until they are back; the others go on."""
        missing, remounted = [], []
        for root in self.settings.roots:
            device = _device(root.path)
            known, was_mount = self._devices.get(root.key, (None, False))
            if device is None or (device != known and was_mount and not os.path.ismount(root.path)):
                missing.append(root)
            elif known is not None and device != known:
                # Mounted after we started watching, or back with a new device number: watch that.
                remounted.append(root)
        for root in missing:
            if root.key not in self._missing:
                log.warning("root %s vanished or was unmounted; no deletions, waiting for it", root.path)
        gone = {root.key for root in missing}
        returned = sorted((self._missing - gone) | {root.key for root in remounted})
        self._missing = gone
        self.health["root_missing"] = missing[0].key if missing else None
        self.health["roots_missing"] = sorted(gone)
        if returned:
            log.warning("root %s is back; rescanning everything", ", ".join(returned))
            self._start_observers()
            self._full_due = 0.0
        return gone

    # the loop ----------------------------------------------------------------------------------
    def run(self) -> None:
        alarm, watchdog_log = _OverflowAlarm(self._overflowed), logging.getLogger("watchdog.observers")
        watchdog_log.addHandler(alarm)
        if watchdog_log.getEffectiveLevel() > logging.WARNING:
            watchdog_log.setLevel(logging.WARNING)
        self._start_observers()
        self._full_due = 0.0  # a full sync first, with the same engine as `ingest sync`
        next_run = 0.0
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if any(not obs.is_alive() for _, obs in self.observers):
                    log.warning("a file watcher stopped (overflow or error); restarting it and rescanning")
                    self._start_observers()
                    self._full_due = now
                if self._overflowed.is_set():
                    self._overflowed.clear()
                    log.warning("the kernel dropped file events (inotify overflow); rescanning everything")
                    self._full_due = now
                self.health["queue"] = len(self.dirty)
                self.on_heartbeat(self.health)
                missing = self._check_roots() if now >= next_run else set()
                if now >= next_run and len(missing) < len(self.settings.roots):
                    if now >= self._full_due:
                        present = (
                            None
                            if not missing
                            else {root.key: {""} for root in self.settings.roots if root.key not in missing}
                        )
                        if self._run(present, "full sync"):
                            self._full_due = now + self.options.rescan_interval
                        next_run = time.monotonic() + self._backoff
                    else:
                        ready = self.dirty.take_ready(self.options.settle)
                        self.dirty.put_back({root: paths for root, paths in ready.items() if root in missing})
                        ready = {
                            root: {p for p in paths if _wanted(self.settings, root, p)}
                            for root, paths in ready.items()
                            if root not in missing
                        }
                        ready = {root: paths for root, paths in ready.items() if paths}
                        if ready and not self._run(ready):
                            self.dirty.put_back(ready)
                            next_run = time.monotonic() + self._backoff
                self.stop.wait(self.options.tick)
        finally:
            watchdog_log.removeHandler(alarm)
            self._stop_observers()
            self.health["queue"] = len(self.dirty)
            self.on_heartbeat(self.health)

    def _run(self, scopes: dict[str, set[str]] | None, what: str = "") -> bool:
        what = what or ("full sync" if scopes is None else f"{sum(len(p) for p in scopes.values())} changed paths")
        try:
            report = self.run_sync({k: tuple(sorted(v)) for k, v in scopes.items()} if scopes else None)
            if self.stop.is_set() and report.counts == {}:
                return False  # stopped while queued for the lock: nothing ran, nothing succeeded
        except AuthError:
            raise
        except RemoteError as exc:
            return self._failed(what, str(exc))
        if report.unreachable:  # its files are left as they were, for the next pass: none failed
            left = report.counts.get("left")
            said = "" if left is None else f"; {left} file{'' if left == 1 else 's'} left for the next pass"
            return self._failed(what, report.unreachable + said)
        self._backoff = 0.0
        self.health["runs"] += 1
        self.health["last_report"] = report.as_dict()["counts"]
        self._tally(report, None if scopes is None else {root for root, paths in scopes.items() if "" in paths})
        if report.failures:
            self.health["failed_passes"] += 1
            failed = len({(e.root, e.path) for e in report.failures})
            self.health["last_error"] = f"{failed} file{'' if failed == 1 else 's'} failed"
        else:
            self.health["last_success_at"] = time.time()
        log.info("%s: %s", what, json.dumps(report.counts))
        return True

    def _failed(self, what: str, why: str) -> bool:
        """A pass that could not reach the server, or whose remote call failed: said once, tried again later."""
        self._backoff = min(300.0, max(2.0, self._backoff * 2))
        self.health["last_error"] = why
        self.health["failed_passes"] += 1
        log.warning("%s failed: %s; retrying in %.0f s", what, why, self._backoff)
        return False

    def _tally(self, report: Report, whole: set[str] | None) -> None:
        """The files failing now: a file failing pass after pass is one failure, and it is over once a
        pass tells of it otherwise, or a pass over its whole root does not find it failing (whole:
        the roots this pass saw whole; None, all of them)."""
        for key in [k for k in self._failing if whole is None or k[0] in whole]:
            del self._failing[key]
        for event in report.files:
            if event.action == FAILED:
                self._failing[(event.root, event.path)] = event.reason
            else:
                self._failing.pop((event.root, event.path), None)
        self.health["failures"] = len(self._failing)


def _wanted(settings: Settings, root_key: str, rel: str) -> bool:
    root = next(r for r in settings.roots if r.key == root_key)
    # Folders have no extension to judge; files must pass the same filter as a scan would apply.
    return (root.path / rel).is_dir() or wanted(root, rel) or not (root.path / rel).exists()


def _device(path: Path) -> int | None:
    try:
        return path.stat().st_dev if path.is_dir() else None
    except OSError:
        return None
