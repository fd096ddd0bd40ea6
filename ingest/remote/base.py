"""The small remote interface the sync engine speaks: OpenAI and the embedded store both implement it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ingest.remote.profile import Profile

# Where the backends have always found them.
from ingest.errors import AuthError as AuthError
from ingest.errors import NotFound as NotFound
from ingest.errors import RemoteError as RemoteError
from ingest.errors import Stopped as Stopped
from ingest.errors import Unreachable as Unreachable
from ingest.remote.breaker import Breaker

# Store metadata key holding a one-off token recorded before the create call: a store whose
# creation reply was lost (a dropped connection, a killed process) is found by it, not made twice.
CREATE_TOKEN = "ingest_create_token"
MAX_RETRY_AFTER = 120.0  # seconds; a longer Retry-After is the server asking us to stop, not to wait (as in the SDK)

AttrValue = str | int | float | bool

# Statuses of a file inside a store, as the OpenAI API names them.
IN_PROGRESS = "in_progress"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"

# last_error.code values; treat as an open string.
SERVER_ERROR = "server_error"
UNSUPPORTED_FILE = "unsupported_file"
INVALID_FILE = "invalid_file"


class Unsupported(RemoteError):
    """The server does not offer this form of the call (it answered 400 to the request's shape)."""


@dataclass(frozen=True)
class RemoteFile:
    id: str
    filename: str
    bytes: int
    created_at: int  # unix seconds, as the API reports it
    # True when an earlier attempt of this upload failed after the request may have reached the
    # server: a duplicate file may exist remotely, and the sync sweeps for it.
    maybe_duplicated: bool = False


@dataclass(frozen=True)
class Store:
    id: str
    name: str
    status: str  # "completed" | "in_progress" | "expired"
    usage_bytes: int = 0
    file_counts: Mapping[str, int] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StoreFile:
    file_id: str
    status: str
    attributes: Mapping[str, AttrValue] = field(default_factory=dict)
    error_code: str | None = None
    error_message: str | None = None
    usage_bytes: int = 0


@dataclass(frozen=True)
class Batch:
    id: str
    status: str  # in_progress | completed | failed | cancelled
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0
    poll_after_ms: int | None = None  # the server's openai-poll-after-ms hint, if any


@dataclass(frozen=True)
class AttachItem:
    file_id: str
    attributes: Mapping[str, AttrValue]
    chunking: Mapping[str, object] | None = None  # an OpenAI chunking_strategy object, None = auto


@dataclass(frozen=True)
class Hit:
    file_id: str
    filename: str
    score: float
    attributes: Mapping[str, AttrValue]
    text: str


class Remote(Protocol):
    """What sync needs from a vector-store service. Every method is one logical remote call."""

    kind: str  # "openai" | "local"

    @property
    def base_url(self) -> str: ...  # what the server profile remembered in the manifest is keyed by

    def probe(self) -> Profile: ...  # which server this is (one or two cheap calls)

    def upload(self, path: Path, filename: str) -> RemoteFile: ...
    def delete_file(self, file_id: str) -> None: ...  # NotFound is swallowed: deleting twice is fine
    def list_files(self) -> Iterator[RemoteFile]: ...  # every file of purpose "assistants", paginated

    def create_store(
        self,
        name: str,
        metadata: Mapping[str, str],
        chunking: Mapping[str, object] | None,
        expires_after_days: int | None,
    ) -> Store: ...
    def get_store(self, store_id: str) -> Store: ...  # raises NotFound
    def list_stores(self) -> Iterator[Store]: ...
    def find_store(self, token: str, since: float) -> Store | None: ...  # created since, carrying CREATE_TOKEN
    def delete_store(self, store_id: str) -> None: ...
    def rename_store(self, store_id: str, name: str, metadata: Mapping[str, str]) -> None: ...

    def attach_batch(self, store_id: str, items: Sequence[AttachItem]) -> Batch: ...
    def attach_file(self, store_id: str, item: AttachItem) -> StoreFile: ...  # one file, with its attributes
    def get_batch(self, store_id: str, batch_id: str) -> Batch: ...
    def batch_files(self, store_id: str, batch_id: str, status: str | None = None) -> Iterator[StoreFile]: ...

    def get_store_file(self, store_id: str, file_id: str) -> StoreFile: ...  # raises NotFound
    def list_store_files(self, store_id: str, status: str | None = None) -> Iterator[StoreFile]: ...
    def update_attributes(self, store_id: str, file_id: str, attributes: Mapping[str, AttrValue]) -> None: ...
    def detach(self, store_id: str, file_id: str) -> None: ...  # NotFound is swallowed

    def search(
        self, store_id: str, query: str, filters: Mapping[str, object] | None = None, max_results: int = 10
    ) -> list[Hit]: ...


class LazyRemote:
    """A Remote built on first use. Building one imports its SDK (the openai package takes half a
    second to import) or the embedded store's extractors: a pass with nothing to do never needs it."""

    def __init__(
        self,
        kind: str,
        build: Callable[[], Remote],
        base_url: str,
        stop: threading.Event | None = None,
        breaker: Breaker | None = None,
    ):
        self.kind, self.base_url = kind, base_url  # known without building it: the server profile's key
        self.stop = stop  # the built remote's stop (OpenAIRemote, LocalRemote): known without building it
        self.breaker = breaker  # the built remote's breaker (OpenAIRemote's), likewise; None: it has none
        self._build: Callable[[], Remote] | None = build
        self._remote: Remote | None = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        return self._remote is not None

    def close(self) -> None:
        """Close the remote if it was ever built (building one only to close it would defeat the point)."""
        close = getattr(self._remote, "close", None)
        if close is not None:
            close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_build", "_remote", "_lock"):
            raise AttributeError(name)
        if self._remote is None:
            with self._lock:  # the upload pool's threads may all ask at once
                if self._remote is None:
                    assert self._build is not None
                    self._remote, self._build = self._build(), None
        return getattr(self._remote, name)
