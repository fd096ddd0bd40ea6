"""Search across stores: each store's best chunks, merged by score, one line per document, with the
paths the manifest knows. Imports only what a search needs (no scan, no store routing): a search is
a command people wait for, and its start-up is most of its time."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ingest.config import TOOL_KEYS, Settings, StoreSpec
from ingest.errors import IngestError, NotFound, UnknownStore
from ingest.limits import MAX_SEARCH_RESULTS

if TYPE_CHECKING:
    from ingest.manifest import Manifest
    from ingest.remote.base import Hit, Remote
    from ingest.rows import StoreRow


def filter_schema(settings: Settings, manifest: Manifest) -> dict[str, type]:
    """The attributes files can carry: ingest's own and the static ones of every store, configured or
    remembered."""
    from ingest.stores import attribute_schema

    remembered = [StoreSpec(**{**spec, "paths": tuple(spec["paths"])}) for spec in manifest.remembered_store_specs()]
    return attribute_schema([*settings.stores, *remembered])


def search_stores(
    manifest: Manifest,
    remote: Remote,
    query: str,
    store_name: str | None,
    filters: Mapping[str, Any] | None,
    max_results: int,
) -> list[dict[str, Any]]:
    """Search every vector store of the named logical store (or all), merged by score."""
    stores = manifest.stores(store_name) if store_name else manifest.stores()
    if store_name and not stores:
        raise UnknownStore.among(store_name, (s.name for s in manifest.stores()))
    # Chunks, not documents, come back: a long document can fill max_results with its own chunks, so each
    # store is asked for more (up to the API's limit) and the best chunk of each document is kept.
    chunks = min(MAX_SEARCH_RESULTS, max(4 * max_results, 20))
    results = [(store, hit) for store in stores for hit in _search(remote, store, query, filters, chunks)]
    # The rows of the hits only: a search costs the same in a manifest of a hundred files or a million.
    by_file = {
        file_id: (os.path.join(row.root, row.path), row.attrs())
        for file_id, row in manifest.rows_of_files({hit.file_id for _, hit in results}).items()
    }
    hits: list[dict[str, Any]] = []
    for store, hit in results:
        path, ours = by_file.get(hit.file_id) or (None, None)
        hits.append(
            {
                "path": path or hit.attributes.get("path", hit.filename),
                "score": round(hit.score, 4),  # as the server gives it: some score by distance, past 1
                "store": store.name,
                "file_id": hit.file_id,
                "attributes": _ours(hit.attributes, ours),
                "text": hit.text,
            }
        )
    hits.sort(key=lambda h: -h["score"])
    best: dict[str, dict[str, Any]] = {}
    for found in hits:  # one line per document: its best chunk
        best.setdefault(found["path"], found)
    return list(best.values())[:max_results]


def _search(remote: Remote, store: StoreRow, query: str, filters: Mapping[str, Any] | None, chunks: int) -> list[Hit]:
    try:
        return remote.search(store.id, query, filters, chunks)
    except NotFound:
        raise IngestError(
            f"store {store.name!r} ({store.id}) is not on the server any more (deleted or expired there): "
            "`ingest sync` makes it again and uploads its files; `ingest verify` checks every store"
        ) from None


def _ours(attributes: Mapping[str, Any], ours: Mapping[str, Any] | None) -> dict[str, Any]:
    """The attributes ingest set, in the types it set them: servers add keys of their own (llama-stack's
    chunk_id, token_count, …) and may hand integers back as floats."""
    if ours is None:  # a file the manifest no longer knows: the keys every file gets
        keys: Any = TOOL_KEYS
    else:
        keys = ours.keys()
    out = {}
    for key in keys:
        if key in attributes:
            value = attributes[key]
            if isinstance(value, float) and value.is_integer() and (ours is None or isinstance(ours.get(key), int)):
                value = int(value)
            out[key] = value
    return out
