"""The manifest's rows as frozen dataclasses: what the other modules read and hand back to it."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from ingest.errors import ManifestError


@dataclass(frozen=True)
class FileRow:
    root: str
    path: str
    state: str
    store: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    inode: int | None = None
    hashed_at_ns: int | None = None
    sha256: str | None = None
    mime: str | None = None
    reason: str | None = None
    error_code: str | None = None
    retryable: int | None = None
    file_id: str | None = None
    vector_store_id: str | None = None
    batch_id: str | None = None
    old_file_id: str | None = None
    attributes: str | None = None
    attempts: int = 0
    first_seen: float | None = None
    updated_at: float | None = None
    indexed_at: float | None = None
    old_vector_store_id: str | None = None  # the store a file moving to another one leaves once indexed there

    @classmethod
    def from_db(cls, row: dict[str, Any]) -> FileRow:
        values: dict[str, Any] = {f.name: row.get(f.name) for f in fields(cls)}
        values["attempts"] = values["attempts"] or 0
        return cls(**values)

    @property
    def known_file_id(self) -> str:
        """The file id of a row whose state says it has one (uploaded or later)."""
        if self.file_id is None:
            raise ManifestError(f"{self.root}/{self.path}: state {self.state} without a file id")
        return self.file_id

    @property
    def known_store_id(self) -> str:
        """The vector store id of a row placed in a store (pending or later)."""
        if self.vector_store_id is None:
            raise ManifestError(f"{self.root}/{self.path}: state {self.state} without a vector store")
        return self.vector_store_id

    def attrs(self) -> dict[str, Any]:
        return json.loads(self.attributes) if self.attributes else {}


@dataclass(frozen=True)
class StoreRow:
    id: str
    name: str
    shard: int
    status: str
    fingerprint: str | None = None
    created_at: float | None = None
    replaces: str | None = None
    checked_at: float | None = None  # when the remote last confirmed it exists


@dataclass(frozen=True)
class Upload:
    id: int
    file_id: str | None
    root: str
    path: str
    filename: str
    bytes: int
    sha256: str | None
    vector_store_id: str | None
    status: str
    started_at: float
    finished_at: float | None
    suspect: int | None = None
    remote_created_at: int | None = None

    @property
    def known_file_id(self) -> str:
        """The file id of an upload whose reply came (live, retire, deleted)."""
        if self.file_id is None:
            raise ManifestError(f"upload {self.id} of {self.root}/{self.path} ({self.status}) has no file id")
        return self.file_id
