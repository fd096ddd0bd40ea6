"""The embedded store's SQLite layout, versioned with sqlite-utils `Migrations` like the manifest."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from ingest import database
from ingest.errors import RemoteError

if TYPE_CHECKING:
    import sqlite_utils
    from sqlite_utils import Migrations

# FTS5's bm25 gives a term found in over half the rows an IDF of ~0, so in a store of a few documents
# most queries would score ~0. Filler rows (negative rowids, never returned) keep real terms under
# half; in a large store they change nothing.
BACKGROUND_ROWS = 200
BACKGROUND_TEXT = " ".join(["qqbackgroundqq"] * 400)
EMBEDDING_MODEL = "embedding_model"  # the settings key naming the model the stored vectors come from


def m001_initial(db: sqlite_utils.Database) -> None:
    # IF NOT EXISTS throughout: a store made before the schema was versioned already has all of it.
    for statement in (
        "CREATE TABLE IF NOT EXISTS files(id TEXT PRIMARY KEY, filename TEXT NOT NULL, bytes INTEGER NOT NULL,"
        " created_at INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS stores(id TEXT PRIMARY KEY, name TEXT NOT NULL, metadata TEXT NOT NULL,"
        " chunking TEXT, expires_days INTEGER, created_at INTEGER NOT NULL, last_active_at REAL NOT NULL)",
        # gen counts attachments of a file: indexing results for an older one are thrown away.
        "CREATE TABLE IF NOT EXISTS store_files(store_id TEXT NOT NULL, file_id TEXT NOT NULL, status TEXT NOT"
        " NULL, attributes TEXT NOT NULL, chunking TEXT, error_code TEXT, error_message TEXT, usage_bytes"
        " INTEGER NOT NULL DEFAULT 0, gen INTEGER NOT NULL, created_at INTEGER NOT NULL,"
        " PRIMARY KEY(store_id, file_id))",
        "CREATE INDEX IF NOT EXISTS store_files_status ON store_files(store_id, status)",
        "CREATE INDEX IF NOT EXISTS store_files_file ON store_files(file_id)",
        "CREATE TABLE IF NOT EXISTS batches(id TEXT PRIMARY KEY, store_id TEXT NOT NULL, created_at INTEGER)",
        "CREATE TABLE IF NOT EXISTS batch_files(batch_id TEXT NOT NULL, file_id TEXT NOT NULL,"
        " PRIMARY KEY(batch_id, file_id))",
        "CREATE TABLE IF NOT EXISTS chunks(id INTEGER PRIMARY KEY, store_id TEXT NOT NULL, file_id TEXT NOT"
        " NULL, seq INTEGER NOT NULL, text TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS chunks_file ON chunks(store_id, file_id)",
        "CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, content='chunks', content_rowid='id',"
        " tokenize='porter unicode61 remove_diacritics 2')",
        "CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN"
        " INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text); END",
        "CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN"
        " INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    ):
        db.execute(statement)
    if not db.execute("SELECT 1 FROM chunks_fts_docsize WHERE id < 0").fetchone():
        db.conn.executemany(
            "INSERT INTO chunks_fts(rowid, text) VALUES (?, ?)",
            [(-n, BACKGROUND_TEXT) for n in range(1, BACKGROUND_ROWS + 1)],
        )


def m002_vectors(db: sqlite_utils.Database) -> None:
    # One embedding per chunk (float16). The partial index finds chunks still to embed (a store made
    # before hybrid search, or indexed without the model) without reading the others.
    db.execute("ALTER TABLE chunks ADD COLUMN embedding BLOB")
    db.execute("CREATE INDEX chunks_unembedded ON chunks(store_id) WHERE embedding IS NULL")
    db.execute("CREATE TABLE settings(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    # How many chunks hold each term: search leaves out terms too common to weigh anything.
    db.execute("CREATE VIRTUAL TABLE chunks_vocab USING fts5vocab(chunks_fts, 'row')")
    # Bumped by every change of a stored vector, so a process holding vectors in memory (this one or
    # another) knows with one read that they are stale.
    db.execute("CREATE TABLE vector_gen(n INTEGER NOT NULL)")
    db.execute("INSERT INTO vector_gen VALUES (0)")
    for event, row in (("INSERT", "new"), ("DELETE", "old"), ("UPDATE OF embedding", "new")):
        name = "chunks_vec_" + event.split()[0].lower()
        db.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON chunks"
            f" WHEN {row}.embedding IS NOT NULL OR '{event}' = 'UPDATE OF embedding'"
            " BEGIN UPDATE vector_gen SET n = n + 1; END"
        )


def m003_titles(db: sqlite_utils.Database) -> None:
    # One vector per document, of its title (vectors.title_of its first chunk). The row comes and goes
    # with the document's first chunk, NULL until embedded, so the fill-in finds missing ones by the
    # partial index, as it finds chunks', and an existing store gets its rows here.
    db.execute(
        "CREATE TABLE title_vectors(store_id TEXT NOT NULL, file_id TEXT NOT NULL, embedding BLOB,"
        " PRIMARY KEY(store_id, file_id))"
    )
    db.execute("CREATE INDEX title_vectors_missing ON title_vectors(store_id) WHERE embedding IS NULL")
    db.execute("INSERT OR IGNORE INTO title_vectors SELECT store_id, file_id, NULL FROM chunks WHERE seq = 0")
    db.execute(
        "CREATE TRIGGER chunks_title_insert AFTER INSERT ON chunks WHEN new.seq = 0"
        " BEGIN INSERT OR REPLACE INTO title_vectors VALUES (new.store_id, new.file_id, NULL); END"
    )
    db.execute(
        "CREATE TRIGGER chunks_title_delete AFTER DELETE ON chunks WHEN old.seq = 0 BEGIN"
        " DELETE FROM title_vectors WHERE store_id = old.store_id AND file_id = old.file_id; END"
    )
    for event, when in (("DELETE", "old.embedding IS NOT NULL"), ("UPDATE OF embedding", "1")):
        name = "title_vec_" + event.split()[0].lower()
        db.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON title_vectors WHEN {when}"
            " BEGIN UPDATE vector_gen SET n = n + 1; END"
        )


# Append-only, applied in order, each recorded by name (sqlite-utils' Migrations). How many there are is
# kept in the store's user_version once they are applied: opening an up-to-date store is one PRAGMA, and
# sqlite-utils (a search's largest import) is loaded only to migrate.
MIGRATIONS = (m001_initial, m002_vectors, m003_titles)


def migration_set() -> Migrations:
    return database.migration_set("ingest-local-store", MIGRATIONS)


def apply(conn: sqlite3.Connection, where: str = "the embedded store") -> None:
    """Bring the store's schema up to date, refusing a store a newer version of ingest wrote."""

    def newer(step: str) -> Exception:
        return RemoteError(f"{where} was written by a newer version of ingest (migration {step}): upgrade ingest")

    database.migrate(conn, "ingest-local-store", MIGRATIONS, newer)
