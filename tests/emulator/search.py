"""The emulator's "indexing model": decode bytes as text, chunk, score chunks by term overlap, filter attributes."""

from __future__ import annotations

import codecs
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

_WORD = re.compile(r"\w+", re.UNICODE)
CHARS_PER_TOKEN = 4  # the usual rule of thumb for English text

# Extensions file_search accepts (openai-api.md), and which of them are plain text.
SUPPORTED_EXTENSIONS = frozenset(
    {
        ".c",
        ".cpp",
        ".cs",
        ".css",
        ".doc",
        ".docx",
        ".go",
        ".html",
        ".java",
        ".js",
        ".json",
        ".md",
        ".pdf",
        ".php",
        ".pptx",
        ".py",
        ".rb",
        ".sh",
        ".tex",
        ".ts",
        ".txt",
    }
)
BINARY_EXTENSIONS = frozenset({".doc", ".docx", ".pdf", ".pptx"})


def extension(filename: str) -> str:
    name = filename.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name.strip(".") else ""


def decodable(data: bytes) -> bool:
    """True when the bytes are utf-8, ascii, or utf-16 with a BOM (the encodings text/* files may use)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            data.decode("utf-16")
            return True
        except UnicodeDecodeError:
            return False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return "\x00" not in text


def decode(data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="replace")


def tokens(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def estimate_tokens(data: bytes) -> int:
    return (len(data) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def chunks(text: str, strategy: Mapping[str, Any]) -> list[str]:
    """Split text into windows of max_chunk_size_tokens with chunk_overlap_tokens overlap (4 chars per token)."""
    static = strategy.get("static") or {}
    size = int(static.get("max_chunk_size_tokens", 800)) * CHARS_PER_TOKEN
    step = max(1, size - int(static.get("chunk_overlap_tokens", 400)) * CHARS_PER_TOKEN)
    if len(text) <= size:
        return [text] if text.strip() else []
    out = []
    for start in range(0, len(text), step):
        piece = text[start : start + size]
        if piece.strip():
            out.append(piece)
        if start + size >= len(text):
            break
    return out


def score(query_terms: Iterable[str], chunk: str) -> float:
    """Share of distinct query terms found in the chunk, nudged up by how often they occur. 0 = no overlap."""
    wanted = set(query_terms)
    if not wanted:
        return 0.0
    counts = Counter(tokens(chunk))
    found = [t for t in wanted if counts[t]]
    if not found:
        return 0.0
    coverage = len(found) / len(wanted)
    frequency = min(1.0, sum(counts[t] for t in found) / (4.0 * len(wanted)))
    return round(0.85 * coverage + 0.15 * frequency, 6)


def _same_kind(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return True
    return isinstance(a, str) and isinstance(b, str)


def _equal(have: Any, want: Any) -> bool:
    return _same_kind(have, want) and have == want


def matches(flt: Mapping[str, Any] | None, attributes: Mapping[str, Any] | None) -> bool:
    """Evaluate a validated ComparisonFilter / CompoundFilter against a store file's attributes.

    A file without the key never matches a comparison (whatever the operator), like SQL NULL.
    Ordering operators compare numbers with numbers and strings with strings only.
    """
    if flt is None:
        return True
    kind = flt["type"]
    if kind == "and":
        return all(matches(f, attributes) for f in flt["filters"])
    if kind == "or":
        return any(matches(f, attributes) for f in flt["filters"])
    attributes = attributes or {}
    if flt["key"] not in attributes:
        return False
    have, want = attributes[flt["key"]], flt["value"]
    if kind == "eq":
        return _equal(have, want)
    if kind == "ne":
        return not _equal(have, want)
    if kind == "in":
        return any(_equal(have, w) for w in want)
    if kind == "nin":
        return not any(_equal(have, w) for w in want)
    if isinstance(have, bool) or isinstance(want, bool) or not _same_kind(have, want):
        return False
    return {"gt": have > want, "gte": have >= want, "lt": have < want, "lte": have <= want}[kind]
