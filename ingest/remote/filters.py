"""OpenAI attribute filters: validate them, evaluate them locally, and build them from --filter.

Semantics chosen where the API documentation is silent (the local store follows them):
- A file without the filter's key matches only `ne` and `nin` ("is not X" is true of a file that
  has no value at all), never eq/gt/gte/lt/lte/in.
- Booleans are not numbers: `eq true` does not match 1. Integers and floats compare by value.
- gt/gte/lt/lte compare numbers with numbers and strings with strings (lexicographically, so ISO
  dates work); a value of another type never matches.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ingest.limits import MAX_ATTRIBUTE_KEY, MAX_ATTRIBUTE_VALUE, MAX_ATTRIBUTES

COMPARISONS = frozenset({"eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"})
COMPOUNDS = frozenset({"and", "or"})
_ORDERINGS = frozenset({"gt", "gte", "lt", "lte"})

_CLI_OPERATORS = {"=": "eq", "!=": "ne", ">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}
# The key is everything before the first operator character; longest operators are tried first.
_CLI_FILTER = re.compile(r"^\s*([^=!<>]+?)\s*(!=|>=|<=|=|>|<)\s*(.*?)\s*$", re.S)


def _is_number(value: object) -> bool:
    """True for int/float values, which bools are not."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_scalar(value: object) -> bool:
    """True for the attribute value types: string, number, bool."""
    return isinstance(value, (str, bool)) or (isinstance(value, (int, float)) and math.isfinite(value))


def validate_filter(flt: object, where: str = "filters") -> None:
    """Raise ValueError naming the first malformed part of `flt`."""
    if not isinstance(flt, Mapping):
        raise ValueError(f'{where} must be an object with a "type", got {flt!r}')
    kind = flt.get("type")
    if kind in COMPOUNDS:
        subs = flt.get("filters")
        if isinstance(subs, (str, bytes)) or not isinstance(subs, Sequence) or not subs:
            raise ValueError(f'{where}: a {kind!r} filter needs a non-empty list in "filters"')
        extra = set(flt) - {"type", "filters"}
        if extra:
            raise ValueError(f"{where}: unexpected field(s) {sorted(extra)} in a {kind!r} filter")
        for n, sub in enumerate(subs):
            validate_filter(sub, f"{where}.filters[{n}]")
        return
    if kind not in COMPARISONS:
        raise ValueError(f"{where}.type must be one of {sorted(COMPARISONS | COMPOUNDS)}, got {kind!r}")
    extra = set(flt) - {"type", "key", "value"}
    if extra:
        raise ValueError(f"{where}: unexpected field(s) {sorted(extra)} in a {kind!r} filter")
    key = flt.get("key")
    if not isinstance(key, str) or not key:
        raise ValueError(f"{where}.key must be a non-empty string, got {key!r}")
    if "value" not in flt:
        raise ValueError(f'{where}: a {kind!r} filter on {key!r} needs a "value"')
    value = flt["value"]
    if kind in ("in", "nin"):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
            raise ValueError(f"{where}.value must be a non-empty list for {kind!r}, got {value!r}")
        for item in value:
            if not _is_scalar(item):
                raise ValueError(f"{where}.value items must be strings, numbers or booleans, got {item!r}")
    elif kind in _ORDERINGS:
        if not (isinstance(value, str) or (_is_number(value) and math.isfinite(value))):
            raise ValueError(f"{where}.value must be a number or a string for {kind!r}, got {value!r}")
    elif not _is_scalar(value):
        raise ValueError(f"{where}.value must be a string, number or boolean, got {value!r}")


def validate_attributes(attributes: Mapping[str, object]) -> None:
    """Raise ValueError unless `attributes` fit the API's limits (ingest.limits): so many keys of so
    many characters, values strings of so many characters, finite numbers or booleans."""
    if len(attributes) > MAX_ATTRIBUTES:
        raise ValueError(f"attributes take at most {MAX_ATTRIBUTES} keys, got {len(attributes)}")
    for key, value in attributes.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_ATTRIBUTE_KEY:
            raise ValueError(f"attribute key {key!r} must be a string of 1-{MAX_ATTRIBUTE_KEY} characters")
        if not _is_scalar(value) or (isinstance(value, str) and len(value) > MAX_ATTRIBUTE_VALUE):
            raise ValueError(
                f"attribute {key!r}: {value!r} is not a string of at most {MAX_ATTRIBUTE_VALUE} characters, "
                "a finite number or a boolean"
            )


