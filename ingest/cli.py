"""click commands: parse, call, print. No logic."""

from __future__ import annotations

import json
import logging
import os
import sys

import click

from ingest import __version__, render
from ingest.api import Ingest
from ingest.config import WatchOptions
from ingest.errors import USAGE, IngestError
from ingest.interrupt import Interrupt
from ingest.manifest import STATES

log = logging.getLogger("ingest")


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


def _guarded(fn):
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


def _open(ctx: click.Context, paths: tuple[str, ...] = (), wait: bool = False, lock: bool = True):
    """The API, opened as the global options say, for this command."""
    return Ingest.open(
        paths,
        config=ctx.obj["config"],
        backend=ctx.obj["backend"],
        wait=-1 if wait else 0,
        command=ctx.info_name or "sync",
        lock=lock,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ingest")
@click.option(
    "-c",
    "--config",
    "config_path",
    envvar="INGEST_CONFIG",
    type=click.Path(dir_okay=False),
    help="TOML config file (default ./ingest.toml, then the XDG config dir).",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "local", "openai"]),
    default=None,
    help="Where documents go: OpenAI when OPENAI_API_KEY is set, else the embedded store.",
)
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr; results still go to stdout.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, backend: str | None, verbose: int, quiet: bool) -> None:
    """Keep folders of documents in sync with OpenAI vector stores.

    \b
    Example:
        ingest sync ./docs
        ingest search "how do I rotate keys"
    """
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    # One line per HTTP request only when asked for (-v): not in a daemon's log, which polls all day.
    for name in ("httpx", "httpx2", "httpcore", "httpcore2", "openai"):
        logging.getLogger(name).setLevel((logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)])
    ctx.obj = {"config": config_path, "backend": backend or "auto", "quiet": quiet, "verbose": verbose}


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, file_okay=False))
@click.option("--dry-run", is_flag=True, help="Print the plan; make no remote call and change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output only.")
@click.option("--allow-mass-delete", is_flag=True, help="Delete even when a large share of a store would go.")
@click.option("--wait", "wait", is_flag=True, help="Wait for another running ingest instead of exiting.")
@click.option("--store", "store_name", help="Send the folders named to this store (their files keep their ids).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Leave files matching GLOB out (repeatable).")
@click.pass_context
@_guarded
def sync(
    ctx: click.Context,
    paths: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
    allow_mass_delete: bool,
    wait: bool,
    store_name: str | None,
    exclude: tuple[str, ...],
) -> None:
    """Sync folders (or the configured roots) into their vector stores.

    \b
    A folder inside a known root syncs that part of it. Example:
        ingest sync ./docs --dry-run
    """
    if store_name and not paths:
        raise UsageFailure("--store needs the folders to send: ingest sync ./docs --store NAME")
    with (
        _open(ctx, paths, wait) as ingest,
        render.progress_bar(sys.stderr.isatty() and not as_json) as progress,
        Interrupt(ingest.stop),
    ):
        report = ingest.sync(
            dry_run=dry_run,
            allow_mass_delete=allow_mass_delete,
            progress=progress,
            store=store_name,
            exclude=exclude,
        )
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        if ctx.obj["verbose"] and report.files:
            click.echo(render.files(report))
        click.echo(render.summary(report, verbose=ctx.obj["quiet"] is False))
    ctx.exit(report.exit_code)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(file_okay=False))
