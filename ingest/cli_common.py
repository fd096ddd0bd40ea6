"""What every command shares: the API opened as the global options say, and the one place known errors
become a sentence and an exit code."""

from __future__ import annotations

import os

import click

from ingest.api import Ingest
from ingest.errors import USAGE, IngestError


class Failure(click.ClickException):
    """A known failure: one sentence, no traceback (INGEST_DEBUG=1 shows it)."""

    exit_code = 1


class UsageFailure(Failure):
    exit_code = USAGE


class Interrupted(Failure):
    exit_code = 130


def failure(message: str, code: int) -> Failure:
    """A Failure that exits with `code` (click reads the exit code from the class)."""
    if code == Failure.exit_code:
        return Failure(message)
    return UsageFailure(message) if code == USAGE else type(f"Failure{code}", (Failure,), {"exit_code": code})(message)


def guarded(fn):
    """Known errors become one clear sentence and the exit code they carry: the one place they are mapped."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except IngestError as exc:
            _debug()
            raise failure(exc.sentence(), exc.exit_code) from None
        except KeyboardInterrupt:  # a second Ctrl-C: the first one lets the run wind down and record itself
            raise Interrupted("interrupted; what was done is recorded, the next run goes on from there") from None

    return wrapper


def _debug() -> None:
    if os.environ.get("INGEST_DEBUG"):
        import traceback

        traceback.print_exc()


def open_api(ctx: click.Context, paths: tuple[str, ...] = (), wait: bool = False, lock: bool = True):
    """The API, opened as the global options say, for this command."""
    return Ingest.open(
        paths,
        config=ctx.obj["config"],
        backend=ctx.obj["backend"],
        wait=-1 if wait else 0,
        command=ctx.info_name or "sync",
        lock=lock,
    )
