"""Wiring: settings → backend, lock, manifest and engine. What the CLI and the daemon share."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ingest.config import ConfigError, Settings
from ingest.lock import ManifestLock
from ingest.manifest import Manifest
from ingest.remote.base import LazyRemote, Remote

log = logging.getLogger("ingest")


@dataclass(frozen=True)
class Backend:
    kind: str  # "openai" | "local"
    manifest: Path
    store_dir: Path | None


def choose_backend(settings: Settings, env: dict[str, str] | None = None) -> Backend:
    env = dict(os.environ) if env is None else env
    kind = settings.backend
    if kind == "auto":  # a configured server means OpenAI's API, even one that wants no key
        kind = "openai" if env.get("OPENAI_API_KEY") or settings.base_url else "local"
    if kind == "openai" and not env.get("OPENAI_API_KEY") and not settings.base_url:
        raise ConfigError(
            "the openai backend needs an API key: set OPENAI_API_KEY (or use --backend local for the embedded store)"
        )
    base = settings.state_dir if kind == "openai" else settings.state_dir / "local"
    manifest = settings.manifest or base / "manifest.db"
    return Backend(kind, manifest, settings.state_dir / "local" / "store" if kind == "local" else None)


def make_remote(settings: Settings, backend: Backend, env: dict[str, str] | None = None) -> Remote:
    """The backend's remote, built on its first call (a no-op pass never makes one)."""
    env = dict(os.environ) if env is None else env
    if backend.kind == "openai":

        def build() -> Remote:
            from ingest.remote.openai import OpenAIRemote

            return OpenAIRemote.connect(
                env.get("OPENAI_API_KEY") or "no-key",
                settings.base_url,
                settings.request_retries,
                settings.request_timeout,
                settings.upload_concurrency,
            )

        return LazyRemote(backend.kind, build)
    log.warning("no OPENAI_API_KEY: using the embedded local store in %s", backend.store_dir)

    def build_local() -> Remote:
        from ingest.remote.local import LocalRemote

        return LocalRemote(backend.store_dir)

    return LazyRemote(backend.kind, build_local)


def ensure_state_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.stat().st_uid == os.geteuid():
            os.chmod(path, 0o700)
    except OSError as exc:
        raise ConfigError(
            f"cannot use the state folder {path} ({exc.strerror}): create it for this user, "
            "or set XDG_STATE_HOME or state_dir in the config to a folder it can write"
        ) from None


@contextmanager
def session(
    settings: Settings, command: str, wait: float = 0.0, lock: bool = True, remote: Remote | None = None
) -> Iterator[tuple[Manifest, Remote, Backend]]:
    """Lock, open the manifest and the backend; close them in the right order."""
    backend = choose_backend(settings)
    ensure_state_dir(settings.state_dir)
    guard = ManifestLock(backend.manifest, command)
    if lock:
        guard.acquire(wait)
    try:
        manifest = Manifest(backend.manifest)
        try:
            yield manifest, remote or make_remote(settings, backend), backend
        finally:
            manifest.close()
    finally:
        guard.release()