@click.option("--polling", is_flag=True, help="Poll instead of OS events (automatic on NFS/SMB/sshfs).")
@click.option(
    "--poll-interval",
    default=WatchOptions.poll_interval,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="Seconds between polls when polling.",
)
@click.option(
    "--settle",
    default=WatchOptions.settle,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="Seconds a file's size and mtime must stay still before it is synced.",
)
@click.option(
    "--rescan-interval",
    default=WatchOptions.rescan_interval,
    show_default=True,
    type=click.FloatRange(1, 7 * 86400),
    help="Seconds between full rescans that catch missed events.",
)
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="Serve /metrics and /healthz on 127.0.0.1.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
@_guarded
def watch(
    ctx: click.Context,
    paths: tuple[str, ...],
    polling: bool,
    poll_interval: float,
    settle: float,
    rescan_interval: float,
    metrics_port: int | None,
    log_format: str,
) -> None:
    """Sync once, then keep the stores in step with the folders until SIGTERM.

    \b
    Example:
        ingest watch /srv/share/handbook --metrics-port 9108 --log-format json
    """
    from ingest import daemon

    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(daemon.JsonFormatter())
    if not ctx.obj["quiet"] and logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)  # a daemon's log is its operator's only view
    options = WatchOptions(
        settle=settle, poll_interval=poll_interval, rescan_interval=rescan_interval, force_polling=polling
    )
    ctx.exit(daemon.run(paths, ctx.obj["config"], ctx.obj["backend"], options, metrics_port))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output only.")
