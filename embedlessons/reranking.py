"""Training a cross-encoder reranker: pairs with binary labels, one logit per pair, binary cross-entropy.

A cross-encoder (:class:`~embedlessons.models.CrossEncoder`) reads ``[CLS] query [SEP] document [SEP]`` and
outputs one logit: how relevant the document is to the query. Nogueira & Cho (2019) fine-tune BERT this
way on MS MARCO (query, passage, relevant or not) and rerank BM25's top 1,000. The recipe here is theirs at
a small scale:

1. :func:`labelled_pairs`: every (query, relevant document) pair with label 1, and for each of them
   ``negatives`` documents drawn from the query's top BM25 non-relevant candidates, label 0 (hard negatives
   teach the reranker more than random ones: a random abstract is easy to reject);
2. :func:`train_cross_encoder`: binary cross-entropy of the logit against the label (sentence-transformers:
   ``CrossEncoder`` with ``BinaryCrossEntropyLoss``), AdamW, linear warm-up and decay;
3. :func:`score_pairs`: the logits of many (query, document) pairs, batched, for reranking a shortlist
   (:func:`embedlessons.retrieval.rerank`).

Example::

    >>> from embedlessons.models import CrossEncoder, load_model
    >>> minilm = load_model("all-MiniLM-L6-v2")
    >>> cross = CrossEncoder(minilm.transformer, minilm.tokenizer, max_length=128)
    >>> losses = train_cross_encoder(cross, [("claim", "abstract that supports it", 1.0),
    ...                                      ("claim", "an unrelated abstract", 0.0)], batch_size=2)
"""
from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["labelled_pairs", "train_cross_encoder", "score_pairs"]


def labelled_pairs(queries: Mapping[str, str], corpus: Mapping[str, str], rows: Sequence[tuple[str, str]],
                   candidates: Mapping[str, Sequence[str]], negatives: int = 3, seed: int = 0
                   ) -> list[tuple[str, str, float]]:
    """Training examples ``(query text, document text, label)`` for a cross-encoder.

    Args:
        queries: query id -> text; corpus: doc id -> text.
        rows: ``(query id, relevant doc id)`` pairs, each giving one example with label 1.0.
        candidates: query id -> ranked non-relevant doc ids (e.g. ``mine_bm25(...).negatives(30)``); each row
            gets ``negatives`` of them (label 0.0), drawn without replacement from the query's list (seeded).
        negatives: label-0 examples per row (0: positives only).

    Returns the examples in row order, each positive followed by its negatives.
    """
    if negatives < 0:
        raise ValueError(f"negatives must be >= 0, got {negatives}")
    rng = random.Random(seed)
    out = []
    for qid, doc_id in rows:
        if qid not in queries or doc_id not in corpus:
            raise KeyError(f"row ({qid!r}, {doc_id!r}): the query or the document is missing from queries/corpus")
        out.append((queries[qid], corpus[doc_id], 1.0))
        pool = list(candidates.get(qid, ()))
        if negatives and len(pool) < negatives:
            raise ValueError(f"query {qid!r} has {len(pool)} negative candidates, fewer than negatives={negatives}")
        out += [(queries[qid], corpus[d], 0.0) for d in rng.sample(pool, negatives)]
    return out


def _check_examples(examples) -> None:
    if not examples:
        raise ValueError("no training examples: expected a list of (query, document, label) tuples")
    for i, ex in enumerate(examples):
        if len(ex) != 3 or not isinstance(ex[0], str) or not isinstance(ex[1], str):
            raise ValueError(f"example {i} must be (query: str, document: str, label: float), got {ex!r:.120}")
        if not 0.0 <= float(ex[2]) <= 1.0:
            raise ValueError(f"example {i}: the label must be in [0, 1] (1 = relevant), got {ex[2]}")


def train_cross_encoder(cross, examples: Sequence[tuple[str, str, float]], *, epochs: int = 1,
                        batch_size: int = 16, lr: float = 2e-5, warmup_ratio: float = 0.1,
                        weight_decay: float = 0.01, seed: int = 0, progress: bool = False) -> list[float]:
    """Fine-tune ``cross`` in place with binary cross-entropy on labelled pairs.

    Args:
        cross: a :class:`~embedlessons.models.CrossEncoder` (its transformer and head are both trained).
        examples: ``(query, document, label)`` with label in [0, 1], e.g. from :func:`labelled_pairs`.
        epochs: passes over the examples, shuffled each epoch (seeded).
        batch_size, lr, warmup_ratio, weight_decay: AdamW with linear warm-up then linear decay to 0
            (``transformers.get_linear_schedule_with_warmup``), gradients clipped at norm 1.

    Returns the loss of every step. Leaves the model in eval mode.

    References: Nogueira & Cho (2019), *Passage Re-ranking with BERT*.
    """
    from .training import make_scheduler

    _check_examples(examples)
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    torch.manual_seed(seed)
    order_rng = random.Random(seed)
    steps = epochs * math.ceil(len(examples) / batch_size)
    decay = [p for n, p in cross.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in cross.named_parameters() if p.ndim <= 1]     # biases and LayerNorm weights
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    scheduler = make_scheduler(optimizer, steps, int(warmup_ratio * steps))
    device = next(cross.parameters()).device
    losses = []
    cross.train()
    for _ in range(epochs):
        order = list(range(len(examples)))
        order_rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            batch = [examples[i] for i in order[start:start + batch_size]]
            logits = cross([q for q, _, _ in batch], [d for _, d, _ in batch])
            labels = torch.tensor([float(y) for _, _, y in batch], device=device)
            loss = F.binary_cross_entropy_with_logits(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(cross.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            if progress and len(losses) % 20 == 0:
                print(f"step {len(losses)}/{steps}: loss {np.mean(losses[-20:]):.4f}", flush=True)
    cross.eval()
    return losses


@torch.no_grad()
def score_pairs(cross, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
    """Logits [len(pairs)] of ``(query, document)`` pairs under ``cross`` (eval mode, batched)."""
    was_training = cross.training
    cross.eval()
    out = [cross([q for q, _ in pairs[i:i + batch_size]], [d for _, d in pairs[i:i + batch_size]]).float().cpu().numpy()
           for i in range(0, len(pairs), batch_size)]
    cross.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
