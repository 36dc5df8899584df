"""Training loops.

Part 1 needs only a short supervised fine-tune on labelled texts (section 1.3): :func:`fine_tune_on_labels`.
Part 2 builds a full contrastive trainer here (section 2.5), in the pieces every embedding trainer has:

1. datasets of text tuples: :class:`PairDataset` (anchor, positive), :class:`TripletDataset` (anchor,
   positive, one or K negatives) and :class:`ScoredPairDataset` (two texts and a graded score);
2. :func:`collate`: tokenise each text column with *dynamic padding* (to the longest text in the batch);
3. :class:`NoDuplicatesBatchSampler`: batches in which no text occurs twice, because with in-batch
   negatives a duplicate is a false negative (Henderson et al. 2017; sentence-transformers' sampler of the
   same name);
4. :func:`train`: AdamW (Loshchilov & Hutter 2019) without weight decay on biases and LayerNorm, linear
   warm-up then linear decay (:func:`linear_warmup_decay`, the schedule of BERT and of Hugging Face's
   ``get_linear_schedule_with_warmup``), gradient clipping, mixed precision where CUDA exists, periodic
   evaluation, checkpoints that ``sentence_transformers.SentenceTransformer(path)`` loads, callbacks, and a
   run cache so that the book build re-uses a run that pytest already trained;
5. :class:`TrainHistory`: per-step loss, learning rate, gradient norm and loss statistics, evaluations,
   ``plot()`` and JSON round trip.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import itertools
import json
import math
import contextlib
import os
import random
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .losses import LossOutput, supervised_contrastive
from .progress import progress_bar

__all__ = ["balanced_batches", "fine_tune_on_labels", "global_rng_kept",
           "PairDataset", "TripletDataset", "ScoredPairDataset",
           "pairs_from_retrieval", "pairs_from_nli", "triplets_from_nli", "scored_pairs_from_sts",
           "collate", "NoDuplicatesBatchSampler", "RandomBatchSampler", "count_duplicate_batches",
           "linear_warmup_decay", "make_optimizer", "make_scheduler",
           "TrainConfig", "TrainState", "TrainHistory", "NonFiniteLossError", "train", "run_key", "run_dir"]


def balanced_batches(labels: np.ndarray, batch_size: int, steps: int, seed: int = 0) -> list[np.ndarray]:
    """Index batches with the same number of texts from each class (so every text has positives)."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if batch_size % len(classes) or batch_size < 2 * len(classes):
        raise ValueError(f"batch_size must be a multiple of the number of classes ({len(classes)}) "
                         f"and at least twice it, got {batch_size}")
    rng = np.random.default_rng(seed)
    per_class = batch_size // len(classes)
    pools = {c: np.flatnonzero(labels == c) for c in classes}
    return [np.concatenate([rng.choice(pools[c], per_class, replace=False) for c in classes])
            for _ in range(steps)]


def fine_tune_on_labels(model, texts: list[str], labels: np.ndarray, steps: int = 20, batch_size: int = 32,
                        lr: float = 2e-5, temperature: float = 0.05, max_length: int = 64, seed: int = 0,
                        progress: bool = True) -> list[float]:
    """Fine-tune a bi-encoder in place with :func:`~embedlessons.losses.supervised_contrastive`.

    Args:
        model: a :class:`~embedlessons.models.BiEncoder`.
        texts, labels: N texts and their integer labels [N].
        steps, batch_size, lr, temperature, max_length: training settings (AdamW, constant lr).
        seed: makes batches and dropout deterministic.

    Returns:
        the loss of every step.
    """
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for idx in progress_bar(balanced_batches(labels, batch_size, steps, seed), desc="fine-tuning", enabled=progress,
                            unit="step"):
        batch = model.tokenize([texts[i] for i in idx], max_length=max_length)
        loss = supervised_contrastive(model(batch), torch.as_tensor(labels[idx], device=model.device), temperature)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


# =============================================================================================== datasets
def _check_texts(name: str, texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of strings, not one string")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(t).__name__}")
    return texts


def _hash_json(obj: Any) -> str:
    return hashlib.blake2b(json.dumps(obj, ensure_ascii=False, sort_keys=True).encode("utf-8"),
                           digest_size=16).hexdigest()


