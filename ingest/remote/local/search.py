"""How a query becomes a safe, ranked search of the embedded store: FTS5 (bm25) for the words, chunk
vectors for the meaning (vectors.py), and one fused score in 0–1 per hit."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping

from ingest.remote import filters as attribute_filters
from ingest.remote.base import Hit
from ingest.remote.local.vectors import Query

# A bm25 of this size maps to a score of 0.5 (typical of a good one-word match); the squash keeps
# scores in (0, 1) and comparable across queries, unlike dividing by the best hit.
BM25_HALF = 5.0
MAX_QUERY_TERMS = 64
# The fused score is LEXICAL_WEIGHT × the bm25 score + the rest × the cosine similarity (clipped at
# 0): both absolute, so the sum is comparable across queries and stores, as a rank fusion's is not.
# Chosen on bench/questions.py's TUNING set, never on the held-out questions (see the README).
LEXICAL_WEIGHT = 0.3
# A document's best chunk also carries PAGE_SHARE of each of its next PAGE_NEXT chunks' evidence (a
# page that answers in several places beats one lucky chunk), and its further chunks count
# REPEAT_DISCOUNT of their own score, so the first results name different documents. Chosen on the
# TUNING set with the fusion weight (python -m bench.fusion).
PAGE_SHARE = 0.2
PAGE_NEXT = 2
REPEAT_DISCOUNT = 0.5


def fts_query(query: str, db: sqlite3.Connection | None = None) -> str:
    """A user's query as an FTS5 expression that cannot be a syntax error: quoted terms, ORed.

    Given the store, terms found in over half the chunks are left out: bm25 gives them no weight
    (FTS5 floors their IDF at 1e-6), so no ranking changes, but their long posting lists were most
    of the cost of a question in everyday words ("the", "a", "to")."""
    terms = list(dict.fromkeys(t.lower() for t in re.findall(r"\w+", query)))[:MAX_QUERY_TERMS]
    if db is not None and len(terms) > 1:
        marks = ",".join("?" * len(terms))
        common = {
            term
            for (term,) in db.execute(
                f"SELECT term FROM chunks_vocab WHERE term IN ({marks})"
                " AND doc * 2 > (SELECT COUNT(*) FROM chunks_fts_docsize)",
                terms,
            )
        }
        terms = [t for t in terms if t not in common] or terms
    return " OR ".join(f'"{t}"' for t in terms)


def score(rank: float) -> float:
    """FTS5 bm25 (negative, lower is better) squashed into (0, 1), higher is better."""
    strength = max(-rank, 0.0)
    return max(strength / (strength + BM25_HALF), 1e-6)


def fuse(lexical: Mapping[int, float], semantic: Mapping[int, float]) -> dict[int, float]:
    """One score in (0, 1] per chunk from its lexical score and its cosine similarity; `semantic` holds
    every candidate that has a vector. A chunk outside the lexical top k counts 0 for its words:
    scoring it exactly would cost FTS5 a pass over every match of the query, for a small share of the
    score. A chunk with no vector yet (indexed while the model was off) is scored on its words alone,
    so it does not rank below weaker matches until its vector is made."""
    return {
        c: max(
            LEXICAL_WEIGHT * lexical.get(c, 0.0) + (1 - LEXICAL_WEIGHT) * max(semantic[c], 0.0)
            if c in semantic
            else lexical[c],
            1e-6,
        )
        for c in lexical.keys() | semantic.keys()
    }


def by_document(scores: Mapping[int, float], document_of: Mapping[int, str]) -> dict[int, float]:
    """Chunk scores ranked by document: a document's best chunk scores as the chance that it or one
    of its next chunks (each weighed by PAGE_SHARE) answers, 1 − (1 − s₁)·Π(1 − share·sᵢ), which
    stays in (0, 1]; its further chunks keep REPEAT_DISCOUNT of their own score."""
    chunks_of: dict[str, list[int]] = {}
    for chunk in sorted(scores, key=lambda c: (-scores[c], c)):
        chunks_of.setdefault(document_of[chunk], []).append(chunk)
    ranked = {}
    for best, *rest in chunks_of.values():
        miss = 1.0 - scores[best]
        for chunk in rest[:PAGE_NEXT]:
            miss *= 1.0 - PAGE_SHARE * scores[chunk]
        ranked[best] = 1.0 - miss
        ranked.update((chunk, scores[chunk] * REPEAT_DISCOUNT) for chunk in rest)
    return ranked


def hits(
    db: sqlite3.Connection,
    store_id: str,
    query: str,
    filters: Mapping[str, object] | None,
    max_results: int,
    meaning: Query | None = None,
    ranked: Ranked | None = None,
) -> list[Hit]:
    """The store's best chunks for a query that pass the filters, best first (caller holds the lock).

    With `meaning` (the query's vector and the store's), the words' and the vectors' best are fused.
    `ranked` keeps the index's rankings for the next store searched with the same words."""
    match = fts_query(query, db)
    if not match and meaning is None:
        return []
    # Rank in the full-text index (and the vectors) alone, then join only the best k chunks: joining
    # every matching chunk first costs more than the search. k grows when filters leave fewer than
    # asked for.
    k = max(100 if meaning else 50, max_results * 5)
    while True:
        lexical = ranked.top(db, match, k) if ranked is not None else _lexical_top(db, match, k)
        exhausted = len(lexical) < k
        scored = lexical
        if meaning is not None:
            semantic = meaning.top(k)
            semantic |= meaning.similarity(lexical.keys() - semantic.keys())
            scored = fuse(lexical, semantic)
            exhausted = exhausted and k >= meaning.size
        found = _hits(db, store_id, scored, filters, max_results, pages=meaning is not None)
        if len(found) >= max_results or exhausted:
            return found
        k *= 4


