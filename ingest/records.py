"""The manifest's records of folders over time: acknowledged files, listings, renamed stores, forgotten
roots. A part of Manifest (which opens the database); kept apart so that each file stays readable."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ingest.database import Database
from ingest.rows import FileRow
from ingest.schema import DIGEST_TRIGGER, folder_of


def outside(conn: sqlite3.Connection, root: str, vouched: Mapping[str, int] | None) -> tuple[str, list] | None:
    """The SQL condition (and its arguments) for the rows of a root outside the vouched folders (folder ->
    its files, as their digests recorded); None when there are none. The rows of a vouched folder are
    what its digest was taken of: if they are all the root has, nothing else is to be read."""
    if not vouched:
        return "root = ?", [root]
    if conn.execute("select count(*) from files where root = ?", [root]).fetchone()[0] == sum(vouched.values()):
        return None
    folders = json.dumps(list(vouched))
    return f"root = ? and {folder_of('path')} not in (select value from json_each(?))", [root, folders]


class _Undo(Exception):
    """Rolls a scratch transaction back."""


class FolderRecords(Database):
    @contextmanager
    def scratch(self) -> Iterator[None]:
        """Whatever is written inside is undone at the end: a dry run plays its bookkeeping out here."""
        try:
            with self.transaction():
                yield
                raise _Undo
        except _Undo:
            pass

    # ignores ---------------------------------------------------------------------------------
    def ignore(self, root: str, path: str, size: int, mtime_ns: int, reason: str | None) -> None:
        self.db.table("ignores").upsert(
            {
                "root": root,
                "path": path,
                "size": size,
                "mtime_ns": mtime_ns,
                "reason": reason,
                "created_at": time.time(),
            },
            pk=("root", "path"),
        )

    def unignore(self, root: str, path: str) -> bool:
        return self.execute("delete from ignores where root = ? and path = ?", [root, path]).rowcount > 0

    def ignores(self, root: str | None = None) -> dict[tuple[str, str], dict[str, Any]]:
        where, args = ("root = ?", [root]) if root is not None else ("1", [])
        return {(r["root"], r["path"]): r for r in self.query(f"select * from ignores where {where}", args)}

    # folder digests --------------------------------------------------------------------------
    def folder_digests(self, root: str) -> dict[str, tuple[str, int]]:
        """folder -> (digest, files) of a root, as recorded by the last pass that found the folder settled.
        None at all where the triggers that drop a digest on any write to its rows are missing (a table
        rebuilt by some later change): a digest nothing keeps true is never trusted."""
        triggers = self.conn.execute(
            "select count(*) from sqlite_master where type = 'trigger' and name like ?", [DIGEST_TRIGGER + "_%"]
        ).fetchone()[0]
        if triggers != 3:
            return {}
        return {
            r[0]: (r[1], r[2])
            for r in self.conn.execute("select folder, digest, files from folder_digests where root = ?", [root])
        }

    def record_folder_digests(self, root: str, digests: Mapping[str, tuple[str, int]]) -> None:
        if not digests:
            return
        with self.transaction():
            self.conn.executemany(
                "insert or replace into folder_digests (root, folder, digest, files) values (?, ?, ?, ?)",
                [(root, folder, digest, files) for folder, (digest, files) in digests.items()],
            )

    # folders ---------------------------------------------------------------------------------
    def stats(self, root: str, vouched: Mapping[str, int] | None = None) -> dict[str, tuple]:
        """path -> (size, mtime_ns, inode) of every row of a root, as last seen; none of the rows in the
        `vouched` folders (folder -> its files, as their digests recorded)."""
        scope = outside(self.conn, root, vouched)
        if scope is None:
            return {}
        where, args = scope
        return {
            r[0]: r[1:] for r in self.conn.execute(f"select path, size, mtime_ns, inode from files where {where}", args)
        }

    def has_rows(self, root: str) -> bool:
        return bool(list(self.execute("select 1 from files where root = ? limit 1", [root])))

    def rows_under(self, root: str, prefix: str = "") -> list[FileRow]:
        """The rows of a root, or of a folder inside it (prefix: its path relative to the root)."""
        return self.listing(root, prefix, None, None)

    def roots_of_store(self, store: str) -> set[str]:
        """The roots with files in a logical store (none: the store is empty)."""
        return {r[0] for r in self.execute("select distinct root from files where store = ?", [store])}

    def roots_by_store(self) -> dict[str, dict[str, int]]:
        """store -> root -> how many files of the root are in it."""
        out: dict[str, dict[str, int]] = {}
        for store, root, n in self.execute(
            "select store, root, count(*) from files where store is not null group by store, root order by root"
        ):
            out.setdefault(store, {})[root] = n
        return out

    def listing(self, root: str | None, prefix: str, store: str | None, state: str | None) -> list[FileRow]:
        """Rows of `ingest ls`, by root and path: under root/prefix, in a store, in a state (None: any)."""
        where: list[str] = ["1"]
        args: list[str | int] = []
        if root is not None:
            where.append("root = ?")
            args.append(root)
            if prefix:
                where.append("(path = ? or substr(path, 1, ?) = ?)")
                args += [prefix, len(prefix) + 1, prefix + "/"]
        for column, value in (("store", store), ("state", state)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = " and ".join(where)
        return [FileRow.from_db(r) for r in self.query(f"select * from files where {sql} order by root, path", args)]

    def forget_root(self, root: str) -> None:
        """Drop what the manifest remembers of a root: its settings and its acknowledged files."""
        self.execute("delete from roots where key = ?", [root])
        self.execute("delete from ignores where root = ?", [root])

    def rename_store(self, old: str, new: str) -> None:
        """Every record of logical store `old` now says `new`: store rows, files, root settings, specs."""
        with self.transaction():
            for table, column in (("stores", "name"), ("files", "store"), ("roots", "store")):
                self.execute(f"update {table} set {column} = ? where {column} = ?", [new, old])
            for r in list(self.query("select * from store_specs where name = ?", [old])):
                spec = {**json.loads(r["spec"]), "name": new}
                self.db.table("store_specs").delete(old)
                self.db.table("store_specs").upsert({"name": new, "spec": json.dumps(spec)}, pk="name")
