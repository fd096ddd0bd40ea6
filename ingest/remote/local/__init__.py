"""The embedded store: a vector-store look-alike in one SQLite file (store, search, extraction, chunking)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingest.remote.local.store import LocalRemote

__all__ = ["LocalRemote"]


def __getattr__(name: str) -> Any:
    # The store is imported when it is used: a module that only needs extract's ExtractError, or a
    # pass with nothing to do, does not load it.
    if name == "LocalRemote":
        from ingest.remote.local.store import LocalRemote

        return LocalRemote
    raise AttributeError(name)
