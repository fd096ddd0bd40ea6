"""Request validation worded the way the OpenAI API words it.

Every failure is an ApiError carrying the HTTP status and the `{"error": {message, type, param, code}}` body.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

MAX_PAIRS = 16
MAX_KEY = 64
MAX_VALUE = 512
COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin")
COMPOUNDS = ("and", "or")
AUTO_CHUNKING = {"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        raw: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = dict(headers or {})
        self.raw = raw  # a body of another shape (llama-stack's validation errors)

    def body(self, bare: bool = False) -> dict:
        """bare: the message alone, without type/param/code (llama-stack's envelope)."""
        if self.raw is not None:
            return self.raw
        if bare:
            return {"error": {"message": self.message}}
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def not_found(message: str, param: str | None = None) -> ApiError:
    return ApiError(404, message, param=param)


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def type_error(param: str, expected: str, value: Any) -> ApiError:
    return bad(
        f"Invalid type for '{param}': expected {expected}, but got {describe(value)} instead.", param, "invalid_type"
    )


def body_keys(body: Mapping[str, Any], allowed: Iterable[str], required: Iterable[str] = (), prefix: str = "") -> None:
    allowed = set(allowed)
    for key in body:
        if key not in allowed:
            raise bad(f"Unknown parameter: '{prefix}{key}'.", f"{prefix}{key}", "unknown_parameter")
    for key in required:
        if key not in body:
            raise bad(f"Missing required parameter: '{prefix}{key}'.", f"{prefix}{key}", "missing_required_parameter")


def obj(value: Any, param: str) -> dict:
    if not isinstance(value, dict):
        raise type_error(param, "an object", value)
    return value


def string(value: Any, param: str, *, max_len: int | None = None, nullable: bool = False) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise type_error(param, "a string", value)
    if max_len is not None and len(value) > max_len:
        raise bad(
            f"Invalid '{param}': string too long. Expected a string with maximum length {max_len}, "
            f"but got a string with length {len(value)} instead.",
            param,
            "string_above_max_length",
        )
    return value


def integer(value: Any, param: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise type_error(param, "an integer", value)
    if lo is not None and value < lo:
        raise bad(
            f"Invalid '{param}': integer below minimum value. Expected a value >= {lo}, but got {value} instead.",
            param,
            "integer_below_min_value",
        )
    if hi is not None and value > hi:
        raise bad(
            f"Invalid '{param}': integer above maximum value. Expected a value <= {hi}, but got {value} instead.",
            param,
            "integer_above_max_value",
        )
    return value


def number(value: Any, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise type_error(param, "a number", value)
    return float(value)


def boolean(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise type_error(param, "a boolean", value)
    return value


def enum(value: Any, param: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        listed = ", ".join(f"'{c}'" for c in choices)
        raise bad(f"Invalid value: '{value}'. Supported values are: {listed}.", param, "invalid_value")
    return value


def array(value: Any, param: str, max_len: int | None = None, min_len: int = 0) -> list:
    if not isinstance(value, list):
        raise type_error(param, "an array", value)
    if max_len is not None and len(value) > max_len:
        raise bad(
            f"Invalid '{param}': array too long. Expected an array with maximum length {max_len}, "
            f"but got an array with length {len(value)} instead.",
            param,
            "array_above_max_length",
        )
    if len(value) < min_len:
        raise bad(
            f"Invalid '{param}': empty array. Expected an array with minimum length {min_len}, "
            f"but got an empty array instead.",
            param,
            "empty_array",
        )
    return value


def _pairs(value: Any, param: str) -> dict:
    value = obj(value, param)
    if len(value) > MAX_PAIRS:
        raise bad(
            f"Invalid '{param}': too many properties. Expected an object with at most {MAX_PAIRS} "
            f"properties, but got an object with {len(value)} properties instead.",
            param,
            "object_above_max_properties",
        )
    for key in value:
        if len(key) > MAX_KEY:
            raise bad(
                f"Invalid '{param}': property name too long. Expected a property name with maximum "
                f"length {MAX_KEY}, but got a property name with length {len(key)} instead.",
                param,
                "object_property_name_above_max_length",
            )
    return value


def attributes(value: Any, param: str = "attributes") -> dict | None:
    """Store-file attributes: <= 16 keys of <= 64 chars; values string (<= 512), number or boolean."""
    if value is None:
        return None
    out = {}
    for key, val in _pairs(value, param).items():
        where = f"{param}.{key}"
        if isinstance(val, str):
            string(val, where, max_len=MAX_VALUE)
        elif isinstance(val, bool):
            pass
        elif isinstance(val, (int, float)):
            number(val, where)
        else:
            raise type_error(where, "one of a string, a number, or a boolean", val)
        out[key] = val
    return out


def metadata(value: Any, param: str = "metadata") -> dict | None:
    """Metadata: <= 16 pairs, keys <= 64 chars, string values <= 512 chars."""
    if value is None:
        return None
    return {key: string(val, f"{param}.{key}", max_len=MAX_VALUE) for key, val in _pairs(value, param).items()}


def chunking(value: Any, param: str = "chunking_strategy") -> dict:
    """Returns the strategy as the API reports it on a store file (auto is reported as static 800/400)."""
    if value is None:
        return {"type": "static", "static": dict(AUTO_CHUNKING["static"])}
    value = obj(value, param)
    body_keys(value, ("type", "static"), ("type",), prefix=f"{param}.")
    kind = enum(value["type"], f"{param}.type", ("auto", "static"))
    if kind == "auto":
        body_keys(value, ("type",), prefix=f"{param}.")
        return {"type": "static", "static": dict(AUTO_CHUNKING["static"])}
    body_keys(value, ("type", "static"), ("static",), prefix=f"{param}.")
    static = obj(value["static"], f"{param}.static")
    body_keys(
        static,
        ("max_chunk_size_tokens", "chunk_overlap_tokens"),
        ("max_chunk_size_tokens", "chunk_overlap_tokens"),
        prefix=f"{param}.static.",
    )
    size = integer(static["max_chunk_size_tokens"], f"{param}.static.max_chunk_size_tokens", 100, 4096)
    overlap = integer(static["chunk_overlap_tokens"], f"{param}.static.chunk_overlap_tokens", 0)
    if overlap > size // 2:
        raise bad(
            f"Invalid '{param}.static.chunk_overlap_tokens': chunk_overlap_tokens must not exceed half "
            f"of max_chunk_size_tokens ({size // 2}), but got {overlap} instead.",
            f"{param}.static.chunk_overlap_tokens",
            "invalid_value",
        )
    return {"type": "static", "static": {"max_chunk_size_tokens": size, "chunk_overlap_tokens": overlap}}


def expires_after(value: Any, param: str = "expires_after") -> dict | None:
    if value is None:
        return None
    value = obj(value, param)
    body_keys(value, ("anchor", "days"), ("anchor", "days"), prefix=f"{param}.")
    enum(value["anchor"], f"{param}.anchor", ("last_active_at",))
    return {"anchor": "last_active_at", "days": integer(value["days"], f"{param}.days", 1, 365)}


def file_ids(value: Any, param: str, max_len: int) -> list[str]:
    return [string(v, f"{param}[{i}]") for i, v in enumerate(array(value, param, max_len))]


def filters(value: Any, param: str = "filters") -> dict:
    """A ComparisonFilter or a CompoundFilter (nested to any depth)."""
    value = obj(value, param)
    if "type" not in value:
        raise bad(f"Missing required parameter: '{param}.type'.", f"{param}.type", "missing_required_parameter")
    kind = enum(value["type"], f"{param}.type", COMPARISONS + COMPOUNDS)
    if kind in COMPOUNDS:
        body_keys(value, ("type", "filters"), ("filters",), prefix=f"{param}.")
        subs = array(value["filters"], f"{param}.filters", min_len=1)
        return {"type": kind, "filters": [filters(f, f"{param}.filters[{i}]") for i, f in enumerate(subs)]}
    body_keys(value, ("type", "key", "value"), ("key", "value"), prefix=f"{param}.")
    key = string(value["key"], f"{param}.key")
    val = value["value"]
    where = f"{param}.value"
    if kind in ("in", "nin"):
        for i, item in enumerate(array(val, where)):
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise type_error(f"{where}[{i}]", "one of a string or a number", item)
    elif isinstance(val, (list, dict)) or val is None:
        raise type_error(where, "one of a string, a number, or a boolean", val)
    return {"type": kind, "key": key, "value": val}


def query_int(query: Mapping[str, str], name: str, lo: int, hi: int, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad(f"Invalid '{name}': expected an integer, but got '{raw}' instead.", name, "invalid_type") from None
    return integer(value, name, lo, hi)


def query_enum(query: Mapping[str, str], name: str, choices: Iterable[str], default: str | None) -> str | None:
    raw = query.get(name)
    return default if raw is None else enum(raw, name, choices)


def id_prefix(value: str, param: str, prefix: str) -> str:
    if not value.startswith(prefix):
        raise bad(f"Invalid '{param}': '{value}'. Expected an ID that begins with '{prefix}'.", param, "invalid_value")
    return value
