"""Split text into overlapping token windows the way OpenAI's file_search chunking does.

No tokenizer can be downloaded here, so tokens are estimated: the text is cut into pieces (runs
of word characters, capped at 20 characters, and single punctuation marks); an ASCII word costs
ceil(len / 5) tokens, each punctuation mark 1, and a non-ASCII run one token per character. For
English prose that is ≈ 1.3 tokens per word (≈ 0.75 words per token, the usual rule of thumb for
cl100k), and it errs high for code and non-Latin scripts, so chunks stay within the real limits.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ingest.limits import AUTO_CHUNK_OVERLAP as AUTO_OVERLAP_TOKENS
from ingest.limits import AUTO_CHUNK_TOKENS as AUTO_MAX_TOKENS
from ingest.limits import CHUNK_TOKENS

MIN_MAX_TOKENS, MAX_MAX_TOKENS = CHUNK_TOKENS

# Capping word runs keeps every piece ≤ 20 tokens, far below the smallest window (100).
_PIECE = re.compile(r"\w{1,20}|[^\w\s]")
_SENTENCE_END = frozenset(".!?;:")
# No boundary is looked for in the first 3/4 of a window: breaking early would waste the window
# and shrink the stride between overlapping chunks.
_BOUNDARY_SEARCH_FROM = 0.75


@dataclass(frozen=True)
class ChunkingStrategy:
    max_tokens: int = AUTO_MAX_TOKENS
    overlap_tokens: int = AUTO_OVERLAP_TOKENS

    def as_openai(self) -> dict:
        """The OpenAI chunking_strategy object for this strategy (static form)."""
        return {
            "type": "static",
            "static": {"max_chunk_size_tokens": self.max_tokens, "chunk_overlap_tokens": self.overlap_tokens},
        }


AUTO = ChunkingStrategy()

StrategyLike = ChunkingStrategy | Mapping[str, object] | None


def parse_strategy(strategy: StrategyLike) -> ChunkingStrategy:
    """Validate an OpenAI chunking_strategy object ({"type": "auto"} / {"type": "static", ...}).

    None means auto. Raises ValueError naming the offending field.
    """
    if strategy is None or isinstance(strategy, ChunkingStrategy):
        return strategy or AUTO
    if not isinstance(strategy, Mapping):
        raise ValueError(f"chunking_strategy must be an object, got {type(strategy).__name__}")
    kind = strategy.get("type")
    if kind == "auto":
        return AUTO
    if kind != "static":
        raise ValueError(f'chunking_strategy.type must be "auto" or "static", got {kind!r}')
    static = strategy.get("static")
    if not isinstance(static, Mapping):
        raise ValueError('chunking_strategy of type "static" needs a "static" object')
    size, overlap = _integer(static, "max_chunk_size_tokens"), _integer(static, "chunk_overlap_tokens")
    if not MIN_MAX_TOKENS <= size <= MAX_MAX_TOKENS:
        raise ValueError(
            f"chunking_strategy.static.max_chunk_size_tokens must be between "
            f"{MIN_MAX_TOKENS} and {MAX_MAX_TOKENS}, got {size}"
        )
    if overlap < 0 or overlap * 2 > size:
        raise ValueError(
            f"chunking_strategy.static.chunk_overlap_tokens must be between 0 and "
            f"half of max_chunk_size_tokens ({size // 2}), got {overlap}"
        )
    return ChunkingStrategy(size, overlap)


def _integer(static: Mapping[str, object], name: str) -> int:
    value = static.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"chunking_strategy.static.{name} must be an integer, got {value!r}")
    return value


def _piece_tokens(piece: str) -> int:
    """Estimated tokens of one piece (see the module docstring)."""
    if not piece.isascii():
        return len(piece)
    return -(-len(piece) // 5)


def estimate_tokens(text: str) -> int:
    """Estimated number of tokens in `text`."""
    return sum(_piece_tokens(m.group()) for m in _PIECE.finditer(text))


def chunk_text(text: str, strategy: StrategyLike = None) -> list[str]:
    """Split `text` into chunks of at most max_tokens estimated tokens, overlapping by about
    overlap_tokens; a chunk ends at a paragraph break, else a sentence or line end, in the last
    quarter of its window when there is one. Whitespace-only text gives no chunks.
    """
    rule = parse_strategy(strategy)
    starts: list[int] = []
    ends: list[int] = []
    cum = [0]  # cum[k] = tokens of pieces[:k]; strictly increasing since every piece costs ≥ 1
    level = [0]  # level[k] = how good a break lies before piece k: 2 paragraph, 1 sentence/line
    for m in _PIECE.finditer(text):
        start, end = m.span()
        if starts:
            gap = text[ends[-1] : start]
            if gap.count("\n") >= 2:
                level.append(2)
            elif "\n" in gap or (gap and text[ends[-1] - 1] in _SENTENCE_END):
                level.append(1)
            else:
                level.append(0)
        starts.append(start)
        ends.append(end)
        cum.append(cum[-1] + _piece_tokens(m.group()))
    n = len(starts)
    if n == 0:
        return []
    # level[n]: the end of the text is the best break of all.
    level.append(2)

    chunks: list[str] = []
    i = 0
    while True:
        # j = the most pieces from i that fit the window.
        j = bisect.bisect_right(cum, cum[i] + rule.max_tokens) - 1
        if j >= n:
            chunks.append(text[starts[i] : ends[n - 1]])
            return chunks
        cut = _best_cut(cum, level, i, j, rule)
        chunks.append(text[starts[i] : ends[cut - 1]])
        # The next chunk starts overlap_tokens back from the cut, but always moves forward.
        i = max(bisect.bisect_left(cum, cum[cut] - rule.overlap_tokens), i + 1)


def _best_cut(cum: list[int], level: list[int], i: int, j: int, rule: ChunkingStrategy) -> int:
    """The piece index to end the window [i, j) at: the latest strongest boundary near its end."""
    floor = max(cum[i] + int(rule.max_tokens * _BOUNDARY_SEARCH_FROM), cum[i] + rule.overlap_tokens + 1)
    lo = max(bisect.bisect_left(cum, floor), i + 1)
    best, best_level = j, level[j]
    for k in range(j - 1, lo - 1, -1):
        if best_level == 2:
            break
        if level[k] > best_level:
            best, best_level = k, level[k]
    return best
