"""The embedded store's indexing: claim pending attachments, prepare them, swap their chunks in.

It runs in the caller's thread, for about a work budget per call (at least one file), so a poll of
a batch or a file both makes progress and answers. Any in_progress row is pending work: a file a
crash left in_progress is indexed by a later call. Budget left once the pending files are done goes
to the store's chunks that have no vector yet, so polls fill them in over time.

The run's stop (Ctrl-C, SIGTERM) ends a call between groups of files, or within a group between two
of the model's forward passes (vectors.py): the files not saved yet stay in_progress, and the next
run indexes them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, closing
from pathlib import Path

from ingest.remote.base import COMPLETED, FAILED, Stopped
from ingest.remote.local.prepare import Job, Prepared, Preparer
from ingest.remote.local.vectors import title_of


class Indexer:
    """Indexes a store's in_progress files on the store's connection, under the store's lock."""

    def __init__(
        self,
        db: sqlite3.Connection,
        lock: threading.RLock,
        tx: Callable[[], AbstractContextManager[sqlite3.Connection]],
        blobs: Path,
        preparer: Preparer,
        budget_s: float,
        encode: Callable[[Sequence[str]], list[bytes | None]] = lambda texts: [None] * len(texts),
        fill: Callable[[str, Callable[[], bool]], int] = lambda store_id, done: 0,
        stop: threading.Event | None = None,
    ):
        self._db = db
        self._lock = lock
        self._tx = tx
        self._blobs = blobs
        self._preparer = preparer
        self._budget = budget_s
        self._encode = encode
        self._fill = fill
        self._stop = stop or threading.Event()
        self._claimed: set[tuple[str, str]] = set()

    def work(
        self, store_id: str, *, batch_id: str | None = None, file_id: str | None = None, vectors: bool = True
    ) -> None:
        """Index pending files of a store (or of one batch, or one file) for about the budget, then,
        with `vectors`, embed the store's chunks that have none until the budget is spent."""
        deadline = time.monotonic() + self._budget
        sql = (
            "SELECT sf.file_id, sf.gen, COALESCE(sf.chunking, s.chunking), f.filename, f.bytes FROM store_files sf"
            " JOIN stores s ON s.id = sf.store_id JOIN files f ON f.id = sf.file_id"
            " WHERE sf.store_id = ? AND sf.status = 'in_progress'"
        )
        args: list = [store_id]
        if batch_id is not None:
            sql += " AND sf.file_id IN (SELECT file_id FROM batch_files WHERE batch_id = ?)"
            args.append(batch_id)
        if file_id is not None:
            sql += " AND sf.file_id = ?"
            args.append(file_id)
        with self._lock:
            # Files another thread is indexing right now are left to it.
            rows = [
                r for r in self._db.execute(sql + " ORDER BY sf.rowid", args) if (store_id, r[0]) not in self._claimed
            ]
            self._claimed.update((store_id, r[0]) for r in rows)
        jobs = [
            Job((fid, gen), self._blobs / fid, filename, json.loads(rule) if rule else None, size)
            for fid, gen, rule, filename, size in rows
        ]
        try:
            # Closed when the loop ends, so the groups still being prepared are dropped at once.
            with closing(self._preparer.run(jobs, deadline)) as groups:
                for group in groups:
                    if self._stop.is_set():
                        return
                    self._save(store_id, [(*job.key, job.filename, prepared) for job, prepared in group])
        except Stopped:
            return  # stopped while the group was embedded: nothing of it was saved
        finally:
            with self._lock:
                self._claimed.difference_update((store_id, r[0]) for r in rows)
        if vectors:
            self._fill(store_id, lambda: self._stop.is_set() or time.monotonic() >= deadline)

    def _save(self, store_id: str, results: list[tuple[str, int, str, Prepared]]) -> None:
        """Swap prepared files' chunks (and title vectors) in atomically, each unless it changed while
        it was prepared. Raises Stopped, having saved nothing, when the run stops while they are embedded."""
        # A group's chunks and titles are embedded in one call (passes of like length), outside the lock.
        chunks = [t for *_, prepared in results for t in prepared.chunks]
        titles = [title_of(p.chunks[0], filename) for _, _, filename, p in results if p.chunks]
        vectors = self._encode(chunks + titles)
        chunk_vectors, title_vectors = iter(vectors[: len(chunks)]), iter(vectors[len(chunks) :])
        with self._tx() as db:
            for file_id, gen, _, prepared in results:
                embeddings = [next(chunk_vectors) for _ in prepared.chunks]
                title = next(title_vectors) if prepared.chunks else None
                current = db.execute(
                    "SELECT gen FROM store_files WHERE store_id = ? AND file_id = ?", (store_id, file_id)
                ).fetchone()
                if current is None or current[0] != gen:
                    continue  # detached or re-attached while we worked: the newer state wins
                db.execute("DELETE FROM chunks WHERE store_id = ? AND file_id = ?", (store_id, file_id))
                db.executemany(
                    "INSERT INTO chunks(store_id, file_id, seq, text, embedding) VALUES (?, ?, ?, ?, ?)",
                    [
                        (store_id, file_id, i, t, v)
                        for i, (t, v) in enumerate(zip(prepared.chunks, embeddings, strict=True))
                    ],
                )
                if title is not None:  # its row was made with the first chunk (schema.m003_titles)
                    db.execute(
                        "UPDATE title_vectors SET embedding = ? WHERE store_id = ? AND file_id = ?",
                        (title, store_id, file_id),
                    )
                error = prepared.error
                db.execute(
                    "UPDATE store_files SET status = ?, error_code = ?, error_message = ?, usage_bytes = ?"
                    " WHERE store_id = ? AND file_id = ?",
                    (FAILED if error else COMPLETED, *(error or (None, None)), prepared.usage_bytes, store_id, file_id),
                )
