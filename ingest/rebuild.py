"""Planned rebuilds: a store whose chunking or attribute schema changed is refilled beside the old one,
and the manifest switches only once the new store is complete, so search never sees it half-built."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from ingest.config import Root, Settings
from ingest.events import REBUILD_WAITING, REBUILDING, REBUILT, OnEvent, StoreEvent, ignore
from ingest.limits import BATCH_LIMIT
from ingest.manifest import ATTACHING, FAILED, INDEXED, UPLOADED, Manifest, StoreRow
from ingest.remote.base import COMPLETED, IN_PROGRESS, AttachItem, NotFound, Remote, Unsupported
from ingest.remote.profile import PROFILES, Profile
from ingest.singles import Limit, attach_each
from ingest.stores import BUILDING, attributes, create_store, fingerprint

log = logging.getLogger("ingest")


def pending_rebuilds(settings: Settings, manifest: Manifest) -> list[StoreRow]:
    """Stores whose [[stores]] entry now asks for other chunking or attributes. A store the
    configuration does not name is left as it is: a run without the config file (started from
    another folder, or a zero-config `ingest sync ./x`) must not rebuild what it knows nothing of."""
    configured = {spec.name for spec in settings.stores}
    return [
        s
        for s in manifest.stores()
        if s.name in configured and s.fingerprint != fingerprint(settings.store_spec(s.name))
    ]


def rebuild(
    settings: Settings,
    manifest: Manifest,
    remote: Remote,
    stop: threading.Event,
    emit: OnEvent = ignore,
    timeout: float | None = None,
    profile: Profile | None = None,
) -> None:
    """Run every rebuild due. Resumable: state lives in the stores table."""
    for old in pending_rebuilds(settings, manifest):
        spec = settings.store_spec(old.name)
        new = next((s for s in manifest.stores(old.name, status=BUILDING) if s.replaces == old.id), None)
        if new is None:
            new = create_store(manifest, remote, spec, old.shard, BUILDING, replaces=old.id)
            emit(StoreEvent(old.name, REBUILDING, new.id, old.id))
        rows = [r for r in manifest.rows_in_store(old.id) if r.state == INDEXED and r.file_id]
        roots = {r.key: r for r in settings.roots}
        wanted = {}
        for row in rows:
            root = roots.get(row.root) or Root(Path(row.root), old.name)
            wanted[row.file_id] = attributes(root, row.path, row.mtime_ns or 0, row.sha256 or "", spec)
        failed = _fill(remote, new.id, wanted, spec.chunking, stop, timeout or settings.index_timeout, profile)
        if failed is None:
            emit(StoreEvent(old.name, REBUILD_WAITING, new.id, old.id))
            continue
        with manifest.transaction():
            for row in rows:
                changes: dict[str, Any] = {"vector_store_id": new.id, "attributes": json.dumps(wanted[row.file_id])}
                if row.file_id in failed:  # one bad file must not block the switch: it is reported instead
                    changes.update(state=FAILED, retryable=1, reason="indexing failed in the rebuilt store")
                manifest.update(row, **changes)
                manifest.ledger_set(row.known_file_id, "live", new.id)
            for row in manifest.rows_in_store(old.id):  # half-done files follow to the new store
                manifest.update(
                    row, vector_store_id=new.id, state=UPLOADED if row.state == ATTACHING else row.state, batch_id=None
                )
            manifest.set_store_status(new.id, "active")
            manifest.set_store_status(old.id, "retired")
        remote.delete_store(old.id)  # the files stay: they are attached to the new store now
        emit(StoreEvent(old.name, REBUILT, new.id, old.id))


def _fill(
    remote: Remote,
    store_id: str,
    wanted: dict,
    chunking,
    stop: threading.Event,
    timeout: float,
    profile: Profile | None = None,
) -> set[str] | None:
    """Attach what the new store lacks and wait until every file has settled there.

    Returns the ids that failed there (they are retried once here), or None when not done in time.
    """
    present = {sf.file_id: sf.status for sf in remote.list_store_files(store_id)}
    missing = [fid for fid in wanted if present.get(fid) not in (COMPLETED, IN_PROGRESS)]
    for fid in missing:
        if fid in present:  # failed there: some servers ignore a second attach of a file they hold
            remote.detach(store_id, fid)
    items = [AttachItem(fid, wanted[fid], chunking) for fid in missing]
    each = profile is not None and profile.per_file_batches is False
    for start in range(0, 0 if each else len(items), BATCH_LIMIT):
        try:
            remote.attach_batch(store_id, items[start : start + BATCH_LIMIT])
        except Unsupported:
            each = True
            items = items[start:]
            break
    if each:
        server = profile or PROFILES["openai-compatible"]
        for _ in attach_each(remote, store_id, items, Limit(server.attach_concurrency, server.attach_max), stop):
            pass  # what each one came to is read from the store below, like a batch's
    # Wait on the store's counts (one small request), not on a listing of every file in it; list
    # once they say nothing is in progress. From 1 s, slower as it goes, like the SDK's poll helpers.
    deadline, delay = time.monotonic() + timeout, 1.0
    # A server indexes on its own while we wait; the embedded store only when asked (its reads are reads).
    index = getattr(remote, "index_pending", None) if remote.kind == "local" else None
    while not stop.is_set():
        try:
            if index is not None:
                index(store_id)
            if not remote.get_store(store_id).file_counts.get(IN_PROGRESS):
                statuses = {sf.file_id: sf.status for sf in remote.list_store_files(store_id)}
                if all(statuses.get(fid) not in (IN_PROGRESS, None) for fid in wanted):
                    return {fid for fid in wanted if statuses.get(fid) != COMPLETED}
        except NotFound:
            return None
        if time.monotonic() > deadline:
            return None
        stop.wait(delay)
        delay = min(delay * 1.5, 10.0)
    return None
