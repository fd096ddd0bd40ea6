"""Each backend's daemon has its own heartbeat; one from before that is shown only for its own backend."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ingest.config import Settings
from ingest.heartbeat import heartbeat_path, read_heartbeat, write_heartbeat
from ingest.lock import ManifestLock


def test_each_backend_reads_its_own_daemons_heartbeat(tmp_path):
    settings = Settings(state_dir=tmp_path)
    local, openai = tmp_path / "local" / "manifest.db", tmp_path / "manifest.db"
    local.parent.mkdir()
    write_heartbeat(heartbeat_path(local), local, {"queue": 3})
    assert read_heartbeat(settings, local)["queue"] == 3
    assert read_heartbeat(settings, openai) is None, "the embedded store's daemon is not the OpenAI backend's"
    write_heartbeat(heartbeat_path(openai), openai, {"queue": 5})
    assert (read_heartbeat(settings, local)["queue"], read_heartbeat(settings, openai)["queue"]) == (3, 5)


def test_a_heartbeat_from_before_is_shown_for_the_backend_whose_daemon_wrote_it(tmp_path):
    settings = Settings(state_dir=tmp_path)
    local, openai = tmp_path / "local" / "manifest.db", tmp_path / "manifest.db"
    local.parent.mkdir()
    # As a daemon of the embedded store started before the upgrade writes it: the state dir's, unnamed.
    (tmp_path / "daemon.json").write_text(json.dumps({"pid": os.getpid(), "heartbeat_at": 1.0, "queue": 7}))
    assert read_heartbeat(settings, openai) is None and read_heartbeat(settings, local) is None
    with ManifestLock(Path(f"{local}.watch"), "watch").acquire():  # what that daemon holds while it runs
        assert read_heartbeat(settings, openai) is None
        shown = read_heartbeat(settings, local)
        assert shown is not None and (shown["queue"], shown["running"]) == (7, True)
