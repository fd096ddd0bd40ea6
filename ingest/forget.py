"""`ingest forget`: stop syncing a folder; take back what ingest put in the stores for it, nothing else."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ingest.config import NO_CONFIG, Settings
from ingest.errors import ConfigError
from ingest.events import DELETED, RETIRE_FAILED, Event, FileEvent, Note
from ingest.indexing import Indexer
from ingest.manifest import RETIRE, FileRow, Manifest
from ingest.stores import Stores

if TYPE_CHECKING:
    from ingest.engine import Engine


@dataclass(frozen=True)
class Folder:
    """A folder to forget, as the manifest knows it: a root, or a folder inside one."""

    root: str
    prefix: str = ""  # relative to the root; "" is the whole root

    def show(self) -> str:
        return os.path.join(self.root, self.prefix) if self.prefix else self.root


@dataclass
class Forgotten:
    folders: list[str] = field(default_factory=list)
    events: list[FileEvent] = field(default_factory=list)  # a deleted event per file whose remote copy goes
    stores_removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # remote files that could not be deleted yet
    dry_run: bool = False

    @property
    def deleted(self) -> list[str]:
        return [e.shown for e in self.events if e.action == DELETED]

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    def as_dict(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "folders": self.folders,
            "counts": {"deleted": len(self.deleted), "stores_removed": len(self.stores_removed)},
            "deleted": self.deleted,
            "files": [e.as_dict() for e in self.events],
            "stores_removed": self.stores_removed,
            "notes": self.notes,
            "failed": self.failures,
            "exit_code": self.exit_code,
        }


def resolve(paths: list[Path], roots: set[str]) -> list[Folder]:
    """Each PATH as known folders: the root it names or lies in, or the roots inside it."""
    out: list[Folder] = []
    for raw in paths:
        path = Path(os.path.abspath(raw.expanduser()))
        inside = [r for r in roots if Path(r) == path or path in Path(r).parents]
        owner = next((r for r in roots if Path(r) in path.parents), None)
        if inside:
            out += [Folder(r) for r in sorted(inside)]
        elif owner is not None:
            out.append(Folder(owner, path.relative_to(owner).as_posix()))
        else:
            listed = ", ".join(sorted(roots)) or "none yet"
            raise ConfigError(f"{path}: ingest syncs no folder there (the folders it syncs: {listed})")
    return list(dict.fromkeys(out))


def forget(
    engine: Engine,
    folders: list[Folder],
    dry_run: bool = False,
    keep_store: bool = False,
    configured: Settings | None = None,
) -> Forgotten:
    """Retire every remote file ingest made for the folders, drop their rows and remembered settings,
    and delete each store of ingest's they leave empty (unless keep_store). configured: the config
    file's own settings, whose roots come back at the next sync (default: the engine's)."""
    settings, manifest, remote = engine.settings, engine.manifest, engine.remote
    done = Forgotten(folders=[f.show() for f in folders], dry_run=dry_run)
    rows: list[FileRow] = []
    for folder in folders:
        rows += manifest.rows_under(folder.root, folder.prefix)
    done.events = [
        FileEvent(r.path, r.root, DELETED, r.store, r.file_id, "forgotten") for r in rows if r.file_id or r.old_file_id
    ]
    for event in done.events:
        engine.emit(event)
    gone = {(r.root, r.path) for r in rows}
    whole = {f.root for f in folders if not f.prefix}
    stores = {r.store for r in rows if r.store} | {
        how["store"] for key, how in manifest.remembered_roots().items() if key in whole
    }
    feeding = _still_fed(settings, manifest, whole)
    empty = [s for s in manifest.stores() if s.name in stores and s.name not in feeding]
    empty = [s for s in empty if not _others_in(manifest, s.id, gone)]
    if not keep_store:
        done.stores_removed = sorted({s.name for s in empty})
    done.notes += _resync_warnings(configured or settings, manifest, folders)
    if dry_run:
        return done
    with manifest.transaction():
        for row in rows:
            for file_id in (row.file_id, row.old_file_id):
                if file_id:
                    manifest.ledger_set(file_id, RETIRE)
            manifest.remove(row.root, row.path)
        for root in whole:
            manifest.forget_root(root)
        for folder in folders:
            if folder.prefix:
                _exclude_from_remembered(manifest, folder)
    said: list[Event] = []

    def heard(event: Event) -> None:
        said.append(event)
        engine.emit(event)

    Indexer(
        settings, manifest, remote, Stores(settings, manifest, remote, heard), stop=engine.stop, emit=heard
    ).retire()
    done.failures += [
        f"{e.detail}; the next run deletes it" for e in said if isinstance(e, Note) and e.kind == RETIRE_FAILED
    ]
    if keep_store:
        return done
    removed = set()
    for store in empty:
        left = sum(1 for _ in remote.list_store_files(store.id))
        if left:
            attached = "1 file is" if left == 1 else f"{left} files are"
            done.notes.append(f"store {store.name!r} ({store.id}) kept: {attached} still attached to it")
            continue
        remote.delete_store(store.id)
        manifest.set_store_status(store.id, "deleted")
        removed.add(store.name)
    done.stores_removed = sorted(removed)
    return done


def _still_fed(settings: Settings, manifest: Manifest, whole: set[str]) -> set[str]:
    """Store names that roots other than the forgotten ones, or routes, send files to."""
    names = {r.store for r in settings.roots if r.key not in whole}
    names |= {spec.name for spec in settings.stores if spec.paths}
    names |= {how["store"] for key, how in manifest.remembered_roots().items() if key not in whole}
    return names


def _others_in(manifest: Manifest, store_id: str, gone: set[tuple[str, str]]) -> bool:
    return any((r.root, r.path) not in gone for r in manifest.rows_in_store(store_id))


def _resync_warnings(settings: Settings, manifest: Manifest, folders: list[Folder]) -> list[str]:
    """What happens to each folder at the next sync: a configured one comes back (say how to keep it
    out); a folder inside a root synced without a config file is left out of it from now on (say how
    to bring it back)."""
    notes = []
    configured = {r.key: i for i, r in enumerate(settings.roots)} if settings.source != NO_CONFIG else {}
    remembered = manifest.remembered_roots()
    for folder in folders:
        if folder.root in configured and Path(folder.show()).exists():
            where = f"roots[{configured[folder.root]}]"
            fix = (
                f"remove {where} from {settings.source}"
                if not folder.prefix
                else f'add "{folder.prefix}/**" to {where}.exclude in {settings.source}'
            )
            notes.append(f"{folder.show()} is still configured: the next sync syncs it again; {fix}")
        elif folder.prefix and folder.root not in configured and folder.root in remembered:
            notes.append(
                f'{folder.show()} is left out of {folder.root} from now on ("{folder.prefix}/**" is remembered '
                f"as an exclude of it); `ingest sync {folder.show()}` brings it back"
            )
    return notes


def _exclude_from_remembered(manifest: Manifest, folder: Folder) -> None:
    """Runs without a config file walk a root as remembered: keep the forgotten folder out of it."""
    how = manifest.remembered_roots().get(folder.root)
    if how is None:
        return
    pattern = f"{folder.prefix}/**"
    if pattern not in how["exclude"]:
        how = {**how, "exclude": (*how["exclude"], pattern)}
        manifest.remember_roots([{"key": folder.root, **how}])
