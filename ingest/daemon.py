"""`ingest watch` as a service: lock per pass, signals, heartbeat file, metrics and /healthz."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import TextIO

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import MetricsHandler

from ingest.api import Ingest
from ingest.backend import choose_backend, connect, ensure_state_dir, settings_for
from ingest.config import NO_CONFIG, Settings, WatchOptions
from ingest.engine import Scopes
from ingest.errors import USAGE, IngestError, LockBusy
from ingest.events import (
    FAILED,
    REJECTED,
    REPLACED,
    STORE_WARNINGS,
    UPLOADED,
    WARNINGS,
    Event,
    FileEvent,
    Report,
    StoreEvent,
)
from ingest.heartbeat import heartbeat_path, write_heartbeat
from ingest.lock import ManifestLock
from ingest.watch import Watcher

log = logging.getLogger("ingest.watch")
HEARTBEAT_EVERY = 2.0


class DaemonError(IngestError):
    """The daemon cannot start: another one has the manifest, or the metrics port is taken."""

    exit_code = USAGE  # so that systemd does not restart it every 10 s (RestartPreventExitStatus=2)


# The fields of an event that go into a JSON log line as fields of their own.
EVENT_FIELDS = ("path", "root", "action", "store", "file_id", "reason", "vector_store_id", "old_vector_store_id")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "event", None)
        if fields:
            line.update({k: v for k, v in fields.items() if k in EVENT_FIELDS or k == "kind"})
        return json.dumps(line)


def text_formatter(env: Mapping[str, str] | None = None, stream: TextIO | None = None) -> logging.Formatter:
    """The daemon's text log: each line with its local time, as a log file or a terminal needs, except
    where stderr is systemd's journal (JOURNAL_STREAM names it), which stamps every line itself."""
    env = os.environ if env is None else env
    stream = sys.stderr if stream is None else stream
    try:
        st = os.fstat(stream.fileno())
        journal = env.get("JOURNAL_STREAM", "") == f"{st.st_dev}:{st.st_ino}"
    except (OSError, ValueError, AttributeError):
        journal = False
    if journal:
        return logging.Formatter("%(message)s")
    return logging.Formatter("%(asctime)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")


def log_event(event: Event, repeat: bool = False) -> None:
    """One log line per event: failures, rejections, held deletions and lost stores at WARNING; a
    repeat (a rejection each rescan finds again) at DEBUG."""
    if isinstance(event, FileEvent):
        warn = event.action in WARNINGS
        text = f"{event.action} {event.shown}" + (f": {event.reason}" if event.reason else "")
    elif isinstance(event, StoreEvent):
        warn = event.action in STORE_WARNINGS
        text = event.describe()
    else:
        warn, text = False, event.describe()
    level = logging.DEBUG if repeat else logging.WARNING if warn else logging.INFO
    log.log(level, "%s", text, extra={"event": event.as_dict()})


@dataclass
class Metrics:
    registry: CollectorRegistry
    files: Gauge
    actions: Counter
    uploads: Counter
    failures: Counter
    queue: Gauge
    last_success: Gauge

    @classmethod
    def create(cls) -> Metrics:
        r = CollectorRegistry()
        return cls(
            r,
            Gauge("ingest_files", "Files in the manifest by state", ["state"], registry=r),
            Counter(
                "ingest_file_actions", "Actions on files, by action (the events of sync -v)", ["action"], registry=r
            ),
            Counter("ingest_uploads", "Files uploaded and indexed", registry=r),
            Counter(
                "ingest_failures",
                "Failures of a file to upload, index or be read (a file failing in each pass counts each time)",
                registry=r,
            ),
            Gauge("ingest_queue_depth", "Changed paths waiting to settle", registry=r),
            Gauge("ingest_last_success_timestamp_seconds", "Unix time of the last clean sync", registry=r),
        )

    def count(self, event: Event) -> None:
        if isinstance(event, FileEvent):
            self.actions.labels(event.action).inc()
            if event.action in (UPLOADED, REPLACED):
                self.uploads.inc()
            elif event.action == FAILED:
                self.failures.inc()


class EventLog:
    """The daemon's listener: a log line and the metrics for each event. A rejection is news once: each
    rescan finds the rejected file again, and that repeat goes to DEBUG until its reason changes."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self.rejected: dict[tuple[str, str], str] = {}

    def __call__(self, event: Event) -> None:
        repeat = False
        if isinstance(event, FileEvent) and event.action == REJECTED:
            repeat = self.rejected.get((event.root, event.path)) == event.reason
            self.rejected[(event.root, event.path)] = event.reason
        log_event(event, repeat)
        self.metrics.count(event)


def _serve(port: int, metrics: Metrics, health: dict) -> ThreadingHTTPServer:
    """prometheus_client's handler for /metrics, with /healthz beside it."""

    class Handler(MetricsHandler):
        registry = metrics.registry

        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                super().do_GET()
                return
            if self.path.startswith("/healthz"):
                ok = not health.get("root_missing") and health.get("last_success_at") is not None
                body = json.dumps({"ok": ok, **{k: v for k, v in health.items() if k != "last_report"}}).encode()
                ctype, code = "application/json", 200 if ok else 503
            else:
                body, ctype, code = b"not found\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    except OSError as exc:
        raise DaemonError(
            f"--metrics-port {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}); "
            "another program has it: choose another port"
        ) from None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


