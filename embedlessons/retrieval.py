"""Dense retrieval over a BEIR-style dataset, and retrieve-then-rerank.

A bi-encoder embeds the corpus once; a query is then one forward pass plus a matrix product
(Karpukhin et al. 2020, DPR). A reranker rescores only the first stage's top candidates
(Nogueira & Cho 2019).
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from .data import RetrievalDataset, load_retrieval
from .evaluation import rank_documents, run_from_scores
from .profile import ScaleProfile

__all__ = ["load_scifact", "encode_retrieval", "dense_run", "rerank", "reciprocal_rank_fusion"]


def load_scifact(profile: ScaleProfile, split: str = "test") -> RetrievalDataset:
    """SciFact at the profile's scale: the full corpus, or every relevant doc + N random distractors."""
    ds = load_retrieval("scifact", split=split)
    return ds if profile.scifact_distractors is None else ds.subset(profile.scifact_distractors, seed=0)


def encode_retrieval(model, ds: RetrievalDataset, profile: ScaleProfile,
                     progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Embed the queries [n_queries, d] (in ``ds.queries`` order) and documents [n_docs, d] (in
    ``ds.doc_ids`` order, title + " " + text) at the profile's token limits. Uses the embedding cache."""
    queries = model.encode(list(ds.queries.values()), max_length=profile.query_max_length,
                           batch_size=profile.encode_batch_size, progress=progress, desc="queries")
    docs = model.encode(ds.doc_texts(), max_length=profile.doc_max_length,
                        batch_size=profile.encode_batch_size, progress=progress, desc="documents")
    return queries, docs


def dense_run(query_vectors: np.ndarray, doc_vectors: np.ndarray, ds: RetrievalDataset,
              top_k: int = 100) -> dict[str, dict[str, float]]:
    """Dot-product search (cosine for normalised vectors): run {query_id: {doc_id: score}}."""
    if query_vectors.shape[1] != doc_vectors.shape[1]:
        raise ValueError(f"query and document vectors differ in dimension: {query_vectors.shape[1]} "
                         f"vs {doc_vectors.shape[1]}")
    return run_from_scores(query_vectors @ doc_vectors.T, list(ds.queries), ds.doc_ids, top_k=top_k)


def rerank(first_stage: Mapping[str, Mapping[str, float]], score_fn: Callable[[str, list[str]], np.ndarray],
           depth: int = 100) -> dict[str, dict[str, float]]:
    """Rescore each query's top-``depth`` candidates with ``score_fn(query_id, doc_ids) -> scores``.

    Candidates below ``depth`` are dropped, so the reranked run is a reordering of the shortlist.
    """
    out = {}
    for qid, docs in first_stage.items():
        shortlist = rank_documents(docs)[:depth]
        scores = np.asarray(score_fn(qid, shortlist), dtype=np.float64)
        if scores.shape != (len(shortlist),):
            raise ValueError(f"score_fn returned shape {scores.shape} for {len(shortlist)} candidates")
        out[qid] = dict(zip(shortlist, scores.tolist()))
    return out


def reciprocal_rank_fusion(runs: list[Mapping[str, Mapping[str, float]]], k: int = 60,
                           top_k: int = 100) -> dict[str, dict[str, float]]:
    """Fuse runs by reciprocal rank (Cormack, Clarke & Buettcher 2009): score(d) = sum_r 1 / (k + rank_r(d)),
    ranks from 1 in trec_eval order. Uses ranks only, so runs with incomparable score scales (BM25
    scores, cosines) combine without normalisation. Keeps the top_k fused documents per query."""
    if not runs:
        raise ValueError("need at least one run to fuse")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    fused: dict[str, dict[str, float]] = {}
    for qid in set().union(*runs):
        scores: dict[str, float] = {}
        for run in runs:
            docs = run.get(qid, {})
            for rank, doc in enumerate(rank_documents(docs), start=1):
                scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
        fused[qid] = dict(sorted(scores.items(), key=lambda kv: -kv[1])[:top_k])
    return fused

