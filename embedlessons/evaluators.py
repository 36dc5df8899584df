"""Evaluators: callables ``evaluator(model) -> dict[str, float]`` that :func:`embedlessons.training.train` runs
during and after training.

Both embed with ``model.encode`` (batched, length-sorted, cached by the model's fingerprint, so evaluating an
unchanged model twice costs nothing and a model that has trained since is re-encoded), and both describe
themselves through ``cache_key`` so that the trainer's run cache can tell evaluators apart.

    >>> from embedlessons.evaluators import RetrievalEvaluator
    >>> from embedlessons.retrieval import load_scifact
    >>> evaluator = RetrievalEvaluator(load_scifact(profile), profile)      # doctest: +SKIP
    >>> evaluator(model)                                                    # doctest: +SKIP
    {'scifact_ndcg@10': 0.66, 'scifact_mrr@10': 0.62, 'scifact_recall@100': 0.93}
"""
from __future__ import annotations

import hashlib
import json

import numpy as np

from .evaluation import mrr_at_k, ndcg_at_k, recall_at_k, spearman
from .retrieval import dense_run

__all__ = ["STSEvaluator", "RetrievalEvaluator"]


def _digest(obj) -> str:
    return hashlib.blake2b(json.dumps(obj, ensure_ascii=False, sort_keys=True).encode("utf-8"),
                           digest_size=12).hexdigest()


class STSEvaluator:
    """Spearman correlation between the cosine of each sentence pair and its gold score (STS-B style).

    Args:
        pairs: :class:`~embedlessons.data.ScoredPairs` (e.g. ``load_sts("stsb", "dev")``).
        max_length: token limit for the sentences.
        name: prefix of the metric name.
        batch_size: texts per forward pass when encoding.

    Returns (on call): ``{"<name>_spearman": rho}`` with rho in [-1, 1] (MTEB reports it x100).
    """

    def __init__(self, pairs, max_length: int = 64, name: str = "stsb", batch_size: int = 64):
        if len(pairs.sentences1) != len(pairs.sentences2) or len(pairs.sentences1) != len(pairs.scores):
            raise ValueError("pairs must have as many sentences1, sentences2 and scores")
        if len(pairs.scores) < 2:
            raise ValueError(f"need at least 2 scored pairs for a correlation, got {len(pairs.scores)}")
        self.pairs, self.max_length, self.name, self.batch_size = pairs, max_length, name, batch_size
        self.cache_key = ["STSEvaluator", name, max_length,
                          _digest([pairs.sentences1, pairs.sentences2, np.asarray(pairs.scores).tolist()])]

    def __call__(self, model) -> dict[str, float]:
        a = model.encode(self.pairs.sentences1, max_length=self.max_length, batch_size=self.batch_size,
                         progress=False)
        b = model.encode(self.pairs.sentences2, max_length=self.max_length, batch_size=self.batch_size,
                         progress=False)
        a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
        b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
        return {f"{self.name}_spearman": spearman((a * b).sum(axis=1), self.pairs.scores)}

    def __repr__(self) -> str:
        return f"STSEvaluator({self.name!r}, n={len(self.pairs.scores)}, max_length={self.max_length})"


class RetrievalEvaluator:
    """NDCG@k, MRR@k and Recall@100 of dense retrieval (dot product of normalised vectors) on a BEIR set.

    Args:
        ds: :class:`~embedlessons.data.RetrievalDataset` to search; pass ``load_scifact(profile)`` to
            evaluate at the profile's scale (CPU: relevant docs + 1,000 distractors; GPU: full corpus).
        profile: :class:`~embedlessons.profile.ScaleProfile`; gives the token limits and encoding batch size.
        k: cutoff of NDCG and MRR.
        name: prefix of the metric names.
        doc_max_length, query_max_length: override the profile's token limits (e.g. shorter documents to
            keep a CPU evaluation fast; say so wherever the number is reported).

    Returns (on call): ``{"<name>_ndcg@<k>", "<name>_mrr@<k>", "<name>_recall@100"}``.
    """

    def __init__(self, ds, profile, k: int = 10, name: str = "scifact", doc_max_length: int | None = None,
                 query_max_length: int | None = None):
        if not ds.queries or not ds.corpus:
            raise ValueError(f"the retrieval dataset is empty: {len(ds.queries)} queries, {len(ds.corpus)} docs")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        self.ds, self.profile, self.k, self.name = ds, profile, k, name
        self.doc_max_length = doc_max_length or profile.doc_max_length
        self.query_max_length = query_max_length or profile.query_max_length
        self.batch_size = profile.encode_batch_size
        self.cache_key = ["RetrievalEvaluator", name, k, self.doc_max_length, self.query_max_length,
                          _digest([ds.name, ds.split, ds.doc_ids, ds.queries, ds.qrels])]

    def __call__(self, model) -> dict[str, float]:
        queries = model.encode(list(self.ds.queries.values()), max_length=self.query_max_length,
                               batch_size=self.batch_size, progress=False)
        docs = model.encode(self.ds.doc_texts(), max_length=self.doc_max_length, batch_size=self.batch_size,
                            progress=False)
        run = dense_run(queries, docs, self.ds, top_k=max(100, self.k))
        qrels = self.ds.qrels
        return {f"{self.name}_ndcg@{self.k}": ndcg_at_k(qrels, run, k=self.k),
                f"{self.name}_mrr@{self.k}": mrr_at_k(qrels, run, k=self.k),
                f"{self.name}_recall@100": recall_at_k(qrels, run, k=100)}

    def __repr__(self) -> str:
        return (f"RetrievalEvaluator({self.name!r}, docs={len(self.ds.corpus)}, queries={len(self.ds.queries)}, "
                f"k={self.k}, doc_max_length={self.doc_max_length})")
