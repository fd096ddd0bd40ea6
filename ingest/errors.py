"""One error taxonomy: every failure a user can meet is an IngestError carrying the exit code it ends a
run with; a remote failure says whether another try can help and whether a copy may exist remotely."""

from __future__ import annotations

from collections.abc import Iterable

USAGE = 2  # the exit code for what the user must fix: config, credentials, the manifest, libmagic


class IngestError(Exception):
    """A known failure: its message is one sentence naming the file, key or path."""

    exit_code: int = 1

    def sentence(self) -> str:
        return str(self)


class ConfigError(IngestError):
    """A configuration problem a user can fix; the message names the file and the key."""

    exit_code = USAGE


class NothingToDo(ConfigError):
    """No folder named and none configured."""


class ManifestError(IngestError):
    """The manifest cannot be opened or is newer than this version of ingest."""

    exit_code = USAGE


class MagicUnavailable(IngestError):
    """libmagic is missing: no file can be judged, so none is."""

    exit_code = USAGE


class LockBusy(IngestError):
    """Another ingest process holds the manifest."""


class UnknownStore(IngestError):
    """`--store NAME` names no store the manifest knows."""

    exit_code = USAGE

    @classmethod
    def among(cls, name: str, known: Iterable[str]) -> UnknownStore:
        return cls(f"no store named {name!r}; the stores are: {', '.join(sorted(set(known))) or 'none yet'}")


class RemoteError(IngestError):
    """A remote call failed after the retries it was allowed.

    retryable: a later run's try may succeed (a timeout, a 429, a 5xx), as the backend judged it.
    maybe_duplicated: the failed call may have taken effect remotely (an upload's copy may exist)."""

    def __init__(self, message: str, *, retryable: bool = False, maybe_duplicated: bool = False):
        super().__init__(message)
        self.retryable = retryable
        self.maybe_duplicated = maybe_duplicated

    def sentence(self) -> str:
        return f"the remote call failed: {self}"


class Stopped(RemoteError):
    """The run was stopping, so the call was never sent: nothing happened remotely, nothing failed."""

    def __init__(self, what: str):
        super().__init__(f"{what}: stopped before it was sent", retryable=True)


class Unreachable(Stopped):
    """The call failed as the server stopped answering (the breaker tripped, see remote/breaker.py): the
    run winds down as a stopped one does, and its file is the next run's, not a failure."""

    def __init__(self, message: str):
        RemoteError.__init__(self, message, retryable=True)


class NotFound(RemoteError):
    """The object does not exist remotely (404)."""


class AuthError(RemoteError):
    """The credentials were refused (401/403): nothing else will work, stop the run."""

    exit_code = USAGE

    def sentence(self) -> str:
        return str(self)


def error_text(exc: BaseException) -> str:
    """What a run that died of exc is recorded as having died of: the sentence the CLI prints."""
    return exc.sentence() if isinstance(exc, IngestError) else f"{type(exc).__name__}: {exc}"


def exit_code(exc: BaseException) -> int:
    """The code a run that died of exc ends with: the CLI's and the run record's."""
    return exc.exit_code if isinstance(exc, IngestError) else 1
