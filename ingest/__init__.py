"""Keep folders of documents in sync with OpenAI vector stores: `ingest.sync("docs")`, or
`with ingest.Ingest.open(["docs"]) as docs: docs.sync()`; the README's "Python API" section."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ingest.api import Ingest, sync
    from ingest.errors import IngestError
    from ingest.events import FileEvent, Report

__all__ = ["FileEvent", "Ingest", "IngestError", "Report", "__version__", "sync"]
_HOMES = {"Ingest": "api", "sync": "api", "IngestError": "errors", "FileEvent": "events", "Report": "events"}


def __getattr__(name: str) -> Any:
    # The front door's names load when used: every command imports this package (the CLI reads
    # __version__), and a search needs neither the engine's events nor, until it opens, the API.
    if name in _HOMES:
        import importlib

        value = getattr(importlib.import_module(f"ingest.{_HOMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ingest' has no attribute {name!r}")
