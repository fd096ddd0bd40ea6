"""The manifest's connection, shared by its parts: plain sqlite3 for what every pass reads and writes,
sqlite-utils' table helpers loaded on their first use. Importing sqlite-utils (and dateutil with it)
costs a no-op pass or a search more than the SQL it runs."""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite_utils

Step = Callable[["sqlite_utils.Database"], None]
_LOADING = threading.Lock()


def load_sqlite_utils() -> ModuleType:
    """sqlite_utils, imported without numpy and pandas. It imports them when they are installed (to
    store their values; ingest never hands it any): with the `semantic` extra's numpy that was 0.2 s of
    a first run's start-up, before anything else could begin. They are hidden only while this is the
    process's one thread, for None in sys.modules makes any other thread's import of them fail."""
    with _LOADING:
        if "sqlite_utils.db" not in sys.modules and threading.active_count() == 1:
            hidden = [name for name in ("numpy", "pandas") if name not in sys.modules]
            for name in hidden:
                sys.modules[name] = None  # type: ignore[assignment]  # None there: importing it raises ImportError
            try:
                import sqlite_utils.db
            finally:
                for name in hidden:
                    del sys.modules[name]
        import sqlite_utils

        return sqlite_utils


def migrate(conn: sqlite3.Connection, name: str, steps: Sequence[Step], newer: Callable[[str], Exception]) -> None:
    """Apply the steps (append-only, recorded by name with sqlite-utils' Migrations) not applied yet and
    stamp how many there are in user_version: opening an up-to-date database is one PRAGMA, and
    sqlite-utils is loaded only to migrate. In one IMMEDIATE transaction, so two processes opening a new
    database at once apply each step once. A database a newer version wrote (a step not known here) is
    refused with newer(that step's name), and left as it is."""
    if conn.execute("PRAGMA user_version").fetchone()[0] == len(steps):
        return
    sqlite_utils = load_sqlite_utils()
    migrations = migration_set(name, steps)
    db = sqlite_utils.Database(conn, execute_plugins=False)
    conn.execute("BEGIN IMMEDIATE")
    try:
        known = {step.__name__ for step in steps}
        unknown = [m.name for m in migrations.applied(db) if m.name not in known]
        if unknown:
            raise newer(unknown[-1])
        migrations.apply(db)
        conn.execute(f"PRAGMA user_version = {len(steps)}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def migration_set(name: str, steps: Sequence[Step]) -> sqlite_utils.Migrations:
    migrations = load_sqlite_utils().Migrations(name)
    for step in steps:
        migrations()(step)
    return migrations


class Database:
    conn: sqlite3.Connection
    _db: sqlite_utils.Database | None = None
    _savepoints = 0  # savepoints opened so far: each gets a name of its own

    @property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils over the same connection, for the writes and migrations that use its helpers."""
        if self._db is None:
            sqlite_utils = load_sqlite_utils()
            # No plugins: none is meant to touch the manifest's connection, and finding them reads
            # every installed package's entry points.
            self._db = sqlite_utils.Database(self.conn, execute_plugins=False)
        return self._db

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        """One statement. A write outside a transaction commits at once, as sqlite-utils' execute()
        does; inside one (transaction(), scratch()) it becomes part of it."""
        was_in_transaction = self.conn.in_transaction
        try:
            cursor = self.conn.execute(sql, args)
        except Exception:
            if not was_in_transaction and self.conn.in_transaction:
                self.conn.rollback()
            raise
        if not was_in_transaction and self.conn.in_transaction:
            self.conn.commit()
        return cursor

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows of a SELECT as dicts keyed by column name."""
        cursor = self.conn.execute(sql, args)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside commits together, or not at all; nested, a savepoint (as sqlite-utils'
        atomic() does, which would cost its import to every pass that writes)."""
        if self.conn.in_transaction:
            self._savepoints += 1
            name = f"ingest_{self._savepoints}"
            self.conn.execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                if self.conn.in_transaction:  # an error may have ended the transaction already
                    self.conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
                    self.conn.execute(f"RELEASE SAVEPOINT {name}")
                raise
            self.conn.execute(f"RELEASE SAVEPOINT {name}")
            return
        self.conn.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.conn.rollback()
            raise
        try:
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