class Ranked:
    """The full-text index's best k chunks for the last query, while the database is unchanged. The
    index is shared by every store in the directory, and ranks every match of the words each time:
    a logical store's shards (10 for 100,000 files), searched one after another with the same words,
    paid for the same ranking each (1.6 s for two everyday words there, against 0.2 s)."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._tops: dict[int, dict[int, float]] = {}
        self.not_indexed = 0  # rows this connection changed that are not the index's (a search's activity)

    def top(self, db: sqlite3.Connection, match: str, k: int) -> dict[int, float]:
        # data_version moves when another connection commits, total_changes when this one writes.
        key = (match, db.execute("PRAGMA data_version").fetchone()[0], db.total_changes - self.not_indexed)
        if key != self._key:
            self._key, self._tops = key, {}
        if k not in self._tops:
            self._tops[k] = _lexical_top(db, match, k)
        return self._tops[k]


def _lexical_top(db: sqlite3.Connection, match: str, k: int) -> dict[int, float]:
    """The best k chunks for the words of the query (over all stores), with their scores."""
    if not match:
        return {}
    rows = db.execute(
        "SELECT rowid, rank FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?", (match, k)
    ).fetchall()
    return {rowid: score(rank) for rowid, rank in rows}


def _hits(
    db: sqlite3.Connection, store_id: str, score_of: dict[int, float], filters, max_results: int, pages: bool
) -> list[Hit]:
    """The best chunks that pass the filters; with `pages`, ranked by document (by_document): chosen
    for fused scores, where it helped (TUNING), while by words alone it cost title queries (94.2 % to
    88.3 % in the top 10), a long page's many matching chunks outranking the page itself. Texts are
    read for the chosen ones only: a candidate list of a few hundred chunks is a megabyte of text."""
    marks = ",".join("?" * len(score_of))
    rows = (
        db.execute(
            "SELECT c.id, c.file_id, f.filename, sf.attributes FROM chunks c"
            " JOIN store_files sf ON sf.store_id = c.store_id AND sf.file_id = c.file_id"
            f" JOIN files f ON f.id = c.file_id WHERE c.store_id = ? AND c.id IN ({marks})",
            (store_id, *score_of),
        ).fetchall()
        if score_of
        else []
    )
    if pages:
        score_of = by_document({r[0]: score_of[r[0]] for r in rows}, {r[0]: r[1] for r in rows})
    chosen = []
    for chunk_id, file_id, filename, attributes in sorted(rows, key=lambda r: (-score_of[r[0]], r[0])):
        attrs = json.loads(attributes)
        if attribute_filters.matches(filters, attrs):
            chosen.append((chunk_id, file_id, filename, attrs))
            if len(chosen) == max_results:
                break
    marks = ",".join("?" * len(chosen))
    text_of = dict(db.execute(f"SELECT id, text FROM chunks WHERE id IN ({marks})", [c[0] for c in chosen]))
    return [Hit(file_id, filename, score_of[c], attrs, text_of[c]) for c, file_id, filename, attrs in chosen]
