"""Which store a file goes to, the attributes it carries, and the vector stores behind each name."""

from __future__ import annotations

import json
import logging
import posixpath
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ingest.config import TOOL_KEYS, Root, Settings, StoreSpec
from ingest.events import ADOPTED, CREATED, RECREATED, OnEvent, StoreEvent, ignore
from ingest.limits import MAX_ATTRIBUTE_VALUE, MAX_ATTRIBUTES, MAX_METADATA_VALUE
from ingest.manifest import FAILED, PENDING, RETIRE, Manifest, StoreRow
from ingest.remote import profile as profiles
from ingest.remote.base import CREATE_TOKEN, AuthError, NotFound, Remote, RemoteError
from ingest.scan import glob_match

ACTIVE, BUILDING, CREATING = "active", "building", "creating"  # store rows in the manifest
log = logging.getLogger("ingest")
# A pass with nothing to upload asks whether its stores still exist remotely (deleted by hand,
# expired by their expires_after policy) at most this often; a pass with work asks every time.
CHECK_EVERY = 3600.0


def route(settings: Settings, root: Root, path: str) -> str:
    """The first store whose `paths` globs match, else the root's store."""
    for spec in settings.stores:
        if spec.paths and any(glob_match(path, p) for p in spec.paths):
            return spec.name
    return root.store


def _fit(value: str) -> str:
    # Keep the tail: the file name is what a person recognises in a long path.
    return value if len(value) <= MAX_ATTRIBUTE_VALUE else "…" + value[-(MAX_ATTRIBUTE_VALUE - 1) :]


def attributes(root: Root, path: str, mtime_ns: int, sha256: str, spec: StoreSpec) -> dict[str, Any]:
    """The per-file attributes file_search filters on, within the API's limits on keys and values."""
    attrs: dict[str, Any] = dict(spec.attributes)
    values = (
        _fit(path),
        _fit(posixpath.dirname(path)),
        posixpath.splitext(path)[1].lower().lstrip("."),
        mtime_ns // 1_000_000_000,
        sha256,
        _fit(root.path.name),
    )
    attrs.update(zip(TOOL_KEYS, values, strict=True))
    return dict(list(attrs.items())[:MAX_ATTRIBUTES])


# The attributes attributes() sets on every file, by type, and how a user writes their values.
ATTRIBUTE_TYPES: dict[str, type] = {"path": str, "folder": str, "ext": str, "mtime": float, "sha256": str, "root": str}
ATTRIBUTE_HINTS = {
    "mtime": "a Unix time in seconds (mtime>=1735689600 is 2025-01-01 UTC)",
    "ext": "an extension such as md or pdf",
}


def attribute_schema(specs: Iterable[StoreSpec]) -> dict[str, type]:
    """Every attribute key a file of these stores can carry, with its type (str, float or bool)."""
    schema = dict(ATTRIBUTE_TYPES)
    for spec in specs:
        for key, value in spec.attributes.items():
            schema.setdefault(
                key, bool if isinstance(value, bool) else float if isinstance(value, (int, float)) else str
            )
    return schema


