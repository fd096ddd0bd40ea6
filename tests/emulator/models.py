"""Records behind the emulated API objects, and cursor pagination."""

from __future__ import annotations

import string
from dataclasses import dataclass, field

ALNUM = string.ascii_letters + string.digits


@dataclass
class FileRec:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int
    seq: int


@dataclass
class StoreFile:
    file_id: str
    store_id: str
    created_at: int
    seq: int
    attributes: dict | None
    chunking: dict
    batch_id: str | None
    outcome: tuple  # (final status, last_error or None), decided at attach time
    ready_at: float
    status: str = "in_progress"
    last_error: dict | None = None
    stuck: bool = False
    search_attributes: dict | None = None  # what search filters on (llama-stack: those of attach time)


@dataclass
class Store:
    id: str
    name: str
    description: str | None
    created_at: int
    seq: int
    metadata: dict
    expires_after: dict | None
    last_active_at: int
    forced_expired: bool = False
    embedder_forgotten: bool = False  # llama-stack: an update dropped the embedding keys from its metadata
    files: dict = field(default_factory=dict)  # file_id -> StoreFile, in attach order
    keys: dict = field(default_factory=dict)  # file_id -> seq, kept after detach (pagination cursors)


@dataclass
class Batch:
    id: str
    store_id: str
    created_at: int
    seq: int
    file_ids: list
    frozen: dict = field(default_factory=dict)  # file_id -> last status of members that left the store
    cancelled: bool = False
    attached: int = 0  # files attached so far (the lose_records_over model)


def page(items: list, cursor_seq, after: str | None, before: str | None, limit: int, order: str) -> tuple[list, bool]:
    """Cursor pagination over items sorted by ascending seq; `after`/`before` follow the requested order."""
    asc = order == "asc"
    items = items if asc else items[::-1]
    if after:
        a = cursor_seq(after, "after")
        items = [i for i in items if (i.seq > a if asc else i.seq < a)]
    if before:
        b = cursor_seq(before, "before")
        items = [i for i in items if (i.seq < b if asc else i.seq > b)]
        if not after:
            return items[-limit:], len(items) > limit
    return items[:limit], len(items) > limit


def listing(data: list[dict], has_more: bool) -> dict:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
