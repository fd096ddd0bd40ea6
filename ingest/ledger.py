"""The manifest's ledger of every remote file this tool created: what was uploaded, when, and what became
of it (the sweep and gc read it). A part of Manifest (which opens the database)."""

from __future__ import annotations

import time
from typing import Any

from ingest.database import Database
from ingest.errors import ManifestError
from ingest.rows import Upload

# Ledger statuses of every remote file id this tool created.
LIVE = "live"
RETIRE = "retire"  # no longer wanted: to be detached and deleted
DELETED = "deleted"
STARTED = "started"  # an upload began and its id is not known yet (crash, or a lost reply)


class UploadLedger(Database):
    def ledger_start(self, root: str, path: str, filename: str, size: int, sha256: str | None) -> int:
        cursor = self.execute(
            "insert into uploads (root, path, filename, bytes, sha256, status, started_at) "
            "values (?, ?, ?, ?, ?, ?, ?)",
            [root, path, filename, size, sha256, STARTED, time.time()],
        )
        if cursor.lastrowid is None:  # pragma: no cover - sqlite always gives an insert its rowid
            raise ManifestError(f"the upload of {path} was not recorded")
        return cursor.lastrowid

    def ledger_done(
        self, upload_id: int, file_id: str, suspect: bool = False, remote_created_at: int | None = None
    ) -> None:
        self.execute(
            "update uploads set file_id = ?, status = ?, finished_at = ?, suspect = ?, "
            "remote_created_at = ? where id = ?",
            [file_id, LIVE, time.time(), int(suspect), remote_created_at, upload_id],
        )

    def clock_offset(self) -> float | None:
        """Median of (server created_at − our finish time) over recent uploads: the server's clock skew."""
        offsets = sorted(
            r[0]
            for r in self.execute(
                "select remote_created_at - finished_at from uploads where remote_created_at is not null "
                "order by id desc limit 50"
            ).fetchall()
        )
        return offsets[len(offsets) // 2] if offsets else None

    def ledger_failed(self, upload_id: int, ambiguous: bool) -> None:
        """An upload that failed: if the request may have reached the server, keep it for the sweep."""
        if ambiguous:
            self.db.table("uploads").update(upload_id, {"finished_at": time.time(), "suspect": 1})
        else:
            self.db.table("uploads").update(upload_id, {"status": DELETED, "finished_at": time.time()})

    def ledger_set(self, file_id: str, status: str, vector_store_id: str | None = None) -> None:
        values: dict[str, Any] = {"status": status}
        if vector_store_id:
            values["vector_store_id"] = vector_store_id
        sets = ", ".join(f"{k} = ?" for k in values)
        self.execute(f"update uploads set {sets} where file_id = ?", [*values.values(), file_id])

    def ledger(self, status: str) -> list[Upload]:
        return [Upload(**r) for r in self.query("select * from uploads where status = ? order by id", [status])]

    def ledger_ids(self) -> set[str]:
        return {r["file_id"] for r in self.query("select file_id from uploads where file_id is not null")}

    def ledger_suspects(self) -> list[Upload]:
        """Uploads after which a duplicate may exist remotely (a retry after the request got through)."""
        return [Upload(**r) for r in self.query("select * from uploads where suspect = 1 and status != ?", [STARTED])]

    def ledger_resolved(self, upload: Upload) -> None:
        values = {"suspect": 0} if upload.file_id else {"suspect": 0, "status": DELETED}
        self.db.table("uploads").update(upload.id, values)
