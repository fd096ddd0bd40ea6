"""The /v1 endpoints: request parsing and validation, then one State call each. Handlers return (status, payload)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from . import llama
from . import validate as v
from .state import State
from .validate import ApiError, bad

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
STATUSES = ("in_progress", "completed", "failed", "cancelled")
MAX_UPLOAD = 512 * 1024 * 1024


@dataclass
class Req:
    state: State
    params: dict
    query: dict
    raw: bytes
    content_type: str

    def json(self) -> dict:
        if not self.raw.strip():
            return {}
        try:
            body = json.loads(self.raw)
        except ValueError:
            raise bad(
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent "
                "was not valid JSON.)"
            ) from None
        if not isinstance(body, dict):
            raise bad("Invalid body: expected an object.")
        return body


# ---- multipart -----------------------------------------------------------------------------------------
def _unescape(value: str) -> str:
    """Undo the HTML5 form encoding httpx applies to names (%22 for quotes, %0A etc. for controls, \\\\)."""
    value = re.sub(r"%(2[2]|[01][0-9A-Fa-f])", lambda m: chr(int(m.group(1), 16)), value)
    return value.replace("\\\\", "\\")


def parse_multipart(raw: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.lower().startswith("multipart/form-data") or not m:
        raise bad("Invalid Content-Type header, expected multipart/form-data.")
    delim = b"--" + m.group(1).encode()
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in raw.split(delim)[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part[2:].partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        disposition = next(
            (
                line
                for line in head.decode("utf-8", "replace").split("\r\n")
                if line.lower().startswith("content-disposition")
            ),
            "",
        )
        name = re.search(r'\bname="((?:[^"\\]|\\.)*)"', disposition)
        filename = re.search(r'\bfilename="((?:[^"\\]|\\.)*)"', disposition)
        if name:
            fields[_unescape(name.group(1))] = (_unescape(filename.group(1)) if filename else None, data)
    return fields


# ---- Files -----------------------------------------------------------------------------------------------
def create_file(r: Req):
    fields = parse_multipart(r.raw, r.content_type)
    if "file" not in fields or fields["file"][0] is None:
        raise bad("Missing required parameter: 'file'.", "file", "missing_required_parameter")
    if "purpose" not in fields:
        raise bad("Missing required parameter: 'purpose'.", "purpose", "missing_required_parameter")
    purposes = llama.PURPOSES if r.state.llama else PURPOSES
    purpose = v.enum(fields["purpose"][1].decode("utf-8", "replace"), "purpose", purposes)
    filename, data = fields["file"]
    if len(data) > MAX_UPLOAD:
        raise bad("File is too large. The maximum file size is 512 MB.", "file", "file_too_large")
    return 200, r.state.create_file(filename, purpose, data)


def list_files(r: Req):
    q = r.query
    return 200, r.state.list_files(
        q.get("purpose"),
        v.query_int(q, "limit", 1, 10000, 10000),
        v.query_enum(q, "order", ("asc", "desc"), "desc"),
        q.get("after"),
    )


def get_file(r: Req):
    return 200, r.state.get_file(r.params["file_id"])


def delete_file(r: Req):
    return 200, r.state.delete_file(r.params["file_id"])


def file_content(r: Req):
    return 200, r.state.file_content(r.params["file_id"])


# ---- vector stores --------------------------------------------------------------------------------------
def create_store(r: Req):
    b = r.json()
    v.body_keys(b, ("name", "description", "metadata", "expires_after", "chunking_strategy", "file_ids"))
    name = v.string(b.get("name"), "name", nullable=True)
    description = v.string(b.get("description"), "description", max_len=512, nullable=True)
    return 200, r.state.create_store(
        name,
        description,
        v.metadata(b.get("metadata")),
        v.expires_after(b.get("expires_after")),
        v.file_ids(b.get("file_ids", []), "file_ids", 500),
        v.chunking(b.get("chunking_strategy")),
    )


def _list_args(q: dict) -> dict:
    return {
        "limit": v.query_int(q, "limit", 1, 100, 20),
        "order": v.query_enum(q, "order", ("asc", "desc"), "desc"),
        "after": q.get("after"),
        "before": q.get("before"),
    }


def list_stores(r: Req):
    return 200, r.state.list_stores(**_list_args(r.query))


def get_store(r: Req):
    return 200, r.state.get_store(r.params["vector_store_id"])


def modify_store(r: Req):
    b = r.json()
    v.body_keys(b, ("name", "metadata", "expires_after"))
    changes: dict[str, Any] = {}
    if "name" in b:
        changes["name"] = v.string(b["name"], "name", nullable=True)
    if "metadata" in b:
        changes["metadata"] = v.metadata(b["metadata"])
    if "expires_after" in b:
        changes["expires_after"] = v.expires_after(b["expires_after"])
    return 200, r.state.modify_store(r.params["vector_store_id"], changes)


def delete_store(r: Req):
    return 200, r.state.delete_store(r.params["vector_store_id"])


# ---- store files ------------------------------------------------------------------------------------------
def create_store_file(r: Req):
    b = r.json()
    v.body_keys(b, ("file_id", "attributes", "chunking_strategy"), ("file_id",))
    return 200, r.state.create_store_file(
        r.params["vector_store_id"],
        v.string(b["file_id"], "file_id"),
        v.attributes(b.get("attributes")),
        v.chunking(b.get("chunking_strategy")),
    )


def list_store_files(r: Req):
    status = v.query_enum(r.query, "filter", STATUSES, None)
    return 200, r.state.list_store_files(r.params["vector_store_id"], status, **_list_args(r.query))


def get_store_file(r: Req):
    return 200, r.state.get_store_file(r.params["vector_store_id"], r.params["file_id"])


def update_store_file(r: Req):
    b = r.json()
    v.body_keys(b, ("attributes",), ("attributes",))
    return 200, r.state.update_store_file(
        r.params["vector_store_id"], r.params["file_id"], v.attributes(b["attributes"])
    )


def delete_store_file(r: Req):
    return 200, r.state.delete_store_file(r.params["vector_store_id"], r.params["file_id"])


# ---- file batches -----------------------------------------------------------------------------------------
def create_batch(r: Req):
    b = r.json()
    if r.state.llama and "file_ids" not in b:
        raise llama.file_ids_required()
    v.body_keys(b, ("file_ids", "files", "attributes", "chunking_strategy"))
    if "file_ids" in b and "files" in b:
        raise bad("Only one of 'file_ids' or 'files' may be provided, not both.", "files", "invalid_value")
    if "file_ids" not in b and "files" not in b:
        raise bad(
            "Missing required parameter: one of 'file_ids' or 'files' must be provided.",
            "file_ids",
            "missing_required_parameter",
        )
    if "file_ids" in b:
        ids = v.file_ids(v.array(b["file_ids"], "file_ids", 2000, 1), "file_ids", 2000)
        attrs, chunking = v.attributes(b.get("attributes")), v.chunking(b.get("chunking_strategy"))
        items = [(fid, attrs, chunking) for fid in ids]
    else:
        items = []
        for i, item in enumerate(v.array(b["files"], "files", 2000, 1)):
            where = f"files[{i}]"
            item = v.obj(item, where)
            v.body_keys(item, ("file_id", "attributes", "chunking_strategy"), ("file_id",), prefix=f"{where}.")
            items.append(
                (
                    v.string(item["file_id"], f"{where}.file_id"),
                    v.attributes(item.get("attributes"), f"{where}.attributes"),
                    v.chunking(item.get("chunking_strategy"), f"{where}.chunking_strategy"),
                )
            )
    return 200, r.state.create_batch(r.params["vector_store_id"], items)


def _batch_id(r: Req) -> str:
    return v.id_prefix(r.params["batch_id"], "batch_id", "vsfb_")


def get_batch(r: Req):
    return 200, r.state.get_batch(r.params["vector_store_id"], _batch_id(r))


def cancel_batch(r: Req):
    return 200, r.state.cancel_batch(r.params["vector_store_id"], _batch_id(r))


def list_batch_files(r: Req):
    status = v.query_enum(r.query, "filter", STATUSES, None)
    return 200, r.state.list_store_files(
        r.params["vector_store_id"], status, batch_id=_batch_id(r), **_list_args(r.query)
    )


# ---- search ------------------------------------------------------------------------------------------------
def search(r: Req):
    b = r.json()
    v.body_keys(b, ("query", "filters", "max_num_results", "ranking_options", "rewrite_query"), ("query",))
    query = b["query"]
    queries = (
        [query]
        if isinstance(query, str)
        else [v.string(q, f"query[{i}]") for i, q in enumerate(v.array(query, "query", min_len=1))]
    )
    flt = v.filters(b["filters"]) if b.get("filters") is not None else None
    max_results = v.integer(b.get("max_num_results", 10), "max_num_results", 1, 50)
    threshold = 0.0
    ranking = b.get("ranking_options")
    if ranking is not None:
        ranking = v.obj(ranking, "ranking_options")
        v.body_keys(ranking, ("ranker", "score_threshold"), prefix="ranking_options.")
        if "ranker" in ranking:
            v.enum(ranking["ranker"], "ranking_options.ranker", ("none", "auto", "default-2024-11-15"))
        if "score_threshold" in ranking:
            threshold = v.number(ranking["score_threshold"], "ranking_options.score_threshold")
            if not 0 <= threshold <= 1:
                raise bad(
                    "Invalid 'ranking_options.score_threshold': expected a value between 0 and 1.",
                    "ranking_options.score_threshold",
                    "invalid_value",
                )
    rewrite = v.boolean(b.get("rewrite_query", False), "rewrite_query")
    return 200, r.state.search(r.params["vector_store_id"], queries, flt, max_results, threshold, rewrite)


# ---- llama-stack's own ---------------------------------------------------------------------------------------
def version(r: Req):
    if not r.state.llama:
        raise ApiError(404, "Invalid URL (GET /v1/version)")
    return 200, {"version": llama.VERSION}


def health(r: Req):
    if not r.state.llama:
        raise ApiError(404, "Invalid URL (GET /v1/health)")
    return 200, {"status": "OK"}


# ---- routing -------------------------------------------------------------------------------------------------
VS = "/vector_stores/{vector_store_id}"
ROUTES: list[tuple[str, str, Callable]] = [
    ("POST", "/files", create_file),
    ("GET", "/files", list_files),
    ("GET", "/files/{file_id}", get_file),
    ("DELETE", "/files/{file_id}", delete_file),
    ("GET", "/files/{file_id}/content", file_content),
    ("POST", "/vector_stores", create_store),
    ("GET", "/vector_stores", list_stores),
    ("GET", VS, get_store),
    ("POST", VS, modify_store),
    ("DELETE", VS, delete_store),
    ("POST", VS + "/files", create_store_file),
    ("GET", VS + "/files", list_store_files),
    ("GET", VS + "/files/{file_id}", get_store_file),
    ("POST", VS + "/files/{file_id}", update_store_file),
    ("DELETE", VS + "/files/{file_id}", delete_store_file),
    ("POST", VS + "/file_batches", create_batch),
    ("GET", VS + "/file_batches/{batch_id}", get_batch),
    ("POST", VS + "/file_batches/{batch_id}/cancel", cancel_batch),
    ("GET", VS + "/file_batches/{batch_id}/files", list_batch_files),
    ("POST", VS + "/search", search),
    ("GET", "/version", version),
    ("GET", "/health", health),
]
ENDPOINTS = [f"{m} {t}" for m, t, _ in ROUTES]
# GETs of batches and store files carry openai-poll-after-ms.
POLL_ENDPOINTS = frozenset(e for e in ENDPOINTS if e.startswith("GET " + VS + "/file"))
_COMPILED = [(m, t, re.compile("^/v1" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", t) + "/?$"), fn) for m, t, fn in ROUTES]


def resolve(method: str, path: str) -> tuple[str, Callable, dict]:
    """Returns (endpoint name like 'GET /vector_stores/{vector_store_id}', handler, path params)."""
    for m, template, rx, fn in _COMPILED:
        match = rx.match(path)
        if match and m == method:
            return f"{m} {template}", fn, {k: unquote(x) for k, x in match.groupdict().items()}
    raise ApiError(404, f"Invalid URL ({method} {path})")
