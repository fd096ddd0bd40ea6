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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import accumulate

from ingest.limits import AUTO_CHUNK_OVERLAP as AUTO_OVERLAP_TOKENS
from ingest.limits import AUTO_CHUNK_TOKENS as AUTO_MAX_TOKENS
from ingest.limits import CHUNK_TOKENS

MIN_MAX_TOKENS, MAX_MAX_TOKENS = CHUNK_TOKENS

# Capping word runs keeps every piece ≤ 20 tokens, far below the smallest window (100).
_PIECE = re.compile(r"\w{1,20}|[^\w\s]")
_PIECES_AND_GAPS = re.compile(f"({_PIECE.pattern})")  # the group makes split() keep the pieces
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
    """static[name], which must be an integer (not a bool)."""
    value = static.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"chunking_strategy.static.{name} must be an integer, got {value!r}")
    return value


def _piece_tokens(piece: str) -> int:
    """Estimated tokens of one piece (see the module docstring)."""
    if not piece.isascii():
        return len(piece)
    return -(-len(piece) // 5)


# _piece_tokens as a table: index = length + 21 × is-ASCII (pieces are 1–20 characters long).
_TOKENS = tuple(n for n in range(21)) + tuple(-(-n // 5) for n in range(21))


def _tokens_of(text: str, pieces: list[str]) -> Iterator[int]:
    """_piece_tokens of each piece of `text`, looked up in C loops: a Python call per piece cost most."""
    if text.isascii():
        return map(_TOKENS.__getitem__, map((21).__add__, map(len, pieces)))
    keys = map(int.__add__, map(len, pieces), map((21).__mul__, map(str.isascii, pieces)))
    return map(_TOKENS.__getitem__, keys)


def estimate_tokens(text: str) -> int:
    """Estimated number of tokens in `text`."""
    return sum(_tokens_of(text, _PIECE.findall(text)))


def chunk_text(text: str, strategy: StrategyLike = None) -> list[str]:
    """Split `text` into chunks of at most max_tokens estimated tokens, overlapping by about
    overlap_tokens; a chunk ends at a paragraph break, else a sentence or line end, in the last
    quarter of its window when there is one. Whitespace-only text gives no chunks.
    """
    rule = parse_strategy(strategy)
    # Pieces and the whitespace between them alternate: [gap, piece, gap, piece, ..., gap]. Offsets
    # and running token counts come from C loops (map, accumulate); a Python loop per piece cost
    # more than the full-text search index does.
    parts = _PIECES_AND_GAPS.split(text)
    pieces = parts[1::2]
    n = len(pieces)
    if n == 0:
        return []
    offsets = list(accumulate(map(len, parts), initial=0))
    starts = offsets[1::2]  # starts[k] = where piece k begins
    ends = offsets[2::2]  # ends[k] = where piece k ends
    cum = list(accumulate(_tokens_of(text, pieces), initial=0))  # strictly increasing: each piece ≥ 1
    window = _Window(text, starts, ends, cum, rule)
    chunks: list[str] = []
    i = 0
    while True:
        # j = the most pieces from i that fit the window.
        j = bisect.bisect_right(cum, cum[i] + rule.max_tokens) - 1
        if j >= n:
            chunks.append(text[starts[i] : ends[n - 1]])
            return chunks
        cut = window.best_cut(i, j)
        chunks.append(text[starts[i] : ends[cut - 1]])
        # The next chunk starts overlap_tokens back from the cut, but always moves forward.
        i = max(bisect.bisect_left(cum, cum[cut] - rule.overlap_tokens), i + 1)


# A break before piece k is the whitespace between pieces k-1 and k: a paragraph break holds two
# line ends; a line or sentence break one line end, or follows a sentence's closing mark.
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n")
_LINE_OR_SENTENCE_BREAK = re.compile(r"\n|[.!?;:]\s")


@dataclass(frozen=True)
class _Window:
    text: str
    starts: list[int]
    ends: list[int]
    cum: list[int]
    rule: ChunkingStrategy

    def best_cut(self, i: int, j: int) -> int:
        """The piece index to end the window [i, j) at: the latest strongest break in its last part.

        Only the last quarter of a window is searched, so breaks are found there with a regex
        rather than classified for every piece of the text.
        """
        cum, rule = self.cum, self.rule
        floor = max(cum[i] + int(rule.max_tokens * _BOUNDARY_SEARCH_FROM), cum[i] + rule.overlap_tokens + 1)
        lo = max(bisect.bisect_left(cum, floor), i + 1)
        if lo > j:
            return j
        # From the last character of piece lo-1 (a sentence's closing mark) to the start of piece j.
        first, last = self.ends[lo - 1] - 1, self.starts[j]
        for pattern in (_PARAGRAPH_BREAK, _LINE_OR_SENTENCE_BREAK):
            found = None
            for found in pattern.finditer(self.text, first, last):  # noqa: B007 (the last one is wanted)
                pass
            if found is not None:
                # The break's last whitespace character comes just before the piece it precedes.
                return bisect.bisect_left(self.starts, found.end() - 1, lo, j + 1)
        return j
