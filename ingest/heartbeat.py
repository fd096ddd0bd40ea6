"""The daemon's heartbeat file: written by `ingest watch` while it runs, read by `ingest status`,
which must not load the daemon (its watcher, engine and metrics) to read it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ingest.config import Settings


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


def write_heartbeat(path: Path, health: dict, stopped: bool = False) -> None:
    data = {
        "pid": os.getpid(),
        "heartbeat_at": time.time(),
        "stopped": stopped,
        **{k: v for k, v in health.items() if k != "last_report"},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
