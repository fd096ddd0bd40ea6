"""What a server of the Files + Vector Stores API does differently from OpenAI, and how ingest tells."""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import urlsplit

OPENAI, AZURE, LLAMA_STACK, COMPATIBLE, LOCAL = "openai", "azure-openai", "llama-stack", "openai-compatible", "local"


@dataclass(frozen=True)
class Profile:
    name: str
    # file_batches.create(files=[{file_id, attributes}]): True, False (refused), None (not tried yet).
    per_file_batches: bool | None = True
    # Whether search and its filters see vector_stores.files.update(attributes); where they do not,
    # a rename is a detach and a re-attach.
    search_sees_updates: bool = True
    # One-file attaches in flight to begin with, and at most (the limit adapts between 1 and this).
    attach_concurrency: int = 3
    attach_max: int = 8
    # Extensions the server accepts but cannot read text from: ingest can upload its own extraction.
    unreadable: tuple[str, ...] = ()
    version: str | None = None
    # False when the server could not be asked (down, or a 5xx): used for this run, not remembered.
    settled: bool = True

    def with_batches(self, supported: bool) -> Profile:
        return replace(self, per_file_batches=supported)

    def describe(self) -> str:
        what = [self.name + (f" {self.version}" if self.version else "")]
        if self.per_file_batches is False:
            what.append("one-file attaches")
        if not self.search_sees_updates:
            what.append("renames re-attach")
        if self.unreadable:
            what.append("uploads text for " + ", ".join(self.unreadable))
        return "; ".join(what)


PROFILES = {
    OPENAI: Profile(OPENAI),
    AZURE: Profile(AZURE),
    # ../README.md "Servers": each of these was met on llama-stack 0.7.3.
    LLAMA_STACK: Profile(
        LLAMA_STACK,
        per_file_batches=False,
        search_sees_updates=False,
        attach_concurrency=3,
        attach_max=6,
        unreadable=(".docx", ".pptx", ".html"),
    ),
    # An unknown server: the documented behaviour, learning what it refuses.
    COMPATIBLE: Profile(COMPATIBLE, per_file_batches=None),
    LOCAL: Profile(LOCAL),
}


def by_host(base_url: str | None) -> Profile | None:
    """The profile a base URL names by itself (OpenAI and Azure OpenAI), without asking the server."""
    host = (urlsplit(base_url).hostname or "") if base_url else "api.openai.com"
    if host == "api.openai.com":
        return PROFILES[OPENAI]
    if host.endswith(".openai.azure.com") or host.endswith(".cognitiveservices.azure.com"):
        return PROFILES[AZURE]
    return None


def from_version(reply: object) -> Profile:
    """The profile of a server answering GET /version (llama-stack does: {"version": "0.7.3"})."""
    if isinstance(reply, dict) and isinstance(reply.get("version"), str):
        return replace(PROFILES[LLAMA_STACK], version=reply["version"])
    return PROFILES[COMPATIBLE]


def load(record: dict) -> Profile:
    """A profile as the manifest remembers it: its name, and what was learned about the server."""
    base = PROFILES.get(record.get("profile") or "", PROFILES[COMPATIBLE])
    batches = record.get("per_file_batches")
    return replace(
        base,
        version=record.get("version"),
        per_file_batches=base.per_file_batches if batches is None else bool(batches),
    )