class _TextTupleDataset:
    """Shared behaviour: rows of texts (plus a score), ``columns`` texts per row, a content hash."""

    columns: int = 2
    stack_negatives: bool = False   # True: text columns 2.. reach the loss as one [B, K, d] tensor

    def __len__(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple:  # pragma: no cover - overridden
        raise NotImplementedError

    def texts(self, i: int) -> tuple[str, ...]:
        """The text columns of row i (without a score)."""
        return tuple(self[i][:self.columns])

    def _content(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Hash of the class and every row (changes when the contents change, e.g. after set_negatives)."""
        return _hash_json([type(self).__name__, self._content()])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, columns={self.columns})"


class PairDataset(_TextTupleDataset):
    """(anchor, positive) text pairs, e.g. (query, relevant passage) or (premise, entailed hypothesis).

    ``dataset[i] -> (anchor, positive)``. With in-batch negatives (:func:`~embedlessons.losses.
    in_batch_info_nce`) the other rows' positives are the negatives.
    """

    columns = 2

    def __init__(self, anchors: Sequence[str], positives: Sequence[str]):
        self.anchors, self.positives = _check_texts("anchors", anchors), _check_texts("positives", positives)
        if len(self.anchors) != len(self.positives):
            raise ValueError(f"{len(self.anchors)} anchors but {len(self.positives)} positives")

    def __len__(self) -> int:
        return len(self.anchors)

    def __getitem__(self, i: int) -> tuple[str, str]:
        return self.anchors[i], self.positives[i]

    def _content(self):
        return [self.anchors, self.positives]


class TripletDataset(_TextTupleDataset):
    """(anchor, positive, negative...) rows with one or K negatives per row.

    Args:
        anchors, positives: N texts each.
        negatives: N texts (one negative per row; it reaches the loss as a [B, d] tensor), or N lists of
            K texts each (it reaches the loss as one [B, K, d] tensor, as :func:`~embedlessons.losses.info_nce`
            and ``in_batch_info_nce(..., hard_negatives=)`` expect).

    ``dataset[i] -> (anchor, positive, n_1, ..., n_K)``. :meth:`set_negatives` replaces the negatives of
    some rows (Part 3's miners refresh them during training).
    """

    def __init__(self, anchors: Sequence[str], positives: Sequence[str],
                 negatives: Sequence[str] | Sequence[Sequence[str]]):
        self.anchors, self.positives = _check_texts("anchors", anchors), _check_texts("positives", positives)
        if isinstance(negatives, str):
            raise TypeError("negatives must be a list of strings or a list of lists of strings")
        negatives = list(negatives)
        if len({len(self.anchors), len(self.positives), len(negatives)}) != 1:
            raise ValueError(f"lengths differ: {len(self.anchors)} anchors, {len(self.positives)} positives, "
                             f"{len(negatives)} negative rows")
        self.stack_negatives = bool(negatives) and not isinstance(negatives[0], str)
        if self.stack_negatives:
            self.negatives = [self._check_row(i, row) for i, row in enumerate(negatives)]
            self.k = len(self.negatives[0]) if self.negatives else 1
            if self.k < 1:
                raise ValueError("each row needs at least one negative")
            for i, row in enumerate(self.negatives):
                if len(row) != self.k:
                    raise ValueError(f"every row needs the same number of negatives: row 0 has {self.k}, "
                                     f"row {i} has {len(row)}")
        else:
            self.negatives = [[t] for t in _check_texts("negatives", negatives)]
            self.k = 1
        self.columns = 2 + self.k

    @staticmethod
    def _check_row(i: int, row) -> list[str]:
        if isinstance(row, str):
            raise TypeError(f"negatives[{i}] is a string but negatives[0] is a list: use one form for all rows")
        return _check_texts(f"negatives[{i}]", row)

    def __len__(self) -> int:
        return len(self.anchors)

    def __getitem__(self, i: int) -> tuple[str, ...]:
        return (self.anchors[i], self.positives[i], *self.negatives[i])

    def set_negatives(self, row_indices: Sequence[int], new_negatives: Sequence[str] | Sequence[Sequence[str]]):
        """Replace the negatives of ``row_indices`` (one text, or K texts, per row; K stays fixed)."""
        row_indices = [int(i) for i in row_indices]
        new_negatives = list(new_negatives)
        if len(row_indices) != len(new_negatives):
            raise ValueError(f"{len(row_indices)} row indices but {len(new_negatives)} new negatives")
        for i, neg in zip(row_indices, new_negatives):
            if not -len(self) <= i < len(self):
                raise IndexError(f"row {i} is out of range for {len(self)} rows")
            row = [neg] if isinstance(neg, str) else self._check_row(i, neg)
            if len(row) != self.k:
                raise ValueError(f"row {i}: got {len(row)} negatives, the dataset has {self.k} per row")
            self.negatives[i] = row

    def _content(self):
        return [self.anchors, self.positives, self.negatives, self.stack_negatives]


class ScoredPairDataset(_TextTupleDataset):
    """(sentence1, sentence2, score) rows for graded-similarity losses (CoSENT, MSE on cosine).

    ``dataset[i] -> (s1, s2, score)``; the loss receives the scores as a float32 tensor [B].
    """

    columns = 2

    def __init__(self, sentences1: Sequence[str], sentences2: Sequence[str], scores: Sequence[float]):
        self.sentences1 = _check_texts("sentences1", sentences1)
        self.sentences2 = _check_texts("sentences2", sentences2)
        self.scores = np.asarray(scores, dtype=np.float32).ravel()
        if len({len(self.sentences1), len(self.sentences2), len(self.scores)}) != 1:
            raise ValueError(f"lengths differ: {len(self.sentences1)} sentences1, {len(self.sentences2)} "
                             f"sentences2, {len(self.scores)} scores")
        if not np.isfinite(self.scores).all():
            raise ValueError("scores contain NaN or infinite values")

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, i: int) -> tuple[str, str, float]:
        return self.sentences1[i], self.sentences2[i], float(self.scores[i])

    def _content(self):
        return [self.sentences1, self.sentences2, self.scores.tolist()]


# ---- builders from embedlessons.data
def pairs_from_retrieval(ds, sep: str = " ", min_relevance: int = 1) -> PairDataset:
    """(query, relevant document) pairs of a :class:`~embedlessons.data.RetrievalDataset`.

    Each query is paired with each document judged ``>= min_relevance`` (title + ``sep`` + text), in query
    order. For SciFact train: 809 claims, 920 pairs.
    """
    anchors, positives = [], []
    for qid, query in ds.queries.items():
        for doc_id, rel in ds.qrels.get(qid, {}).items():
            if rel >= min_relevance:
                doc = ds.corpus[doc_id]
                anchors.append(query)
                positives.append(doc["title"] + sep + doc["text"] if doc["title"] else doc["text"])
    return PairDataset(anchors, positives)


def pairs_from_nli(nli, label: str = "entailment") -> PairDataset:
    """(premise, hypothesis) pairs of an :class:`~embedlessons.data.NLIPairs` with the given label."""
    keep = [i for i, lab in enumerate(nli.labels) if lab == label]
    return PairDataset([nli.premises[i] for i in keep], [nli.hypotheses[i] for i in keep])


def triplets_from_nli(triplets) -> TripletDataset:
    """(premise, entailed hypothesis, contradicting hypothesis) from :class:`~embedlessons.data.Triplets`."""
    return TripletDataset(triplets.anchors, triplets.positives, triplets.negatives)


def scored_pairs_from_sts(pairs, low: float | None = None, high: float | None = None) -> ScoredPairDataset:
    """A :class:`ScoredPairDataset` from :class:`~embedlessons.data.ScoredPairs`, scores scaled to [0, 1].

    ``low`` / ``high`` default to the dataset's documented range (STS-B 0-5, SICK 1-5).
    """
    from .data import _STS

    _, lo, hi = _STS.get(pairs.name, (None, 0.0, 5.0))
    lo, hi = (lo if low is None else low), (hi if high is None else high)
    if not hi > lo:
        raise ValueError(f"need high > low, got low={lo}, high={hi}")
    return ScoredPairDataset(pairs.sentences1, pairs.sentences2, (np.asarray(pairs.scores) - lo) / (hi - lo))


# =============================================================================================== collation
def _split_items(items: Sequence[tuple]) -> tuple[list[tuple[str, ...]], list[float] | None]:
    if len(items) == 0:
        raise ValueError("collate needs at least one item")
    first = items[0]
    has_score = not isinstance(first[-1], str)
    n_text = len(first) - int(has_score)
    if n_text < 1:
        raise ValueError(f"items must hold at least one text, got {first!r}")
    texts, scores = [], [] if has_score else None
    for j, item in enumerate(items):
        if len(item) != len(first):
            raise ValueError(f"item {j} has {len(item)} fields, item 0 has {len(first)}")
        row = item[:n_text]
        if not all(isinstance(t, str) for t in row):
            raise TypeError(f"item {j}: the first {n_text} fields must be strings, got {item!r}")
        texts.append(row)
        if has_score:
            scores.append(float(item[-1]))
    return texts, scores


def _lengths(max_length: int | Sequence[int], n: int) -> list[int]:
    """One token limit per text column: an int for all, or a tuple whose last entry repeats."""
    lengths = [max_length] if isinstance(max_length, int) else list(max_length)
    if not lengths or any(not isinstance(m, int) or m < 1 for m in lengths):
        raise ValueError(f"max_length must be a positive int or a tuple of them, got {max_length!r}")
    if len(lengths) > n:
        raise ValueError(f"max_length has {len(lengths)} entries but items have {n} text columns")
    return lengths + [lengths[-1]] * (n - len(lengths))


def collate(model, items: Sequence[tuple], max_length: int | Sequence[int] = 64
            ) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor | None]:
    """Tokenise a batch of dataset items column by column, with dynamic padding.

    Args:
        model: a :class:`~embedlessons.models.BiEncoder` (its tokenizer and device are used).
        items: B tuples ``(text_1, ..., text_C)`` or ``(text_1, ..., text_C, score)``.
        max_length: token limit (truncation), one int or one per column (e.g. ``(64, 256)`` for short
            queries and long documents; a shorter tuple repeats its last entry for the remaining columns).

    Returns:
        (features, scores): ``features[c]`` is the tokenizer batch of column c, ``input_ids`` and
        ``attention_mask`` of shape [B, T_c], where T_c is the longest text *of this batch* in column c
        (at most ``max_length``), not ``max_length`` itself; ``scores`` is a float32 tensor [B] or None.
    """
    texts, scores = _split_items(items)
    lengths = _lengths(max_length, len(texts[0]))
    features = [model.tokenize([row[c] for row in texts], max_length=lengths[c]) for c in range(len(texts[0]))]
    score_tensor = None if scores is None else torch.tensor(scores, dtype=torch.float32, device=model.device)
    return features, score_tensor


# =============================================================================================== batch samplers
class RandomBatchSampler:
    """Shuffle, then cut into batches of ``batch_size`` (a new order each epoch). Duplicates allowed."""

    def __init__(self, dataset, batch_size: int, seed: int = 0, drop_last: bool = True):
        _check_batch_size(dataset, batch_size)
        self.dataset, self.batch_size, self.seed, self.drop_last = dataset, batch_size, seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.dataset)).tolist()
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        for start in range(0, stop, self.batch_size):
            yield order[start:start + self.batch_size]


def _check_batch_size(dataset, batch_size: int) -> None:
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: nothing to train on")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if batch_size > len(dataset):
        raise ValueError(f"batch_size {batch_size} is larger than the dataset ({len(dataset)} rows); "
                         f"use batch_size <= {len(dataset)} or more data")


class NoDuplicatesBatchSampler:
    """Batches of row indices in which no text occurs twice (anchor, positive or negative, any column).

    Why: with in-batch negatives every other row's texts are negatives for an anchor. If a text occurs in
    two rows (SNLI has several hypotheses per premise, so the same premise is the anchor of several rows),
    the loss is told to push an anchor away from a text that is *its own positive* (or identical to it): a
    false negative, which gives a wrong gradient and caps the in-batch accuracy below 1.

    How: each epoch shuffles the rows (``numpy`` generator seeded with ``[seed, epoch]``) and fills each
    batch by walking the rows not used yet, in shuffled order, skipping a row when one of its texts is
    already in the batch (skipped rows stay for later batches). A text repeated *within* one row (e.g. SimCSE's
    (text, text) pairs) is allowed. Deterministic for a given seed and epoch. Like sentence-transformers'
    ``NoDuplicatesBatchSampler``; texts are read when the batch is built, so negatives replaced by
    ``TripletDataset.set_negatives`` count from the next batch on.

    Args:
        dataset: any dataset with ``columns`` and ``texts(i)`` (or items whose first ``columns`` fields are texts).
        batch_size: rows per batch.
        seed: shuffling seed.
        drop_last: drop the epoch's last batches that cannot be filled to ``batch_size``.

    Raises ValueError when not even the first batch of an epoch can be filled without duplicates.
    """

    def __init__(self, dataset, batch_size: int, seed: int = 0, drop_last: bool = True):
        _check_batch_size(dataset, batch_size)
        self.dataset, self.batch_size, self.seed, self.drop_last = dataset, int(batch_size), seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _texts(self, i: int) -> set[str]:
        ds = self.dataset
        row = ds.texts(i) if hasattr(ds, "texts") else ds[i][:getattr(ds, "columns", len(ds[i]))]
        return set(row)

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.dataset)).tolist()
        remaining = dict.fromkeys(order)          # insertion-ordered set: O(1) removal
        first = True
        while remaining:
            batch, seen = [], set()
            for i in remaining:
                texts = self._texts(i)
                if texts.isdisjoint(seen):
                    batch.append(i)
                    seen |= texts
                    if len(batch) == self.batch_size:
                        break
            if len(batch) < self.batch_size:
                if first:
                    raise ValueError(
                        f"cannot fill a batch of {self.batch_size} rows without a repeated text: the "
                        f"{len(self.dataset)} rows share texts so much that only {len(batch)} fit "
                        f"together; use a smaller batch_size or no_duplicates=False")
                if self.drop_last:
                    return
            for i in batch:
                del remaining[i]
            first = False
            yield batch


def count_duplicate_batches(dataset, batches: Sequence[Sequence[int]]) -> int:
    """How many batches contain some text more than once across rows (a false in-batch negative)."""
    count = 0
    for batch in batches:
        seen: set[str] = set()
        for i in batch:
            texts = set(dataset[i][:dataset.columns])
            if not texts.isdisjoint(seen):
                count += 1
                break
            seen |= texts
    return count


# =============================================================================================== optimiser, schedule
def linear_warmup_decay(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate multiplier at ``step`` (0-based): linear warm-up from 0 to 1 over ``warmup_steps``,
    then linear decay to 0 at ``total_steps``. Equal to ``transformers.get_linear_schedule_with_warmup``
    (so the first step runs at lr 0 when there is a warm-up)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int
                   ) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`linear_warmup_decay` to every parameter group's base lr."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(linear_warmup_decay, total_steps=total_steps, warmup_steps=warmup_steps))


def make_optimizer(params: Sequence[tuple[str, torch.nn.Parameter]], lr: float, weight_decay: float
                   ) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) with decoupled weight decay on weight matrices only.

    Biases and LayerNorm weights (every parameter with fewer than 2 dimensions) get no decay: shrinking a
    LayerNorm gain or a bias toward 0 is not a useful prior (the BERT recipe).
    """
    params = [(n, p) for n, p in params if p.requires_grad]
    decay = [p for n, p in params if p.ndim >= 2]
    no_decay = [p for n, p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


# =============================================================================================== config, state, history
@dataclass
class TrainConfig:
    """Settings of one :func:`train` run.

    Attributes:
        steps: optimiser steps (batches); epochs follow from it.
        batch_size: rows per batch (the number of in-batch negatives is batch_size - 1).
        lr: peak learning rate (AdamW).
        warmup_ratio: fraction of steps of linear warm-up (then linear decay to 0).
        weight_decay: AdamW decoupled weight decay (not on biases / LayerNorm).
        max_grad_norm: clip the global gradient norm to this (None or 0: no clipping; the norm is logged).
        max_length: token limit, one int or one per text column (e.g. ``(64, 128)``).
        amp: mixed precision (bf16 where supported, else fp16 with a GradScaler); used only with CUDA.
        eval_every: run the evaluator every this many steps (0: only at the end).
        seed: seeds batch order and dropout: the same seed gives the same losses.
        no_duplicates: use :class:`NoDuplicatesBatchSampler` (else plain shuffling).
        checkpoint_every: save ``output_dir/checkpoint-<step>`` every this many steps (0: none).
        output_dir: where checkpoints, the final model (``final/``) and ``history.json`` go (None: nowhere).
    """

    steps: int
    batch_size: int = 32
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    max_length: int | tuple[int, ...] = 64
    amp: bool = True
    eval_every: int = 0
    seed: int = 0
    no_duplicates: bool = True
    checkpoint_every: int = 0
    output_dir: str | None = None

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive int, got {self.steps!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.max_grad_norm is not None and self.max_grad_norm < 0:
            raise ValueError(f"max_grad_norm must be >= 0 or None, got {self.max_grad_norm}")
        if isinstance(self.max_length, list):
            self.max_length = tuple(self.max_length)
        _lengths(self.max_length, len([self.max_length] if isinstance(self.max_length, int) else self.max_length))
        if self.eval_every < 0 or self.checkpoint_every < 0:
            raise ValueError("eval_every and checkpoint_every must be >= 0")
        if self.checkpoint_every and self.output_dir is None:
            raise ValueError("checkpoint_every needs an output_dir to write checkpoints to")

    @property
    def warmup_steps(self) -> int:
        return int(math.ceil(self.warmup_ratio * self.steps))

    def key_dict(self) -> dict:
        """The settings that change the trained weights or the history (not where files are written)."""
        d = asdict(self)
        for name in ("output_dir", "checkpoint_every"):
            d.pop(name)
        d["max_length"] = list(d["max_length"]) if isinstance(d["max_length"], tuple) else d["max_length"]
        return d


class TrainHistory:
    """What a run recorded.

    Attributes:
        steps: one dict per optimiser step: ``step`` (1-based), ``loss``, ``lr`` (used for this step),
            ``grad_norm`` (before clipping), the loss's ``stats`` and values logged with :meth:`log`.
        evals: one dict per evaluation: ``step`` and the evaluator's metrics.
        meta: run information (config, cache key, seconds spent training).
        from_cache: True when :func:`train` loaded this run from the run cache instead of training.
    """

    def __init__(self, steps: list[dict] | None = None, evals: list[dict] | None = None,
                 meta: dict | None = None, pending: dict | None = None):
        self.steps, self.evals = list(steps or []), list(evals or [])
        self.meta = dict(meta or {})
        self._pending: dict[int, dict] = {int(k): dict(v) for k, v in (pending or {}).items()}
        self.from_cache = False

    # ---- recording
    def add_step(self, record: dict) -> None:
        record = {**record, **self._pending.pop(record["step"], {})}
        self.steps.append(record)

    def log(self, step: int, **values: float) -> None:
        """Attach values to step ``step`` (the record of that step, or the next one created for it)."""
        for rec in reversed(self.steps):
            if rec["step"] == step:
                rec.update(values)
                return
        self._pending.setdefault(int(step), {}).update(values)

    def add_eval(self, step: int, metrics: dict[str, float]) -> None:
        self.evals.append({"step": step, **{k: float(v) for k, v in metrics.items()}})

    # ---- reading
    @property
    def losses(self) -> list[float]:
        return [r["loss"] for r in self.steps]

    def values(self, name: str) -> tuple[list[int], list[float]]:
        """(steps, values) of a per-step quantity or an evaluation metric."""
        rows = self.steps if any(name in r for r in self.steps) else self.evals
        pts = [(r["step"], r[name]) for r in rows if name in r]
        if not pts:
            raise KeyError(f"no step or evaluation recorded {name!r}")
        return [s for s, _ in pts], [v for _, v in pts]

    @property
    def final_eval(self) -> dict[str, float] | None:
        """Metrics of the last evaluation (without ``step``), or None."""
        return {k: v for k, v in self.evals[-1].items() if k != "step"} if self.evals else None

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        last = f", final loss {self.steps[-1]['loss']:.4f}" if self.steps else ""
        return f"TrainHistory(steps={len(self.steps)}, evals={len(self.evals)}{last})"

    # ---- plotting
    def plot(self, ax=None, metrics: Sequence[str] | None = None, smooth: int = 10):
        """Loss per step (and a moving average of ``smooth`` steps); evaluation metrics on a second axis.

        ``metrics``: the evaluation metrics to draw (default all). Returns the matplotlib axes used.
        """
        import matplotlib.pyplot as plt

        names = [k for k in (self.evals[0] if self.evals else {}) if k != "step"] if metrics is None else list(metrics)
        if ax is None:
            _, axes = plt.subplots(1, 2 if names else 1, figsize=(10 if names else 5, 3.2), squeeze=False,
                                   layout="constrained")
            axes = list(axes[0])
        else:
            axes = list(ax) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
        steps, losses = [r["step"] for r in self.steps], self.losses
        axes[0].plot(steps, losses, color="0.7", lw=1, label="loss")
        if smooth > 1 and len(losses) >= smooth:
            avg = np.convolve(losses, np.ones(smooth) / smooth, mode="valid")
            axes[0].plot(steps[smooth - 1:], avg, color="C0", lw=2, label=f"mean of {smooth} steps")
        axes[0].set(xlabel="step", ylabel="training loss")
        axes[0].legend(frameon=False)
        if names:
            target = axes[1] if len(axes) > 1 else axes[0].twinx()
            for name in names:
                s, v = self.values(name)
                target.plot(s, v, marker="o", label=name)
            target.set(xlabel="step", ylabel="metric")
            target.legend(frameon=False)
        return axes

    # ---- persistence
    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """JSON text of the history (written to ``path`` when given). Floats round-trip exactly."""
        text = json.dumps({"steps": self.steps, "evals": self.evals, "meta": self.meta,
                           "pending": {str(k): v for k, v in self._pending.items()}}, indent=1)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> TrainHistory:
        """Inverse of :meth:`to_json` (a JSON string or a file path)."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text(encoding="utf-8")
        d = json.loads(text)
        return cls(d.get("steps"), d.get("evals"), d.get("meta"), d.get("pending"))


@contextlib.contextmanager
def global_rng_kept() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's (CPU and CUDA) global random states on exit, for library code that
    re-seeds them (the Hugging Face trainer, mteb's tasks and evaluators)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@dataclass
class TrainState:
    """What callbacks see. ``step`` is 0 in ``on_train_begin``, the 1-based step being run in
    ``on_step_begin`` / ``on_step_end``, and the last step in ``on_train_end``. Setting ``stop = True``
    ends training after the current step."""

    step: int
    model: Any
    dataset: Any
    history: TrainHistory
    config: TrainConfig
    optimizer: torch.optim.Optimizer | None = None
    stop: bool = False


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step."""


# =============================================================================================== run cache
def _describe(obj: Any) -> Any:
    """A stable description of a loss / evaluator / callback for the run-cache key.

    Uses ``obj.cache_key`` when it exists; describes ``functools.partial`` by its function and arguments; a
    function by its module, name and source code (so editing it invalidates cached runs); otherwise the
    repr, unless that repr shows a memory address (then the class name and the source of its class).
    """
    if obj is None:
        return None
    key = getattr(obj, "cache_key", None)
    if key is not None:
        return ["cache_key", key() if callable(key) else key]
    if isinstance(obj, functools.partial):
        return ["partial", _describe(obj.func), [_describe(a) for a in obj.args],
                {k: _describe(v) for k, v in sorted(obj.keywords.items())}]
    if isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [_describe(o) for o in obj]
    if isinstance(obj, torch.Tensor):
        return ["tensor", obj.detach().cpu().tolist()]
    if inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isbuiltin(obj):
        try:
            source = hashlib.blake2b(inspect.getsource(obj).encode(), digest_size=8).hexdigest()
        except (OSError, TypeError):
            source = ""
        return ["function", getattr(obj, "__module__", ""), getattr(obj, "__qualname__", repr(obj)), source]
    text = repr(obj)
    if " at 0x" in text or " object at " in text:
        cls = type(obj)
        try:
            source = hashlib.blake2b(inspect.getsource(cls).encode(), digest_size=8).hexdigest()
        except (OSError, TypeError):
            source = ""
        state = {k: _describe(v) for k, v in sorted(vars(obj).items()) if not k.startswith("_")} \
            if hasattr(obj, "__dict__") and not isinstance(obj, torch.nn.Module) else {}
        return ["object", cls.__module__, cls.__qualname__, source, state]
    return ["repr", text]


@functools.lru_cache(maxsize=1)
def _trainer_source() -> str:
    """Hash of the code that determines a run's numbers (batching, collation, optimiser, schedule, loop), so a
    change there invalidates cached runs while edits to docs, plotting or I/O do not."""
    parts = [RandomBatchSampler, NoDuplicatesBatchSampler, _check_batch_size, _split_items, _lengths, collate,
             linear_warmup_decay, make_scheduler, make_optimizer, _amp_dtype_name, _loss_inputs, _batches,
             train, _train_loop]
    code = "".join(inspect.getsource(p) for p in parts)
    return hashlib.blake2b(code.encode("utf-8"), digest_size=8).hexdigest()


def run_key(model, dataset, loss, config: TrainConfig, evaluator=None, callbacks: Sequence = ()) -> str:
    """The run-cache key: model weights + config + dataset contents + loss / evaluator / callbacks + device
    + the source of the training code (a change to the loop, batching or optimiser invalidates cached runs)."""
    device = model.device.type
    parts = {"model": model.fingerprint(), "config": config.key_dict(), "dataset": dataset.fingerprint(),
             "loss": _describe(loss), "evaluator": _describe(evaluator),
             "callbacks": [_describe(c) for c in callbacks], "device": device,
             "amp": _amp_dtype_name(config, device), "trainer": _trainer_source()}
    if isinstance(loss, torch.nn.Module):
        parts["loss_state"] = _hash_json({k: v.detach().cpu().tolist() for k, v in loss.state_dict().items()})
    return _hash_json(parts)[:24]


def run_dir(key: str) -> Path:
    """Folder of a cached run: ``cache_dir()/runs/<key>/`` (``model/``, ``history.json``)."""
    from .data import cache_dir

    return cache_dir() / "runs" / key


def _cache_enabled(cache: bool) -> bool:
    return cache and os.environ.get("EMBEDLESSONS_NO_CACHE") != "1"


def _load_cached_run(folder: Path, model, loss) -> TrainHistory | None:
    from safetensors.torch import load_file

    weights, hist = folder / "model" / "model.safetensors", folder / "history.json"
    if not (weights.exists() and hist.exists()):
        return None
    state = load_file(str(weights), device=str(model.device))
    missing, unexpected = model.transformer.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith("position_ids") for k in missing):
        raise RuntimeError(f"cached run {folder} does not match the model: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}; delete the folder and train again")
    loss_state = folder / "loss_state.safetensors"
    if isinstance(loss, torch.nn.Module) and loss_state.exists():
        loss.load_state_dict(load_file(str(loss_state), device=str(model.device)))
    history = TrainHistory.from_json(hist)
    history.from_cache = True
    model.eval()
    return history


def _quiet_save(model, path: Path) -> None:
    """``model.save(path)`` without transformers' shard-writing progress bar (a checkpoint is not a result)."""
    from .models import _quiet_loading

    with _quiet_loading():
        model.save(path)


def _store_run(folder: Path, model, loss, history: TrainHistory) -> None:
    """Write atomically: a temporary folder renamed into place (a concurrent writer's copy wins)."""
    from safetensors.torch import save_file

    tmp = folder.parent / f".{folder.name}.{uuid.uuid4().hex}"
    try:
        _quiet_save(model, tmp / "model")
        history.to_json(tmp / "history.json")
        if isinstance(loss, torch.nn.Module) and len(loss.state_dict()):
            save_file({k: v.detach().contiguous() for k, v in loss.state_dict().items()},
                      str(tmp / "loss_state.safetensors"))
        try:
            tmp.rename(folder)
        except OSError:  # another process stored the same run first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# =============================================================================================== train
def _amp_dtype_name(config: TrainConfig, device: str) -> str | None:
    if not (config.amp and device == "cuda"):
        return None
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def _call(callbacks: Sequence, hook: str, state: TrainState) -> None:
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(state)


def _loss_inputs(dataset, embeddings: list[torch.Tensor], scores: torch.Tensor | None) -> list[torch.Tensor]:
    if getattr(dataset, "stack_negatives", False):
        embeddings = embeddings[:2] + [torch.stack(embeddings[2:], dim=1)]   # [B, K, d]
    return embeddings + ([scores] if scores is not None else [])


def _batches(sampler) -> Iterator[list[int]]:
    """Endless stream of batches, epoch after epoch (each epoch reshuffled)."""
    for epoch in itertools.count():
        sampler.set_epoch(epoch)
        yield from sampler


def train(model, dataset, loss: Callable[..., LossOutput], config: TrainConfig, evaluator=None,
          callbacks: Sequence = (), cache: bool = False, progress: bool = True) -> TrainHistory:
    """Train a bi-encoder in place with a contrastive (or graded) loss.

    Args:
        model: a :class:`~embedlessons.models.BiEncoder` (trained in place; left in eval mode).
        dataset: :class:`PairDataset`, :class:`TripletDataset` or :class:`ScoredPairDataset` (or any object
            with ``columns``, ``__len__``, ``__getitem__`` and ``fingerprint()``).
        loss: called with the embeddings [B, d] of each text column, positionally (the K negatives of a
            K-negative :class:`TripletDataset` as one [B, K, d] tensor), then the scores [B] for a
            :class:`ScoredPairDataset`; returns a :class:`~embedlessons.losses.LossOutput` (or a scalar
            tensor). E.g. ``functools.partial(in_batch_info_nce, temperature=0.05)``. An ``nn.Module`` loss
            with parameters (a learnable temperature) is trained too.
        config: :class:`TrainConfig`.
        evaluator: ``callable(model) -> dict[str, float]``, run every ``config.eval_every`` steps and at the end.
        callbacks: objects with any of ``on_train_begin / on_step_begin / on_step_end / on_train_end(state)``
            (:class:`TrainState`), called in the order given. They may change ``state.dataset`` (e.g.
            ``set_negatives``) and log with ``state.history.log(step, **values)``.
        cache: reuse a finished identical run from ``cache_dir()/runs/<key>/`` (see :func:`run_key`):
            the stored weights are loaded into ``model`` in place and the stored history is returned without
            training. ``EMBEDLESSONS_NO_CACHE=1`` turns it off.
        progress: show a progress bar with the loss.

    Returns:
        :class:`TrainHistory`.

    The core loop, per step: ``features = collate(model, rows)``; ``out = loss(*[model(f) for f in features])``;
    ``out.loss.backward()``; clip the gradient norm; ``optimizer.step()``; ``scheduler.step()``.
    """
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: nothing to train on")
    _check_batch_size(dataset, config.batch_size)
    if not callable(loss):
        raise TypeError(f"loss must be callable, got {type(loss).__name__}")
    if evaluator is not None and not callable(evaluator):
        raise TypeError(f"evaluator must be callable(model) -> dict, got {type(evaluator).__name__}")
    callbacks = list(callbacks)

    use_cache = _cache_enabled(cache)
    key = run_key(model, dataset, loss, config, evaluator, callbacks) if use_cache else None
    if use_cache:
        hit = _load_cached_run(run_dir(key), model, loss)
        if hit is not None:
            return hit

    device = model.device
    amp_name = _amp_dtype_name(config, device.type)
    history = TrainHistory(meta={"config": config.key_dict(), "key": key, "dataset_rows": len(dataset),
                                 "amp": amp_name})
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):    # seed dropout without disturbing the caller's RNG
        torch.manual_seed(config.seed)
        _train_loop(model, dataset, loss, config, evaluator, callbacks, progress, history, amp_name)

    if config.output_dir is not None:
        out = Path(config.output_dir)
        _quiet_save(model, out / "final")
        history.to_json(out / "history.json")
    if use_cache:
        _store_run(run_dir(key), model, loss, history)
    return history


def _train_loop(model, dataset, loss, config: TrainConfig, evaluator, callbacks, progress: bool,
                history: TrainHistory, amp_name: str | None) -> None:
    import time

    device = model.device
    named = list(model.named_parameters())
    if isinstance(loss, torch.nn.Module):
        named += [(f"loss.{n}", p) for n, p in loss.named_parameters()]
    params = [p for _, p in named if p.requires_grad]
    optimizer = make_optimizer(named, config.lr, config.weight_decay)
    scheduler = make_scheduler(optimizer, config.steps, config.warmup_steps)
    amp_dtype = getattr(torch, amp_name) if amp_name else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_name == "float16")
    sampler_cls = NoDuplicatesBatchSampler if config.no_duplicates else RandomBatchSampler
    batches = _batches(sampler_cls(dataset, config.batch_size, seed=config.seed))
    max_norm = config.max_grad_norm if config.max_grad_norm else float("inf")

    state = TrainState(step=0, model=model, dataset=dataset, history=history, config=config, optimizer=optimizer)
    _call(callbacks, "on_train_begin", state)
    model.train()
    started = time.perf_counter()
    bar = progress_bar(total=config.steps, desc="training", enabled=progress, unit="step")
    last_eval = None
    try:
        for step in range(1, config.steps + 1):
            state.step = step
            _call(callbacks, "on_step_begin", state)
            idx = next(batches)
            features, scores = collate(model, [dataset[i] for i in idx], config.max_length)
            lr = optimizer.param_groups[0]["lr"]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = loss(*_loss_inputs(dataset, [model(f) for f in features], scores))
            if isinstance(out, torch.Tensor):
                out = LossOutput(out, {})
            if not isinstance(out, LossOutput) or not isinstance(out.loss, torch.Tensor) or out.loss.dim() != 0:
                raise TypeError(f"the loss must return a LossOutput with a scalar tensor (or a scalar tensor), "
                                f"got {type(out).__name__}")
            value = out.loss.detach().float().item()
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"the loss is {value} at step {step} of {config.steps}; training stopped before this "
                    f"step's update (the model keeps the weights of step {step - 1}). Try a lower lr "
                    f"({config.lr:g}), a larger temperature, or check the inputs of this batch.")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(out.loss.float()).backward()
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm).item()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            history.add_step({"step": step, "loss": value, "lr": lr, "grad_norm": grad_norm,
                              **{k: float(v) for k, v in out.stats.items()}})
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}", refresh=False)
            _call(callbacks, "on_step_end", state)
            if evaluator is not None and config.eval_every and step % config.eval_every == 0:
                history.add_eval(step, evaluator(model))
                last_eval = step
                model.train()
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                _quiet_save(model, Path(config.output_dir) / f"checkpoint-{step}")
            if state.stop:
                break
    finally:
        bar.close()
        model.eval()
    history.meta["train_seconds"] = round(time.perf_counter() - started, 3)
    if evaluator is not None and last_eval != state.step:
        history.add_eval(state.step, evaluator(model))
    _call(callbacks, "on_train_end", state)
