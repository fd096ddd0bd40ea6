"""Chunks respect the token window and overlap, and break where a reader would."""

from __future__ import annotations

import itertools

import pytest

from ingest.remote.local.chunking import AUTO, ChunkingStrategy, chunk_text, estimate_tokens, parse_strategy


def _prose(paragraphs: int, sentences: int = 6) -> str:
    return "\n\n".join(
        " ".join(f"Paragraph {p} sentence {s} talks about widgets and gadgets at length." for s in range(sentences))
        for p in range(paragraphs)
    )


def test_token_estimate_is_about_four_thirds_per_english_word():
    text = "The quick brown fox jumps over the lazy dog near the riverbank today " * 50
    words = len(text.split())
    assert 1.0 * words <= estimate_tokens(text) <= 1.6 * words


def test_short_text_is_one_chunk_unchanged():
    assert chunk_text("Just a short note.") == ["Just a short note."]


def test_whitespace_only_text_has_no_chunks():
    assert chunk_text(" \n\t ") == []


def test_auto_chunks_stay_within_800_tokens_and_overlap():
    text = _prose(80)
    chunks = chunk_text(text, {"type": "auto"})
    assert len(chunks) > 5
    assert all(estimate_tokens(c) <= 800 for c in chunks)
    # Consecutive chunks share text: the tail of one starts the next.
    for first, second in itertools.pairwise(chunks):
        assert second[:60] in first
    # Nothing is lost: the first and last words are in some chunk.
    assert chunks[0].startswith("Paragraph 0") and chunks[-1].endswith("at length.")


def test_overlap_is_about_the_requested_size():
    text = _prose(60)
    chunks = chunk_text(text, {"type": "static", "static": {"max_chunk_size_tokens": 400, "chunk_overlap_tokens": 200}})
    first, second = chunks[0], chunks[1]
    shared = second[: len(second) - len(second.lstrip())] + second
    overlap = next(i for i in range(len(shared), 0, -1) if first.endswith(shared[:i]))
    assert 120 <= estimate_tokens(shared[:overlap]) <= 200


def test_static_strategy_is_honoured():
    text = _prose(40)
    small = chunk_text(text, {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}})
    assert all(estimate_tokens(c) <= 100 for c in small)
    assert len(small) >= 3 * len(chunk_text(text))
    assert max(estimate_tokens(c) for c in chunk_text(text)) > 700  # auto really is bigger
    # No overlap: the chunks put back together are the text, minus whitespace at the joins.
    assert "".join(small).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")


def test_chunks_end_at_sentence_or_paragraph_ends_when_they_can():
    chunks = chunk_text(
        _prose(40), {"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 50}}
    )
    assert all(c.endswith("at length.") for c in chunks)


def test_paragraph_break_is_preferred_over_a_sentence_end():
    # Paragraphs of ~150 tokens: a 200-token window holds one paragraph and a bit.
    text = _prose(10, sentences=10)
    chunks = chunk_text(text, {"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 0}})
    assert all(c.endswith("sentence 9 talks about widgets and gadgets at length.") for c in chunks)


def test_text_without_spaces_is_still_cut_to_size():
    blob = "A" * 30000
    chunks = chunk_text(blob, {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}})
    assert "".join(chunks) == blob
    assert all(estimate_tokens(c) <= 100 for c in chunks)


def test_non_latin_text_is_counted_per_character():
    text = "東京は日本の首都です。" * 200
    chunks = chunk_text(text, {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 10}})
    assert all(len(c) <= 100 for c in chunks)


def test_parse_strategy_shapes():
    assert parse_strategy(None) == AUTO == ChunkingStrategy(800, 400)
    assert parse_strategy({"type": "auto"}) == AUTO
    assert parse_strategy(
        {"type": "static", "static": {"max_chunk_size_tokens": 1000, "chunk_overlap_tokens": 500}}
    ) == ChunkingStrategy(1000, 500)


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            {"type": "static", "static": {"max_chunk_size_tokens": 99, "chunk_overlap_tokens": 0}},
            "between 100 and 4096",
        ),
        (
            {"type": "static", "static": {"max_chunk_size_tokens": 5000, "chunk_overlap_tokens": 0}},
            "between 100 and 4096",
        ),
        ({"type": "static", "static": {"max_chunk_size_tokens": 400, "chunk_overlap_tokens": 201}}, "half"),
        ({"type": "static"}, '"static" object'),
        ({"type": "static", "static": {"max_chunk_size_tokens": "800", "chunk_overlap_tokens": 0}}, "integer"),
        ({"type": "semantic"}, "auto"),
    ],
)
def test_bad_strategies_name_the_problem(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_strategy(bad)
