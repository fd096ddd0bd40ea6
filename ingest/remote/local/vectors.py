"""The embedded store's vectors: one per chunk and one per document's title, made by the embedding
model, kept in SQLite, searched in memory.

Everything here asks for the model only when there is text to embed or a store with vectors to
search, so a no-op sync or a `status` never loads it (nor numpy), and imports its module (embed.py)
only then: a search of a store by words alone does not either.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ingest.remote.base import Stopped
from ingest.remote.local import schema

if TYPE_CHECKING:
    from ingest.remote.local.embed import Embedder

log = logging.getLogger("ingest")

# A chunk's similarity to a query is (1 − TITLE_WEIGHT) × its own cosine + TITLE_WEIGHT × its
# document's title's: a chunk deep in a page is read in the light of what the page is about, and a
# query that names the page finds it. Chosen on bench/questions.py's TUNING set and 80 page titles
# apart from the bench's (python -m bench.fusion): found 38 of 41 questions (37 without) and all 80
# titles (78), the same at 0.3-0.5 with the lexical weight at 0.2-0.3.
TITLE_WEIGHT = 0.4
# An underline (reStructuredText, Markdown's setext): a line of one punctuation mark repeated.
_UNDERLINE = re.compile(r"^\s*([=\-~^*#+`'\":.])\1{2,}\s*$")


def title_of(first_chunk: str, filename: str) -> str:
    """A document's title, from its first chunk: a Markdown `# heading`, else the first underlined
    heading (reStructuredText, setext), else its first line that is not markup (an HTML page's
    extracted text starts with its <title>); the file's name when the chunk has no text."""
    lines = [line.strip() for line in first_chunk.splitlines()[:80]]
    for i, line in enumerate(lines):
        if line.startswith("# "):
            return line[2:].strip()
        below = lines[i + 1] if i + 1 < len(lines) else ""
        if line and not _UNDERLINE.match(line) and _UNDERLINE.match(below) and len(below) >= 0.6 * len(line):
            return line
    return next((line for line in lines if line and not line.startswith("..")), filename)


@dataclass(frozen=True)
class Query:
    """A query's vector beside a store's chunk vectors (ids ascending, one matrix row each) and its
    documents' title vectors (`title_row`: each chunk's row of `titles`, −1 while its document has none)."""

    ids: Any
    matrix: Any
    vector: Any
    titles: Any = None
    title_row: Any = None

    def top(self, k: int) -> dict[int, float]:
        """The k chunks nearest to the query, with their similarities (see TITLE_WEIGHT)."""
        import numpy as np

        sims = self._similarities(slice(None))
        best = np.argpartition(-sims, k)[:k] if k < len(sims) else np.arange(len(sims))
        return {int(self.ids[i]): float(sims[i]) for i in best}

    def similarity(self, wanted: Iterable[int]) -> dict[int, float]:
        """The similarities of the given chunks (those without a vector are absent)."""
        import numpy as np

        chunks = np.fromiter(wanted, dtype=np.int64)
        if not len(chunks):
            return {}
        pos = np.clip(np.searchsorted(self.ids, chunks), 0, len(self.ids) - 1)
        found = self.ids[pos] == chunks
        sims = self._similarities(pos[found])
        return {int(c): float(s) for c, s in zip(chunks[found], sims, strict=True)}

    def _similarities(self, rows: Any) -> Any:
        """Cosines of the chunks at `rows`, each blended with its document's title's where there is one."""
        sims = self.matrix[rows] @ self.vector
        if self.titles is None or not len(self.titles):
            return sims
        of = self.title_row[rows]
        titled = of >= 0
        sims[titled] = (1 - TITLE_WEIGHT) * sims[titled] + TITLE_WEIGHT * (self.titles @ self.vector)[of[titled]]
        return sims

    @property
    def size(self) -> int:
        return len(self.ids)


