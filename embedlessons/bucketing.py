"""Padding and length bucketing: spend compute on tokens, not on padding.

A batch of texts is a rectangle [B, T]: every text is padded to the longest one, T. Three ways to choose T:

- **pad to max_length**: T is the token limit (e.g. 256) for every batch, whatever the texts;
- **dynamic padding**: T is the longest text *of this batch* (what :meth:`BiEncoder.tokenize` does);
- **length bucketing**: dynamic padding on batches of texts of similar length, so the longest text of a
  batch is close to all the others. For encoding, sort all texts by length first (what
  :func:`embedlessons.encoding.encode` does). For training, sorting everything would make batches of only
  short or only long texts in a fixed order, so batches are grouped by length only inside random
  "mega-batches" (:func:`length_grouped_batches`, the scheme of Hugging Face's ``group_by_length``).

Mean pooling ignores padding (the attention mask), so all three give the same vectors; only the work
differs. :func:`padding_share` counts the wasted share of a batching.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["PADDING_MODES", "token_lengths", "encode_batches", "padding_share", "length_grouped_batches"]

PADDING_MODES = ("max_length", "dynamic", "sorted")


def token_lengths(tokenizer, texts: Sequence[str], max_length: int) -> np.ndarray:
    """Tokens per text after truncation to ``max_length`` (special tokens included): int array [N]."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a list of strings")
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return np.array([len(x) for x in ids], dtype=np.int64)


def encode_batches(n: int, batch_size: int, mode: str, lengths: Sequence[int] | None = None) -> list[list[int]]:
    """The batches (lists of text indices) an encoder processes under padding ``mode``.

    ``"max_length"`` and ``"dynamic"`` keep the input order; ``"sorted"`` orders the texts longest first
    (``lengths`` [N] needed), so each batch holds texts of similar length.
    """
    if mode not in PADDING_MODES:
        raise ValueError(f"unknown padding mode {mode!r}; choose one of {PADDING_MODES}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = list(range(n))
    if mode == "sorted":
        if lengths is None or len(lengths) != n:
            raise ValueError(f"mode 'sorted' needs one length per text ({n}), got "
                             f"{None if lengths is None else len(lengths)}")
        order = sorted(order, key=lambda i: -lengths[i])
    return [order[s:s + batch_size] for s in range(0, n, batch_size)]


def padding_share(lengths: Sequence[int], batches: Sequence[Sequence[int]], pad_to: int | None = None) -> float:
    """Share of the token positions in ``batches`` that are padding (0: none wasted).

    Each batch costs ``len(batch) * T`` positions, with T = ``pad_to`` (padding to a fixed length) or the
    longest text of the batch (dynamic padding); real tokens are ``sum(lengths[batch])``.
    """
    lengths = np.asarray(lengths)
    total = real = 0
    for batch in batches:
        width = pad_to if pad_to is not None else int(lengths[list(batch)].max())
        total += len(batch) * width
        real += int(lengths[list(batch)].sum())
    return 1 - real / total if total else 0.0


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int = 0,
                           mega_batch: int = 16) -> list[list[int]]:
    """Training batches of similar-length texts that still come in a random order.

    Shuffle all indices, cut them into mega-batches of ``mega_batch * batch_size`` rows, sort each
    mega-batch by length (longest first) and cut it into batches; then shuffle the order of the batches.
    A larger ``mega_batch`` pads less but makes batches less random (in-batch negatives of similar length).

    Args:
        lengths: tokens per training row [N] (e.g. of its longest column).
        batch_size: rows per batch; the last incomplete batch is dropped, as in training.
        seed: seeds both shuffles.
        mega_batch: batches per sorted group (1: plain shuffling).

    Returns:
        N // batch_size batches of row indices.
    """
    if batch_size < 1 or mega_batch < 1:
        raise ValueError(f"batch_size and mega_batch must be >= 1, got {batch_size} and {mega_batch}")
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or len(lengths) < batch_size:
        raise ValueError(f"expected one length per row, at least batch_size={batch_size} of them, "
                         f"got shape {lengths.shape}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    group = mega_batch * batch_size
    batches = []
    for start in range(0, len(order), group):
        chunk = sorted(order[start:start + group].tolist(), key=lambda i: -lengths[i])
        batches += [chunk[s:s + batch_size] for s in range(0, len(chunk) - batch_size + 1, batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
