"""Make drift go away: `ingest reindex` repairs what verify finds, `ingest gc` deletes what we left behind."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ingest.engine import Engine, Options, Report
from ingest.manifest import DELETED, INDEXED, PENDING, RETIRE, UPLOADED, Manifest
from ingest.remote.base import AuthError, Remote, RemoteError
from ingest.verify import ATTRIBUTES, EXTRA, MISSING, ORPHANED, REMOTE_FAILURE, Findings, ours_unreferenced, verify

log = logging.getLogger("ingest")


@dataclass
class Repairs:
    actions: list[str] = field(default_factory=list)
    left_alone: list[str] = field(default_factory=list)
    report: Report | None = None

    def as_dict(self) -> dict:
        return {
            "repaired": self.actions,
            "left_alone": self.left_alone,
            "sync": self.report.as_dict() if self.report else None,
        }


def reindex(engine: Engine, rehash: bool = False, retry_failed: bool = False, dry_run: bool = False) -> Repairs:
    """verify, put every drift right (or plan to, with dry_run), then a full sync that finishes the job."""
    out = Repairs()
    found = verify(engine, local=False)
    m, remote = engine.manifest, engine.remote
    rows = {r.file_id: r for r in m.rows().values() if r.file_id}
    for drift in found.drifts:
        row = rows.get(drift.file_id) if drift.file_id else None
        if drift.kind == MISSING and row:
            exists = drift.file_id in found.remote_files
            out.actions.append(f"re-attach {drift.path}" if exists else f"re-upload {drift.path}")
            if not dry_run:
                if exists:
                    m.update(row, state=UPLOADED, batch_id=None)
                else:
                    m.ledger_set(row.known_file_id, RETIRE)
                    m.update(row, state=PENDING, file_id=None, batch_id=None)
        elif drift.kind == REMOTE_FAILURE and row and row.state == INDEXED:
            out.actions.append(f"re-attach {drift.path} (failed in the store)")
            if not dry_run:
                remote.detach(*drift.where())
                m.update(row, state=UPLOADED, batch_id=None)
        elif drift.kind == ATTRIBUTES and row:
            out.actions.append(f"restore the attributes of {drift.path}")
            if not dry_run:
                remote.update_attributes(*drift.where(), row.attrs())
        elif drift.kind == EXTRA:
            if drift.file_id in m.ledger_ids():
                out.actions.append(f"detach and delete {drift.path} ({drift.file_id}), which ingest created")
                if not dry_run:
                    store_id, file_id = drift.where()
                    remote.detach(store_id, file_id)
                    remote.delete_file(file_id)
                    m.ledger_set(file_id, DELETED)
            else:
                # The store is ours, the file is not: take it out of the store, never delete it.
                out.actions.append(
                    f"detach {drift.path} ({drift.file_id}) from {drift.store_id}; the file "
                    "was not created by ingest and is kept"
                )
                if not dry_run:
                    remote.detach(*drift.where())
    if not dry_run:
        out.actions += [f"deleted orphan {fid}" for fid in _delete_unreferenced(m, remote, found)]
    else:
        out.actions += [f"delete orphan {d.file_id} ({d.path})" for d in found.of(ORPHANED)]
    out.report = engine.sync(
        Options(dry_run=dry_run, rehash=rehash, retry_failed=retry_failed, command="reindex", check_stores=True)
    )
    if not dry_run:
        _fill_vectors(engine)
    return out


def _fill_vectors(engine: Engine) -> None:
    """Give every chunk of the embedded store a vector (a lexical store becomes hybrid this way, from
    its kept chunks), until done or stopped. Servers embed for themselves: they have no such step."""
    fill = getattr(engine.remote, "fill_vectors", None) if engine.remote.kind == "local" else None
    if fill is None:
        return
    for store in engine.manifest.stores():
        if engine.stop.is_set():
            return
        embedded = fill(store.id, engine.stop.is_set)
        if embedded:
            log.info("embedded %d chunks of %s for search by meaning", embedded, store.name)


def gc(engine: Engine, dry_run: bool = False) -> list[str]:
    """Delete remote files this tool created that nothing references; never anything else."""
    found = Findings(remote_files={f.id: f for f in engine.remote.list_files()})
    if dry_run:
        return ours_unreferenced(engine.manifest, found.remote_files)
    deleted = _delete_unreferenced(engine.manifest, engine.remote, found)
    sweeper = engine.indexer()
    sweeper.sweep()
    return deleted + [f"a lost upload's copy ({n})" for n in range(sweeper.outcome.duplicates_removed)]


def _delete_unreferenced(m: Manifest, remote: Remote, found: Findings) -> list[str]:
    deleted = []
    ledger = {u.file_id: u for status in ("live", RETIRE) for u in m.ledger(status) if u.file_id}
    for file_id in ours_unreferenced(m, found.remote_files):
        upload = ledger.get(file_id)
        try:
            if upload and upload.vector_store_id:
                remote.detach(upload.vector_store_id, file_id)
            remote.delete_file(file_id)
        except AuthError:
            raise
        except RemoteError as exc:
            log.warning("could not delete %s: %s", file_id, exc)
            continue
        m.ledger_set(file_id, DELETED)
        deleted.append(file_id)
    return deleted
