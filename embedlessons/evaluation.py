"""Retrieval and STS metrics, equal to trec_eval / pytrec_eval.

Data formats (the TREC dict format used by pytrec_eval, BEIR and ranx):

    qrels: dict[query_id, dict[doc_id, int]]     graded relevance judgements
    run:   dict[query_id, dict[doc_id, float]]   retrieval scores (higher = better)

Conventions, all copied from trec_eval 9.x (which pytrec_eval wraps), so that every
number here equals ``pytrec_eval.RelevanceEvaluator(qrels, {...}).evaluate(run)``:

* Ranking: documents are sorted by score, descending; ties are broken by document id,
  descending, comparing the ids as strings (trec_eval's ``comp_sim_docno``). So with
  equal scores "d9" ranks above "d10" and "b" above "a". Scores are compared as
  Python floats (C doubles).
* Relevance: a document is relevant when its grade is >= 1 (trec_eval's default
  ``relevance_level=1``); grade 0, negative grades and unjudged documents are
  non-relevant. This holds for recall, MRR, precision and MAP.
* nDCG (``ndcg_cut.k``): gain = the relevance grade itself (linear, not 2^rel - 1);
  discount = log2(rank + 1) with ranks starting at 1; the ideal DCG sorts all judged
  grades >= 1 of the query from the qrels (not only the retrieved ones).
* A query whose qrels hold no relevant document scores 0 on every metric (and is still
  averaged in), as in trec_eval.
* Which queries are averaged: pytrec_eval evaluates the queries present in *both* qrels
  and run, and BEIR averages over exactly those. Queries in the run but not in the
  qrels are always ignored. Queries in the qrels but missing from the run are a
  choice, made explicit with ``missing``:

    - ``"error"`` (default): raise ``ValueError``. When nothing is missing the result
      equals pytrec_eval's; when something is missing you learn it instead of
      silently averaging over fewer (maybe easier) queries.
    - ``"skip"``: pytrec_eval / BEIR behaviour, average over the common queries only.
    - ``"zero"``: a missing query counts as retrieving nothing (scores 0), like
      ``trec_eval -c``.

Every metric returns the mean over queries, or with ``per_query=True`` a dict
query_id -> value (for paired significance tests).
"""

from __future__ import annotations

import math
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np
from scipy import stats

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]
Missing = Literal["error", "skip", "zero"]

# -----------------------------------------------------------------------------
# input checks and ranking


def _check_k(k: int | None, name: str = "k") -> None:
    if k is None:
        return
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {k!r}")


def rank_documents(doc_scores: Mapping[str, float]) -> list[str]:
    """Doc ids of one query in trec_eval order: score descending, ties by doc id descending."""
    for doc_id, score in doc_scores.items():
        if math.isnan(score):
            raise ValueError(f"NaN score for document {doc_id!r}")
    return [d for d, _ in sorted(doc_scores.items(), key=lambda kv: (float(kv[1]), kv[0]), reverse=True)]


def _rankings(qrels: Qrels, run: Run, missing: Missing) -> dict[str, tuple[Mapping[str, int], list[str]]]:
    """query_id -> (judgements, ranked doc ids) for the queries to evaluate, in qrels order."""
    if not isinstance(qrels, Mapping) or not isinstance(run, Mapping):
        raise TypeError("qrels and run must be dicts: query_id -> {doc_id: value}")
    if len(qrels) == 0:
        raise ValueError("qrels is empty")
    if len(run) == 0:
        raise ValueError("run is empty")
    if missing not in ("error", "skip", "zero"):
        raise ValueError(f"missing must be 'error', 'skip' or 'zero', got {missing!r}")
    absent = [q for q in qrels if q not in run]
    if absent and missing == "error":
        raise ValueError(
            f"{len(absent)} of {len(qrels)} qrels queries are missing from the run (e.g. {absent[:3]}); "
            "pass missing='skip' (pytrec_eval/BEIR: average over common queries) or missing='zero'"
        )
    out = {}
    for q, rels in qrels.items():
        if q in run:
            out[q] = (rels, rank_documents(run[q]))
        elif missing == "zero":
            out[q] = (rels, [])
    if not out:
        raise ValueError("no query is in both qrels and run")
    return out


def _aggregate(values: dict[str, float], per_query: bool) -> float | dict[str, float]:
    return values if per_query else float(np.mean(list(values.values())))


# -----------------------------------------------------------------------------
# per-query metrics on one ranked list


