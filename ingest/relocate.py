"""Files and stores over time: a file that changes store keeps its file id, a renamed store is renamed in
place, and a store left empty stays until it is removed on purpose."""

from __future__ import annotations

import json
from collections.abc import Mapping

from ingest.config import Root, Settings
from ingest.errors import ConfigError, UnknownStore
from ingest.manifest import UPLOADED, FileRow, Manifest
from ingest.plan import Observed
from ingest.remote.base import Remote
from ingest.stores import Stores, attributes, fingerprint, route


def transfer(
    manifest: Manifest,
    settings: Settings,
    stores: Stores,
    roots: Mapping[str, Root],
    moving: list[tuple[Observed, FileRow]],
) -> list[FileRow]:
    """Rows to attach to their new store with the file id they have; the old store is detached only once
    the new one has indexed them (Indexer), so search never loses them on the way."""
    out = []
    with manifest.transaction():
        for obs, row in moving:
            spec = settings.store_spec(obs.store)
            attrs = attributes(roots[obs.root], obs.path, obs.mtime_ns, obs.sha256 or "", spec)
            out.append(
                manifest.update(
                    row,
                    store=obs.store,
                    vector_store_id=stores.place(obs.store),
                    old_vector_store_id=row.vector_store_id,
                    state=UPLOADED,
                    batch_id=None,
                    attributes=json.dumps(attrs),
                    size=obs.size,
                    mtime_ns=obs.mtime_ns,
                    inode=obs.inode,
                )
            )
    return out


def fed(settings: Settings) -> set[str]:
    """The store names this configuration sends files to."""
    return {r.store for r in settings.roots} | {spec.name for spec in settings.stores if spec.paths}


def pending_renames(settings: Settings, manifest: Manifest) -> list[tuple[str, str]]:
    """(old, new) for each store whose every file now routes to one other store that does not exist
    yet, with the same chunking and attribute schema: a rename in the configuration, nothing else."""
    roots = {r.key: r for r in settings.roots}
    feeding, existing = fed(settings), {s.name: s for s in manifest.stores()}
    candidates: dict[str, list[tuple[int, str]]] = {}  # new name -> (files, old name) of the stores it could be
    for name, store in existing.items():
        if name in feeding:
            continue
        holders = manifest.roots_of_store(name)
        if not holders or not holders <= roots.keys():
            continue  # empty, or a store of folders this run does not cover: not ours to judge
        rows = [r for s in manifest.stores(name) for r in manifest.rows_in_store(s.id)]
        targets = {route(settings, roots[r.root], r.path) for r in rows}
        if len(targets) != 1:
            continue
        new = targets.pop()
        if new not in existing and store.fingerprint == fingerprint(settings.store_spec(new)):
            candidates.setdefault(new, []).append((len(rows), name))
    # Two stores whose files now all go to one (two folders under a parent now synced whole): the
    # larger is renamed, the other's files move into it, as any store's files do.
    return [(min(found, key=lambda c: (-c[0], c[1]))[1], new) for new, found in candidates.items()]


def rename(manifest: Manifest, remote: Remote, old: str, new: str) -> list[str]:
    """Rename logical store `old` and its vector stores (shard names follow) in place."""
    shards = manifest.stores(old)
    if not shards:
        raise UnknownStore.among(old, (s.name for s in manifest.stores()))
    if new == old:
        raise ConfigError(f"the store is called {old!r} already")
    if manifest.stores(new):
        raise ConfigError(f"a store named {new!r} exists already; remove it first (ingest store remove {new})")
    for shard in shards:
        metadata = {**remote.get_store(shard.id).metadata, "logical_store": new[:512]}
        remote.rename_store(shard.id, new if shard.shard == 0 else f"{new}-{shard.shard + 1}", metadata)
    manifest.rename_store(old, new)
    return [f"store {old!r} renamed to {new!r} in place ({', '.join(s.id for s in shards)})"]


def empty_stores(settings: Settings, manifest: Manifest) -> list[str]:
    """Stores no file of the manifest is in and this configuration sends nothing to."""
    unfed = {s.name for s in manifest.stores()} - fed(settings)
    return sorted(name for name in unfed if not manifest.roots_of_store(name))


def remove(manifest: Manifest, remote: Remote, name: str, settings: Settings) -> list[str]:
    """Delete an empty store of ingest's (`ingest store remove`); refuses one that still holds files."""
    shards = manifest.stores(name)
    if not shards:
        raise UnknownStore.among(name, (s.name for s in manifest.stores()))
    held = sum(manifest.count_in_store(s.id) for s in shards)
    if held:
        raise ConfigError(f"store {name!r} still holds {held} files; forget their folders first (ingest forget PATH)")
    if name in fed(settings):
        raise ConfigError(f"{settings.source}: a root or route still sends files to store {name!r}")
    notes = []
    for shard in shards:
        foreign = sum(1 for _ in remote.list_store_files(shard.id))
        if foreign:
            notes.append(f"store {name!r} ({shard.id}) kept: {foreign} files ingest does not track are attached to it")
            continue
        remote.delete_store(shard.id)
        manifest.set_store_status(shard.id, "deleted")
        notes.append(f"deleted store {name!r} ({shard.id})")
    return notes
