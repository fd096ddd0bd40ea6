"""The daemon's heartbeat file: written by `ingest watch` while it runs, read by `ingest status`,
which must not load the daemon (its watcher, engine and metrics) to read it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ingest.config import Settings


def heartbeat_path(manifest: Path) -> Path:
    """Beside the backend's manifest: each backend's daemon has its own."""
    return manifest.parent / "daemon.json"


def read_heartbeat(settings: Settings, manifest: Path) -> dict | None:
    """The heartbeat of the daemon that keeps `manifest` in step, with whether its process is still alive."""
    # Before each backend had its own, every daemon wrote the state dir's: one written so, without
    # the manifest it names, is this backend's only if its process holds this manifest's daemon lock.
    for path in dict.fromkeys((heartbeat_path(manifest), settings.state_dir / "daemon.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if "manifest" in data and data["manifest"] != str(manifest):
            continue
        if "manifest" not in data and not _keeps(data.get("pid"), manifest):
            continue
        try:
            os.kill(int(data["pid"]), 0)
            data["running"] = not data.get("stopped")
        except (OSError, KeyError, ValueError):
            data["running"] = False
        return data
    return None


def _keeps(pid: object, manifest: Path) -> bool:
    from ingest.lock import ManifestLock

    return pid is not None and ManifestLock(Path(f"{manifest}.watch"), "watch").live_holder() == pid


def write_heartbeat(path: Path, manifest: Path, health: dict, stopped: bool = False) -> None:
    data = {
        "pid": os.getpid(),
        "manifest": str(manifest),
        "heartbeat_at": time.time(),
        "stopped": stopped,
        **{k: v for k, v in health.items() if k != "last_report"},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
