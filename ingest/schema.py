"""The manifest's schema: named, append-only sqlite-utils migrations, each applied once in order."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ingest import database

if TYPE_CHECKING:
    import sqlite_utils
    from sqlite_utils import Migrations


def m001_initial(db: sqlite_utils.Database) -> None:
    db.table("files").create(
        {
            "root": str,
            "path": str,
            "store": str,
            "size": int,
            "mtime_ns": int,
            "inode": int,
            "hashed_at_ns": int,
            "sha256": str,
            "mime": str,
            "state": str,
            "reason": str,
            "error_code": str,
            "retryable": int,
            "file_id": str,
            "vector_store_id": str,
            "batch_id": str,
            "old_file_id": str,
            "attributes": str,
            "attempts": int,
            "first_seen": float,
            "updated_at": float,
            "indexed_at": float,
        },
        pk=("root", "path"),
        not_null={"root", "path", "state"},
    )
    db.table("files").create_index(["file_id"])
    db.table("files").create_index(["state"])
    db.table("stores").create(
        {
            "id": str,
            "name": str,
            "shard": int,
            "status": str,
            "fingerprint": str,
            "created_at": float,
        },
        pk="id",
    )
    db.table("stores").create_index(["name", "shard"])
    db.table("uploads").create(
        {
            "id": int,
            "file_id": str,
            "root": str,
            "path": str,
            "filename": str,
            "bytes": int,
            "sha256": str,
            "vector_store_id": str,
            "status": str,
            "started_at": float,
            "finished_at": float,
            "suspect": int,
        },
        pk="id",
    )
    db.table("uploads").create_index(["file_id"])
    db.table("uploads").create_index(["status"])
    db.table("runs").create(
        {
            "id": int,
            "command": str,
            "started_at": float,
            "finished_at": float,
            "exit_code": int,
            "counts": str,
            "held": str,
        },
        pk="id",
    )


def m002_store_replaces(db: sqlite_utils.Database) -> None:
    # A store being rebuilt records which store it will replace once it is complete.
    db.table("stores").add_column("replaces", str)


def m003_upload_server_time(db: sqlite_utils.Database) -> None:
    # The server's created_at of each upload: lets the sweep match lost replies on the server's clock.
    db.table("uploads").add_column("remote_created_at", int)


def m004_roots(db: sqlite_utils.Database) -> None:
    # Each root's and each store's settings as last synced: a run without the config file (a cron job
    # started in another folder) then does what the configured runs did, excludes, routes and all.
    db.table("roots").create(
        {"key": str, "store": str, "include": str, "exclude": str, "ignore_defaults": int}, pk="key"
    )
    db.table("store_specs").create({"name": str, "spec": str}, pk="name")  # each [[stores]] entry, as JSON


def m005_run_heartbeat(db: sqlite_utils.Database) -> None:
    # When a run was last known alive: a run killed mid-upload cannot have created a file after it.
    db.table("runs").add_column("alive_at", float)


def m006_folders(db: sqlite_utils.Database) -> None:
    # A file attached to a new store keeps its file id; the store it leaves is detached only once it is
    # indexed in the new one (make before break).
    db.table("files").add_column("old_vector_store_id", str)
    # Which folders feed a store, and whether a store nothing is synced to any more still holds files:
    # asked on every full run, so not by a scan of every file.
    db.table("files").create_index(["store", "root"])
    # Files a user acknowledged (`ingest ignore`): left as they are while their size and mtime stay.
    db.table("ignores").create(
        {"root": str, "path": str, "size": int, "mtime_ns": int, "reason": str, "created_at": float},
        pk=("root", "path"),
    )
    # The signal that ended a run (SIGINT, SIGTERM): its counts are what it did before it stopped.
    db.table("runs").add_column("interrupted", str)


def m007_server(db: sqlite_utils.Database) -> None:
    # The server's profile as last found (by identity, and what it refused), keyed by its base URL: another
    # URL is another server, found out again.
    db.table("server").create(
        {"base_url": str, "profile": str, "version": str, "per_file_batches": int, "checked_at": float},
        pk="base_url",
    )


def m008_store_checked_at(db: sqlite_utils.Database) -> None:
    # When each store was last seen alive remotely: a pass with nothing to upload asks again only
    # every so often, so a no-op makes no remote call.
    db.table("stores").add_column("checked_at", float)
    # The sweep looks for suspect uploads on every pass: without an index, a scan of every upload.
    db.table("uploads").create_index(["suspect"])


def m009_folder_digests(db: sqlite_utils.Database) -> None:
    # One digest per folder of a root, taken when every file of the folder had a settled row and the
    # folder held no other row: a no-op pass compares a digest per folder instead of reading a row per
    # file. Any write to a row of the folder drops its digest (the triggers), so a digest that is there
    # speaks for rows unchanged since; a manifest without them (older, or rebuilt) compares row by row.
    db.table("folder_digests").create({"root": str, "folder": str, "digest": str, "files": int}, pk=("root", "folder"))
    for event, sides in (("insert", ("new",)), ("delete", ("old",)), ("update", ("old", "new"))):
        drops = "".join(
            f"delete from folder_digests where root = {side}.root and folder = {folder_of(side + '.path')}; "
            for side in sides
        )
        db.execute(f"create trigger {DIGEST_TRIGGER}_{event} after {event} on files begin {drops}end")


def m010_left_behind_unsettled(db: sqlite_utils.Database) -> None:
    # A row still in the store it moved from (old_vector_store_id) is no longer settled: its detach is
    # tried again. A folder digest taken while it counted as settled would vouch for it: dropped.
    db.execute(
        f"delete from folder_digests where (root, folder) in (select root, {folder_of('path')} from files"
        " where old_vector_store_id is not null)"
    )


def m011_run_error(db: sqlite_utils.Database) -> None:
    # The error a run died of (a refused key, a server not answering): `status` says it failed, and why.
    db.table("runs").add_column("error", str)


DIGEST_TRIGGER = "folder_digest_dropped_on"  # the triggers' names: insert, delete, update


def folder_of(path: str) -> str:
    """SQL for the folder of a path column, as the scan names it: 'a/b/' of 'a/b/c.txt', '' of 'c.txt'."""
    return f"rtrim({path}, replace({path}, '/', ''))"


# Append-only, applied in order, each recorded by name (sqlite-utils' Migrations). How many there are is
# kept in the manifest's user_version once they are applied (ingest.manifest): opening an up-to-date
# manifest is one PRAGMA, and sqlite-utils is loaded only to migrate.
MIGRATIONS = (
    m001_initial,
    m002_store_replaces,
    m003_upload_server_time,
    m004_roots,
    m005_run_heartbeat,
    m006_folders,
    m007_server,
    m008_store_checked_at,
    m009_folder_digests,
    m010_left_behind_unsettled,
    m011_run_error,
)


def migration_set() -> Migrations:
    return database.migration_set("ingest", MIGRATIONS)