def fingerprint(spec: StoreSpec) -> str:
    """What, if it changes, means the store's files must be indexed again."""
    import hashlib  # here: only configured stores have a fingerprint to compare

    body = json.dumps({"chunking": spec.chunking, "attributes": sorted(spec.attributes)}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def known_profile(manifest: Manifest, remote: Remote, named: str = "auto") -> profiles.Profile | None:
    """The server's profile as the manifest remembers it for this base URL (and as `server = NAME` in
    the config names it, if it does); None until it is found out."""
    known = manifest.server(remote.base_url)
    if known is not None and named in ("auto", known["profile"]):
        return profiles.load(known)
    return None


def server_profile(manifest: Manifest, remote: Remote, named: str = "auto") -> profiles.Profile:
    """The server's profile: as the manifest remembers it for this base URL, else found out (or, with
    `server = NAME` in the config, taken as named) and kept."""
    return server_profile_soon(manifest, remote, named)()


def server_profile_soon(manifest: Manifest, remote: Remote, named: str = "auto") -> Callable[[], profiles.Profile]:
    """server_profile(), with the probe (and the SDK import building the remote takes) started now on
    a thread of its own, so that a first run scans meanwhile. Call the result, on this thread, for the
    profile: it waits for the probe and records what was found (the manifest is written here only)."""
    remembered = known_profile(manifest, remote, named)
    if remembered is not None:
        return lambda: remembered
    probing: Future[profiles.Profile] | None = None
    if named == "auto":
        pool = ThreadPoolExecutor(1, thread_name_prefix="probe")
        probing = pool.submit(lambda: remote.probe())  # a lazy remote is built (the SDK imported) there too
        pool.shutdown(wait=False)
    return SoonProfile(manifest, remote, probing, named)


class SoonProfile:
    """The profile a probe already sent will give (see server_profile_soon)."""

    def __init__(self, manifest: Manifest, remote: Remote, probing: Future[profiles.Profile] | None, named: str):
        self._manifest, self._remote, self._probing, self._named = manifest, remote, probing, named
        self._found: profiles.Profile | None = None

    def keep_answer(self) -> None:
        """For a run with nothing to do: record the answer of a probe already sent, so the next such run
        asks nothing; a probe that failed is left for the run that has work (it reports the error)."""
        if self._probing is not None and self._probing.exception() is None:
            self()

    def __call__(self) -> profiles.Profile:
        if self._found is None:
            self._found = self._probing.result() if self._probing is not None else profiles.PROFILES[self._named]
            if self._found.settled:
                remember_profile(self._manifest, self._remote, self._found)
                if self._remote.kind != "local":  # the embedded store is said once, by connect
                    log.info("server at %s: %s", self._remote.base_url, self._found.describe())
        return self._found


def remember_profile(manifest: Manifest, remote: Remote, found: profiles.Profile) -> None:
    if not found.settled:
        return  # who the server is was not found out: the next run asks again
    manifest.remember_server(remote.base_url, found.name, found.version, found.per_file_batches)


class Gone:
    """A store's remote status, "deleted" however the server says so: a 404, a 400 "… not found"
    (llama-stack), or an error on the store while the list of stores leaves it out."""

    def __init__(self, remote: Remote):
        self.remote = remote
        self._listed: set[str] | None = None

    def status(self, store_id: str) -> str:
        try:
            return self.remote.get_store(store_id).status
        except NotFound:
            return "deleted"
        except AuthError:
            raise
        except RemoteError:
            if self._listed is None:
                self._listed = {s.id for s in self.remote.list_stores()}
            if store_id not in self._listed:
                return "deleted"
            raise


class Stores:
    """Finds or creates the vector stores behind each logical name, once per run; shards when full."""

    def __init__(self, settings: Settings, manifest: Manifest, remote: Remote, emit: OnEvent = ignore):
        self.settings, self.manifest, self.remote, self.emit = settings, manifest, remote, emit
        self._assigned: dict[str, int] = {}

    def check_due(self, now: float | None = None) -> bool:
        """Whether a pass with nothing to do must still look at its stores: a creation to settle, or a
        store not confirmed for CHECK_EVERY seconds."""
        now = time.time() if now is None else now
        if self.manifest.stores(status=CREATING):
            return True
        return any((s.checked_at or 0.0) < now - CHECK_EVERY for s in self.manifest.stores())

    def check_all(self) -> bool:
        """Settle store creations a crash interrupted; notice stores deleted or expired remotely (their
        files go back to pending); record when each was confirmed. True when anything changed."""
        changed = False
        for event in settle_creations(self.manifest, self.remote):
            self.emit(event)
            changed = True
        gone = Gone(self.remote)
        for store in self.manifest.stores():
            status = gone.status(store.id)
            if status in ("expired", "deleted"):
                self.emit(StoreEvent(store.name, RECREATED, old_vector_store_id=store.id, reason=status))
                self._forget(store)
                changed = True
            else:
                self.manifest.store_checked(store.id, time.time())
        return changed

    def _forget(self, store: StoreRow) -> None:
        with self.manifest.transaction():
            self.manifest.set_store_status(store.id, "lost")
            for row in self.manifest.rows_in_store(store.id):
                for file_id in (row.file_id, row.old_file_id):
                    if file_id:
                        self.manifest.ledger_set(file_id, RETIRE)
                if row.state == FAILED and not row.retryable:
                    # Refused for its content: the same bytes are refused again, in the new store as well.
                    self.manifest.update(row, file_id=None, old_file_id=None, batch_id=None, vector_store_id=None)
                    continue
                self.manifest.update(
                    row,
                    state=PENDING,
                    file_id=None,
                    old_file_id=None,
                    batch_id=None,
                    vector_store_id=None,
                    reason=None,
                    error_code=None,
                )

    def reserve(self, wanted: Mapping[str, int]) -> None:
        """Create now, outside any transaction, every shard that `wanted` new files per store need: a
        store row must be committed the moment the store exists remotely, or a crash orphans it."""
        for name, count in sorted(wanted.items()):
            spec = self.settings.store_spec(name)
            shards = self.manifest.stores(name)
            free = sum(max(0, spec.max_files - self._used(s.id)) for s in shards)
            while not shards or free < count:
                shards.append(self._create(spec, len(shards)))
                free += spec.max_files

    def _used(self, store_id: str) -> int:
        if store_id not in self._assigned:  # counted once per run, not once per file
            self._assigned[store_id] = self.manifest.count_in_store(store_id)
        return self._assigned[store_id]

    def place(self, name: str) -> str:
        """The vector store id a new file of logical store `name` goes to."""
        spec = self.settings.store_spec(name)
        shards = self.manifest.stores(name)
        for shard in shards:
            used = self._used(shard.id)
            if used < spec.max_files:
                self._assigned[shard.id] = used + 1
                return shard.id
        shard = self._create(spec, len(shards))
        self._assigned[shard.id] = 1
        return shard.id

    def _create(self, spec: StoreSpec, shard: int) -> StoreRow:
        row = create_store(self.manifest, self.remote, spec, shard, ACTIVE)
        self.emit(StoreEvent(spec.name, CREATED, row.id))
        return row

    def chunking(self, name: str) -> Mapping[str, Any] | None:
        return self.settings.store_spec(name).chunking


def create_store(
    manifest: Manifest, remote: Remote, spec: StoreSpec, shard: int, status: str, replaces: str | None = None
) -> StoreRow:
    """Create a vector store for shard `shard` of `spec` and record it. The intent (a one-off token,
    also put in the store's metadata) is committed first, so that a store whose creation a crash
    cut off is found and adopted by the next run instead of being left behind as an orphan."""
    import secrets  # here: only a store to create needs a token

    token = secrets.token_hex(8)
    intent = StoreRow(f"{CREATING}:{token}", spec.name, shard, CREATING, fingerprint(spec), time.time(), replaces)
    manifest.add_store(intent)
    name = spec.name if shard == 0 else f"{spec.name}-{shard + 1}"
    metadata = {
        "managed_by": "ingest",
        "logical_store": spec.name[:MAX_METADATA_VALUE],
        "shard": str(shard),
        CREATE_TOKEN: token,
    }
    store = remote.create_store(name, metadata, spec.chunking, spec.expires_after_days)
    return _record(manifest, intent, store.id, status)


def settle_creations(manifest: Manifest, remote: Remote) -> list[StoreEvent]:
    """Store creations a crash interrupted: adopt the store if the call reached the server, else forget it."""
    notes = []
    for intent in manifest.stores(status=CREATING):
        token = intent.id.split(":", 1)[1]
        found = remote.find_store(token, intent.created_at or 0.0)
        if found is None:
            manifest.remove_store(intent.id)
            continue
        _record(manifest, intent, found.id, BUILDING if intent.replaces else ACTIVE)
        notes.append(StoreEvent(intent.name, ADOPTED, found.id))
    return notes


def _record(manifest: Manifest, intent: StoreRow, store_id: str, status: str) -> StoreRow:
    now = time.time()  # made or found just now: it exists
    row = StoreRow(store_id, intent.name, intent.shard, status, intent.fingerprint, now, intent.replaces, now)
    with manifest.transaction():
        manifest.remove_store(intent.id)
        manifest.add_store(row)
    return row
