"""Keep folders of documents in sync with OpenAI vector stores: `ingest.sync("docs")`, or
`with ingest.Ingest.open(["docs"]) as docs: docs.sync()`; the README's "Python API" section."""

__version__ = "0.1.0"  # before the imports: cli.py reads it

from ingest.api import Ingest, sync
from ingest.errors import IngestError
from ingest.events import FileEvent, Report

__all__ = ["FileEvent", "Ingest", "IngestError", "Report", "__version__", "sync"]
