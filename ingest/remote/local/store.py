"""The embedded vector store: the Remote protocol on SQLite FTS5, used when there is no API key.

Under its directory: `store.db` (WAL) and `blobs/<file id>`, the store's own copy of each upload, so
a later edit of the source does not change what gets indexed.

Indexing is lazy (indexer.py): attach_batch records files as in_progress; the polls of a wait
(get_batch, batch_files, get_store_file) and index_pending index pending files for about
`work_budget_s`, then answer; the polls then spend what is left of the budget embedding chunks that
have no vector. Every other call only reads: a status, a verify or a listing of a store with pending
work leaves it pending and never loads the indexer, the extraction workers or the model.

Approximations: `usage_bytes` is the UTF-8 size of the extracted text (OpenAI bills a larger figure
of its own); bm25 statistics are shared by all stores in the directory; search is lexical (FTS5 with
porter stemming), fused with a chunk-vector search when the `semantic` extra is installed (search.py,
vectors.py, embed.py).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.limits import MAX_BATCH_FILES, MAX_FILE_SIZE
from ingest.remote.base import (
    CREATE_TOKEN,
    IN_PROGRESS,
    AttachItem,
    AttrValue,
    Batch,
    Hit,
    NotFound,
    RemoteError,
    RemoteFile,
    Store,
    StoreFile,
)
from ingest.remote.local import schema, search, views
from ingest.remote.local.checks import check_attributes, check_chunking, check_metadata, check_search
from ingest.remote.local.vectors import Vectors, installed_model
from ingest.remote.profile import LOCAL, PROFILES, Profile

if TYPE_CHECKING:  # indexing's modules load with the first call that indexes: a search makes none
    from ingest.remote.local.embed import Embedder
    from ingest.remote.local.indexer import Indexer
    from ingest.remote.local.prepare import Preparer

MAX_FILE_BYTES = MAX_FILE_SIZE
# Expiry is measured in days: recording activity once a minute is plenty.
ACTIVITY_RESOLUTION_S = 60


class LocalRemote:
    """A Remote backed by one SQLite database and a folder of blobs; safe to share across threads."""

    kind = "local"
    base_url = "local"

    def __init__(
        self,
        directory: Path,
        *,
        clock: Callable[[], float] = time.time,
        work_budget_s: float = 2.0,
        preparer: Preparer | None = None,
        embedder: Callable[[], Embedder | None] | None = None,
        stop: threading.Event | None = None,
    ):
        self.directory = Path(directory)
        # Set when the run stops (Ctrl-C, SIGTERM): indexing ends between two forward passes of the
        # model, and what it had not saved stays in_progress for the next run (indexer.py).
        self.stop = stop or threading.Event()
        self.blobs = self.directory / "blobs"
        for folder in (self.directory, self.blobs):
            if not folder.is_dir():
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(folder, 0o700)  # mkdir's mode is reduced by the umask
        self._clock = clock
        # Extraction and chunking, in worker processes when there is enough to do (see prepare.py);
        # by default made with the indexer, on the first call that indexes.
        self._preparer, self._work_budget_s = preparer, work_budget_s
        self._indexer: Indexer | None = None
        # One connection behind one lock: simple, and SQLite serialises writers anyway.
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.directory / "store.db", timeout=30, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._lock:
            schema.apply(self._db, f"the embedded store {self.directory / 'store.db'}")
        # Called only when there is text to embed or a store with vectors to search; by default the
        # installed model, loaded once per process.
        self._vectors = Vectors(self._db, self._lock, self._tx, embedder or installed_model, self.stop)
        self._ranked = search.Ranked()  # the shards of a logical store are searched with the same words

    def close(self) -> None:
        """Stop the extraction workers and close the database; the object is unusable afterwards."""
        if self._preparer is not None:
            self._preparer.close()
        with self._lock:
            self._db.close()

    def _work(self, store_id: str, **scope: Any) -> None:
        """Index the store's pending files (of a batch_id, a file_id) for about the work budget (indexer.py)."""
        with self._lock:
            if self._indexer is None:
                from ingest.remote.local.indexer import Indexer
                from ingest.remote.local.prepare import Preparer

                self._preparer = self._preparer or Preparer()
                encode, fill, budget = self._vectors.encode, self._vectors.embed_kept, self._work_budget_s
                self._indexer = Indexer(
                    self._db, self._lock, self._tx, self.blobs, self._preparer, budget, encode, fill, self.stop
                )
        self._indexer.work(store_id, **scope)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; IMMEDIATE so a second process waits instead of failing later."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, *args) -> list[tuple]:
        """All rows of a read query, fetched under the lock."""
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _touch(self, db: sqlite3.Connection, store_id: str) -> int:
        """Record activity on a store, which postpones its expiry; how many rows that changed."""
        now = self._clock()
        return db.execute(
            "UPDATE stores SET last_active_at = ? WHERE id = ? AND last_active_at < ?",
            (now, store_id, now - ACTIVITY_RESOLUTION_S),
        ).rowcount

    # Files ------------------------------------------------------------------------------------------
    def upload(self, path: Path, filename: str) -> RemoteFile:
        size = Path(path).stat().st_size
        if size > MAX_FILE_BYTES:
            raise RemoteError(f"{filename}: {size} bytes is over the 512 MB upload limit")
        import shutil  # here: a search uploads nothing (shutil brings bz2 and lzma)

        file_id = "file-local-" + os.urandom(12).hex()
        tmp = self.blobs / f".{file_id}.tmp"
        try:  # copy then rename: a crash never leaves a half-written blob under a real id
            with open(path, "rb") as src, open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            size = tmp.stat().st_size
            os.replace(tmp, self.blobs / file_id)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        created = int(self._clock())
        with self._tx() as db:
            db.execute("INSERT INTO files VALUES (?, ?, ?, ?)", (file_id, filename, size, created))
        return RemoteFile(file_id, filename, size, created)

    def delete_file(self, file_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM chunks WHERE file_id = ?", (file_id,))
            db.execute("DELETE FROM store_files WHERE file_id = ?", (file_id,))
            db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        (self.blobs / file_id).unlink(missing_ok=True)

    def list_files(self) -> Iterator[RemoteFile]:
        return iter([RemoteFile(*r) for r in self._rows("SELECT * FROM files ORDER BY created_at, rowid")])

    # Stores -----------------------------------------------------------------------------------------
    def create_store(
        self,
        name: str,
        metadata: Mapping[str, str],
        chunking: Mapping[str, object] | None,
        expires_after_days: int | None,
    ) -> Store:
        check_metadata(metadata)
        rule = check_chunking(chunking)
        if expires_after_days is not None and not 1 <= expires_after_days <= 365:
            raise RemoteError(f"expires_after days must be 1-365, got {expires_after_days}")
        store_id = "vs_local_" + os.urandom(12).hex()
        with self._tx() as db:
            db.execute(
                "INSERT INTO stores VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    store_id,
                    name,
                    json.dumps(dict(metadata)),
                    json.dumps(rule.as_openai()),
                    expires_after_days,
                    int(self._clock()),
                    self._clock(),
                ),
            )
        return self.get_store(store_id)

    def get_store(self, store_id: str) -> Store:
        """The store as it stands: a read, which indexes nothing (a wait on its counts calls index_pending)."""
        with self._lock:
            return views.store_of(self._db, store_id, self._clock())

    def list_stores(self) -> Iterator[Store]:
        return iter([self.get_store(r[0]) for r in self._rows("SELECT id FROM stores ORDER BY rowid")])

    def find_store(self, token: str, since: float) -> Store | None:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, metadata FROM stores WHERE created_at >= ?", (int(since) - 600,)
            ).fetchall()
        for store_id, metadata in rows:
            if json.loads(metadata).get(CREATE_TOKEN) == token:
                return self.get_store(store_id)
        return None

    def delete_store(self, store_id: str) -> None:
        with self._tx() as db:
            for sql in (
                "DELETE FROM chunks WHERE store_id = ?",
                "DELETE FROM store_files WHERE store_id = ?",
                "DELETE FROM batch_files WHERE batch_id IN (SELECT id FROM batches WHERE store_id = ?)",
                "DELETE FROM batches WHERE store_id = ?",
                "DELETE FROM stores WHERE id = ?",
            ):
                db.execute(sql, (store_id,))

    def rename_store(self, store_id: str, name: str, metadata: Mapping[str, str]) -> None:
        check_metadata(metadata)
        with self._tx() as db:
            views.require_store(db, store_id)
            db.execute(
                "UPDATE stores SET name = ?, metadata = ? WHERE id = ?", (name, json.dumps(dict(metadata)), store_id)
            )

    # Attaching and indexing -------------------------------------------------------------------------
    def attach_batch(self, store_id: str, items: Sequence[AttachItem]) -> Batch:
        if not 1 <= len(items) <= MAX_BATCH_FILES:
            raise RemoteError(f"a file batch takes 1 to {MAX_BATCH_FILES} files, got {len(items)}")
        prepared = {}  # the same file twice in one batch: the last entry wins
        for item in items:
            check_attributes(item.attributes)
            # NULL, not "null", so the store's own strategy applies (COALESCE in the indexer).
            rule = None if item.chunking is None else json.dumps(check_chunking(item.chunking).as_openai())
            prepared[item.file_id] = (json.dumps(dict(item.attributes)), rule)
        batch_id = "vsfb_local_" + os.urandom(12).hex()
        now = int(self._clock())
        with self._tx() as db:
            views.require_store(db, store_id)
            for file_id, (attributes, rule) in prepared.items():
                if db.execute("SELECT 1 FROM files WHERE id = ?", (file_id,)).fetchone() is None:
                    raise NotFound(f"file {file_id} not found")
                # Re-attaching replaces the attachment; its old chunks stay searchable until the new
                # indexing swaps them, so there is no gap.
                db.execute(
                    "INSERT INTO store_files(store_id, file_id, status, attributes, chunking, gen,"
                    " created_at) VALUES (?, ?, 'in_progress', ?, ?, 1, ?)"
                    " ON CONFLICT(store_id, file_id) DO UPDATE SET status = 'in_progress',"
                    " attributes = excluded.attributes, chunking = excluded.chunking,"
                    " error_code = NULL, error_message = NULL, gen = store_files.gen + 1",
                    (store_id, file_id, attributes, rule, now),
                )
                db.execute("INSERT INTO batch_files VALUES (?, ?)", (batch_id, file_id))
            db.execute("INSERT INTO batches VALUES (?, ?, ?)", (batch_id, store_id, now))
            self._touch(db, store_id)
        return self._batch(store_id, batch_id)

    def attach_file(self, store_id: str, item: AttachItem) -> StoreFile:
        self.attach_batch(store_id, [item])
        return self.get_store_file(store_id, item.file_id)

    def probe(self) -> Profile:
        return PROFILES[LOCAL]

    def get_batch(self, store_id: str, batch_id: str) -> Batch:
        self._check_batch(store_id, batch_id)
        self._work(store_id, batch_id=batch_id)
        return self._batch(store_id, batch_id)

    def batch_files(self, store_id: str, batch_id: str, status: str | None = None) -> Iterator[StoreFile]:
        self._check_batch(store_id, batch_id)
        self._work(store_id, batch_id=batch_id)
        rows = self._rows(
            "SELECT bf.file_id, COALESCE(sf.status, 'cancelled'), COALESCE(sf.attributes, '{}'),"
            " sf.error_code, sf.error_message, COALESCE(sf.usage_bytes, 0) FROM batch_files bf"
            " LEFT JOIN store_files sf ON sf.store_id = ? AND sf.file_id = bf.file_id"
            " WHERE bf.batch_id = ? ORDER BY bf.rowid",
            store_id,
            batch_id,
        )
        return iter([views.store_file(r) for r in rows if status is None or r[1] == status])

    def _check_batch(self, store_id: str, batch_id: str) -> None:
        """Raise NotFound unless the batch exists in this store."""
        if not self._rows("SELECT 1 FROM batches WHERE id = ? AND store_id = ?", batch_id, store_id):
            raise NotFound(f"file batch {batch_id} not found in vector store {store_id}")

    def _batch(self, store_id: str, batch_id: str) -> Batch:
        with self._lock:
            return views.batch_of(self._db, store_id, batch_id)

    # Store files ------------------------------------------------------------------------------------
    def get_store_file(self, store_id: str, file_id: str) -> StoreFile:
        self._work(store_id, file_id=file_id)
        rows = self._rows(
            f"SELECT {views.STORE_FILE_COLUMNS} FROM store_files WHERE store_id = ? AND file_id = ?", store_id, file_id
        )
        if not rows:
            raise NotFound(f"file {file_id} not found in vector store {store_id}")
        return views.store_file(rows[0])

    def list_store_files(self, store_id: str, status: str | None = None) -> Iterator[StoreFile]:
        with self._lock:
            views.require_store(self._db, store_id)
        rows = self._rows(
            f"SELECT {views.STORE_FILE_COLUMNS} FROM store_files WHERE store_id = ?"
            " AND (? IS NULL OR status = ?) ORDER BY rowid",
            store_id,
            status,
            status,
        )
        return iter([views.store_file(r) for r in rows])

    def index_pending(self, store_id: str) -> None:
        """Index the store's pending files for about the work budget, as a server does on its own while
        its client waits on the store's counts (a rebuild); chunk vectors are left to fill_vectors."""
        if self._rows("SELECT 1 FROM store_files WHERE store_id = ? AND status = ? LIMIT 1", store_id, IN_PROGRESS):
            self._work(store_id, vectors=False)

    def fill_vectors(self, store_id: str, done: Callable[[], bool]) -> int:
        """Embed the store's chunks (then titles) that have no vector, a batch at a time until `done()`;
        how many chunks were.
        Polls do it within their work budget; reindex calls it (servers embed for themselves)."""
        self._vectors.model()  # first, so another model's vectors are dropped and made again here
        return self._vectors.embed_kept(store_id, done)

    def update_attributes(self, store_id: str, file_id: str, attributes: Mapping[str, AttrValue]) -> None:
        check_attributes(attributes)
        with self._tx() as db:
            cur = db.execute(
                "UPDATE store_files SET attributes = ? WHERE store_id = ? AND file_id = ?",
                (json.dumps(dict(attributes)), store_id, file_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"file {file_id} not found in vector store {store_id}")
            self._touch(db, store_id)

    def detach(self, store_id: str, file_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM chunks WHERE store_id = ? AND file_id = ?", (store_id, file_id))
            db.execute("DELETE FROM store_files WHERE store_id = ? AND file_id = ?", (store_id, file_id))
            self._touch(db, store_id)

    # Search -----------------------------------------------------------------------------------------
    def search(
        self, store_id: str, query: str, filters: Mapping[str, object] | None = None, max_results: int = 10
    ) -> list[Hit]:
        check_search(filters, max_results)
        with self._lock:
            last_active = views.require_store(self._db, store_id)[-1]
        # A search is activity (it postpones expiry), recorded at most once a minute: the others
        # take no write lock, so they never wait for a sync that is writing.
        if self._clock() - last_active > ACTIVITY_RESOLUTION_S:
            with self._tx() as db:
                self._ranked.not_indexed += self._touch(db, store_id)  # the index's rankings still hold
        # The model is loaded only for a store that has vectors to compare the query with.
        meaning = self._vectors.query(store_id, query)
        with self._lock:
            return search.hits(self._db, store_id, query, filters, max_results, meaning, self._ranked)
