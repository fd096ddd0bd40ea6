"""The embedded store's request checks: what the API would answer with a 400 is a RemoteError here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ingest.remote import filters as attribute_filters
from ingest.remote.base import AttrValue, RemoteError

if TYPE_CHECKING:
    from ingest.remote.local.chunking import ChunkingStrategy


def check_chunking(rule: Mapping[str, object] | None) -> ChunkingStrategy:
    """Validate a chunking_strategy as the API would."""
    from ingest.remote.local import chunking  # its patterns take a search's start-up time to compile

    try:
        return chunking.parse_strategy(rule)
    except ValueError as e:
        raise RemoteError(str(e)) from e


def check_attributes(attributes: Mapping[str, AttrValue]) -> None:
    """Validate attributes as the API would."""
    try:
        attribute_filters.validate_attributes(attributes)
    except ValueError as e:
        raise RemoteError(str(e)) from e


def check_metadata(metadata: Mapping[str, str]) -> None:
    """The API's metadata limits: ≤ 16 pairs, keys ≤ 64 characters, string values ≤ 512."""
    if len(metadata) > 16:
        raise RemoteError(f"metadata takes at most 16 pairs, got {len(metadata)}")
    for key, value in metadata.items():
        if not isinstance(key, str) or len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise RemoteError(f"metadata {key!r}: keys must be ≤ 64 characters, values strings ≤ 512")


def check_search(filters: Mapping[str, object] | None, max_results: int) -> None:
    """A search's max_num_results and filters, validated as the API would."""
    if not 1 <= max_results <= 50:
        raise RemoteError(f"max_num_results must be between 1 and 50, got {max_results}")
    if filters is not None:
        try:
            attribute_filters.validate_filter(filters)
        except ValueError as e:
            raise RemoteError(f"invalid filters: {e}") from e
