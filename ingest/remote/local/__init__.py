"""The embedded store: a vector-store look-alike in one SQLite file (store, search, extraction, chunking)."""

from ingest.remote.local.store import LocalRemote

__all__ = ["LocalRemote"]
