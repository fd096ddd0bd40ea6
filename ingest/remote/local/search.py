"""The embedded store's SQLite layout and how a query becomes a safe, ranked FTS5 search."""

from __future__ import annotations

import re

# A bm25 of this size maps to a score of 0.5 (typical of a good one-word match); the squash keeps
# scores in (0, 1) and comparable across queries, unlike dividing by the best hit.
BM25_HALF = 5.0
MAX_QUERY_TERMS = 64
# FTS5's bm25 gives a term found in over half the rows an IDF of ~0, so in a store of a few documents
# most queries would score ~0. Filler rows (negative rowids, never returned) keep real terms under
# half; in a large store they change nothing.
BACKGROUND_ROWS = 200
BACKGROUND_TEXT = " ".join(["qqbackgroundqq"] * 400)

SCHEMA = (
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
)


def fts_query(query: str) -> str:
    """A user's query as an FTS5 expression that cannot be a syntax error: quoted terms, ORed."""
    terms = list(dict.fromkeys(t.lower() for t in re.findall(r"\w+", query)))
    return " OR ".join(f'"{t}"' for t in terms[:MAX_QUERY_TERMS])


def score(rank: float) -> float:
    """FTS5 bm25 (negative, lower is better) squashed into (0, 1), higher is better."""
    strength = max(-rank, 0.0)
    return max(strength / (strength + BM25_HALF), 1e-6)
