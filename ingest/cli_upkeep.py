"""The commands that keep stores right over time: the cron side (verify, reindex, gc) and taking
folders and stores out of sync (forget, ignore, store rename/remove). Registered on ingest.cli's group."""

from __future__ import annotations

import json
import logging

import click

from ingest import render
from ingest.cli_common import guarded, open_api


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output only.")
@click.option("--wait", "wait", is_flag=True, help="Wait for another running ingest instead of exiting.")
@click.pass_context
@guarded
def verify(ctx: click.Context, as_json: bool, wait: bool) -> None:
    """Compare local files, the manifest and the remote; report every drift (read-only).

    \b
    Exit 0 when all is in sync, 1 when anything drifted. Example:
        ingest verify --json | jq .counts
    """
    with open_api(ctx, wait=wait) as ingest:
        found = ingest.verify()
    click.echo(json.dumps(found.as_dict(), indent=2) if as_json else render.findings(found))
    ctx.exit(1 if found.drifts else 0)


@click.command()
@click.option("--rehash", is_flag=True, help="Ignore stat fingerprints: hash every file again.")
@click.option("--retry-failed", is_flag=True, help="Retry every failed file, even permanent failures.")
@click.option("--dry-run", is_flag=True, help="Print what would be repaired; change nothing.")
@click.option("--allow-mass-delete", is_flag=True, help="Delete even when a large share of a store would go.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output only.")
@click.option("--wait", "wait", is_flag=True, help="Wait for another running ingest (the daemon) instead of exiting.")
@click.pass_context
@guarded
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
    from ingest.interrupt import Interrupt

    with open_api(ctx, wait=wait) as ingest, Interrupt(ingest.stop):
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


@click.command()
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output only.")
@click.option("--wait", "wait", is_flag=True, help="Wait for another running ingest instead of exiting.")
@click.pass_context
@guarded
def gc(ctx: click.Context, dry_run: bool, as_json: bool, wait: bool) -> None:
    """Delete remote files that ingest created and nothing references; never any other file.

    \b
    Example:
        ingest gc --dry-run
    """
    with open_api(ctx, wait=wait) as ingest:
        deleted = ingest.gc(dry_run=dry_run)
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "files": deleted}, indent=2))
    else:
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{verb} {len(deleted)} unreferenced files" + "".join(f"\n  {f}" for f in deleted))


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--dry-run", is_flag=True, help="List what would be deleted; change nothing.")
@click.option("--keep-store", is_flag=True, help="Keep a store the folders leave empty.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output only.")
@click.option("--wait", "wait", is_flag=True, help="Wait for another running ingest instead of exiting.")
@click.pass_context
@guarded
def forget(ctx: click.Context, paths: tuple[str, ...], dry_run: bool, keep_store: bool, as_json: bool, wait: bool):
    """Stop syncing folders: delete the remote files ingest made for them, and their records.

    \b
    The folder need not exist any more. Example:
        ingest forget /srv/share/old-handbook --dry-run
    """
    with open_api(ctx, wait=wait) as ingest:
        done = ingest.forget(paths, dry_run=dry_run, keep_store=keep_store)
    click.echo(json.dumps(done.as_dict(), indent=2) if as_json else render.forgotten(done))
    ctx.exit(done.exit_code)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--undo", is_flag=True, help="Look at the files again.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output only.")
@click.pass_context
@guarded
def ignore(ctx: click.Context, paths: tuple[str, ...], undo: bool, as_json: bool) -> None:
    """Acknowledge files with a permanent problem: verify and reindex pass over them until they change.

    \b
    Example:
        ingest ignore /srv/share/scans/huge-table.pdf
    """
    with open_api(ctx) as ingest:
        done = ingest.ignore(paths, undo=undo)
    if as_json:
        click.echo(json.dumps([{"path": i.path, "reason": i.reason, "changed": i.done} for i in done], indent=2))
    else:
        click.echo(render.ignored(done, undo))


@click.group()
def store() -> None:
    """Rename or remove a logical store and its vector stores."""


@store.command(name="rename")
@click.argument("old")
@click.argument("new")
@click.pass_context
@guarded
def store_rename(ctx: click.Context, old: str, new: str) -> None:
    """Rename a store in place: its vector stores and files stay as they are.

    \b
    Example:
        ingest store rename docs handbook
    """
    with open_api(ctx) as ingest:
        click.echo("\n".join(ingest.rename_store(old, new)))


@store.command(name="remove")
@click.argument("name")
@click.pass_context
@guarded
def store_remove(ctx: click.Context, name: str) -> None:
    """Delete an empty store of ingest's (one a config change left behind)."""
    with open_api(ctx) as ingest:
        click.echo("\n".join(ingest.remove_store(name)))


COMMANDS = (verify, reindex, gc, forget, ignore, store)
