"""The lost-reply sweep: an upload whose reply never came (a crash, a dropped connection) may have left
a file remotely that nothing knows of. The Files API offers only a name, a size and a creation time to
match on, so the window is kept to seconds on the server's own clock."""

from __future__ import annotations

import time

from ingest.config import Settings
from ingest.manifest import HEARTBEAT, STARTED, Manifest, Upload
from ingest.remote.base import MAX_RETRY_AFTER, Remote

SWEEP_WINDOW = 300  # with no upload yet to measure the server's clock by: the skew allowed


def sweep(settings: Settings, manifest: Manifest, remote: Remote) -> int:
    """Delete the remote copies uploads whose reply never came may have left; how many went. The
    window is the span between an upload's first try and the reply that came, on the server's clock."""
    suspects = manifest.ledger(STARTED) + manifest.ledger_suspects()
    if not suspects:
        return 0
    removed = 0
    known = manifest.ledger_ids() | manifest.referenced_ids()
    offset = manifest.clock_offset()
    windows = [(s, _window(s, offset, _latest(settings, manifest, s))) for s in suspects]
    for remote_file in remote.list_files():
        if remote_file.id in known:
            continue
        for s, (lo, hi) in windows:
            if (
                remote_file.filename == s.filename
                and remote_file.bytes == s.bytes
                and lo <= remote_file.created_at <= hi
            ):
                remote.delete_file(remote_file.id)
                removed += 1
                break
    with manifest.transaction():
        for s in suspects:
            manifest.ledger_resolved(s)
    return removed


def _latest(settings: Settings, manifest: Manifest, upload: Upload) -> float:
    """The latest moment (our clock) the upload call can still have been running: the last sign of
    life of the run that made it; with no run on record, the longest one call can last."""
    if upload.finished_at is not None:
        return upload.finished_at
    seen = manifest.last_alive(upload.started_at)
    if seen is not None:
        return min(time.time(), max(seen, upload.started_at) + 3 * HEARTBEAT)
    longest = max(1, settings.request_retries) * (settings.request_timeout + MAX_RETRY_AFTER)
    return min(time.time(), upload.started_at + longest)


def _window(upload: Upload, offset: float | None, now: float) -> tuple[float, float]:
    """When, on the server's clock, a lost copy of this upload can have been created; `now` is the
    latest moment the upload call can still have been running."""
    if upload.remote_created_at is not None and upload.finished_at is not None:
        # Copies come from earlier tries of the same upload: before its reply, after its first try.
        span = upload.finished_at - upload.started_at
        return upload.remote_created_at - span - 2, upload.remote_created_at + 1
    if offset is None:
        return upload.started_at - SWEEP_WINDOW, (upload.finished_at or now) + SWEEP_WINDOW
    return upload.started_at + offset - 3, (upload.finished_at or now) + offset + 3
