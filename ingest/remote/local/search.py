"""How a query becomes a safe, ranked FTS5 search of the embedded store."""

from __future__ import annotations

import re

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