def _embed() -> ModuleType:
    """The model's module (embed.py), imported the first time a vector is made or read."""
    from ingest.remote.local import embed

    return embed


def installed_model() -> Embedder | None:
    """The installed model, loaded once per process (embed.DEFAULT), or None without it."""
    return _embed().DEFAULT()


class Vectors:
    """One store directory's vectors, on the store's connection and lock."""

    def __init__(
        self,
        db: sqlite3.Connection,
        lock: threading.RLock,
        tx: Callable[[], AbstractContextManager[sqlite3.Connection]],
        embedder: Callable[[], Embedder | None],
        stop: threading.Event | None = None,
    ):
        self._db, self._lock, self._tx = db, lock, tx
        self._embedder = embedder
        self._stop = stop or threading.Event()  # the run's: no forward pass starts once it is set
        self._checked: str | None = None
        # store id → (vector_gen when read, what _load returns): re-read only when a vector changed.
        self._cache: dict[str, tuple[int, Any]] = {}
        self._filling: set[str] = set()  # stores whose missing vectors a thread is making now

    def model(self) -> Embedder | None:
        """The embedding model, loaded on first need. The first use of a model other than the one the
        stored vectors came from drops those vectors, to be made again (see embed_kept)."""
        model = self._embedder()
        if model is None or self._checked == model.name:
            return model
        with self._tx() as db:
            row = db.execute("SELECT value FROM settings WHERE key = ?", (schema.EMBEDDING_MODEL,)).fetchone()
            if row is None or row[0] != model.name:
                if row is not None:
                    db.execute("UPDATE chunks SET embedding = NULL WHERE embedding IS NOT NULL")
                    db.execute("UPDATE title_vectors SET embedding = NULL WHERE embedding IS NOT NULL")
                db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (schema.EMBEDDING_MODEL, model.name))
        self._checked = model.name
        return model

    def encode(self, texts: Sequence[str]) -> list[bytes | None]:
        """Each text's vector as a blob, one forward pass (embed.BATCH texts) at a time; all None without
        the model (the chunks stay lexical only). Raises Stopped, with no vector kept, when the run's
        stop is set before a pass: a stop waits for one pass at most (about 2 s on 2 cores)."""
        model = self.model() if texts else None
        if model is None:
            return [None] * len(texts)
        embed = _embed()
        # Texts of like length (in characters) share a pass, so little of it is padding: a pass is as long as
        # its longest text.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        blobs: list[bytes | None] = [None] * len(texts)
        try:
            for start in range(0, len(order), embed.BATCH):
                if self._stop.is_set():
                    raise Stopped("embedding")
                picked = order[start : start + embed.BATCH]
                for i, blob in zip(picked, embed.to_blobs(model.encode([texts[i] for i in picked])), strict=True):
                    blobs[i] = blob
        except Stopped:
            raise
        except Exception as e:  # the words must still be indexed when the model fails
            log.warning(f"the embedding model failed ({type(e).__name__}: {e}); these chunks are lexical only")
            return [None] * len(texts)
        return blobs

    def embed_kept(self, store_id: str, done: Callable[[], bool]) -> int:
        """Embed the store's chunks that have no vector (kept from a lexical store, or indexed without
        the model) from their stored text, then its documents' titles (from their first chunks),
        one forward pass (embed.BATCH) at a time until `done()` or none is left: no document is
        extracted again. Returns how many chunks were embedded. Another thread already filling the
        store is left to it. One pass a transaction is about 2 s at the README's 16-17 chunks/s on 2
        cores, so a poll's deadline (2 s) or a stop request is overrun by at most that."""
        batch = _embed().BATCH
        with self._lock:
            if store_id in self._filling:
                return 0
            self._filling.add(store_id)
        embedded = 0
        try:
            while not done():
                with self._lock:
                    rows = self._db.execute(
                        "SELECT id, text FROM chunks WHERE store_id = ? AND embedding IS NULL LIMIT ?",
                        (store_id, batch),
                    ).fetchall()
                    update = "UPDATE chunks SET embedding = ? WHERE id = ? AND embedding IS NULL"
                    of_chunks = bool(rows)
                    if not of_chunks:
                        titles = self._db.execute(
                            "SELECT t.rowid, c.text, f.filename FROM title_vectors t JOIN chunks c ON c.store_id ="
                            " t.store_id AND c.file_id = t.file_id AND c.seq = 0 JOIN files f ON f.id = t.file_id"
                            " WHERE t.store_id = ? AND t.embedding IS NULL LIMIT ?",
                            (store_id, batch),
                        ).fetchall()
                        rows = [(rowid, title_of(text, filename)) for rowid, text, filename in titles]
                        update = "UPDATE title_vectors SET embedding = ? WHERE rowid = ? AND embedding IS NULL"
                if not rows or self.model() is None:
                    break
                try:
                    blobs = self.encode([text for _, text in rows])
                except Stopped:
                    break
                if blobs[0] is None:
                    break
                with self._tx() as db:
                    changed = db.executemany(
                        update, [(blob, key) for blob, (key, _) in zip(blobs, rows, strict=True)]
                    ).rowcount
                    embedded += changed if of_chunks else 0
        finally:
            with self._lock:
                self._filling.discard(store_id)
        return embedded

    def query(self, store_id: str, text: str) -> Query | None:
        """The query's vector beside the store's vectors; None when the store has none or there is no model."""
        with self._lock:
            if not self._has_vectors(store_id):
                return None
        model = self.model()  # may drop another model's vectors: read them after
        if model is None:
            return None
        with self._lock:
            loaded = self._load(store_id)
        if loaded is None:
            return None
        ids, matrix, titles, title_row = loaded
        return Query(ids, matrix, model.encode([text])[0], titles, title_row)

    def _has_vectors(self, store_id: str) -> bool:
        cached = self._cache.get(store_id)
        gen = self._gen()
        if cached is not None and cached[0] == gen:
            return cached[1] is not None
        # No vector was ever stored in this directory (a store by words alone): one read. Otherwise
        # the query below, which stops at a store's first vector but reads every chunk of a store
        # that has none (40 ms at 100,000 chunks, on every search).
        if gen == 0:
            return False
        return (
            self._db.execute(
                "SELECT 1 FROM chunks WHERE store_id = ? AND embedding IS NOT NULL LIMIT 1", (store_id,)
            ).fetchone()
            is not None
        )

    def _gen(self) -> int:
        return self._db.execute("SELECT n FROM vector_gen").fetchone()[0]

    def _load(self, store_id: str) -> tuple[Any, Any, Any, Any] | None:
        """(chunk ids, float32 matrix, title matrix, each chunk's title row) of the store's embedded
        chunks, from memory while unchanged."""
        gen = self._gen()
        cached = self._cache.get(store_id)
        if cached is None or cached[0] != gen:
            rows = self._db.execute(
                "SELECT id, file_id, embedding FROM chunks WHERE store_id = ? AND embedding IS NOT NULL ORDER BY id",
                (store_id,),
            ).fetchall()
            if rows:
                import numpy as np

                embed = _embed()
                titles = self._db.execute(
                    "SELECT file_id, embedding FROM title_vectors WHERE store_id = ? AND embedding IS NOT NULL",
                    (store_id,),
                ).fetchall()
                row_of = {file_id: i for i, (file_id, _) in enumerate(titles)}
                ids = np.array([r[0] for r in rows], dtype=np.int64)
                title_row = np.array([row_of.get(r[1], -1) for r in rows], dtype=np.int64)
                matrix = embed.from_blobs([r[2] for r in rows])
                cached = (gen, (ids, matrix, embed.from_blobs([t[1] for t in titles]), title_row))
            else:
                cached = (gen, None)
            self._cache[store_id] = cached
        return cached[1]
