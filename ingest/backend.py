"""Which backend a run uses and its remote: the settings of a run (a config file, the environment, the
PATHs named), the embedded store or OpenAI's API, and the state folder they keep their manifest in."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from ingest.config import Settings
from ingest.configfile import load
from ingest.errors import ConfigError, NothingToDo
from ingest.remote.base import LazyRemote, Remote
from ingest.remote.breaker import Breaker

log = logging.getLogger("ingest")
ROOTS_REQUIRED = ("sync", "watch")  # the commands that act on named folders only, never on remembered ones


@dataclass(frozen=True)
class Backend:
    kind: str  # "openai" | "local"
    manifest: Path
    store_dir: Path | None


def settings_for(
    paths: Iterable[str | os.PathLike[str]] = (),
    config: str | os.PathLike[str] | Settings | None = None,
    backend: str | None = None,
    command: str = "sync",
) -> Settings:
    """The settings of a run: a config file (or a Settings object), the environment, and the PATHs named."""
    settings = config if isinstance(config, Settings) else load(str(config) if config is not None else None)
    if backend and backend != "auto":
        settings = replace(settings, backend=backend)
    return restricted(settings, paths, command)


def restricted(settings: Settings, paths: Iterable[str | os.PathLike[str]], command: str) -> Settings:
    """The settings for a run over PATHs (none: the configured roots)."""
    named = [Path(p) for p in paths]
    if named:
        settings = settings.with_paths(named)
    if command in ROOTS_REQUIRED and not settings.roots:
        again = ", or `ingest reindex` to rescan every folder synced before" if command == "sync" else ""
        raise NothingToDo(
            f"nothing to {command}: name a folder (ingest {command} ./docs) or add [[roots]] to the config{again}"
        )
    return settings


def choose_backend(settings: Settings, env: Mapping[str, str] | None = None) -> Backend:
    env = os.environ if env is None else env
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


def connect(
    settings: Settings,
    backend: Backend | None = None,
    env: Mapping[str, str] | None = None,
    stop: threading.Event | None = None,
) -> Remote:
    """The remote of the chosen backend, built on its first call: the SDK and the extractors are
    imported only then, so a pass with nothing to do never imports them. `stop` (a new one when none is
    given) is kept as the remote's `stop`: once it is set, the remote sends nothing more, ends its
    retry waits and stops indexing."""
    env = os.environ if env is None else env
    backend = backend or choose_backend(settings, env)
    ensure_state_dir(settings.state_dir)
    stop = stop or threading.Event()  # known before the remote is built (see LazyRemote)
    if backend.kind == "openai":
        key = env.get("OPENAI_API_KEY") or "no-key"
        # As the SDK spells it (its default, OPENAI_BASE_URL, one trailing slash).
        url = (settings.base_url or env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/") + "/"
        breaker = Breaker(url, stop, settings.request_retries)

        def build() -> Remote:
            from ingest.remote.openai import OpenAIRemote

            return OpenAIRemote.connect(
                key,
                settings.base_url,
                settings.request_retries,
                settings.request_timeout,
                settings.upload_concurrency,
                stop=stop,
                breaker=breaker,
            )

        return LazyRemote(backend.kind, build, url, stop, breaker)
    store_dir = backend.store_dir
    assert store_dir is not None
    why = "the local backend was asked for" if env.get("OPENAI_API_KEY") else "no OPENAI_API_KEY"
    log.warning("%s: using the embedded local store in %s", why, store_dir)

    def build_local() -> Remote:
        from ingest.remote.local import LocalRemote

        return LocalRemote(store_dir, stop=stop)

    return LazyRemote(backend.kind, build_local, "local", stop)


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
