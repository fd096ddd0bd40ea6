"""What the embedded store answers about its stores, batches and store files: counted from their rows
as they stand. Nothing here indexes or writes (the store's calls that index do so first)."""

from __future__ import annotations

import json
import sqlite3

from ingest.remote.base import CANCELLED, COMPLETED, FAILED, IN_PROGRESS, Batch, NotFound, Store, StoreFile

STATUSES = (IN_PROGRESS, COMPLETED, FAILED, CANCELLED)
STORE_FILE_COLUMNS = "file_id, status, attributes, error_code, error_message, usage_bytes"


def require_store(db: sqlite3.Connection, store_id: str) -> tuple:
    """The store's row, or NotFound."""
    row = db.execute("SELECT * FROM stores WHERE id = ?", (store_id,)).fetchone()
    if row is None:
        raise NotFound(f"vector store {store_id} not found")
    return row


def store_of(db: sqlite3.Connection, store_id: str, now: float) -> Store:
    """The store with its file counts and usage (caller holds the lock)."""
    _, name, metadata, _, days, _, last_active = require_store(db, store_id)
    rows = db.execute(
        "SELECT status, COUNT(*), SUM(usage_bytes) FROM store_files WHERE store_id = ? GROUP BY status", (store_id,)
    ).fetchall()
    counts = {status: n for status, n, _ in rows}
    file_counts = {s: counts.get(s, 0) for s in STATUSES} | {"total": sum(counts.values())}
    if days is not None and now - last_active > days * 86400:
        status = "expired"
    else:  # like the API: in_progress while any of its files is being processed
        status = IN_PROGRESS if file_counts[IN_PROGRESS] else COMPLETED
    return Store(store_id, name, status, sum(u for _, _, u in rows), file_counts, json.loads(metadata))


def batch_of(db: sqlite3.Connection, store_id: str, batch_id: str) -> Batch:
    """The batch, counted from the current state of its files (one detached since: cancelled)."""
    counts = dict(
        db.execute(
            "SELECT COALESCE(sf.status, 'cancelled') AS st, COUNT(*) FROM batch_files bf"
            " LEFT JOIN store_files sf ON sf.store_id = ? AND sf.file_id = bf.file_id"
            " WHERE bf.batch_id = ? GROUP BY st",
            (store_id, batch_id),
        ).fetchall()
    )
    pending = counts.get(IN_PROGRESS, 0)
    # Indexing happens during polls, so the next poll is worth making soon.
    return Batch(
        batch_id,
        IN_PROGRESS if pending else COMPLETED,
        pending,
        counts.get(COMPLETED, 0),
        counts.get(FAILED, 0),
        counts.get(CANCELLED, 0),
        sum(counts.values()),
        100 if pending else None,
    )


def store_file(row: tuple) -> StoreFile:
    """A StoreFile from a row of STORE_FILE_COLUMNS."""
    file_id, status, attributes, code, message, usage = row
    return StoreFile(file_id, status, json.loads(attributes), code, message, usage)
