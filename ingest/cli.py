"""click commands: parse, call, print. No logic. The global options and the everyday commands; the
upkeep ones (cli_upkeep.py) join the same group when they are asked for."""

from __future__ import annotations

import json
import logging
import sys

import click

from ingest import __version__, render
from ingest.cli_common import UsageFailure, guarded, open_api
from ingest.config import WatchOptions
from ingest.manifest import STATES

log = logging.getLogger("ingest")


class Commands(click.Group):
    """The upkeep commands (cli_upkeep.py) join the group when one of them is named or all are listed
    (help, completion): an everyday command starts without loading them."""

    def _add_upkeep(self) -> None:
        from ingest import cli_upkeep

        for command in cli_upkeep.COMMANDS:
            self.add_command(command)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            self._add_upkeep()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_upkeep()
        return super().list_commands(ctx)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
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
    logging.basicConfig(format="%(message)s", stream=sys.stderr)
    ctx.obj = {"config": config_path, "backend": backend or "auto", "quiet": quiet, "verbose": 0}
    _set_verbosity(ctx, verbose)


def _set_verbosity(ctx: click.Context, verbose: int) -> None:
    """-v counts wherever it is given: `ingest -v sync` and `ingest sync -v` alike."""
    verbose = ctx.obj["verbose"] = ctx.obj["verbose"] + verbose
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.getLogger().setLevel(logging.ERROR if ctx.obj["quiet"] else level)
    # One line per HTTP request only when asked for (-vv): not beside -v's one line per file, nor in a
    # daemon's log, which polls all day. The SDK's own lines (its retries) come with -v.
    requests = logging.DEBUG if verbose >= 2 else logging.WARNING
    for name in ("httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(name).setLevel(logging.ERROR if ctx.obj["quiet"] else requests)
    logging.getLogger("openai").setLevel(level)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(file_okay=False))
@click.option("--dry-run", is_flag=True, help="Print the plan; make no remote call and change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output only.")
@click.option("--allow-mass-delete", is_flag=True, help="Delete even when a large share of a store would go.")
@click.option("--wait", "wait", is_flag=True, help="Wait for another running ingest instead of exiting.")
@click.option("--store", "store_name", help="Send the folders named to this store (their files keep their ids).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Leave files matching GLOB out (repeatable).")
@click.option("-v", "--verbose", count=True, help="One line per file acted on (-vv: and the requests).")
@click.pass_context
@guarded
def sync(
    ctx: click.Context,
    paths: tuple[str, ...],
    verbose: int,
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
    from ingest.interrupt import Interrupt  # here: the commands that only read never wind a run down

    _set_verbosity(ctx, verbose)
    if store_name and not paths:
        raise UsageFailure("--store needs the folders to send: ingest sync ./docs --store NAME")
    with (
        open_api(ctx, paths, wait) as ingest,
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
        named = bool(ctx.obj["verbose"] and report.files)
        if named:
            click.echo(render.files(report))
        click.echo(render.summary(report, verbose=ctx.obj["quiet"] is False, named=named))
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
@guarded
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

    formatter = daemon.JsonFormatter() if log_format == "json" else daemon.text_formatter()
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
    if not ctx.obj["quiet"] and logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)  # a daemon's log is its operator's only view
    options = WatchOptions(
        settle=settle, poll_interval=poll_interval, rescan_interval=rescan_interval, force_polling=polling
    )
    ctx.exit(daemon.run(paths, ctx.obj["config"], ctx.obj["backend"], options, metrics_port))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output only.")
@click.pass_context
@guarded
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the config in use, local changes not synced, and per store its folders, files by state and cost."""
    with open_api(ctx, lock=False) as ingest:
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
@guarded
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
    with open_api(ctx, lock=False) as ingest:
        hits = ingest.search(query, store=store_name, filters=parsed, max_results=max_results)
    if as_json:
        click.echo(json.dumps(hits, indent=2))
    else:
        click.echo(render.hits(hits))


@cli.command(name="ls")
@click.argument("path", required=False, type=click.Path())
@click.option("--store", "store_name", help="Only the files of this store.")
@click.option("--state", type=click.Choice(list(STATES)), help="Only files in this state.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output only.")
@click.pass_context
@guarded
def ls(ctx: click.Context, path: str | None, store_name: str | None, state: str | None, as_json: bool) -> None:
    """List the files ingest knows: state, store, file id, size, last sync and reason.

    \b
    Example:
        ingest ls ./docs --state failed
    """
    with open_api(ctx, lock=False) as ingest:
        files = ingest.ls(path, store=store_name, state=state)
    click.echo(json.dumps(files, indent=2) if as_json else render.listing(files))


def main() -> None:  # pragma: no cover
    cli()
