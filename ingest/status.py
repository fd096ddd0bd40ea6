"""Read-only views: status of the stores and the manifest, and the listing of `ingest ls` (search.py searches)."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ingest import scan as scanning
from ingest.config import NO_CONFIG, Settings
from ingest.errors import ConfigError, UnknownStore
from ingest.manifest import INDEXED, Manifest
from ingest.mounts import is_network_fs
from ingest.observe import digest_context
from ingest.remote import profile as profiles
from ingest.remote.base import Remote, RemoteError

GIB = 1024**3
NO_STORE = "(not in a store: rejected or unreadable)"
PRICE_PER_GIB_DAY = 0.10  # after the first free GiB


def storage_cost_per_day(usage_bytes: int) -> float:
    return round(max(0.0, usage_bytes / GIB - 1.0) * PRICE_PER_GIB_DAY, 4)


def collect(
    manifest: Manifest, remote: Remote, backend: str, manifest_path: Path, settings: Settings
) -> dict[str, Any]:
    stores: dict[str, dict[str, Any]] = {}
    for store in manifest.stores():
        entry = stores.setdefault(
            store.name, {"name": store.name, "vector_store_ids": [], "files": {}, "usage_bytes": 0, "remote_status": []}
        )
        entry["vector_store_ids"].append(store.id)
        try:
            remote_store = remote.get_store(store.id)
            entry["usage_bytes"] += remote_store.usage_bytes
            entry["remote_status"].append(remote_store.status)
        except RemoteError as exc:
            entry["remote_status"].append(f"unknown ({exc})")
    for group in manifest.counts_by_store_state():
        name = group["store"] or NO_STORE
        entry = stores.setdefault(
            name, {"name": name, "vector_store_ids": [], "files": {}, "usage_bytes": 0, "remote_status": []}
        )
        if name == NO_STORE:
            entry["unplaced"] = True  # files turned away before a store was chosen: no store at all
        entry["files"][group["state"]] = entry["files"].get(group["state"], 0) + group["n"]
    known = manifest.server(remote.base_url)
    server = profiles.load(known) if known else None
    folders = feeding(settings, manifest)
    for entry in stores.values():
        entry["folders"] = folders.get(entry["name"], [])
        # 0 bytes for a store holding indexed files (llama-stack always says 0) is no figure: unknown, not free.
        if entry["usage_bytes"] == 0 and entry["files"].get(INDEXED):
            entry["usage_bytes"] = entry["cost_per_day_usd"] = None
        else:
            entry["cost_per_day_usd"] = storage_cost_per_day(entry["usage_bytes"])
    ignores = manifest.ignores()
    problems = [  # an acknowledged one (`ingest ignore`) is listed under "ignored" alone
        {"path": os.path.join(r.root, r.path), "state": r.state, "reason": r.reason, "error_code": r.error_code}
        for r in manifest.iter_problem_rows()
        if (r.root, r.path) not in ignores
    ]
    runs = [
        {
            "id": r["id"],
            "state": state,
            "command": r["command"],
            "started_at": r["started_at"],
            "finished_at": r["finished_at"],
            "exit_code": r["exit_code"],
            "counts": json.loads(r["counts"]) if r["counts"] else {},
            "interrupted": r.get("interrupted"),
            "error": r.get("error"),
        }
        for r, state in run_states(manifest.recent_runs(), manifest_path)
    ]
    return {
        "backend": backend,
        "server": {"base_url": remote.base_url, "profile": server.name, "describe": server.describe()}
        if server
        else None,
        "manifest": str(manifest_path),
        "config": settings.source if settings.source == NO_CONFIG else os.path.abspath(settings.source),
        "local_changes": local_changes(settings, manifest),
        "ignored": [
            {"path": os.path.join(root, path), "reason": how["reason"]} for (root, path), how in ignores.items()
        ],
        "stores": list(stores.values()),
        "problems": problems,
        "recent_runs": runs,
    }


def run_states(runs: list[dict[str, Any]], manifest_path: Path) -> list[tuple[dict[str, Any], str]]:
    """Each run (newest first) with "finished", "running", or "ended" (its process is gone and it never
    recorded an end: killed or crashed). Only the newest open run can be running, and only while a
    live process holds the manifest's lock."""
    from ingest.lock import ManifestLock

    holder = ManifestLock(manifest_path, "status").live_holder()
    out, newest_open = [], True
    for r in runs:
        if r["finished_at"] is not None:
            out.append((r, "finished"))
            continue
        out.append((r, "running" if newest_open and holder is not None else "ended"))
        newest_open = False
    return out


