"""Read-only: compare local files, the manifest and the remote, and name every drift."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from ingest.engine import Engine, Options
from ingest.manifest import FAILED, INDEXED, LIVE, RETIRE, STARTED, Manifest
from ingest.remote.base import CANCELLED, RemoteFile, StoreFile
from ingest.remote.base import FAILED as REMOTE_FAILED
from ingest.stores import Gone

# Kinds of drift, as verify reports them.
MISSING = "missing_remotely"  # indexed in the manifest, not in its store
REMOTE_FAILURE = "failed"  # the store (or the manifest) says the file failed
EXTRA = "extra"  # attached to our store, unknown to the manifest
ORPHANED = "orphaned"  # a file we uploaded that nothing references
ATTRIBUTES = "attribute_drift"  # the store file's attributes differ from what we set
LOCAL = "local_changes"  # local files changed since the last sync
UNREADABLE = "unreadable"  # a root or a file the scan cannot read: its state is unknown
STORE_LOST = "store_lost"  # a store expired or was deleted remotely
UNCONFIRMED = "unconfirmed_upload"  # an upload whose reply never came: 'ingest gc' settles it


@dataclass(frozen=True)
class Drift:
    kind: str
    path: str
    detail: str
    store_id: str | None = None
    file_id: str | None = None

    def where(self) -> tuple[str, str]:
        """(vector store id, file id) of a drift about a file in a store."""
        if not (self.store_id and self.file_id):
            raise ValueError(f"{self.kind} drift of {self.path} names no store file")
        return self.store_id, self.file_id


@dataclass
class Findings:
    drifts: list[Drift] = field(default_factory=list)
    stores_checked: int = 0
    files_checked: int = 0
    remote_files: dict[str, RemoteFile] = field(default_factory=dict)

    def of(self, kind: str) -> list[Drift]:
        return [d for d in self.drifts if d.kind == kind]

    def as_dict(self) -> dict:
        counts: dict[str, int] = {}
        for d in self.drifts:
            counts[d.kind] = counts.get(d.kind, 0) + 1
        return {
            "in_sync": not self.drifts,
            "counts": counts,
            "stores_checked": self.stores_checked,
            "files_checked": self.files_checked,
            "drift": [
                {"kind": d.kind, "path": d.path, "detail": d.detail, "store_id": d.store_id, "file_id": d.file_id}
                for d in self.drifts
            ],
        }


def _show(root: str, path: str) -> str:
    return os.path.join(root, path)


def verify(engine: Engine, local: bool = True) -> Findings:
    """Every store's files (paginated), every file we uploaded, and a dry-run scan of the roots."""
    manifest, remote = engine.manifest, engine.remote
    found = Findings()
    rows = list(manifest.rows().values())
    gone = Gone(remote)
    for store in manifest.stores():
        found.stores_checked += 1
        status = gone.status(store.id)
        if status in ("expired", "deleted"):
            found.drifts.append(Drift(STORE_LOST, store.name, f"vector store {store.id} was {status}", store.id))
            # Nothing remote is changed, but the next sync must look at its stores even with no work.
            manifest.store_checked(store.id, None)
            continue
        remote_files = {sf.file_id: sf for sf in remote.list_store_files(store.id)}
        found.files_checked += len(remote_files)
        leaving = {r.file_id for r in rows if r.old_vector_store_id == store.id and r.file_id}
        found.drifts += _compare_store(
            store.id, [r for r in rows if r.vector_store_id == store.id], remote_files, manifest.ledger_ids(), leaving
        )
    ignored = manifest.ignores()
    for row in rows:
        if row.state == FAILED and not _still_ignored(row, ignored):
            found.drifts.append(
                Drift(
                    REMOTE_FAILURE, _show(row.root, row.path), row.reason or "failed", row.vector_store_id, row.file_id
                )
            )
    found.remote_files = {f.id: f for f in remote.list_files()}
    found.drifts += _orphans(manifest, found.remote_files)
    if local:
        report = engine.sync(Options(dry_run=True, command="verify"))
        for kind in ("new", "changed", "moved", "deleted", "resumed", "held_back"):
            for path in report.planned.get(kind, []):
                found.drifts.append(
                    Drift(
                        LOCAL,
                        path,
                        "deleted locally, but the deletion is held back (see 'ingest sync')"
                        if kind == "held_back"
                        else f"{kind}: not synced yet",
                    )
                )
        found.drifts += [Drift(UNREADABLE, e.shown, e.reason) for e in report.failures]
    return found


def _compare_store(
    store_id: str, rows, remote_files: dict[str, StoreFile], ours: set[str], leaving: set[str]
) -> list[Drift]:
    drifts = []
    for row in rows:
        if row.state != INDEXED or not row.file_id:
            continue
        where = _show(row.root, row.path)
        sf = remote_files.get(row.file_id)
        if sf is None:
            drifts.append(
                Drift(MISSING, where, f"file {row.file_id} is not in store {store_id}", store_id, row.file_id)
            )
        elif sf.status in (REMOTE_FAILED, CANCELLED):  # either way the file is not searchable
            drifts.append(
                Drift(REMOTE_FAILURE, where, f"the store reports {sf.error_code or sf.status}", store_id, row.file_id)
            )
        elif _normal(sf.attributes) != _normal(row.attrs()):
            drifts.append(Drift(ATTRIBUTES, where, "attributes differ from what ingest set", store_id, row.file_id))
    wanted = {r.file_id for r in rows} | {r.old_file_id for r in rows if r.old_file_id} | leaving
    for file_id, sf in remote_files.items():
        if file_id not in wanted:
            owner = "created by ingest" if file_id in ours else "not created by ingest"
            drifts.append(
                Drift(
                    EXTRA,
                    str(sf.attributes.get("path", file_id)) if sf.attributes else file_id,
                    f"attached but not in the manifest ({owner})",
                    store_id,
                    file_id,
                )
            )
    return drifts


def _still_ignored(row, ignored: dict) -> bool:
    """Acknowledged with `ingest ignore`, and not changed since (the scan lifts a lapsed one)."""
    how = ignored.get((row.root, row.path))
    return how is not None and (how["size"], how["mtime_ns"]) == (row.size, row.mtime_ns)


def _normal(attrs) -> dict:
    return {
        k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
        for k, v in dict(attrs or {}).items()
    }


def _orphans(manifest: Manifest, remote_files: dict[str, RemoteFile]) -> list[Drift]:
    referenced = manifest.referenced_ids()
    drifts = []
    for status in (LIVE, RETIRE):
        for upload in manifest.ledger(status):
            if upload.file_id and upload.file_id not in referenced and upload.file_id in remote_files:
                drifts.append(
                    Drift(
                        ORPHANED,
                        _show(upload.root, upload.path),
                        f"uploaded as {upload.file_id}, attached to nothing we track",
                        upload.vector_store_id,
                        upload.file_id,
                    )
                )
    for upload in manifest.ledger(STARTED):
        drifts.append(
            Drift(
                UNCONFIRMED,
                _show(upload.root, upload.path),
                "an upload whose reply never came; 'ingest gc' removes any copy it left",
            )
        )
    return drifts


def ours_unreferenced(manifest: Manifest, remote_files: Iterable[str]) -> list[str]:
    """File ids that this tool created, that exist remotely, and that nothing references."""
    mine, referenced = manifest.ledger_ids(), manifest.referenced_ids()
    return [f for f in remote_files if f in mine and f not in referenced]
