"""The manifest's connection, shared by its parts: plain sqlite3 for what every pass reads and writes,
sqlite-utils' table helpers loaded on their first use. Importing sqlite-utils (and dateutil with it)
costs a no-op pass or a search more than the SQL it runs."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite_utils


class Database:
    conn: sqlite3.Connection
    _db: sqlite_utils.Database | None = None
    _savepoints = 0  # savepoints opened so far: each gets a name of its own

    @property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils over the same connection, for the writes and migrations that use its helpers."""
        if self._db is None:
            import sqlite_utils

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
