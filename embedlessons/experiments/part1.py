"""Part 1's recorded experiment: a cross-encoder trained on SciFact, as a reranker (1.2) and a teacher (3.2).

Section 1.2 compares retrieve-then-rerank pipelines. A trained cross-encoder is the reranker that normally
fills the second stage, and fine-tuning one on a CPU takes longer than a notebook may, so the training and
the pair scoring are one recorded experiment (:mod:`embedlessons.recorded`):

1. **train** (:mod:`embedlessons.reranking`): MiniLM's transformer with a fresh linear head on ``[CLS]``,
   on SciFact's training claims (every (claim, cited abstract) pair with label 1, plus ``negatives`` of the
   claim's top BM25 non-cited abstracts with label 0), binary cross-entropy, a few epochs;
2. **rerank**: on section 1.2's corpus (SciFact test, every relevant abstract plus 1,000 distractors, the
   CPU profile), score each claim's top-``depth`` candidates of BM25 and of MiniLM, and store every score;
3. **teacher**: on section 3.2's mining corpus (the training claims' cited abstracts plus 1,000
   distractors), score each claim's positives and its top-``teacher_depth`` MiniLM candidates.

Notebooks rebuild the reranked runs from the stored scores (:func:`recorded_scorer`), so their first
stages are computed live and checked against the recorded candidates: a pair that was not scored raises.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["CROSS_ENCODER_EXPERIMENT", "cross_encoder_comparison", "recorded_scorer"]

CROSS_ENCODER_EXPERIMENT = "cross_encoder_scifact"
#: Candidates scored beyond each cut (``depth``, ``teacher_depth``), for first stages that differ at a near-tie.
SCORE_MARGIN = 5


def _round(scores: np.ndarray) -> list[float]:
    return [round(float(s), 4) for s in scores]


def _score_candidates(cross, queries: Mapping[str, str], corpus: Mapping[str, str],
                      candidates: Mapping[str, Sequence[str]], batch_size: int, progress: bool, what: str
                      ) -> dict[str, dict[str, float]]:
    from ..reranking import score_pairs

    out: dict[str, dict[str, float]] = {}
    for i, (qid, doc_ids) in enumerate(candidates.items()):
        doc_ids = list(dict.fromkeys(doc_ids))
        scores = score_pairs(cross, [(queries[qid], corpus[d]) for d in doc_ids], batch_size=batch_size)
        out[qid] = dict(zip(doc_ids, _round(scores)))
        if progress and (i + 1) % 50 == 0:
            print(f"{what}: {i + 1}/{len(candidates)} queries scored", flush=True)
    return out


def cross_encoder_comparison(*, model: str = "all-MiniLM-L6-v2", negatives: int = 2, negative_depth: int = 30,
                             epochs: int = 1, batch_size: int = 16, lr: float = 2e-5, max_length: int = 128,
                             depth: int = 20, teacher_depth: int = 20, eval_distractors: int | None = 1000,
                             mining_distractors: int | None = 1000, query_max_length: int = 64,
                             doc_max_length: int = 128, max_rows: int | None = None, seed: int = 0,
                             progress: bool = True) -> dict:
    """Train a cross-encoder from ``model`` on SciFact's training claims; score rerank and teacher candidates.

    Args:
        model: the start (``"all-MiniLM-L6-v2"``; ``"small_bert"`` for the tiny CI run). Its bi-encoder also
            makes the dense first stage and the teacher candidates.
        negatives, negative_depth: label-0 examples per (claim, cited abstract) row, drawn from the claim's
            top-``negative_depth`` BM25 non-cited abstracts of the full training corpus.
        epochs, batch_size, lr: :func:`~embedlessons.reranking.train_cross_encoder` settings.
        max_length: token limit of a (claim, abstract) pair for the cross-encoder.
        depth: candidates per test claim taken from BM25 and from MiniLM (their union is scored).
        teacher_depth: MiniLM candidates per training claim scored for section 3.2 (0: none).
        eval_distractors, mining_distractors: the test and mining corpora (every relevant abstract plus this
            many random others, seed 0; None: the full corpus), as the CPU profile builds them.
        query_max_length, doc_max_length: the bi-encoder's token limits (the CPU profile's).
        max_rows: train on a seeded subset of rows (tiny runs).

    Returns a JSON-ready dict: ``settings``, ``per_query`` (NDCG@10 per test claim of BM25, MiniLM and both
    reranked by the cross-encoder), ``ndcg`` (their means), ``rerank_scores`` and ``teacher_scores``
    (``{query id: {doc id: logit}}``), ``train_loss`` (per step) and ``seconds``.
    """
    from ..evaluation import ndcg_at_k, rank_documents
    from ..lexical import bm25_run
    from ..models import CrossEncoder, load_model, model_folder
    from ..negatives import mine_bm25, mine_dense
    from ..reranking import labelled_pairs, train_cross_encoder
    from ..retrieval import dense_run, encode_retrieval, rerank
    from ..profile import ScaleProfile, get_profile
    from .part3 import evaluation_subset, training_pool, training_rows

    cpu = get_profile("cpu")
    profile = ScaleProfile("cpu", "cpu", doc_max_length=doc_max_length, query_max_length=query_max_length,
                           scifact_distractors=eval_distractors, encode_batch_size=cpu.encode_batch_size)
    seconds: dict[str, float] = {}
    with model_folder(model) as folder:
        bi_encoder = load_model(folder)
        cross = CrossEncoder(load_model(folder).transformer, bi_encoder.tokenizer, max_length=max_length, seed=seed)

    # 1. train
    started = time.perf_counter()
    train = training_pool(None)
    rows = training_rows(train, max_rows=max_rows, seed=seed)
    train_texts = dict(zip(train.doc_ids, train.doc_texts()))
    row_queries = {q: train.queries[q] for q, _ in rows}
    bm25_mined = mine_bm25(row_queries, train.doc_ids, train.doc_texts(), {q: train.qrels[q] for q in row_queries},
                           depth=negative_depth)
    examples = labelled_pairs(train.queries, train_texts, rows, bm25_mined.negatives(negative_depth),
                              negatives=negatives, seed=seed)
    losses = train_cross_encoder(cross, examples, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                                 progress=progress)
    seconds["train"] = round(time.perf_counter() - started, 1)

    # 2. rerank section 1.2's first stages
    started = time.perf_counter()
    test = evaluation_subset(eval_distractors, seed=0)
    test_texts = dict(zip(test.doc_ids, test.doc_texts()))
    q_vec, d_vec = encode_retrieval(bi_encoder, test, profile, progress=False)
    first = {"BM25": bm25_run(test.doc_texts(), test.doc_ids, test.queries, top_k=100),
             "MiniLM": dense_run(q_vec, d_vec, test)}
    # each run's shortlist as rerank() cuts it (trec_eval order), plus a margin: a notebook whose first stage
    # swaps two near-tied documents at the cut still finds every candidate scored
    keep = depth + SCORE_MARGIN
    candidates = {q: [d for run in first.values() for d in rank_documents(run[q])[:keep]] for q in test.queries}
    rerank_scores = _score_candidates(cross, test.queries, test_texts, candidates, 32, progress, "rerank")
    per_query = {}
    for name, run in first.items():
        per_query[name] = ndcg_at_k(test.qrels, run, k=10, per_query=True)
        reranked = rerank(run, lambda q, ids: [rerank_scores[q][d] for d in ids], depth=depth)
        per_query[f"{name} -> cross-encoder"] = ndcg_at_k(test.qrels, reranked, k=10, per_query=True)
    seconds["rerank"] = round(time.perf_counter() - started, 1)

    # 3. teacher scores for section 3.2's mined candidates
    started = time.perf_counter()
    teacher_scores: dict[str, dict[str, float]] = {}
    if teacher_depth:
        mining = train if mining_distractors is None else train.subset(mining_distractors, seed=0)
        mining_texts = dict(zip(mining.doc_ids, mining.doc_texts()))
        queries = {q: mining.queries[q] for q in mining.qrels if q in mining.queries}
        if max_rows is not None:
            queries = dict(list(queries.items())[:max(1, max_rows // 2)])
        mq_vec, md_vec = encode_retrieval(bi_encoder, mining, profile, progress=False)     # as section 3.2 does
        rows_of = {q: i for i, q in enumerate(mining.queries)}
        dense = mine_dense(queries, mining.doc_ids, {q: mining.qrels[q] for q in queries},
                           depth=teacher_depth + SCORE_MARGIN, query_vectors=mq_vec[[rows_of[q] for q in queries]],
                           doc_vectors=md_vec)
        wanted = {q: list(mining.qrels[q]) + list(dense.negatives()[q]) for q in queries}
        teacher_scores = _score_candidates(cross, queries, mining_texts, wanted, 32, progress, "teacher")
    seconds["teacher"] = round(time.perf_counter() - started, 1)

    settings = {"model": model, "negatives": negatives, "negative_depth": negative_depth, "epochs": epochs,
                "batch_size": batch_size, "lr": lr, "max_length": max_length, "depth": depth,
                "teacher_depth": teacher_depth, "eval_distractors": eval_distractors,
                "mining_distractors": mining_distractors, "query_max_length": query_max_length,
                "doc_max_length": doc_max_length, "max_rows": max_rows, "seed": seed,
                "training_rows": len(rows), "training_examples": len(examples), "test_claims": len(test.queries),
                "test_docs": len(test.doc_ids)}
    return {"settings": settings, "per_query": per_query,
            "ndcg": {k: round(float(np.mean(list(v.values()))), 4) for k, v in per_query.items()},
            "rerank_scores": rerank_scores, "teacher_scores": teacher_scores,
            "train_loss": [round(x, 4) for x in losses], "seconds": seconds}


def recorded_scorer(kind: str = "rerank", result: Mapping | None = None):
    """``score(query_id, doc_ids) -> np.ndarray`` reading the recorded cross-encoder logits.

    ``kind``: ``"rerank"`` (section 1.2's test candidates) or ``"teacher"`` (section 3.2's training
    candidates). A pair the recorded run did not score raises ``KeyError`` naming it, so a first stage that
    drifted from the recorded one cannot pass unnoticed.
    """
    from ..recorded import load_result

    if kind not in ("rerank", "teacher"):
        raise ValueError(f"kind must be 'rerank' or 'teacher', got {kind!r}")
    scores = (result if result is not None else load_result(CROSS_ENCODER_EXPERIMENT))[f"{kind}_scores"]

    def score(query_id: str, doc_ids: Sequence[str]) -> np.ndarray:
        known = scores.get(query_id)
        if known is None:
            raise KeyError(f"the recorded cross-encoder run scored no candidates of query {query_id!r}")
        missing = [d for d in doc_ids if d not in known]
        if missing:
            raise KeyError(f"the recorded cross-encoder run did not score query {query_id!r} with document(s) "
                           f"{missing[:3]}: the first stage differs from the recorded one (rerun "
                           f"`python -m embedlessons.experiments run {CROSS_ENCODER_EXPERIMENT}`)")
        return np.array([known[d] for d in doc_ids], dtype=np.float64)

    return score