@click.pass_context
@_guarded
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the config in use, local changes not synced, and per store its folders, files by state and cost."""
    with _open(ctx, lock=False) as ingest:
        data = ingest.status()
    click.echo(json.dumps(data, indent=2) if as_json else render.status(data))


@cli.command()
@click.argument("query")
@click.option("--store", "store_name", help="Logical store name (default: every store).")
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="KEY=VALUE",
    help="Attribute filter (=, !=, >, >=, <, <=); repeat to AND them.",
)
@click.option("-n", "--max-results", default=5, show_default=True, type=click.IntRange(1, 50))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output only.")
@click.pass_context
@_guarded
def search(
    ctx: click.Context, query: str, store_name: str | None, filters: tuple[str, ...], max_results: int, as_json: bool
) -> None:
    """Search the synced documents; prints path, score and a snippet, best first.

    \b
    Example:
        ingest search "json serialization" --filter ext=txt -n 3
    """
    from ingest.remote.filters import parse_cli_filters

    try:
        parsed = parse_cli_filters(list(filters)) if filters else None
    except ValueError as exc:
        raise UsageFailure(str(exc)) from None
    with _open(ctx, lock=False) as ingest:
        hits = ingest.search(query, store=store_name, filters=parsed, max_results=max_results)
    if as_json:
        click.echo(json.dumps(hits, indent=2))
    else:
        click.echo(render.hits(hits))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output only.")
@click.option("--wait", "wait", is_flag=True, help="Wait for another running ingest instead of exiting.")
@click.pass_context
@_guarded
def verify(ctx: click.Context, as_json: bool, wait: bool) -> None:
    """Compare local files, the manifest and the remote; report every drift (read-only).

    \b
    Exit 0 when all is in sync, 1 when anything drifted. Example:
        ingest verify --json | jq .counts
    """
    with _open(ctx, wait=wait) as ingest:
        found = ingest.verify()
    click.echo(json.dumps(found.as_dict(), indent=2) if as_json else render.findings(found))
    ctx.exit(1 if found.drifts else 0)


@cli.command()
@click.option("--rehash", is_flag=True, help="Ignore stat fingerprints: hash every file again.")
@click.option("--retry-failed", is_flag=True, help="Retry every failed file, even permanent failures.")
@click.option("--dry-run", is_flag=True, help="Print what would be repaired; change nothing.")
@click.option("--allow-mass-delete", is_flag=True, help="Delete even when a large share of a store would go.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output only.")
@click.option("--wait", "wait", is_flag=True, help="Wait for another running ingest (the daemon) instead of exiting.")
@click.pass_context
@_guarded
def reindex(
    ctx: click.Context,
    rehash: bool,
    retry_failed: bool,
    dry_run: bool,
    allow_mass_delete: bool,
    as_json: bool,
    wait: bool,
) -> None:
    """Full scan and repair of every drift verify finds; quiet when all is well (for cron).

    \b
    Example (crontab):
        17 3 * * *  ingest reindex --wait
    """
    with _open(ctx, wait=wait) as ingest, Interrupt(ingest.stop):
        repairs = ingest.reindex(
            rehash=rehash, retry_failed=retry_failed, dry_run=dry_run, allow_mass_delete=allow_mass_delete
        )
    report = repairs.report
    if as_json:
        click.echo(json.dumps(repairs.as_dict(), indent=2))
    else:
        text = render.repairs(repairs, verbose=logging.getLogger().level <= logging.INFO)
        if text:
            click.echo(text)
    ctx.exit(report.exit_code if report else 0)


@cli.command()
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output only.")
@click.option("--wait", "wait", is_flag=True, help="Wait for another running ingest instead of exiting.")
@click.pass_context
@_guarded
def gc(ctx: click.Context, dry_run: bool, as_json: bool, wait: bool) -> None:
    """Delete remote files that ingest created and nothing references; never any other file.

    \b
    Example:
        ingest gc --dry-run
    """
    with _open(ctx, wait=wait) as ingest:
        deleted = ingest.gc(dry_run=dry_run)
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "files": deleted}, indent=2))
    else:
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{verb} {len(deleted)} unreferenced files" + "".join(f"\n  {f}" for f in deleted))


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--dry-run", is_flag=True, help="List what would be deleted; change nothing.")
@click.option("--keep-store", is_flag=True, help="Keep a store the folders leave empty.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output only.")
@click.option("--wait", "wait", is_flag=True, help="Wait for another running ingest instead of exiting.")
@click.pass_context
@_guarded
def forget(ctx: click.Context, paths: tuple[str, ...], dry_run: bool, keep_store: bool, as_json: bool, wait: bool):
    """Stop syncing folders: delete the remote files ingest made for them, and their records.

    \b
    The folder need not exist any more. Example:
        ingest forget /srv/share/old-handbook --dry-run
    """
    with _open(ctx, wait=wait) as ingest:
        done = ingest.forget(paths, dry_run=dry_run, keep_store=keep_store)
    click.echo(json.dumps(done.as_dict(), indent=2) if as_json else render.forgotten(done))
    ctx.exit(done.exit_code)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--undo", is_flag=True, help="Look at the files again.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output only.")
@click.pass_context
@_guarded
def ignore(ctx: click.Context, paths: tuple[str, ...], undo: bool, as_json: bool) -> None:
    """Acknowledge files with a permanent problem: verify and reindex pass over them until they change.

    \b
    Example:
        ingest ignore /srv/share/scans/huge-table.pdf
    """
    with _open(ctx) as ingest:
        done = ingest.ignore(paths, undo=undo)
    if as_json:
        click.echo(json.dumps([{"path": i.path, "reason": i.reason, "changed": i.done} for i in done], indent=2))
    else:
        click.echo(render.ignored(done, undo))


@cli.command(name="ls")
@click.argument("path", required=False, type=click.Path())
@click.option("--store", "store_name", help="Only the files of this store.")
@click.option("--state", type=click.Choice(list(STATES)), help="Only files in this state.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output only.")
@click.pass_context
@_guarded
def ls(ctx: click.Context, path: str | None, store_name: str | None, state: str | None, as_json: bool) -> None:
    """List the files ingest knows: state, store, file id, size, last sync and reason.

    \b
    Example:
        ingest ls ./docs --state failed
    """
    with _open(ctx, lock=False) as ingest:
        files = ingest.ls(path, store=store_name, state=state)
    click.echo(json.dumps(files, indent=2) if as_json else render.listing(files))


@cli.group()
def store() -> None:
    """Rename or remove a logical store and its vector stores."""


@store.command(name="rename")
@click.argument("old")
@click.argument("new")
@click.pass_context
@_guarded
def store_rename(ctx: click.Context, old: str, new: str) -> None:
    """Rename a store in place: its vector stores and files stay as they are.

    \b
    Example:
        ingest store rename docs handbook
    """
    with _open(ctx) as ingest:
        click.echo("\n".join(ingest.rename_store(old, new)))


@store.command(name="remove")
@click.argument("name")
@click.pass_context
@_guarded
def store_remove(ctx: click.Context, name: str) -> None:
    """Delete an empty store of ingest's (one a config change left behind)."""
    with _open(ctx) as ingest:
        click.echo("\n".join(ingest.remove_store(name)))


def main() -> None:  # pragma: no cover
    cli()