def _same(a: object, b: object) -> bool:
    """Attribute equality that keeps bools, numbers and strings apart."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return a == b
    return isinstance(a, str) and isinstance(b, str) and a == b


def _ordered(kind: str, a: Any, b: Any) -> bool:
    """a <kind> b for two numbers or two strings; False for any other pair."""
    if not ((_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))):
        return False
    if kind == "gt":
        return a > b
    if kind == "gte":
        return a >= b
    if kind == "lt":
        return a < b
    return a <= b


def matches(flt: Mapping[str, Any] | None, attributes: Mapping[str, object]) -> bool:
    """True when `attributes` satisfy the filter; None matches everything. Assumes a valid filter
    (call validate_filter first on anything a user wrote)."""
    if flt is None:
        return True
    kind = flt["type"]
    if kind == "and":
        return all(matches(sub, attributes) for sub in flt["filters"])
    if kind == "or":
        return any(matches(sub, attributes) for sub in flt["filters"])
    key, value = flt["key"], flt["value"]
    if key not in attributes:
        return kind in ("ne", "nin")
    actual = attributes[key]
    if kind == "eq":
        return _same(actual, value)
    if kind == "ne":
        return not _same(actual, value)
    if kind == "in":
        return any(_same(actual, v) for v in value)
    if kind == "nin":
        return not any(_same(actual, v) for v in value)
    return _ordered(kind, actual, value)


def parse_cli_value(text: str) -> str | int | float | bool:
    """A --filter value: true/false → bool, a finite number → int/float, "quoted" → str."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    # "nan"/"inf" parse as floats but a user typing them means the words.
    return number if math.isfinite(number) else text


def parse_cli_filters(specs: Sequence[str]) -> dict | None:
    """Turn --filter strings ("lang=en", "mtime>=1700000000", "draft!=true") into one OpenAI
    filter; several are joined with "and"; no strings gives None.

    Values are parsed as booleans or numbers when they look like one; quote them ('id="007"')
    to keep a string. Raises ValueError with the offending string.
    """
    comparisons = []
    for spec in specs:
        m = _CLI_FILTER.match(spec)
        if not m:
            raise ValueError(
                f"--filter {spec!r}: expected KEY=VALUE, KEY!=VALUE, KEY>VALUE, KEY>=VALUE, KEY<VALUE or KEY<=VALUE"
            )
        key, op, raw = m.groups()
        value = parse_cli_value(raw)
        kind = _CLI_OPERATORS[op]
        if kind in _ORDERINGS and isinstance(value, bool):
            raise ValueError(f"--filter {spec!r}: {op} needs a number or a string, not a boolean")
        comparisons.append({"type": kind, "key": key, "value": value})
    if not comparisons:
        return None
    if len(comparisons) == 1:
        return comparisons[0]
    return {"type": "and", "filters": comparisons}


# What a value of each kind of attribute looks like, for the messages of check_filter.
_KINDS = {str: "a string", float: "a number", bool: "true or false"}


def _kind(value: object) -> type:
    if isinstance(value, bool):
        return bool
    return float if _is_number(value) else str


def check_filter(flt: Mapping[str, object], schema: Mapping[str, type], hints: Mapping[str, str] | None = None) -> dict:
    """The filter with each value normalised where a user's habit is unambiguous (ext=.md is ext=md),
    or ValueError when it cannot match any file: a key no file carries, or a value of another type
    than the key's (schema: key -> str, float or bool). hints: key -> what its values look like."""
    kind = flt["type"]
    if kind in COMPOUNDS:
        return {"type": kind, "filters": [check_filter(sub, schema, hints) for sub in flt["filters"]]}  # type: ignore[attr-defined]
    key, value = str(flt["key"]), flt["value"]
    if key not in schema:
        raise ValueError(f"no file carries the attribute {key!r}; the attributes are: {', '.join(sorted(schema))}")
    values = list(value) if kind in ("in", "nin") else [value]  # type: ignore[call-overload]
    if key == "ext":
        values = [v.lstrip(".").lower() if isinstance(v, str) else v for v in values]
    for v in values:
        if _kind(v) is not schema[key]:
            takes = (hints or {}).get(key) or _KINDS[schema[key]]
            raise ValueError(f"{key} takes {takes}, not {v!r}")
    return {"type": kind, "key": key, "value": values if kind in ("in", "nin") else values[0]}
