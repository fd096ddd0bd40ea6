"""The SDK's replies as ingest's own values: what the rest of ingest sees of a store, a batch, a store file."""

from __future__ import annotations

from ingest.remote.base import Batch, Store, StoreFile


def poll_after(headers) -> int | None:
    value = headers.get("openai-poll-after-ms")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def as_store(vs) -> Store:
    counts = vs.file_counts
    return Store(
        vs.id,
        vs.name or "",
        vs.status,
        vs.usage_bytes or 0,
        {k: getattr(counts, k) for k in ("in_progress", "completed", "failed", "cancelled", "total")},
        dict(vs.metadata or {}),
    )


def as_batch(b, poll_after_ms: int | None) -> Batch:
    c = b.file_counts
    return Batch(b.id, b.status, c.in_progress, c.completed, c.failed, c.cancelled, c.total, poll_after_ms)


def as_store_file(f) -> StoreFile:
    err = f.last_error
    return StoreFile(
        f.id,
        f.status,
        dict(f.attributes or {}),
        err.code if err else None,
        err.message if err else None,
        f.usage_bytes or 0,
    )