class ConfigFile:
    """The config file the daemon started with. The daemon keeps the settings it read at start; an
    edit of the file is said once (each time it changes again) so that its operator restarts it."""

    def __init__(self, source: str):
        self.path = None if source == NO_CONFIG else Path(os.path.abspath(source))  # named as found at start
        self._start = self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat() if self.path is not None else None
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size) if st is not None else None

    def changed(self) -> bool:
        """Whether the file differs from the one read at start (logged when it is news)."""
        if self.path is None:
            return False
        now = self._stamp()
        if now != self._seen:
            self._seen = now
            if now != self._start:
                what = "was removed" if now is None else "changed"
                log.warning(
                    "the config file %s %s since this daemon started; it goes on with the settings it started "
                    "with: restart it to apply the change (systemctl restart ingest-watch, or stop and start it)",
                    self.path,
                    what,
                )
            else:
                log.info("the config file %s is back as this daemon read it", self.path)
        return now != self._start


def run(
    paths: tuple[str, ...],
    config: str | None,
    backend: str,
    options: WatchOptions,
    metrics_port: int | None = None,
) -> int:
    """Watch until SIGTERM/SIGINT; exit 0 after checkpointing what was in flight."""
    settings = settings_for(paths, config, backend, "watch")
    chosen = choose_backend(settings)
    ensure_state_dir(settings.state_dir)
    # One daemon per manifest, for its whole life (the manifest lock is taken per pass, so that a
    # sync or a cron reindex can run between them: it cannot tell two daemons apart).
    instance = ManifestLock(Path(f"{chosen.manifest}.watch"), "watch")
    try:
        instance.acquire()
    except LockBusy:
        raise DaemonError(
            f"another 'ingest watch' (pid {instance.holder_pid() or 'unknown'}) already keeps {chosen.manifest} "
            "in step; stop it first, or give this one another state_dir"
        ) from None
    try:
        return _run(settings, chosen.manifest, options, metrics_port)
    finally:
        instance.release()


def _run(settings: Settings, manifest: Path, options: WatchOptions, metrics_port: int | None) -> int:
    remote = connect(settings)
    stop: threading.Event = getattr(remote, "stop", None) or threading.Event()  # SIGTERM also ends retry waits

    def on_signal(signum: int, _frame) -> None:
        stop.reason = signal.Signals(signum).name  # type: ignore[attr-defined]  # the pass it cuts short says so
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    metrics = Metrics.create()
    beat = heartbeat_path(manifest)
    last_beat = [0.0]
    seen_states: set[str] = set()

    config = ConfigFile(settings.source)

    def heartbeat(health: dict) -> None:
        metrics.queue.set(health.get("queue", 0))
        if time.monotonic() - last_beat[0] >= HEARTBEAT_EVERY:
            last_beat[0] = time.monotonic()
            health["config_changed"] = config.changed()
            write_heartbeat(beat, manifest, health)

    on_event = EventLog(metrics)

    def run_sync(scopes: Scopes | None) -> Report:
        said = False
        while True:  # queue behind a sync or a cron reindex, but stay responsive to SIGTERM
            try:
                with Ingest.open(
                    config=settings, command="watch", wait=0.5, remote=remote, on_event=on_event, stop=stop
                ) as ingest:
                    report = ingest.sync(scopes=scopes, command="watch" if scopes else "watch-full")
                    counts = ingest.counts()
                break
            except LockBusy as busy:
                if not said:
                    log.info("waiting for the manifest: %s", busy)
                    said = True
                if stop.is_set():
                    return Report()
        for state in set(counts) | seen_states:  # a state that emptied must read 0, not its old count
            metrics.files.labels(state).set(counts.get(state, 0))
        seen_states.update(counts)
        if not report.failures and not report.unreachable:
            metrics.last_success.set(time.time())
        return report

    watcher = Watcher(settings, run_sync, options, stop, heartbeat)
    server = _serve(metrics_port, metrics, watcher.health) if metrics_port is not None else None
    if server:
        # Port 0 asks the kernel for a free one: the heartbeat and /healthz say which.
        watcher.health["metrics_port"] = server.server_address[1]
        log.info("serving /metrics and /healthz on 127.0.0.1:%d", server.server_address[1])
    try:
        watcher.run()
    finally:
        if server:
            server.shutdown()
        write_heartbeat(beat, manifest, watcher.health, stopped=True)
    log.info("stopped")
    return 0
