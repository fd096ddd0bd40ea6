"""Every setting as a frozen dataclass, with its default and bounds declared once (configfile.py reads
the TOML into these; Settings() in Python is a run without a config file)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from ingest.limits import MAX_FILE_SIZE, SUPPORTED_TYPES

NO_CONFIG = "defaults"  # Settings.source when no config file was found
# The attributes ingest sets on every file (stores.attributes): a store's static attributes cannot
# take these names, or the file's own value would silently replace theirs.
TOOL_KEYS = ("path", "folder", "ext", "mtime", "sha256", "root")

# Editor, office and download temporaries: never documents, never reported.
DEFAULT_IGNORES = (
    ".*",
    "~$*",
    "*.tmp",
    "*.temp",
    "*.part",
    "*.partial",
    "*.crdownload",
    "*.download",
    ".~lock.*",
    "*.swp",
    "*.swx",
    "*~",
    "#*#",
    "Thumbs.db",
    "desktop.ini",
    "*.lnk",
)


@dataclass(frozen=True)
class Root:
    path: Path
    store: str
    include: tuple[str, ...] = ("**",)
    exclude: tuple[str, ...] = ()
    ignore_defaults: bool = True

    @cached_property
    def key(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class StoreSpec:
    name: str
    paths: tuple[str, ...] = ()
    max_files: int = 10_000
    chunking: Mapping[str, Any] | None = None
    expires_after_days: int | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    # Upload ingest's extracted text instead of the file: "auto" where the server cannot read the type.
    upload_text: bool | str = "auto"


def xdg_dir(env: str, fallback: str) -> Path:
    base = os.environ.get(env)
    return (Path(base) if base else Path.home() / fallback) / "ingest"


def _bounded(default: float, lo: float, hi: float) -> Any:
    """A numeric setting: its default and its bounds, declared here once (the TOML reader checks them)."""
    return field(default=default, metadata={"bounds": (lo, hi)})


@dataclass(frozen=True)
class Settings:
    """Every setting, with the defaults a config file gets too (so Settings() in Python is a run without one)."""

    roots: tuple[Root, ...] = ()
    stores: tuple[StoreSpec, ...] = ()
    backend: str = "auto"
    base_url: str | None = field(default_factory=lambda: os.environ.get("OPENAI_BASE_URL") or None)
    server: str = "auto"  # the server's profile: "auto" (found out), or one of remote.profile.PROFILES
    state_dir: Path = field(default_factory=lambda: xdg_dir("XDG_STATE_HOME", ".local/state"))
    manifest: Path | None = None  # None: a default per backend under state_dir
    max_size: int = MAX_FILE_SIZE
    types: tuple[str, ...] = SUPPORTED_TYPES
    upload_concurrency: int = _bounded(8, 1, 64)
    index_timeout: float = _bounded(600.0, 1, 86_400)
    max_delete_fraction: float = _bounded(0.2, 0, 1)
    max_delete_floor: int = _bounded(5, 0, 1_000_000)
    server_error_retries: int = _bounded(2, 0, 10)
    request_retries: int = _bounded(6, 0, 20)
    request_timeout: float = _bounded(120.0, 1, 3600)
    source: str = NO_CONFIG  # the config file's path, or NO_CONFIG

    def store_spec(self, name: str) -> StoreSpec:
        for spec in self.stores:
            if spec.name == name:
                return spec
        return StoreSpec(name=name)

    def with_paths(self, paths: list[Path]) -> Settings:
        """Restrict the run to PATHs: configured roots they fall in, or new roots named after the folder."""
        roots = []
        for raw in paths:
            path = Path(os.path.abspath(raw.expanduser()))  # '..' folded: the same folder, the same root key
            owner = next((r for r in self.roots if path == r.path or r.path in path.parents), None)
            roots.append(owner or Root(path=path, store=default_store(path)))
        unique = {r.key: r for r in roots}
        return replace(self, roots=tuple(unique.values()))


@dataclass(frozen=True)
class WatchOptions:
    """How `ingest watch` watches (its command-line options, with their defaults)."""

    settle: float = 2.0
    poll_interval: float = 5.0
    rescan_interval: float = 3600.0
    force_polling: bool = False
    tick: float = 0.2


def default_store(path: Path) -> str:
    """A root's store when none is named: the folder's name."""
    return path.name or "documents"
