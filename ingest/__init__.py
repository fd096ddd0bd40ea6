"""Keep folders of documents in sync with OpenAI vector stores: `ingest.sync("docs")`, or
`with ingest.Ingest.open(["docs"]) as docs: docs.sync()`; the README's "Python API" section."""

__version__ = "0.1.0"  # before the imports: cli.py reads it

import sys

if "sqlite_utils" not in sys.modules and "numpy" not in sys.modules:
    # sqlite-utils imports numpy and pandas when they are installed (to store their values; ingest
    # never hands it any): with the `semantic` extra's numpy that was 150 ms on every start, a no-op
    # sync's and a `status`'s too. Hidden while it loads; numpy imports as usual afterwards.
    _hidden = {name: sys.modules.get(name) for name in ("numpy", "pandas")}
    for _name in _hidden:
        sys.modules[_name] = None  # type: ignore[assignment]  # None in sys.modules: import raises ImportError
    try:
        import sqlite_utils.db  # noqa: F401
    finally:
        for _name, _module in _hidden.items():
            if _module is None:
                del sys.modules[_name]
            else:
                sys.modules[_name] = _module

from ingest.api import Ingest, sync
from ingest.errors import IngestError
from ingest.events import FileEvent, Report

__all__ = ["FileEvent", "Ingest", "IngestError", "Report", "__version__", "sync"]
