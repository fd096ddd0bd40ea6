"""The SQLite manifest: the only module that opens it. Local path → content hash → file id → store."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from ingest.database import migrate
from ingest.errors import ManifestError
from ingest.ledger import DELETED as DELETED
from ingest.ledger import LIVE as LIVE
from ingest.ledger import RETIRE as RETIRE
from ingest.ledger import STARTED as STARTED
from ingest.ledger import UploadLedger
from ingest.observe import SETTLED_SQL, racy_ns
from ingest.records import FolderRecords, outside
from ingest.rows import FileRow as FileRow
from ingest.rows import StoreRow as StoreRow
from ingest.rows import Upload as Upload
from ingest.schema import MIGRATIONS

# File states, in the order a document goes through them.
REJECTED = "rejected"  # validation refused it; reason says why; never uploaded
PENDING = "pending"  # valid, to be uploaded
UPLOADING = "uploading"  # an upload is under way (its ledger row says when it started)
UPLOADED = "uploaded"  # file_id known, not yet attached
ATTACHING = "attaching"  # attached in batch_id, indexing under way
INDEXED = "indexed"  # completed in its vector store
FAILED = "failed"  # the upload or indexing failed; retryable says whether another try may help
ERROR = "error"  # the scan could not read it; the last good remote state is kept
ACTIVE_STATES = (PENDING, UPLOADING, UPLOADED, ATTACHING)
STATES = (REJECTED, PENDING, UPLOADING, UPLOADED, ATTACHING, INDEXED, FAILED, ERROR)
PROBLEM_STATES = (FAILED, REJECTED, ERROR)  # a file with a problem: status lists it, `ingest ignore` takes it

HEARTBEAT = 5.0  # seconds between the notes a run leaves that it is still going, while it uploads
SCHEMA_VERSION = len(MIGRATIONS)  # in the user_version of a manifest they were all applied to


def _prepare_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


_FILE_COLUMNS = tuple(f.name for f in fields(FileRow))
_PUT_FILE = (
    f"insert into files ({', '.join(_FILE_COLUMNS)}) values ({', '.join('?' for _ in _FILE_COLUMNS)}) "
    "on conflict (root, path) do update set "
    + ", ".join(f"{c} = excluded.{c}" for c in _FILE_COLUMNS if c not in ("root", "path"))
)


class Manifest(FolderRecords, UploadLedger):
    """Reads and writes the manifest. Open one per process; use it from one thread."""

    def __init__(self, path: Path):
        self.path = path
        try:
            _prepare_file(path)
        except OSError as exc:
            raise ManifestError(
                f"{path}: cannot create the manifest ({exc.strerror}); make its folder "
                "writable by this user, or choose another with state_dir or manifest "
                "in the config"
            ) from None
        if not (os.access(path, os.R_OK | os.W_OK) and os.access(path.parent, os.W_OK)):
            raise ManifestError(
                f"{path}: this user cannot write the manifest or its folder (the manifest "
                "itself is fine); fix the permissions or run ingest as the user that owns it"
            )
        try:
            self.conn = sqlite3.connect(path)  # the default transaction handling, as sqlite-utils wants
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA busy_timeout=10000")
            if self.conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                self._migrate()
        except sqlite3.OperationalError as exc:  # locked, read-only, out of space: the file is not at fault
            raise ManifestError(f"{path}: cannot use the manifest ({exc}); the file was left as it is") from None
        except sqlite3.DatabaseError as exc:
            raise ManifestError(
                f"{path}: the manifest is damaged ({exc}). It was left as it is; move it aside "
                f"(mv '{path}' '{path}.broken') and run 'ingest reindex' to rebuild it from the "
                "local files (the remote files it knew of are then found by 'ingest gc')."
            ) from None
        for suffix in ("-wal", "-shm"):
            extra = Path(str(path) + suffix)
            if extra.exists():
                os.chmod(extra, 0o600)

    def _migrate(self) -> None:
        """Apply the migrations not applied yet, refusing a manifest a newer version wrote."""

        def newer(step: str) -> Exception:
            return ManifestError(
                f"{self.path}: the manifest was written by a newer version of ingest "
                f"(migration {step}); upgrade ingest, or point --manifest elsewhere."
            )

        migrate(self.conn, "ingest", MIGRATIONS, newer)

    def close(self) -> None:
        self.conn.close()

    # files -----------------------------------------------------------------------------------
    def rows(self, root: str | None = None) -> dict[tuple[str, str], FileRow]:
        where, args = ("root = ?", [root]) if root is not None else ("1", [])
        return {
            (r["root"], r["path"]): FileRow.from_db(r) for r in self.query(f"select * from files where {where}", args)
        }

    def settled(
        self, root: str, network: bool, store: str | None, attributes: bool, vouched: Mapping[str, int] | None = None
    ) -> tuple[dict[str, tuple], list[str]]:
        """What a no-op pass compares against, as plain tuples rather than a FileRow per file:
        path -> (size, mtime_ns, inode[, store][, attributes]) of the settled rows of a root (in `store`
        if given), and the paths of its other rows; none of the rows in the `vouched` folders (folder ->
        its files, as their digests recorded)."""
        return _settled(self.conn, root, network, store, attributes, vouched)

    def settled_beside(
        self, root: str, network: bool, store: str | None, attributes: bool
    ) -> Callable[[], tuple[dict[str, tuple], list[str]]]:
        """settled(), read on a connection of its own in another thread while the caller walks a
        network root, whose walk waits on the server; call the result to wait for it. A local walk is
        work for the interpreter, and the two fight over its lock: read there first, here and now
        (1.1 s against 1.8 s for a no-op of 100,000 local files). Inside a transaction too: another
        connection would not see its writes."""
        if self.conn.in_transaction or not network:
            read_now = _settled(self.conn, root, network, store, attributes)
            return lambda: read_now
        path = self.path

        def read() -> tuple[dict[str, tuple], list[str]]:
            conn = sqlite3.connect(path, timeout=10)
            try:
                conn.execute("PRAGMA query_only = 1")
                return _settled(conn, root, network, store, attributes)
            finally:
                conn.close()

        from concurrent.futures import ThreadPoolExecutor  # here: only a network root reads beside its walk

        pool = ThreadPoolExecutor(1, thread_name_prefix="manifest")
        future = pool.submit(read)
        pool.shutdown(wait=False)
        return future.result

    def rows_at(self, root: str, paths: Iterable[str]) -> dict[tuple[str, str], FileRow]:
        wanted, out = list(paths), {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.query(f"select * from files where root = ? and path in ({marks})", [root, *chunk]):
                out[(r["root"], r["path"])] = FileRow.from_db(r)
        return out

    def rows_of_files(self, file_ids: Iterable[str]) -> dict[str, FileRow]:
        """The row of each remote file id, as its current file or as the one it replaces."""
        wanted, out = list(file_ids), {}
        for column in ("file_id", "old_file_id"):  # the second (not indexed) only for ids the first left
            wanted = [i for i in wanted if i not in out]
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for r in self.query(f"select * from files where {column} in ({marks})", chunk):
                    out[r[column]] = FileRow.from_db(r)
        return out

    def store_sizes(self) -> dict[str, int]:
        return {
            r[0]: r[1]
            for r in self.execute(
                "select store, count(*) from files where file_id is not null and store is not null group by store"
            ).fetchall()
        }

    def row(self, root: str, path: str) -> FileRow | None:
        found = self.query("select * from files where root = ? and path = ?", [root, path])
        return FileRow.from_db(found[0]) if found else None

    def put(self, row: FileRow) -> FileRow:
        now = time.time()
        row = replace(row, updated_at=now, first_seen=row.first_seen or now)
        # Plain SQL: sqlite-utils' upsert introspects the table on every call, 20x slower per row.
        self.execute(_PUT_FILE, [getattr(row, name) for name in _FILE_COLUMNS])
        return row

    def update(self, row: FileRow, **changes: Any) -> FileRow:
        return self.put(replace(row, **changes))

    def remove(self, root: str, path: str) -> None:
        self.execute("delete from files where root = ? and path = ?", [root, path])

    def rows_in_states(self, states: Iterable[str]) -> list[FileRow]:
        states = list(states)
        marks = ",".join("?" for _ in states)
        return [FileRow.from_db(r) for r in self.query(f"select * from files where state in ({marks})", states)]

    def referenced_ids(self) -> set[str]:
        out: set[str] = set()
        for r in self.query("select file_id, old_file_id from files"):
            out.update(v for v in (r["file_id"], r["old_file_id"]) if v)
        return out

    def counts_by_store_state(self) -> list[dict[str, Any]]:
        return list(
            self.query(
                "select store, vector_store_id, state, count(*) as n from files "
                "group by store, vector_store_id, state order by store, state"
            )
        )

    def known_roots(self) -> dict[str, str]:
        """Each root the manifest holds files for, with the store most of its files go to."""
        out: dict[str, str] = {}
        for r in self.query(
            "select root, store, count(*) n from files where store is not null group by root, store order by n"
        ):
            out[r["root"]] = r["store"]
        return out

    def remember_roots(self, roots: Iterable[Mapping[str, Any]]) -> None:
        """roots: dicts of key, store, include, exclude (lists) and ignore_defaults."""
        for r in roots:  # a few: one statement each
            self.execute(
                "insert into roots (key, store, include, exclude, ignore_defaults) values (?, ?, ?, ?, ?) "
                "on conflict (key) do update set store = excluded.store, include = excluded.include, "
                "exclude = excluded.exclude, ignore_defaults = excluded.ignore_defaults",
                [
                    r["key"],
                    r["store"],
                    json.dumps(list(r["include"])),
                    json.dumps(list(r["exclude"])),
                    int(r["ignore_defaults"]),
                ],
            )

    def remembered_roots(self) -> dict[str, dict[str, Any]]:
        return {
            r["key"]: {
                "store": r["store"],
                "include": tuple(json.loads(r["include"])),
                "exclude": tuple(json.loads(r["exclude"])),
                "ignore_defaults": bool(r["ignore_defaults"]),
            }
            for r in self.query("select * from roots")
        }

    def remember_store_specs(self, specs: list[Mapping[str, Any]]) -> None:
        """The [[stores]] entries of the last config file: they replace the ones kept before."""
        if [json.loads(json.dumps(spec)) for spec in specs] == self.remembered_store_specs():
            return  # as kept: a pass with nothing to do writes nothing
        with self.transaction():
            self.db.table("store_specs").delete_where()
            self.db.table("store_specs").insert_all(
                [{"name": spec["name"], "spec": json.dumps(spec)} for spec in specs], pk="name"
            )

    def remembered_store_specs(self) -> list[dict[str, Any]]:
        return [json.loads(r["spec"]) for r in self.query("select * from store_specs")]

    def rows_in_store(self, vector_store_id: str) -> list[FileRow]:
        return [
            FileRow.from_db(r) for r in self.query("select * from files where vector_store_id = ?", [vector_store_id])
        ]

    def count_in_root(self, root: str) -> int:
        return self.execute("select count(*) from files where root = ?", [root]).fetchone()[0]

    def count_in_store(self, vector_store_id: str) -> int:
        return self.execute(
            "select count(*) from files where vector_store_id = ? and file_id is not null", [vector_store_id]
        ).fetchone()[0]

    # stores ----------------------------------------------------------------------------------
    def stores(self, name: str | None = None, status: str = "active") -> list[StoreRow]:
        where = "status = ?" + (" and name = ?" if name else "")
        args = [status] + ([name] if name else [])
        return [StoreRow(**r) for r in self.query(f"select * from stores where {where} order by name, shard", args)]

    def add_store(self, store: StoreRow) -> None:
        self.db.table("stores").upsert(asdict(store), pk="id")

    def remove_store(self, store_id: str) -> None:
        self.db.table("stores").delete_where("id = ?", [store_id])

    def store_checked(self, store_id: str, at: float | None) -> None:
        self.execute("update stores set checked_at = ? where id = ?", [at, store_id])

    def set_store_status(self, store_id: str, status: str) -> None:
        self.db.table("stores").update(store_id, {"status": status})

    # the server ------------------------------------------------------------------------------
    def server(self, base_url: str) -> dict[str, Any] | None:
        found = self.query("select * from server where base_url = ?", [base_url])
        return found[0] if found else None

    def remember_server(self, base_url: str, profile: str, version: str | None, per_file_batches: bool | None) -> None:
        with self.transaction():  # one server at a time: the profile of a URL no longer used is stale
            self.db.table("server").delete_where()
            self.db.table("server").insert(
                {
                    "base_url": base_url,
                    "profile": profile,
                    "version": version,
                    "per_file_batches": None if per_file_batches is None else int(per_file_batches),
                    "checked_at": time.time(),
                },
                pk="base_url",
            )

    # runs ------------------------------------------------------------------------------------
    def start_run(self, command: str) -> int:
        run_id = self.execute("insert into runs (command, started_at) values (?, ?)", [command, time.time()]).lastrowid
        self._run = int(run_id or 0)
        self._alive = 0.0
        return self._run

    def alive(self, every: float = HEARTBEAT) -> None:
        """Note that the current run is still going (at most once per `every` seconds)."""
        now = time.time()
        if getattr(self, "_run", None) is not None and now - self._alive >= every:
            self.execute("update runs set alive_at = ? where id = ?", [now, self._run])
            self._alive = now

    def last_alive(self, at: float) -> float | None:
        """The last moment the run going at time `at` was known to be alive (None: no run then)."""
        found = self.execute(
            "select coalesce(finished_at, alive_at, started_at) from runs "
            "where started_at <= ? order by started_at desc limit 1",
            [at],
        ).fetchone()
        return found[0] if found else None

    def finish_run(
        self,
        run_id: int,
        exit_code: int,
        counts: dict[str, int],
        held: list[str],
        interrupted: str | None = None,
        error: str | None = None,
    ) -> None:
        self.execute(
            "update runs set finished_at = ?, exit_code = ?, counts = ?, held = ?, interrupted = ?, error = ?"
            " where id = ?",
            [time.time(), exit_code, json.dumps(counts), json.dumps(held), interrupted, error, run_id],
        )

    def recent_runs(self, limit: int = 5) -> list[dict[str, Any]]:
        return list(self.query("select * from runs order by id desc limit ?", [limit]))

    def iter_problem_rows(self) -> Iterator[FileRow]:
        for r in self.query("select * from files where state in (?, ?, ?) order by root, path", list(PROBLEM_STATES)):
            yield FileRow.from_db(r)


def _settled(
    conn: sqlite3.Connection,
    root: str,
    network: bool,
    store: str | None,
    attributes: bool,
    vouched: Mapping[str, int] | None = None,
) -> tuple[dict[str, tuple], list[str]]:
    # The store only where the caller compares it (routes, static attributes): one string fewer per row.
    columns = "path, size, mtime_ns, inode" + (", store" if store is None or attributes else "")
    columns += ", attributes" if attributes else ""
    where, args = (
        (f"{SETTLED_SQL} and store = ?", [INDEXED, racy_ns(network), store])
        if store is not None
        else (SETTLED_SQL, [INDEXED, racy_ns(network)])
    )
    found = outside(conn, root, vouched)
    if found is None:
        return {}, []
    scope, scoped = found
    settled = {
        r[0]: r[1:] for r in conn.execute(f"select {columns} from files where {scope} and {where}", [*scoped, *args])
    }
    others = [
        r[0]
        for r in conn.execute(f"select path from files where {scope} and not coalesce(({where}), 0)", [*scoped, *args])
    ]
    return settled, others
