"""The TOML config file: found (--config, INGEST_CONFIG, ./ingest.toml, the XDG dir), read, and validated
into Settings; every error names the file and the key."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from ingest.config import NO_CONFIG, TOOL_KEYS, Root, Settings, StoreSpec, default_store, xdg_dir
from ingest.errors import ConfigError
from ingest.limits import (
    AUTO_CHUNK_OVERLAP,
    AUTO_CHUNK_TOKENS,
    CHUNK_TOKENS,
    EXPIRES_AFTER_DAYS,
    MAX_ATTRIBUTE_KEY,
    MAX_ATTRIBUTE_VALUE,
    MAX_ATTRIBUTES,
    MAX_FILE_SIZE,
    SUPPORTED_TYPES,
)
from ingest.remote.profile import LOCAL, PROFILES

TOOL_ATTRIBUTES = len(TOOL_KEYS)

SERVERS = ("auto", *(name for name in PROFILES if name != LOCAL))  # `server`: found out, or named


def find_config(explicit: str | None) -> Path | None:
    """--config, then INGEST_CONFIG, then ./ingest.toml, then the XDG config dir."""
    for candidate in (explicit, os.environ.get("INGEST_CONFIG")):
        if candidate:
            path = Path(candidate).expanduser()
            if not path.is_file():
                raise ConfigError(f"{path}: config file not found")
            return path
    try:
        if Path("ingest.toml").is_file():
            return Path("ingest.toml")
    except OSError:
        pass  # a working folder this user may not look into (sudo -u from /root): it holds no config of theirs
    path = xdg_dir("XDG_CONFIG_HOME", ".config") / "ingest.toml"
    try:
        if path.is_file():
            return path
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    return None


def load(explicit: str | None = None) -> Settings:
    path = find_config(explicit)
    data: dict[str, Any] = {}
    if path is not None:
        # Imported only for a config file to read: a run without one (most no-ops, every search in a
        # folder of its own) does not pay for the parser.
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    return parse(data, str(path) if path else NO_CONFIG, base=path.parent if path else Path.cwd())


_NUMBERS = {f.name: f for f in fields(Settings) if "bounds" in f.metadata}
_TOP_KEYS = {"backend", "base_url", "server", "state_dir", "manifest", "limits", "roots", "stores", *_NUMBERS}


def parse(data: Mapping[str, Any], source: str, base: Path) -> Settings:
    """Validate a parsed TOML document; every error names the file and the key."""
    cfg = _Reader(source)
    cfg.known(data, _TOP_KEYS, "")
    backend = cfg.choice(data, "backend", ("auto", "local", "openai"), "auto")
    server = cfg.choice(data, "server", SERVERS, "auto")
    state_dir = cfg.path(data, "state_dir", base)
    manifest = cfg.path(data, "manifest", base)
    limits = cfg.table(data, "limits")
    cfg.known(limits, {"max_size", "types"}, "limits.")
    types = tuple(t if t.startswith(".") else "." + t for t in cfg.strings(limits, "types", "limits.", SUPPORTED_TYPES))
    for t in types:
        if t.lower() not in SUPPORTED_TYPES:
            raise ConfigError(
                f"{source}: limits.types: {t!r} is not a type file_search accepts "
                f"(allowed: {', '.join(SUPPORTED_TYPES)})"
            )
    max_size = cfg.size(limits, "max_size", "limits.", MAX_FILE_SIZE)
    if not 1 <= max_size <= MAX_FILE_SIZE:
        raise ConfigError(f"{source}: limits.max_size must be between 1 byte and {MAX_FILE_SIZE // 1024**2}MB")

    stores = tuple(cfg.store(s, i) for i, s in enumerate(cfg.list_of_tables(data, "stores")))
    names = [s.name for s in stores]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: stores: two stores share a name")
    roots = tuple(cfg.root(r, i, base) for i, r in enumerate(cfg.list_of_tables(data, "roots")))
    _check_layout(source, roots, stores, [bool(r.get("store")) for r in data.get("roots", [])])

    numbers = {
        name: (cfg.integer if f.type == "int" else cfg.number)(data, name, "", f.default, *f.metadata["bounds"])
        for name, f in _NUMBERS.items()
    }
    base_url = cfg.string(data, "base_url", "", None)
    return Settings(
        roots=roots,
        stores=stores,
        backend=backend,
        server=server,
        **({"base_url": base_url} if base_url else {}),
        **({"state_dir": state_dir} if state_dir else {}),
        manifest=manifest,
        max_size=max_size,
        types=types,
        source=source,
        **numbers,
    )


def _check_layout(source: str, roots: tuple[Root, ...], stores: tuple[StoreSpec, ...], named: list[bool]) -> None:
    """Mistakes that would otherwise sync silently into the wrong place: two roots over the same files
    (each would upload them to its own store), and a [[stores]] entry nothing sends files to (a typo)."""
    for i, a in enumerate(roots):
        for j, b in enumerate(roots):
            if i < j and (a.path == b.path or a.path in b.path.parents or b.path in a.path.parents):
                outer, inner = (i, j) if len(a.path.parts) <= len(b.path.parts) else (j, i)
                raise ConfigError(
                    f"{source}: roots[{inner}].path: {roots[inner].path} lies inside roots[{outer}].path "
                    f"({roots[outer].path}); their files would be synced twice. Keep one of them, and send "
                    "a part of a root to another store with [[stores]] paths"
                )
    if not roots:
        return  # the roots come from the command line: every entry may be meant for one of them
    used, names = {r.store for r in roots}, {s.name for s in stores}
    for i, spec in enumerate(stores):
        if not spec.paths and spec.name not in used:
            import difflib  # here: only a mistake needs a suggestion

            typo = [
                f"roots[{j}].store = {r.store!r}"
                for j, r in enumerate(roots)
                if named[j] and r.store not in names and difflib.get_close_matches(r.store, [spec.name])
            ]
            hint = f" (did you mean it for {', '.join(typo)}?)" if typo else ""
            raise ConfigError(
                f"{source}: stores[{i}].name: no root or route uses store {spec.name!r}{hint}; the roots "
                f"use {', '.join(sorted(used))}. Name it in a root's store, give it paths, or remove it"
            )


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*$", re.I)
_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}


def _did_you_mean(key: str, allowed: set[str]) -> str:
    """The closest allowed key first (a typo like `root` for `roots`), then all of them."""
    import difflib  # here: only a mistake needs a suggestion

    close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
    hint = f": did you mean {close[0]!r}?" if close else ""
    return f"{hint} (allowed here: {', '.join(sorted(allowed))})"


class _Reader:
    """Typed access to a TOML table; every error names the source file and the dotted key."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, what: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {what}")

    def known(self, table: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(prefix + key, f"unknown key{_did_you_mean(key, allowed)}")

    def table(self, data, key, prefix=""):
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(prefix + key, "must be a table")
        return value

    def list_of_tables(self, data, key):
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(key, f"must be an array of tables ([[{key}]])")
        return value

    def string(self, data, key, prefix, default):
        value = data.get(key, default)
        if value is not None and not isinstance(value, str):
            raise self.fail(prefix + key, f"must be a string, not {type(value).__name__}")
        return value

    def strings(self, data, key, prefix, default):
        value = data.get(key, default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise self.fail(prefix + key, "must be a list of strings")
        return tuple(value)

    def choice(self, data, key, allowed, default):
        value = data.get(key, default)
        if value not in allowed:
            raise self.fail(key, f"must be one of {', '.join(allowed)}, not {value!r}")
        return value

    def integer(self, data, key, prefix, default, lo, hi):
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(prefix + key, f"must be a whole number from {lo} to {hi}, not {value!r}")
        return value

    def number(self, data, key, prefix, default, lo, hi):
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise self.fail(prefix + key, f"must be a number from {lo} to {hi}, not {value!r}")
        return float(value)

    def size(self, data, key, prefix, default):
        value = data.get(key, default)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        match = _SIZE.match(value) if isinstance(value, str) else None
        if not match:
            raise self.fail(prefix + key, f'must be a byte count or a size like "100MB", not {value!r}')
        return int(float(match.group(1)) * _UNITS[(match.group(2) or "B").upper()])

    def path(self, data, key, base):
        value = self.string(data, key, "", None)
        return (base / Path(value).expanduser()).absolute() if value else None

    def root(self, data, index, base) -> Root:
        prefix = f"roots[{index}]."
        self.known(data, {"path", "store", "include", "exclude", "ignore_defaults"}, prefix)
        raw = self.string(data, "path", prefix, None)
        if not raw:
            raise self.fail(prefix + "path", "is required")
        path = Path(os.path.abspath(base / Path(raw).expanduser()))
        ignore = data.get("ignore_defaults", True)
        if not isinstance(ignore, bool):
            raise self.fail(prefix + "ignore_defaults", "must be true or false")
        return Root(
            path=path,
            store=self.string(data, "store", prefix, None) or default_store(path),
            include=self.strings(data, "include", prefix, ("**",)),
            exclude=self.strings(data, "exclude", prefix, ()),
            ignore_defaults=ignore,
        )

    def store(self, data, index) -> StoreSpec:
        prefix = f"stores[{index}]."
        self.known(
            data, {"name", "paths", "max_files", "chunking", "expires_after_days", "attributes", "upload_text"}, prefix
        )
        name = self.string(data, "name", prefix, None)
        if not name:
            raise self.fail(prefix + "name", "is required")
        days = data.get("expires_after_days")
        if days is not None:
            days = self.integer(data, "expires_after_days", prefix, None, *EXPIRES_AFTER_DAYS)
        attributes = self.table(data, "attributes", prefix) if "attributes" in data else {}
        for key, value in attributes.items():
            if key in TOOL_KEYS:
                raise self.fail(
                    f"{prefix}attributes.{key}",
                    f"{key!r} is an attribute ingest sets on every file itself ({', '.join(TOOL_KEYS)}); "
                    "give the static attribute another name",
                )
            if (
                len(key) > MAX_ATTRIBUTE_KEY
                or not isinstance(value, (str, int, float, bool))
                or (isinstance(value, str) and len(value) > MAX_ATTRIBUTE_VALUE)
            ):
                raise self.fail(
                    f"{prefix}attributes.{key}",
                    f"keys ≤ {MAX_ATTRIBUTE_KEY} characters; values a string ≤ {MAX_ATTRIBUTE_VALUE} characters, "
                    "a number or a bool",
                )
        static = MAX_ATTRIBUTES - TOOL_ATTRIBUTES
        if len(attributes) > static:
            raise self.fail(
                prefix + "attributes",
                f"at most {static} static attributes ({MAX_ATTRIBUTES} in all, {TOOL_ATTRIBUTES} are the tool's)",
            )
        return StoreSpec(
            name=name,
            paths=self.strings(data, "paths", prefix, ()),
            max_files=self.integer(data, "max_files", prefix, StoreSpec.max_files, 1, 100_000_000),
            chunking=self.chunking(data.get("chunking"), prefix + "chunking"),
            expires_after_days=days,
            attributes=dict(attributes),
            upload_text=self.upload_text(data.get("upload_text", "auto"), prefix + "upload_text"),
        )

    def upload_text(self, value, key):
        if not (isinstance(value, bool) or value == "auto"):
            raise self.fail(key, f'must be "auto", true or false, not {value!r}')
        return value

    def chunking(self, value, key):
        if value is None or value == "auto" or value == {"type": "auto"}:
            return None
        if not isinstance(value, dict) or value.get("type") != "static":
            raise self.fail(
                key, 'must be "auto" or { type = "static", max_chunk_size_tokens = N, chunk_overlap_tokens = M }'
            )
        size = value.get("max_chunk_size_tokens", AUTO_CHUNK_TOKENS)
        overlap = value.get("chunk_overlap_tokens", AUTO_CHUNK_OVERLAP)
        lo, hi = CHUNK_TOKENS
        if not isinstance(size, int) or not lo <= size <= hi:
            raise self.fail(key + ".max_chunk_size_tokens", f"must be from {lo} to {hi}")
        if not isinstance(overlap, int) or not 0 <= overlap <= size // 2:
            raise self.fail(key + ".chunk_overlap_tokens", "must be from 0 to half of max_chunk_size_tokens")
        allowed = {"type", "max_chunk_size_tokens", "chunk_overlap_tokens"}
        if unknown := set(value) - allowed:
            first = sorted(unknown)[0]
            raise self.fail(key + "." + first, f"unknown key{_did_you_mean(first, allowed)}")
        return {"type": "static", "static": {"max_chunk_size_tokens": size, "chunk_overlap_tokens": overlap}}
