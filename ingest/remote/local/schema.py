"""The embedded store's SQLite layout, versioned with sqlite-utils `Migrations` like the manifest."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite_utils
    from sqlite_utils import Migrations

# FTS5's bm25 gives a term found in over half the rows an IDF of ~0, so in a store of a few documents
# most queries would score ~0. Filler rows (negative rowids, never returned) keep real terms under
# half; in a large store they change nothing.
BACKGROUND_ROWS = 200
BACKGROUND_TEXT = " ".join(["qqbackgroundqq"] * 400)


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


# Append-only, applied in order, each recorded by name (sqlite-utils' Migrations). How many there are is
# kept in the store's user_version once they are applied: opening an up-to-date store is one PRAGMA, and
# sqlite-utils (a search's largest import) is loaded only to migrate.
MIGRATIONS = (m001_initial,)


def migration_set() -> Migrations:
    from sqlite_utils import Migrations

    migrations = Migrations("ingest-local-store")
    for step in MIGRATIONS:
        migrations()(step)
    return migrations


def apply(conn: sqlite3.Connection) -> None:
    """Bring the store's schema up to date. In one IMMEDIATE transaction, so two processes opening a
    new store at once apply each step once (the second waits, then finds nothing pending)."""
    if conn.execute("PRAGMA user_version").fetchone()[0] >= len(MIGRATIONS):
        return  # up to date (or from a newer version, which keeps the steps it knows)
    import sqlite_utils

    conn.execute("BEGIN IMMEDIATE")
    try:
        migration_set().apply(sqlite_utils.Database(conn, execute_plugins=False))
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
