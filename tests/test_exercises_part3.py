"""Exercise 3 (BM25) and Exercise 4 (dense hard-negative miner) checkers accept right answers and name
each common wrong one."""
import math
from collections import Counter

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from embedlessons.exercises.part3 import (BM25_MISTAKES, EXERCISE_3_CORPUS, EXERCISE_3_QUERIES, _bm25_variant,
                                          check_bm25, check_dense_miner, exercise_4_data)
from embedlessons.lexical import BM25


# ----------------------------------------------------------------------------- Exercise 3

def rank_bm25_answer(corpus, query, k1=1.5, b=0.75):
    return BM25Okapi(corpus, k1=k1, b=b).get_scores(query)


def handwritten_answer(corpus, query, k1=1.5, b=0.75):
    """A reader's loop-based solution."""
    n = len(corpus)
    df = Counter(t for doc in corpus for t in set(doc))
    idf = {t: math.log(n - f + 0.5) - math.log(f + 0.5) for t, f in df.items()}
    floor = 0.25 * sum(idf.values()) / len(idf)
    idf = {t: (floor if v < 0 else v) for t, v in idf.items()}
    avgdl = sum(map(len, corpus)) / n
    scores = []
    for doc in corpus:
        tf = Counter(doc)
        s = 0.0
        for t in query:
            if tf[t]:
                s += idf[t] * tf[t] * (k1 + 1) / (tf[t] + k1 * (1 - b + b * len(doc) / avgdl))
        scores.append(s)
    return scores


@pytest.mark.parametrize("answer", [rank_bm25_answer, handwritten_answer,
                                    lambda c, q, k1=1.5, b=0.75: BM25(c, k1=k1, b=b).get_scores(q)])
def test_right_answers_pass(answer):
    result = check_bm25(answer)
    assert result.passed, result.message


def test_reference_equals_rank_bm25_on_the_exercise_corpus():
    for query, k1, b in EXERCISE_3_QUERIES:
        assert _bm25_variant(EXERCISE_3_CORPUS, query, k1, b) == pytest.approx(
            rank_bm25_answer(EXERCISE_3_CORPUS, query, k1, b), rel=1e-12, abs=1e-12)


def test_every_mistake_changes_the_scores():
    """Each named slip gives scores different from the right ones and from every other slip."""
    def outputs(**variant):
        return np.concatenate([_bm25_variant(EXERCISE_3_CORPUS, q, k1, b, **variant)
                               for q, k1, b in EXERCISE_3_QUERIES])
    variants = {"right": outputs(), **{m: outputs(**v) for m, v in BM25_MISTAKES.items()}}
    names = list(variants)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not np.allclose(variants[a], variants[b], rtol=1e-6, atol=1e-9), (a, b)


@pytest.mark.parametrize("mistake", list(BM25_MISTAKES))
def test_each_mistake_is_named(mistake):
    variant = BM25_MISTAKES[mistake]
    result = check_bm25(lambda c, q, k1=1.5, b=0.75: _bm25_variant(c, q, k1, b, **variant))
    assert not result.passed
    assert mistake in result.message


@pytest.mark.parametrize("answer, diagnosis", [
    (lambda c, q, k1=1.5, b=0.75: rank_bm25_answer(c, q), "k1 and b are ignored"),
    (lambda c, q, k1=1.5, b=0.75: np.array(rank_bm25_answer(c, q, k1, b)) * 1.01, "scores differ"),
    (lambda c, q, k1=1.5, b=0.75: [1.0, 2.0], "one score per document"),
    (lambda c, q, k1=1.5, b=0.75: np.full(len(c), np.nan), "NaN"),
])
def test_other_wrong_answers(answer, diagnosis):
    result = check_bm25(answer)
    assert not result.passed and diagnosis in result.message, result.message


def test_stub_is_reported():
    def stub(corpus, query, k1=1.5, b=0.75):
        raise NotImplementedError
    assert "NotImplementedError" in check_bm25(stub).message


# ----------------------------------------------------------------------------- Exercise 4

def right_miner(q, d, positives, k):
    scores = q @ d.T
    out = []
    for i, pos in enumerate(positives):
        s = scores[i].copy()
        s[list(pos)] = -np.inf
        out.append(np.argsort(-s)[:k].tolist())
    return out


def torch_miner(q, d, positives, k):
    import torch

    scores = torch.from_numpy(q) @ torch.from_numpy(d).T
    for i, pos in enumerate(positives):
        scores[i, list(pos)] = float("-inf")
    return scores.topk(k, dim=1).indices.tolist()


def no_exclusion(q, d, positives, k):
    return np.argsort(-(q @ d.T), axis=1)[:, :k].tolist()


def ascending(q, d, positives, k):
    s = q @ d.T
    return [[int(j) for j in np.argsort(s[i]) if int(j) not in pos][:k] for i, pos in enumerate(positives)]


def reversed_order(q, d, positives, k):
    return [row[::-1] for row in right_miner(q, d, positives, k)]


def topk_then_remove(q, d, positives, k):
    top = np.argsort(-(q @ d.T), axis=1)[:, :k]
    return [[int(j) for j in row if int(j) not in pos] for row, pos in zip(top, positives)]


def first_positive_only(q, d, positives, k):
    s = q @ d.T
    out = []
    for i, pos in enumerate(positives):
        first = sorted(pos)[0]   # e.g. a reader who stored one positive id per query
        out.append([int(j) for j in np.argsort(-s[i]) if int(j) != first][:k])
    return out


