"""`ingest watch` as a service: lock per pass, signals, heartbeat file, metrics and /healthz."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ingest.app import choose_backend, ensure_state_dir, make_remote
from ingest.config import Settings
from ingest.lock import LockBusy, ManifestLock
from ingest.manifest import Manifest
from ingest.sync import Engine, Options, Report
from ingest.watch import Watcher, WatchOptions

log = logging.getLogger("ingest.watch")
HEARTBEAT_EVERY = 2.0


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "ts": round(record.created, 3),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


@dataclass
class Metrics:
    registry: CollectorRegistry
    files: Gauge
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
            Counter("ingest_uploads", "Files uploaded", registry=r),
            Counter("ingest_failures", "Files that failed to upload or index", registry=r),
            Gauge("ingest_queue_depth", "Changed paths waiting to settle", registry=r),
            Gauge("ingest_last_success_timestamp_seconds", "Unix time of the last clean sync", registry=r),
        )


def heartbeat_path(settings: Settings) -> Path:
    return settings.state_dir / "daemon.json"


def read_heartbeat(settings: Settings) -> dict | None:
    """The daemon's last heartbeat, with whether its process is still alive."""
    try:
        data = json.loads(heartbeat_path(settings).read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(data["pid"]), 0)
        data["running"] = not data.get("stopped")
    except (OSError, KeyError, ValueError):
        data["running"] = False
    return data


def _write_heartbeat(path: Path, health: dict, stopped: bool = False) -> None:
    data = {
        "pid": os.getpid(),
        "heartbeat_at": time.time(),
        "stopped": stopped,
        **{k: v for k, v in health.items() if k != "last_report"},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _serve(port: int, metrics: Metrics, health: dict) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/metrics"):
                body, ctype, code = generate_latest(metrics.registry), CONTENT_TYPE_LATEST, 200
            elif self.path.startswith("/healthz"):
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

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def run(settings: Settings, options: WatchOptions, metrics_port: int | None = None) -> int:
    """Watch until SIGTERM/SIGINT; exit 0 after checkpointing what was in flight."""
    backend = choose_backend(settings)
    ensure_state_dir(settings.state_dir)
    remote = make_remote(settings, backend)
    stop = getattr(remote, "stop", None) or threading.Event()  # one event: SIGTERM also ends retry waits
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    metrics = Metrics.create()
    beat = heartbeat_path(settings)
    last_beat = [0.0]
    seen_states: set[str] = set()

    def heartbeat(health: dict) -> None:
        metrics.queue.set(health.get("queue", 0))
        if time.monotonic() - last_beat[0] >= HEARTBEAT_EVERY:
            last_beat[0] = time.monotonic()
            _write_heartbeat(beat, health)

    def run_sync(scopes) -> Report:
        lock = ManifestLock(backend.manifest, "watch")
        said = False
        while True:  # queue behind a sync or a cron reindex, but stay responsive to SIGTERM
            try:
                lock.acquire(wait=0.5)
                break
            except LockBusy as busy:
                if not said:
                    log.info("waiting for the manifest: %s", busy)
                    said = True
                if stop.is_set():
                    return Report()
        try:
            manifest = Manifest(backend.manifest)
            try:
                report = Engine(settings, manifest, remote, stop=stop).sync(
                    Options(command="watch" if scopes else "watch-full"), scopes
                )
                counts = {
                    g["state"]: g["n"] for g in manifest.db.query("select state, count(*) n from files group by state")
                }
                for state in set(counts) | seen_states:  # a state that emptied must read 0, not its old count
                    metrics.files.labels(state).set(counts.get(state, 0))
                seen_states.update(counts)
            finally:
                manifest.close()
        finally:
            lock.release()
        metrics.uploads.inc(report.counts.get("uploaded", 0))
        metrics.failures.inc(len(report.failures))
        if not report.failures:
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
        _write_heartbeat(beat, watcher.health, stopped=True)
    log.info("stopped")
    return 0