def feeding(settings: Settings, manifest: Manifest) -> dict[str, list[str]]:
    """Per store, the folders that send files to it: configured roots and the roots of its files."""
    out: dict[str, set[str]] = {}
    for store, roots in manifest.roots_by_store().items():
        out.setdefault(store, set()).update(roots)
    for root in settings.roots:
        out.setdefault(root.store, set()).add(root.key)
    return {store: sorted(roots) for store, roots in out.items()}


def local_changes(settings: Settings, manifest: Manifest) -> dict[str, int]:
    """Files new, changed or deleted since the last sync, by a stat pass only (nothing is hashed or
    read): the same walk and fingerprint comparison as a no-op sync."""
    counts = {"new": 0, "changed": 0, "deleted": 0, "unreachable_roots": 0}
    for root in settings.roots:
        network = is_network_fs(root.path)
        # A folder whose digest matches holds settled rows its files match: no row of it is read.
        digests = scanning.FolderDigests(manifest.folder_digests(root.key), digest_context(root.store, network))
        read: list[dict[str, tuple]] = []
        reading = functools.partial(_stats, read, manifest, root.key)
        result = scanning.scan(root, ("",), network, reading, digests=digests)
        known = read[0] if read else manifest.stats(root.key)
        if result.missing:
            counts["unreachable_roots"] += 1
            continue
        seen = {e.path for e in result.entries}
        counts["new"] += len(seen - known.keys())
        counts["changed"] += len(seen & known.keys())
        # A refused name (a symlink out of the root, a newline in it) is a problem, not an entry: it is
        # still there, and the next sync deletes nothing for it.
        refused = {p.path for p in result.problems}
        counts["deleted"] += len(known.keys() - seen - refused - set(result.calm))
    return counts


def _stats(read: list[dict[str, tuple]], manifest: Manifest, root: str, vouched: Mapping[str, int]) -> dict[str, tuple]:
    read.append(manifest.stats(root, vouched))  # kept for the count of deletions
    return read[0]


def listing(
    manifest: Manifest, roots: dict, path: Path | None, store: str | None, state: str | None
) -> list[dict[str, Any]]:
    """`ingest ls`: the files ingest knows, under PATH (a root, a folder in one, or a parent of roots)."""
    from ingest.folders import owner_of

    scopes: list[tuple[str | None, str]] = [(None, "")]
    if path is not None:
        owner = owner_of(path, roots)
        inside = [key for key, r in roots.items() if path in r.path.parents]
        if owner is not None:
            scopes = [(owner.key, path.relative_to(owner.path).as_posix() if owner.path != path else "")]
        elif inside:
            scopes = [(key, "") for key in sorted(inside)]
        else:
            raise ConfigError(f"{path}: ingest syncs no folder there")
    if store is not None and not manifest.stores(store):
        known = {s.name for s in manifest.stores()} | {
            g["store"] for g in manifest.counts_by_store_state() if g["store"]
        }
        if store not in known:
            raise UnknownStore.among(store, known)
    out = []
    for root, prefix in scopes:
        for row in manifest.listing(root, prefix, store, state):
            out.append(
                {
                    "path": os.path.join(row.root, row.path),
                    "store": row.store,
                    "state": row.state,
                    "file_id": row.file_id,
                    "size": row.size,
                    "synced_at": row.indexed_at or row.updated_at,
                    "reason": row.reason,
                }
            )
    return out