@pytest.mark.parametrize("answer", [right_miner, torch_miner])
def test_dense_miner_right_answers_pass(answer):
    result = check_dense_miner(answer)
    assert result.passed, result.message


def test_exercise_4_data_makes_mistakes_visible():
    q, d, positives = exercise_4_data()
    assert sorted(len(p) for p in positives) == [1, 1, 2, 2, 3, 3]
    # the positives really are near the top, so a miner that keeps them shows it
    top5 = np.argsort(-(q @ d.T), axis=1)[:, :5]
    assert all(set(row) & p for row, p in zip(top5.tolist(), positives))
    # multi-positive queries have a positive other than the smallest id in their top 5 + |positives|
    assert any(set(row[:5 + len(p)]) & (p - {min(p)}) for row, p in zip(top5.tolist(), positives) if len(p) > 1)


@pytest.mark.parametrize("answer, diagnosis", [
    (no_exclusion, "positives are not excluded"),
    (ascending, "sorted ascending"),
    (reversed_order, "wrong order"),
    (topk_then_remove, "fewer than k"),
    (first_positive_only, "only one positive is excluded"),
    (lambda q, d, p, k: [row[:k - 1] for row in right_miner(q, d, p, k)], "exactly k=5"),
    (lambda q, d, p, k: [[row[0]] * k for row in right_miner(q, d, p, k)], "appears twice"),
    (lambda q, d, p, k: right_miner(q, d, p, k)[:3], "one list per query"),
    (lambda q, d, p, k: [sorted(r) for r in right_miner(q, d, p, k)], "not sorted hardest first"),
    (lambda q, d, p, k: right_miner(q[::-1], d, p, k), "not the k highest-scoring"),
])
def test_dense_miner_mistakes_are_named(answer, diagnosis):
    result = check_dense_miner(answer)
    assert not result.passed and diagnosis in result.message, result.message


def test_dense_miner_stub():
    def stub(q, d, positives, k):
        raise NotImplementedError
    assert "NotImplementedError" in check_dense_miner(stub).message


# ----------------------------------------------------------------------------- more to try: teacher scorer

from embedlessons.exercises.part3 import StandInCrossEncoder, check_teacher_scorer  # noqa: E402
from embedlessons.negatives import TeacherFilter  # noqa: E402


def wrap_predict(cross_encoder):
    return lambda query, docs: cross_encoder.predict([(query, d) for d in docs])


def wrap_rank_reordered(cross_encoder):
    def scorer(query, docs):
        scores = np.zeros(len(docs))
        for hit in cross_encoder.rank(query, docs):
            scores[hit["corpus_id"]] = hit["score"]
        return scores
    return scorer


@pytest.mark.parametrize("make_scorer", [wrap_predict, wrap_rank_reordered,
                                         lambda ce: lambda q, docs: [float(ce.predict((q, d))) for d in docs]])
def test_teacher_scorer_right_answers_pass(make_scorer):
    result = check_teacher_scorer(make_scorer)
    assert result.passed, result.message


def test_a_passing_scorer_works_in_teacher_filter():
    queries = {"q": "statins lower heart attacks"}
    corpus = {"d1": "statins lower heart attacks", "d2": "sleep and memory"}
    f = TeacherFilter(wrap_predict(StandInCrossEncoder()), queries, corpus, threshold=0.5)
    expected = [StandInCrossEncoder.pair_score(queries["q"], corpus[d]) for d in ("d1", "d2")]
    assert f._score("q", ["d1", "d2"]).tolist() == pytest.approx(expected, rel=1e-6)


def _stub(ce):
    raise NotImplementedError


@pytest.mark.parametrize("make_scorer, diagnosis", [
    (lambda ce: lambda q, docs: ce.predict([(d, q) for d in docs]), "(document, query)"),
    (lambda ce: lambda q, docs: [h["score"] for h in ce.rank(q, docs)], "ranked order"),
    (lambda ce: lambda q, docs: 1 / (1 + np.exp(-ce.predict([(q, d) for d in docs]))), "sigmoid"),
    (lambda ce: lambda q, docs: ce.predict([("statins lower the risk of heart attacks in older adults", d)
                                            for d in docs]), "another query"),
    (lambda ce: lambda q, docs: np.zeros(len(docs)), "never called"),
    (lambda ce: lambda q, docs: ce.predict([(q, d) for d in docs])[:-1], "one score per document"),
    (lambda ce: lambda q, docs: ce.predict([q] + docs), "TypeError"),
    (lambda ce: lambda q, docs: ce.rank(q, docs), "numbers"),
    (lambda ce: None, "must return a function"),
    (_stub, "NotImplementedError"),
    (lambda ce: lambda q, docs: ce.predict([(q, d) for d in docs]) * 2, "differ"),
])
def test_teacher_scorer_mistakes_are_named(make_scorer, diagnosis):
    result = check_teacher_scorer(make_scorer)
    assert not result.passed and diagnosis in result.message, result.message


def test_stand_in_scores_depend_on_pair_order():
    ce = StandInCrossEncoder()
    assert ce.predict([("a b c", "a")])[0] != ce.predict([("a", "a b c")])[0]
    with pytest.raises(TypeError, match="pairs"):
        ce.predict(["just a string", "and another", "and a third"])
