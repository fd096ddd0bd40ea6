"""How a query becomes a safe, ranked FTS5 search of the embedded store, and its hits."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping

from ingest.remote import filters as attribute_filters
from ingest.remote.base import Hit

# A bm25 of this size maps to a score of 0.5 (typical of a good one-word match); the squash keeps
# scores in (0, 1) and comparable across queries, unlike dividing by the best hit.
BM25_HALF = 5.0
MAX_QUERY_TERMS = 64


def fts_query(query: str) -> str:
    """A user's query as an FTS5 expression that cannot be a syntax error: quoted terms, ORed."""
    terms = list(dict.fromkeys(t.lower() for t in re.findall(r"\w+", query)))
    return " OR ".join(f'"{t}"' for t in terms[:MAX_QUERY_TERMS])


def score(rank: float) -> float:
    """FTS5 bm25 (negative, lower is better) squashed into (0, 1), higher is better."""
    strength = max(-rank, 0.0)
    return max(strength / (strength + BM25_HALF), 1e-6)


def hits(
    db: sqlite3.Connection, store_id: str, query: str, filters: Mapping[str, object] | None, max_results: int
) -> list[Hit]:
    """The store's best chunks for a query that pass the filters, best first (caller holds the lock)."""
    match = fts_query(query)
    if not match:
        return []
    # Rank in the full-text index alone, then join only the best k chunks: joining every matching
    # chunk first costs more than the search. k grows when filters leave fewer than asked for.
    k = max(50, max_results * 5)
    while True:
        top = db.execute(
            "SELECT rowid, rank FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?", (match, k)
        ).fetchall()
        found = _hits(db, store_id, top, filters, max_results)
        if len(found) >= max_results or len(top) < k:
            return found
        k *= 4


def _hits(db: sqlite3.Connection, store_id: str, top: list[tuple], filters, max_results: int) -> list[Hit]:
    rank_of = dict(top)
    marks = ",".join("?" * len(rank_of))
    rows = (
        db.execute(
            "SELECT c.id, c.file_id, f.filename, sf.attributes, c.text FROM chunks c"
            " JOIN store_files sf ON sf.store_id = c.store_id AND sf.file_id = c.file_id"
            f" JOIN files f ON f.id = c.file_id WHERE c.store_id = ? AND c.id IN ({marks})",
            (store_id, *rank_of),
        ).fetchall()
        if rank_of
        else []
    )
    found = []
    for chunk_id, file_id, filename, attributes, text in sorted(rows, key=lambda r: (rank_of[r[0]], r[0])):
        attrs = json.loads(attributes)
        if attribute_filters.matches(filters, attrs):
            found.append(Hit(file_id, filename, score(rank_of[chunk_id]), attrs, text))
            if len(found) == max_results:
                break
    return found
