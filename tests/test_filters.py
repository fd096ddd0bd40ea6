"""Attribute filters select the files a user asked for, and malformed ones are explained."""

from __future__ import annotations

import pytest

from ingest.remote.filters import matches, parse_cli_filters, validate_filter

DOC = {"lang": "en", "year": 2024, "score": 4.5, "draft": False, "date": "2024-05-01"}


@pytest.mark.parametrize(
    "flt, expected",
    [
        ({"type": "eq", "key": "lang", "value": "en"}, True),
        ({"type": "eq", "key": "lang", "value": "fr"}, False),
        ({"type": "eq", "key": "year", "value": 2024.0}, True),
        ({"type": "eq", "key": "draft", "value": False}, True),
        ({"type": "eq", "key": "draft", "value": 0}, False),  # a bool is not a number
        ({"type": "ne", "key": "lang", "value": "fr"}, True),
        ({"type": "ne", "key": "lang", "value": "en"}, False),
        ({"type": "gt", "key": "year", "value": 2023}, True),
        ({"type": "gt", "key": "year", "value": 2024}, False),
        ({"type": "gte", "key": "year", "value": 2024}, True),
        ({"type": "lt", "key": "score", "value": 5}, True),
        ({"type": "lt", "key": "score", "value": 4.5}, False),
        ({"type": "lte", "key": "score", "value": 4.5}, True),
        ({"type": "gte", "key": "date", "value": "2024-01-01"}, True),  # ISO dates as strings
        ({"type": "gt", "key": "lang", "value": 3}, False),  # string vs number never matches
        ({"type": "in", "key": "lang", "value": ["de", "en"]}, True),
        ({"type": "in", "key": "lang", "value": ["de", "fr"]}, False),
        ({"type": "nin", "key": "lang", "value": ["de", "fr"]}, True),
        ({"type": "nin", "key": "lang", "value": ["en"]}, False),
    ],
)
def test_comparisons(flt, expected):
    validate_filter(flt)
    assert matches(flt, DOC) is expected


@pytest.mark.parametrize(
    "kind, expected", [("eq", False), ("gt", False), ("lte", False), ("in", False), ("ne", True), ("nin", True)]
)
def test_missing_key_matches_only_negations(kind, expected):
    value = ["x"] if kind in ("in", "nin") else "x"
    assert matches({"type": kind, "key": "author", "value": value}, DOC) is expected


def test_nested_and_or():
    flt = {
        "type": "and",
        "filters": [
            {"type": "eq", "key": "lang", "value": "en"},
            {
                "type": "or",
                "filters": [
                    {"type": "gte", "key": "year", "value": 2025},
                    {"type": "eq", "key": "draft", "value": False},
                ],
            },
        ],
    }
    validate_filter(flt)
    assert matches(flt, DOC)
    assert not matches(flt, {**DOC, "draft": True})
    assert matches(flt, {**DOC, "draft": True, "year": 2026})
    assert not matches(flt, {**DOC, "lang": "fr"})


def test_no_filter_matches_everything():
    assert matches(None, {})


@pytest.mark.parametrize(
    "bad, message",
    [
        ("lang=en", "must be an object"),
        ({"key": "lang", "value": "en"}, "type must be one of"),
        ({"type": "like", "key": "lang", "value": "en"}, "type must be one of"),
        ({"type": "eq", "value": "en"}, "key must be a non-empty string"),
        ({"type": "eq", "key": "lang"}, 'needs a "value"'),
        ({"type": "eq", "key": "lang", "value": {"x": 1}}, "string, number or boolean"),
        ({"type": "in", "key": "lang", "value": "en"}, "non-empty list"),
        ({"type": "gt", "key": "year", "value": True}, "number or a string"),
        ({"type": "and", "filters": []}, "non-empty list"),
        (
            {"type": "or", "filters": [{"type": "eq", "key": "a", "value": 1}, {"type": "eq"}]},
            r"filters\.filters\[1\]\.key",
        ),
        ({"type": "eq", "key": "a", "value": 1, "vaule": 2}, "unexpected field"),
    ],
)
def test_malformed_filters_are_explained(bad, message):
    with pytest.raises(ValueError, match=message):
        validate_filter(bad)


def test_cli_single_filter():
    assert parse_cli_filters(["lang=en"]) == {"type": "eq", "key": "lang", "value": "en"}


def test_cli_operators_and_value_types():
    flt = parse_cli_filters(
        [
            "year>=2020",
            "year<2025",
            "score>4.5",
            "score<=9",
            "draft!=true",
            "lang = en",
            'id="007"',
            "path=docs/a=b.txt",
        ]
    )
    assert flt == {
        "type": "and",
        "filters": [
            {"type": "gte", "key": "year", "value": 2020},
            {"type": "lt", "key": "year", "value": 2025},
            {"type": "gt", "key": "score", "value": 4.5},
            {"type": "lte", "key": "score", "value": 9},
            {"type": "ne", "key": "draft", "value": True},
            {"type": "eq", "key": "lang", "value": "en"},
            {"type": "eq", "key": "id", "value": "007"},
            {"type": "eq", "key": "path", "value": "docs/a=b.txt"},
        ],
    }
    validate_filter(flt)


def test_cli_filters_select_like_the_user_means():
    flt = parse_cli_filters(["year>=2024", "draft=false"])
    assert matches(flt, DOC)
    assert not matches(flt, {**DOC, "year": 2023})


def test_cli_no_filters_is_none():
    assert parse_cli_filters([]) is None


@pytest.mark.parametrize("bad", ["lang", "=en", ">=3", "draft>true"])
def test_cli_bad_filter_names_the_string(bad):
    with pytest.raises(ValueError, match="--filter"):
        parse_cli_filters([bad])
