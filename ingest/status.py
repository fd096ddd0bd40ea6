"""Read-only views: status of the stores and the manifest, and search across stores."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ingest.errors import UnknownStore as UnknownStore
from ingest.manifest import Manifest
from ingest.remote.base import Remote, RemoteError

GIB = 1024**3
NO_STORE = "(not in a store: rejected or unreadable)"
PRICE_PER_GIB_DAY = 0.10  # after the first free GiB


def storage_cost_per_day(usage_bytes: int) -> float:
    return round(max(0.0, usage_bytes / GIB - 1.0) * PRICE_PER_GIB_DAY, 4)


def collect(manifest: Manifest, remote: Remote, backend: str, manifest_path: Path) -> dict[str, Any]:
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
        entry["files"][group["state"]] = entry["files"].get(group["state"], 0) + group["n"]
    for entry in stores.values():
        entry["cost_per_day_usd"] = storage_cost_per_day(entry["usage_bytes"])
    problems = [
        {"path": os.path.join(r.root, r.path), "state": r.state, "reason": r.reason, "error_code": r.error_code}
        for r in manifest.iter_problem_rows()
    ]
    runs = [
        {
            "id": r["id"],
            "command": r["command"],
            "started_at": r["started_at"],
            "finished_at": r["finished_at"],
            "exit_code": r["exit_code"],
            "counts": json.loads(r["counts"]) if r["counts"] else {},
        }
        for r in manifest.recent_runs()
    ]
    return {
        "backend": backend,
        "manifest": str(manifest_path),
        "stores": list(stores.values()),
        "problems": problems,
        "recent_runs": runs,
    }


def search_stores(
    manifest: Manifest,
    remote: Remote,
    query: str,
    store_name: str | None,
    filters: Mapping[str, Any] | None,
    max_results: int,
) -> list[dict[str, Any]]:
    """Search every vector store of the named logical store (or all), merged by score."""
    stores = manifest.stores(store_name) if store_name else manifest.stores()
    if store_name and not stores:
        known = sorted({s.name for s in manifest.stores()})
        raise UnknownStore(f"no store named {store_name!r}; the stores are: {', '.join(known) or 'none yet'}")
    by_file = {}
    for row in manifest.rows().values():
        for file_id in (row.file_id, row.old_file_id):
            if file_id:
                by_file[file_id] = os.path.join(row.root, row.path)
    hits: list[dict[str, Any]] = []
    for store in stores:
        for hit in remote.search(store.id, query, filters, max_results):
            hits.append(
                {
                    "path": by_file.get(hit.file_id, hit.attributes.get("path", hit.filename)),
                    "score": round(hit.score, 4),
                    "store": store.name,
                    "file_id": hit.file_id,
                    "attributes": dict(hit.attributes),
                    "text": hit.text,
                }
            )
    hits.sort(key=lambda h: -h["score"])
    best: dict[str, dict[str, Any]] = {}
    for found in hits:  # one line per document: its best chunk
        best.setdefault(found["path"], found)
    return list(best.values())[:max_results]