def _num_rel(rels: Mapping[str, int]) -> int:
    return sum(1 for g in rels.values() if g >= 1)


def _ndcg(rels: Mapping[str, int], ranking: list[str], k: int) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranking[:k]) if rels.get(d, 0) > 0)
    ideal = sorted((g for g in rels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def _reciprocal_rank(rels: Mapping[str, int], ranking: list[str], k: int | None) -> float:
    for i, d in enumerate(ranking[:k]):
        if rels.get(d, 0) >= 1:
            return 1.0 / (i + 1)
    return 0.0


def _recall(rels: Mapping[str, int], ranking: list[str], k: int | None) -> float:
    n_rel = _num_rel(rels)
    if n_rel == 0:
        return 0.0
    return sum(1 for d in ranking[:k] if rels.get(d, 0) >= 1) / n_rel


def _precision(rels: Mapping[str, int], ranking: list[str], k: int) -> float:
    # trec_eval P.k: always divides by k, even when fewer than k docs were retrieved
    return sum(1 for d in ranking[:k] if rels.get(d, 0) >= 1) / k


def _average_precision(rels: Mapping[str, int], ranking: list[str], k: int | None) -> float:
    n_rel = _num_rel(rels)
    if n_rel == 0:
        return 0.0
    hits, total = 0, 0.0
    for i, d in enumerate(ranking[:k]):
        if rels.get(d, 0) >= 1:
            hits += 1
            total += hits / (i + 1)
    return total / n_rel  # divided by all relevant docs, retrieved or not


def _metric(fn, qrels: Qrels, run: Run, k: int | None, per_query: bool, missing: Missing):
    _check_k(k)
    values = {q: fn(rels, ranking, k) for q, (rels, ranking) in _rankings(qrels, run, missing).items()}
    return _aggregate(values, per_query)


# -----------------------------------------------------------------------------
# public metrics


def ndcg_at_k(qrels: Qrels, run: Run, k: int = 10, *, per_query: bool = False,
              missing: Missing = "error") -> float | dict[str, float]:
    """nDCG@k with linear gain (= grade) and log2(rank+1) discount; pytrec_eval ``ndcg_cut.k``."""
    return _metric(_ndcg, qrels, run, k, per_query, missing)


def mrr_at_k(qrels: Qrels, run: Run, k: int | None = 10, *, per_query: bool = False,
             missing: Missing = "error") -> float | dict[str, float]:
    """MRR@k: 1/rank of the first relevant doc (grade >= 1) in the top k, 0 if none.

    Equals pytrec_eval ``recip_rank`` on the run cut to its top k (pytrec_eval's own
    ``recip_rank`` has no cutoff).
    """
    return _metric(_reciprocal_rank, qrels, run, k, per_query, missing)


def recall_at_k(qrels: Qrels, run: Run, k: int = 100, *, per_query: bool = False,
                missing: Missing = "error") -> float | dict[str, float]:
    """Recall@k: relevant docs in the top k / all relevant docs in the qrels; pytrec_eval ``recall.k``."""
    return _metric(_recall, qrels, run, k, per_query, missing)


def precision_at_k(qrels: Qrels, run: Run, k: int = 10, *, per_query: bool = False,
                   missing: Missing = "error") -> float | dict[str, float]:
    """Precision@k: relevant docs in the top k / k; pytrec_eval ``P.k``."""
    return _metric(_precision, qrels, run, k, per_query, missing)


def average_precision(qrels: Qrels, run: Run, k: int | None = None, *, per_query: bool = False,
                      missing: Missing = "error") -> float | dict[str, float]:
    """(M)AP: mean of precision at each relevant retrieved doc, divided by all relevant docs.

    k=None uses the full ranking (pytrec_eval ``map``); an int k cuts it (``map_cut.k``).
    """
    return _metric(_average_precision, qrels, run, k, per_query, missing)


def evaluate_run(qrels: Qrels, run: Run, k_values: Sequence[int] = (1, 10, 100), *,
                 per_query: bool = False, missing: Missing = "error") -> dict:
    """All metrics at once: {"ndcg@k", "mrr@k", "recall@k", "precision@k" for k in k_values, "map"}.

    Sorts each query's run once. Values are means over queries, or with per_query=True
    dicts query_id -> value.
    """
    for k in k_values:
        _check_k(k, "k_values entries")
    ranked = _rankings(qrels, run, missing)
    metrics = {}
    for k in k_values:
        for name, fn in (("ndcg", _ndcg), ("mrr", _reciprocal_rank), ("recall", _recall), ("precision", _precision)):
            metrics[f"{name}@{k}"] = {q: fn(rels, ranking, k) for q, (rels, ranking) in ranked.items()}
    metrics["map"] = {q: _average_precision(rels, ranking, None) for q, (rels, ranking) in ranked.items()}
    return {name: _aggregate(values, per_query) for name, values in metrics.items()}


# -----------------------------------------------------------------------------
# dense scores -> run


def run_from_scores(scores, query_ids: Sequence[str], doc_ids: Sequence[str], top_k: int = 100,
                    exclude: Mapping[str, Iterable[str]] | None = None,
                    chunk_size: int = 1024) -> dict[str, dict[str, float]]:
    """Turn a score matrix into a run holding the top_k docs of each query.

    scores: array-like [n_queries, n_docs] (numpy, or a CPU torch tensor), higher = better.
    query_ids / doc_ids: labels of the rows / columns.
    exclude: optional query_id -> doc ids never to return (e.g. the query's own document).
    Selection uses np.argpartition (O(n_docs) per query). When several docs tie at the
    k-th score, the ones trec_eval would rank first (larger doc id) are kept, so the run
    agrees with the trec_eval tie rule used by the metrics above.
    """
    scores, query_ids, doc_ids = np.asarray(scores), list(query_ids), list(doc_ids)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D [n_queries, n_docs], got shape {scores.shape}")
    if scores.shape != (len(query_ids), len(doc_ids)):
        raise ValueError(f"scores has shape {scores.shape} but there are {len(query_ids)} query_ids "
                         f"and {len(doc_ids)} doc_ids")
    if scores.size == 0:
        raise ValueError("scores is empty")
    _check_k(top_k, "top_k")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    col = {d: j for j, d in enumerate(doc_ids)}
    if len(col) != len(doc_ids) or len(set(query_ids)) != len(query_ids):
        raise ValueError("query_ids and doc_ids must not contain duplicates")
    k = min(top_k, scores.shape[1])
    run: dict[str, dict[str, float]] = {}
    for start in range(0, scores.shape[0], chunk_size):
        block = scores[start:start + chunk_size].astype(np.float64)  # copy; exclusions are written into it
        qids = query_ids[start:start + chunk_size]
        banned = {}
        if exclude:
            for i, q in enumerate(qids):
                cols = [col[d] for d in exclude.get(q, ()) if d in col]
                if cols:
                    block[i, cols] = -np.inf
                    banned[i] = set(cols)
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(block, top, axis=1).min(axis=1)
        for i, q in enumerate(qids):
            row, idx = block[i], top[i]
            if k < block.shape[1] and np.count_nonzero(row >= kth[i]) > k:  # ties straddle the cutoff
                above = np.flatnonzero(row > kth[i])
                tied = sorted(np.flatnonzero(row == kth[i]), key=lambda j: doc_ids[j], reverse=True)
                idx = np.concatenate([above, np.array(tied[: k - len(above)], dtype=np.int64)])
            vals = row[idx].tolist()
            run[q] = {doc_ids[j]: v for j, v in zip(idx.tolist(), vals) if j not in banned.get(i, ())}
    return run


# -----------------------------------------------------------------------------
# STS


def _check_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(x) != len(y):
        raise ValueError(f"inputs have different lengths: {len(x)} vs {len(y)}")
    if len(x) < 2:
        raise ValueError("need at least 2 pairs to compute a correlation")
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("inputs contain NaN")
    if np.all(x == x[0]) or np.all(y == y[0]):
        raise ValueError("an input is constant; the correlation is undefined")
    return x, y


def spearman(x, y) -> float:
    """Spearman rank correlation of two equal-length 1-D sequences (scipy.stats.spearmanr, average ranks for ties)."""
    x, y = _check_pair(x, y)
    return float(stats.spearmanr(x, y).statistic)


def pearson(x, y) -> float:
    """Pearson linear correlation of two equal-length 1-D sequences (scipy.stats.pearsonr)."""
    x, y = _check_pair(x, y)
    return float(stats.pearsonr(x, y).statistic)


def evaluate_sts(predicted_similarities, gold_scores) -> dict[str, float]:
    """STS evaluation: {"spearman", "pearson"} between predicted similarities and gold scores.

    Correlations are in [-1, 1] (MTEB reports them x100). Spearman is the headline number.
    """
    return {"spearman": spearman(predicted_similarities, gold_scores),
            "pearson": pearson(predicted_similarities, gold_scores)}
