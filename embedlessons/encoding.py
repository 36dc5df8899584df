"""Encoding many texts: batching, length sorting, progress bars and an on-disk embedding cache.

Sorting texts by length before batching means each batch pads to similar lengths, which on a CPU
roughly halves the time for a corpus of mixed lengths. The cache stores one float32 vector per
(model weights, pooling, normalisation, max length, text) so that a corpus encoded in one notebook
is reused by the next, and by the book build that runs the notebooks again.

Cache location: ``$EMBEDLESSONS_CACHE/embeddings`` (default ``~/.cache/embedlessons/embeddings``);
``EMBEDLESSONS_NO_CACHE=1`` turns it off.
"""
from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .data import cache_dir
from .progress import progress_bar

__all__ = ["encode", "encode_texts", "EmbeddingCache", "embedding_cache_dir"]


def embedding_cache_dir() -> Path:
    return cache_dir() / "embeddings"


def _text_key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


class EmbeddingCache:
    """Vectors of one model setting, stored as ``.npz`` shards under ``root/<setting key>/``."""

    def __init__(self, setting_key: str, root: Path | None = None):
        self.dir = (root or embedding_cache_dir()) / setting_key
        self._table: dict[str, np.ndarray] | None = None

    def _load(self) -> dict[str, np.ndarray]:
        if self._table is None:
            self._table = {}
            for shard in sorted(self.dir.glob("*.npz")) if self.dir.exists() else []:
                try:
                    with np.load(shard) as data:
                        self._table.update(zip(data["keys"].tolist(), data["vectors"]))
                except (OSError, ValueError, KeyError):  # a half-written shard: ignore it, it will be redone
                    continue
        return self._table

    def get(self, keys: list[str]) -> list[np.ndarray | None]:
        table = self._load()
        return [table.get(k) for k in keys]

    def put(self, keys: list[str], vectors: np.ndarray) -> None:
        if not keys:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{uuid.uuid4().hex}.npz"
        np.savez(tmp, keys=np.array(keys), vectors=vectors.astype(np.float32))
        tmp.rename(self.dir / f"{uuid.uuid4().hex}.npz")  # atomic: readers never see half a shard
        self._load().update(zip(keys, vectors))


def encode_texts(texts: list[str], dim: int, run_batch: Callable[[list[str]], np.ndarray], batch_size: int = 32,
                 cache_key: str | None = None, progress: bool = True, desc: str = "encoding") -> np.ndarray:
    """The loop every encoder here shares: each distinct text once, longest first, through ``run_batch``.

    Args:
        texts: N strings. dim: the vector size d.
        run_batch: turns up to ``batch_size`` texts into a float array [b, d] (tokenise, forward, pool).
        batch_size: texts per ``run_batch`` call. Sorting by length first makes each batch pad little.
        cache_key: the on-disk cache's key for this model and token limit (vectors are reused and stored),
            or None for no cache (also when ``EMBEDLESSONS_NO_CACHE=1``).
        progress, desc: a progress bar (only for work that is not cached).

    Returns:
        float32 array [N, d], in the order of ``texts``.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string (wrap it: [text])")
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("every text must be a string")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = np.zeros((len(texts), dim), dtype=np.float32)
    if not texts:
        return out
    use_cache = cache_key is not None and os.environ.get("EMBEDLESSONS_NO_CACHE") != "1"
    keys = [_text_key(t) for t in texts]
    todo = list(range(len(texts)))
    if use_cache:
        store = EmbeddingCache(cache_key)
        todo = []
        for i, vec in enumerate(store.get(keys)):
            if vec is None:
                todo.append(i)
            else:
                out[i] = vec
    # encode each distinct missing text once, longest first so batches pad little
    unique: dict[str, int] = {}
    for i in todo:
        unique.setdefault(keys[i], i)
    order = sorted(unique.values(), key=lambda i: -len(texts[i]))
    new_vectors = np.zeros((len(order), dim), dtype=np.float32)
    bar = progress_bar(total=len(order), desc=desc, enabled=progress and len(order) > batch_size, unit="text")
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        new_vectors[start:start + len(idx)] = run_batch([texts[i] for i in idx])
        bar.update(len(idx))
    bar.close()
    row_of = {keys[i]: r for r, i in enumerate(order)}
    for i in todo:
        out[i] = new_vectors[row_of[keys[i]]]
    if use_cache:
        store.put([keys[i] for i in order], new_vectors)
    return out


@torch.no_grad()
def encode(model, texts: list[str], batch_size: int = 32, max_length: int | None = None,
           cache: bool = True, progress: bool = True, desc: str = "encoding") -> np.ndarray:
    """Embed ``texts`` with a :class:`~embedlessons.models.BiEncoder`.

    Args:
        model: the bi-encoder (its pooling and normalisation apply).
        texts: N strings.
        batch_size: texts per forward pass.
        max_length: token limit (default: the model's ``max_length``).
        cache: reuse and store vectors in the on-disk cache.
        progress: show a progress bar (only for work that is not cached).

    Returns:
        float32 array [N, d], in the order of ``texts`` (:func:`encode_texts` does the work).
    """
    max_length = max_length or model.max_length
    was_training = model.training
    model.eval()
    try:
        return encode_texts(texts, model.dim,
                            lambda batch: model(model.tokenize(batch, max_length=max_length)).float().cpu().numpy(),
                            batch_size, f"{model.fingerprint()}-{max_length}" if cache else None, progress, desc)
    finally:
        model.train(was_training)
