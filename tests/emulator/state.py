"""In-memory state of the emulated account: Files, vector stores, store files, file batches, and indexing.

Every public method takes the lock and first settles indexing that is due, so reads never see stale status.
Methods receive validated values (see validate.py) and return API-shaped dicts.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections import Counter

from . import llama
from . import search as idx
from .faults import Options
from .models import ALNUM, Batch, FileRec, Store, StoreFile, listing, page
from .validate import ApiError, bad, chunking, not_found


class State:
    def __init__(self, options: Options):
        self.options = options
        self.lock = threading.RLock()
        self.ids = random.Random(f"ids-{options.seed}")
        self.index_rng = random.Random(f"index-{options.seed}")
        self.offset = 0.0
        self.seq = itertools.count(1)
        self.files: dict[str, FileRec] = {}
        self.file_keys: dict[str, int] = {}
        self.stores: dict[str, Store] = {}
        self.store_keys: dict[str, int] = {}
        self.batches: dict[str, Batch] = {}
        self.pending: list = []  # heap of (ready_at, seq, store_id, file_id)
        self.fail_counts: Counter = Counter()
        self.ghosts: list = []  # (until, store_id, StoreFile, FileRec) still visible to search
        self.counters: dict[str, Counter] = {
            k: Counter() for k in ("requests", "status", "faults", "totals", "peak_in_flight")
        }
        self.in_flight: Counter = Counter()  # requests being served now, by endpoint
        self.deleted: dict[str, FileRec] = {}  # llama-stack: deleted Files whose store files stay
        self.files_table = False  # llama-stack: a fresh server has no files table until the first GET /files
        self.totals: Counter = self.counters["totals"]

    # ---- clock, ids, indexing --------------------------------------------------------------------------
    @property
    def llama(self) -> bool:
        return self.options.profile == llama.NAME

    def now(self) -> float:
        return time.time() + self.offset

    def _new_id(self, prefix: str, alphabet: str = ALNUM, n: int = 22) -> str:
        return prefix + "".join(self.ids.choice(alphabet) for _ in range(n))

    def settle(self) -> None:
        now = self.now()
        while self.pending and self.pending[0][0] <= now:
            _, seq, store_id, file_id = heapq.heappop(self.pending)
            sf = self.stores[store_id].files.get(file_id) if store_id in self.stores else None
            if sf is not None and sf.seq == seq and sf.status == "in_progress" and not sf.stuck:
                sf.status, sf.last_error = sf.outcome
        if self.ghosts:
            self.ghosts = [g for g in self.ghosts if g[0] > now]

    def _outcome(self, f: FileRec) -> tuple:
        o, ext = self.options, idx.extension(f.filename)
        if o.embedder_down:
            return "failed", {"code": "server_error", "message": "Connection error: the embedding model is unreachable"}
        if self.llama and ext in llama.UNREADABLE:
            return "failed", {"code": "server_error", "message": "No chunks were generated from the file"}
        if ext not in idx.SUPPORTED_EXTENSIONS:
            return "failed", {
                "code": "unsupported_file",
                "message": f"Files with extensions [{ext or 'none'}] are "
                "not supported for retrieval. See https://platform.openai.com/docs/assistants/"
                "tools/file-search#supported-files",
            }
        if not f.data:
            return "failed", {"code": "invalid_file", "message": "The file is empty."}
        if o.reject_undecodable_text and ext not in idx.BINARY_EXTENSIONS and not idx.decodable(f.data):
            return "failed", {
                "code": "unsupported_file",
                "message": "The file could not be decoded as text (utf-8, utf-16 or ascii).",
            }
        if idx.estimate_tokens(f.data) > o.max_file_tokens:
            return "failed", {
                "code": "invalid_file",
                "message": f"The file is too large: more than {o.max_file_tokens} tokens.",
            }
        named = f.filename in o.index_fail_names or f.filename.rsplit("/", 1)[-1] in o.index_fail_names
        if named or (o.index_fail_rate > 0 and self.index_rng.random() < o.index_fail_rate):
            if o.index_fail_times is None or self.fail_counts[f.filename] < o.index_fail_times:
                self.fail_counts[f.filename] += 1
                self.totals["index_failures_injected"] += 1
                return "failed", {"code": "server_error", "message": "An internal error occurred."}
        return "completed", None

    # ---- serializers ---------------------------------------------------------------------------------
    def file_obj(self, f: FileRec) -> dict:
        return {
            "id": f.id,
            "object": "file",
            "bytes": len(f.data),
            "created_at": f.created_at,
            "expires_at": None,
            "filename": f.filename,
            "purpose": f.purpose,
            "status": "processed",
            "status_details": None,
        }

    def _expires_at(self, s: Store) -> int | None:
        return s.last_active_at + s.expires_after["days"] * 86400 if s.expires_after else None

    def _expired(self, s: Store) -> bool:
        at = self._expires_at(s)
        return s.forced_expired or (at is not None and self.now() >= at)

    def _usage(self, sf: StoreFile) -> int:
        if self.llama:
            return 0
        f = self.files.get(sf.file_id)
        return len(f.data) if f is not None and sf.status == "completed" else 0

    def store_obj(self, s: Store) -> dict:
        counts = Counter(sf.status for sf in s.files.values())
        status = "expired" if self._expired(s) else "in_progress" if counts["in_progress"] else "completed"
        return {
            "id": s.id,
            "object": "vector_store",
            "created_at": s.created_at,
            "name": s.name,
            "description": s.description,
            "usage_bytes": sum(self._usage(sf) for sf in s.files.values()),
            "file_counts": {k: counts[k] for k in ("in_progress", "completed", "failed", "cancelled")}
            | {"total": len(s.files)},
            "status": status,
            "expires_after": s.expires_after,
            "expires_at": self._expires_at(s),
            "last_active_at": s.last_active_at,
            "metadata": dict(s.metadata),
        }

    def sf_obj(self, sf: StoreFile, reply: bool = False) -> dict:
        if self.llama:  # last_error only in the attach reply; integers as floats
            return self._sf_dict(sf) | {
                "last_error": sf.last_error if reply else None,
                "attributes": llama.floats(sf.attributes),
            }
        return self._sf_dict(sf)

    def _sf_dict(self, sf: StoreFile) -> dict:
        return {
            "id": sf.file_id,
            "object": "vector_store.file",
            "usage_bytes": self._usage(sf),
            "created_at": sf.created_at,
            "vector_store_id": sf.store_id,
            "status": sf.status,
            "last_error": sf.last_error,
            "chunking_strategy": sf.chunking,
            "attributes": dict(sf.attributes) if sf.attributes is not None else {},
        }

    def _batch_counts(self, b: Batch) -> Counter:
        store = self.stores.get(b.store_id)
        counts = Counter()
        for fid in b.file_ids:
            sf = store.files.get(fid) if store else None
            counts[sf.status if sf is not None and sf.batch_id == b.id else b.frozen.get(fid, "cancelled")] += 1
        return counts

    def batch_obj(self, b: Batch) -> dict:
        c = self._batch_counts(b)
        status = "in_progress" if c["in_progress"] else "cancelled" if b.cancelled else "completed"
        return {
            "id": b.id,
            "object": "vector_store.files_batch",
            "created_at": b.created_at,
            "vector_store_id": b.store_id,
            "status": status,
            "file_counts": {k: c[k] for k in ("in_progress", "completed", "failed", "cancelled")}
            | {"total": len(b.file_ids)},
        }

    # ---- lookups ---------------------------------------------------------------------------------------
    def _file(self, file_id: str) -> FileRec:
        f = self.files.get(file_id)
        if f is None:
            raise not_found(f"No such File object: {file_id}", "id")
        return f

    def _store(self, store_id: str) -> Store:
        s = self.stores.get(store_id)
        if s is None:
            raise (
                llama.missing(f"Vector store {store_id}")
                if self.llama
                else not_found(f"No vector store found with id '{store_id}'.")
            )
        return s

    def _sf(self, s: Store, file_id: str) -> StoreFile:
        sf = s.files.get(file_id)
        if sf is None:
            raise (
                llama.missing(f"File {file_id} in vector store {s.id}")
                if self.llama
                else not_found(f"No file found with id '{file_id}' in vector store '{s.id}'.")
            )
        return sf

    def _batch(self, s: Store, batch_id: str) -> Batch:
        b = self.batches.get(batch_id)
        if b is None or b.store_id != s.id:
            raise (
                llama.missing(f"File batch {batch_id}")
                if self.llama
                else not_found(f"No file batch found with id '{batch_id}' in vector store '{s.id}'.")
            )
        return b

    def _writable(self, s: Store) -> None:
        if self._expired(s):
            raise bad(
                f"Vector store {s.id} is expired. Create a new vector store and try again.",
                "vector_store_id",
                "vector_store_expired",
            )

    def _cursor(self, keys: dict):
        def seq_of(cursor: str, param: str) -> int:
            if cursor not in keys:
                raise bad(f"Invalid '{param}': no object found with id '{cursor}'.", param, "invalid_value")
            return keys[cursor]

        return seq_of

    # ---- Files -----------------------------------------------------------------------------------------
    def create_file(self, filename: str, purpose: str, data: bytes) -> dict:
        with self.lock:
            if self.llama and not self.files_table:
                self.files_table = True  # the failed request made it
                raise ApiError(500, "(sqlite3.OperationalError) no such table: openai_files")
            created = self.options.files_created_at
            if created is None:
                created = int(self.now())
            f = FileRec(self._new_id("file-"), filename, purpose, data, created, next(self.seq))
            self.files[f.id] = f
            self.file_keys[f.id] = f.seq
            self.totals["files_created"] += 1
            return self.file_obj(f)

    def list_files(self, purpose: str | None, limit: int, order: str, after: str | None) -> dict:
        with self.lock:
            self.files_table = True
            items = [f for f in self.files.values() if purpose is None or f.purpose == purpose]
            got, more = page(items, self._cursor(self.file_keys), after, None, limit, order)
            return listing([self.file_obj(f) for f in got], more)

    def get_file(self, file_id: str) -> dict:
        with self.lock:
            return self.file_obj(self._file(file_id))

    def file_content(self, file_id: str) -> bytes:
        with self.lock:
            f = self._file(file_id)
            if f.purpose == "assistants":
                raise bad("Not allowed to download files of purpose: assistants")
            return f.data

    def delete_file(self, file_id: str) -> dict:
        with self.lock:
            self.settle()
            self._file(file_id)
            if self.llama:  # the store keeps the file, and search its chunks
                self.deleted[file_id] = self.files.pop(file_id)
                return {"id": file_id, "object": "file", "deleted": True}
            for s in self.stores.values():
                if file_id in s.files:
                    self._retire(s.files.pop(file_id))
            del self.files[file_id]
            return {"id": file_id, "object": "file", "deleted": True}

    # ---- vector stores ---------------------------------------------------------------------------------
    def create_store(
        self,
        name: str | None,
        description: str | None,
        metadata: dict | None,
        expires_after: dict | None,
        file_ids: list[str],
        chunking: dict,
    ) -> dict:
        with self.lock:
            for fid in file_ids:
                self._file(fid)
            now = int(self.now())
            s = Store(
                self._new_id("vs_", "0123456789abcdef", 32),
                name or "",
                description,
                now,
                next(self.seq),
                (metadata or {}) | (llama.STORE_METADATA if self.llama else {}),
                None if self.llama else expires_after,
                now,
            )
            self.stores[s.id] = s
            self.store_keys[s.id] = s.seq
            for fid in dict.fromkeys(file_ids):
                self._attach(s, fid, None, chunking, None)
            return self.store_obj(s)

    def list_stores(self, limit: int, order: str, after: str | None, before: str | None) -> dict:
        with self.lock:
            self.settle()
            got, more = page(list(self.stores.values()), self._cursor(self.store_keys), after, before, limit, order)
            return listing([self.store_obj(s) for s in got], more)

    def get_store(self, store_id: str) -> dict:
        with self.lock:
            self.settle()
            return self.store_obj(self._store(store_id))

    def modify_store(self, store_id: str, changes: dict) -> dict:
        with self.lock:
            self.settle()
            s = self._store(store_id)
            if "name" in changes:
                s.name = changes["name"] or ""
            if "metadata" in changes:
                s.metadata = changes["metadata"] or {}
                s.embedder_forgotten = self.llama and not set(llama.STORE_METADATA) <= set(s.metadata)
            if "expires_after" in changes:
                s.expires_after = changes["expires_after"]
            return self.store_obj(s)

    def delete_store(self, store_id: str) -> dict:
        with self.lock:
            self.settle()
            s = self._store(store_id)
            for sf in list(s.files.values()):
                self._retire(sf)
            del self.stores[store_id]
            for bid in [b.id for b in self.batches.values() if b.store_id == store_id]:
                del self.batches[bid]
            return {"id": store_id, "object": "vector_store.deleted", "deleted": True}

    # ---- store files -----------------------------------------------------------------------------------
    def _attach(
        self, s: Store, file_id: str, attributes: dict | None, chunking: dict, batch_id: str | None, stuck: bool = False
    ) -> StoreFile:
        f = self.files[file_id]
        if self.llama and file_id in s.files:
            return s.files[file_id]  # a second attach is a no-op, failed or not
        old = s.files.pop(file_id, None)
        if old is not None:  # re-attaching replaces the store file (never a duplicate)
            self._retire(old)
        now = self.now()
        sf = StoreFile(
            file_id,
            s.id,
            int(now),
            next(self.seq),
            attributes,
            chunking,
            batch_id,
            self._outcome(f),
            now + max(0.0, self.options.index_delay),
            stuck=stuck,
        )
        sf.search_attributes = dict(attributes) if attributes is not None else None
        if self.llama and s.embedder_forgotten:
            # vector_stores.update(metadata=…) replaced the keys llama-stack keeps there: nothing embeds.
            sf.outcome = ("failed", {"code": "server_error", "message": "embedding_model not found in metadata"})
        if self._overloaded(batch_id):
            # The kv store gave up ("database is locked"): the record is lost, its chunks stay searchable.
            self.ghosts.append((float("inf"), s.id, sf, f))
            sf.status, sf.last_error = "failed", {"code": "server_error", "message": "database is locked"}
            if batch_id is not None:
                self.batches[batch_id].frozen[file_id] = "failed"
            return sf
        s.files[file_id] = sf
        s.keys[file_id] = sf.seq
        s.last_active_at = int(now)
        if not stuck:
            heapq.heappush(self.pending, (sf.ready_at, sf.seq, s.id, file_id))
        return sf

    def _overloaded(self, batch_id: str | None) -> bool:
        every = self.options.lose_records_every
        if every:
            self.totals["attaches"] += 1
            return self.totals["attaches"] % every == 0
        limit = self.options.lose_records_over
        if limit is None:
            return False
        if batch_id is not None:  # a batch works on its files side by side: past the limit, every other one
            b = self.batches[batch_id]
            b.attached += 1
            return b.attached > limit and b.attached % 2 == 0
        return self.in_flight[llama.ATTACH] > limit

    def _retire(self, sf: StoreFile) -> None:
        """A store file leaves its store: its batch remembers its last status; search may still see it."""
        b = self.batches.get(sf.batch_id) if sf.batch_id else None
        if b is not None:
            b.frozen[sf.file_id] = "cancelled" if sf.status == "in_progress" else sf.status
        f = self.files.get(sf.file_id)
        if self.options.removal_lag_s > 0 and sf.status == "completed" and f is not None:
            self.ghosts.append((self.now() + self.options.removal_lag_s, sf.store_id, sf, f))

    def create_store_file(self, store_id: str, file_id: str, attributes: dict | None, chunking: dict) -> dict:
        with self.lock:
            self.settle()
            s = self._store(store_id)
            self._writable(s)
            if file_id not in self.files:
                raise not_found(f"No file found with id '{file_id}'.", "file_id")
            sf = self._attach(s, file_id, attributes, chunking, None)
            if sf.file_id not in s.files:
                raise ApiError(500, "database is locked")
            if self.llama and not sf.stuck and sf.status == "in_progress":  # answers once embedded
                sf.status, sf.last_error = sf.outcome
            return self.sf_obj(sf, reply=True)

    def list_store_files(
        self,
        store_id: str,
        status: str | None,
        limit: int,
        order: str,
        after: str | None,
        before: str | None,
        batch_id: str | None = None,
    ) -> dict:
        with self.lock:
            self.settle()
            s = self._store(store_id)
            if batch_id is not None:
                self._batch(s, batch_id)
            items = [
                sf
                for sf in s.files.values()
                if (status is None or sf.status == status) and (batch_id is None or sf.batch_id == batch_id)
            ]
            got, more = page(items, self._cursor(s.keys), after, before, limit, order)
            return listing([self.sf_obj(sf) for sf in got], more)

    def get_store_file(self, store_id: str, file_id: str) -> dict:
        with self.lock:
            self.settle()
            return self.sf_obj(self._sf(self._store(store_id), file_id))

    def update_store_file(self, store_id: str, file_id: str, attributes: dict | None) -> dict:
        with self.lock:
            self.settle()
            sf = self._sf(self._store(store_id), file_id)
            sf.attributes = attributes
            if not self.llama:  # llama-stack's search keeps the attributes of attach time
                sf.search_attributes = attributes
            return self.sf_obj(sf)

    def delete_store_file(self, store_id: str, file_id: str) -> dict:
        with self.lock:
            self.settle()
            s = self._store(store_id)
            self._retire(s.files.pop(self._sf(s, file_id).file_id))
            return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}

    # ---- file batches ------------------------------------------------------------------------------------
    def create_batch(self, store_id: str, items: list[tuple]) -> dict:
        """items: [(file_id, attributes, chunking)]; a file listed twice is attached once (last wins)."""
        with self.lock:
            self.settle()
            s = self._store(store_id)
            self._writable(s)
            for fid, _, _ in items:
                if fid not in self.files:
                    raise not_found(f"No file found with id '{fid}'.", "file_ids")
            chosen = {fid: (attrs, ch) for fid, attrs, ch in items}
            b = Batch(
                self._new_id("vsfb_", "0123456789abcdef", 32), s.id, int(self.now()), next(self.seq), list(chosen)
            )
            self.batches[b.id] = b
            for fid, (attrs, ch) in chosen.items():
                self._attach(s, fid, attrs, ch, b.id, stuck=self.options.stuck_batches)
            return self.batch_obj(b)

    def get_batch(self, store_id: str, batch_id: str) -> dict:
        with self.lock:
            self.settle()
            return self.batch_obj(self._batch(self._store(store_id), batch_id))

    def cancel_batch(self, store_id: str, batch_id: str) -> dict:
        with self.lock:
            self.settle()
            s = self._store(store_id)
            b = self._batch(s, batch_id)
            status = self.batch_obj(b)["status"]
            if status != "in_progress":
                raise bad(f"Cannot cancel vector store file batch with status '{status}'.")
            for fid in b.file_ids:
                sf = s.files.get(fid)
                if sf is not None and sf.batch_id == b.id and sf.status == "in_progress":
                    sf.status, sf.last_error, sf.stuck = "cancelled", None, False
            b.cancelled = True
            return self.batch_obj(b)

    def unstick(self) -> int:
        with self.lock:
            n = 0
            for s in self.stores.values():
                for sf in s.files.values():
                    if sf.stuck and sf.status == "in_progress":
                        sf.stuck, sf.ready_at, n = False, self.now(), n + 1
                        heapq.heappush(self.pending, (sf.ready_at, sf.seq, s.id, sf.file_id))
            self.settle()
            return n

    # ---- search ------------------------------------------------------------------------------------------
    def search(
        self, store_id: str, queries: list[str], flt: dict | None, max_results: int, threshold: float, rewrite: bool
    ) -> dict:
        with self.lock:
            self.settle()
            s = self._store(store_id)
            self._writable(s)
            if self.llama and rewrite:
                raise bad("rewrite_query is not supported")
            s.last_active_at = int(self.now())
            shown = [q.strip().lower() for q in queries] if rewrite else list(queries)
            terms = idx.tokens(" ".join(queries))
            live = self.files | self.deleted
            pool = [
                (sf, live[sf.file_id]) for sf in s.files.values() if sf.status == "completed" and sf.file_id in live
            ]
            pool += [(sf, f) for _, sid, sf, f in self.ghosts if sid == s.id and sf.file_id not in s.files]
            hits = []
            for sf, f in pool:
                if not idx.matches(flt, sf.search_attributes):
                    continue
                for n, text in enumerate(idx.chunks(idx.decode(f.data), sf.chunking)):
                    sc = idx.score(terms, text)
                    if sc > 0 and sc >= threshold:
                        attrs = (
                            llama.hit_attributes(sf.search_attributes, f.id, f.filename, n, text)
                            if self.llama
                            else dict(sf.search_attributes or {})
                        )
                        hits.append(
                            (
                                -sc,
                                sf.seq,
                                n,
                                {
                                    "file_id": f.id,
                                    "filename": f.filename,
                                    "score": llama.distance_score(sc) if self.llama else sc,
                                    "attributes": attrs,
                                    "content": [{"type": "text", "text": text}],
                                },
                            )
                        )
            hits.sort(key=lambda h: h[:3])
            return {
                "object": "vector_store.search_results.page",
                "search_query": shown,
                "data": [h[3] for h in hits[:max_results]],
                "has_more": False,
                "next_page": None,
            }

    # ---- tampering behind the tool's back -----------------------------------------------------------------
    def tamper_attach(
        self, store_id: str, file_id: str, attributes: dict | None, status: str, error: dict | None
    ) -> dict:
        with self.lock:
            s = self._store(store_id)
            sf = self._attach(s, file_id, attributes, chunking(None), None)
            if status != "in_progress":  # in_progress: indexes like any other attach
                sf.status, sf.last_error = status, error
            return self.sf_obj(sf)

    def tamper_status(self, store_id: str, file_id: str, status: str, error: dict | None) -> dict:
        with self.lock:
            self.settle()
            sf = self._sf(self._store(store_id), file_id)
            sf.status, sf.last_error, sf.stuck = status, error, False
            return self.sf_obj(sf)

    def expire_store(self, store_id: str) -> None:
        with self.lock:
            self._store(store_id).forced_expired = True

    def advance_time(self, seconds: float) -> None:
        with self.lock:
            self.offset += seconds
            self.settle()

    def idle(self) -> bool:
        with self.lock:
            self.settle()
            return not any(
                sf.status == "in_progress" and not sf.stuck for s in self.stores.values() for sf in s.files.values()
            )
