"""The "llama-stack" profile: how llama-stack 0.7.3 answers the same endpoints (../shared/llama-stack.md).

1. batches take only file_ids (+ batch-level attributes): `files=[…]` is a 400 validation error; a batch
   is "completed" even when its files failed.  2. vector_stores.files.create answers once embedded.
3. last_error only in the attach reply; later reads say failed with last_error null.  4. search keeps the
   attributes of attach time (updates show in retrieve/list only).  5. attribute integers come back as
   floats.  6. score is 1/L2 distance (can pass 1), hits carry internal attribute keys, rewrite_query
   is a 400.  7. unknown store / store file / batch: 400 "… not found"; unknown file: 404; the envelope is
   {"error": {"message"}} without type/code; validation errors are {"errors": [{loc, msg, type}]}.
8. files.delete does not detach (the store keeps the file and its chunks).  10. DOCX/PPTX: "No chunks
   were generated from the file"; HTML is indexed as raw markup.  11. re-attaching a file already in the
   store returns the existing object.  12. too many attaches in flight lose records (chunks stay
   searchable).  13. usage_bytes 0; expires_after ignored; purpose assistants or batch only.
Plus: GET /version and /health, and a fresh server's first upload fails 500 "no such table" unless a
GET /files came first.
"""

from __future__ import annotations

from typing import Any

from .validate import ApiError

NAME = "llama-stack"
VERSION = "0.7.3"
PURPOSES = ("assistants", "batch")
UNREADABLE = (".docx", ".pptx", ".doc")
INTERNAL_KEYS = ("filename", "file_id", "chunk_id", "document_id", "token_count")
STORE_METADATA = {"embedding_model": "all-MiniLM-L6-v2", "embedding_dimension": "384", "provider_id": "sqlite-vec"}
ATTACH = "POST /vector_stores/{vector_store_id}/files"


def missing(what: str) -> ApiError:
    return ApiError(400, f"{what} not found")


def file_ids_required() -> ApiError:
    return ApiError(
        400,
        "Field required",
        raw={"errors": [{"loc": ["body", "file_ids"], "msg": "Field required", "type": "missing"}]},
    )


def floats(attributes: dict | None) -> dict:
    return {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in (attributes or {}).items()}


def distance_score(overlap: float) -> float:
    """1 / L2 distance, from the emulator's 0..1 overlap: 2.5 for a perfect match, under 1 for weak ones."""
    return round(1.0 / (1.4 - overlap), 6)


def hit_attributes(attributes: dict | None, file_id: str, filename: str, n: int, text: str) -> dict[str, Any]:
    return floats(attributes) | {
        "filename": filename,
        "file_id": file_id,
        "chunk_id": f"{file_id}-{n}",
        "document_id": file_id,
        "token_count": float(max(1, len(text) // 4)),
    }
