"""Part 3 checkers: Exercise 3 (BM25 scores), Exercise 4 (a dynamic hard-negative miner) and, from section
3.5's "more to try", the cross-encoder scorer that :class:`embedlessons.negatives.TeacherFilter` needs."""
from __future__ import annotations

import math
from collections import Counter
from typing import Callable, Sequence

import numpy as np

from .common import CheckResult

__all__ = ["check_bm25", "check_dense_miner", "check_teacher_scorer", "EXERCISE_3_CORPUS", "EXERCISE_3_QUERIES",
           "exercise_4_data", "StandInCrossEncoder"]

# ----------------------------------------------------------------------------- Exercise 3: BM25

# Built so that every usual slip changes the scores: documents of very different lengths, repeated
# terms, an empty document, "the" in more than half of the documents (negative idf, floored by
# rank-bm25), a term in exactly half ("cat": idf exactly 0, which rank-bm25 leaves at 0), a repeated
# query token and a query token that no document contains.
EXERCISE_3_CORPUS: list[list[str]] = [
    "the cat sat on the mat".split(),
    "the dog chased the cat around the garden and the cat ran up the tree".split(),
    "a bird sang".split(),
    "the the the market fell as investors sold shares of the bank".split(),
    [],
    "the cat".split(),
    "dogs and cats and birds in the garden".split(),
    "cat food prices rose in the market this week as the cat food supply fell".split(),
    "the end".split(),
    "bird watching in the garden at dawn with a cat".split(),
]
EXERCISE_3_QUERIES: list[tuple[list[str], float, float]] = [
    ("the cat in the garden".split(), 1.5, 0.75),
    ("cat food market cat unicorn".split(), 1.2, 0.5),  # other k1 and b: they must not be hard-coded
]


def _bm25_variant(corpus: Sequence[Sequence[str]], query: Sequence[str], k1: float, b: float,
                  idf_kind: str = "okapi", floor: str = "epsilon-mean", length: str = "tokens",
                  avgdl_kind: str = "all", tf_form: str = "right",
                  query_repeats: bool = True, epsilon: float = 0.25) -> np.ndarray:
    """BM25Okapi as rank-bm25 computes it, or with one named slip (for diagnosis)."""
    n = len(corpus)
    df: Counter = Counter()
    for doc in corpus:
        df.update(set(doc))
    if idf_kind == "okapi":
        idf = {t: math.log(n - f + 0.5) - math.log(f + 0.5) for t, f in df.items()}
    elif idf_kind == "plain":
        idf = {t: math.log(n / f) for t, f in df.items()}
    else:  # "lucene"
        idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
    mean_idf = sum(idf.values()) / len(idf)
    for t, v in idf.items():
        if v < 0:
            idf[t] = {"epsilon-mean": epsilon * mean_idf, "zero": 0.0, "none": v, "epsilon": epsilon}[floor]
    lengths = [len(set(d)) if length == "distinct" else len(d) for d in corpus]
    if avgdl_kind == "all":
        avgdl = sum(len(d) for d in corpus) / n
    elif avgdl_kind == "non-empty":
        avgdl = sum(len(d) for d in corpus) / sum(1 for d in corpus if d)
    else:  # "distinct"
        avgdl = sum(len(set(d)) for d in corpus) / n
    terms = list(query) if query_repeats else list(dict.fromkeys(query))
    scores = np.zeros(n)
    for i, doc in enumerate(corpus):
        counts = Counter(doc)
        norm = 1 - b + b * lengths[i] / avgdl
        for t in terms:
            tf = counts.get(t, 0)
            if tf == 0 or t not in idf:
                continue
            if tf_form == "right":
                w = tf * (k1 + 1) / (tf + k1 * norm)
            elif tf_form == "no length normalisation":
                w = tf * (k1 + 1) / (tf + k1)
            elif tf_form == "k1 on tf":
                w = tf * (k1 + 1) / (k1 * tf + norm)
            else:  # "no k1 + 1"
                w = tf / (tf + k1 * norm)
            scores[i] += idf[t] * w
    return scores


BM25_MISTAKES: dict[str, dict] = {
    "no length normalisation: the denominator must be tf + k1 * (1 - b + b * |d| / avgdl)":
        {"tf_form": "no length normalisation"},
    "k1 multiplies the wrong term: it scales the length norm, tf + k1 * (1 - b + b * |d| / avgdl), not tf":
        {"tf_form": "k1 on tf"},
    "the numerator lacks the (k1 + 1) factor (the ranking is the same but the scores are not BM25's)":
        {"tf_form": "no k1 + 1"},
    "plain idf log(N / df): BM25Okapi uses log((N - df + 0.5) / (df + 0.5))": {"idf_kind": "plain"},
    "Lucene's idf log(1 + (N - df + 0.5) / (df + 0.5)): a valid BM25 variant, but rank-bm25's BM25Okapi uses "
    "log((N - df + 0.5) / (df + 0.5)) with a floor": {"idf_kind": "lucene"},
    "negative idf not floored: rank-bm25 replaces an idf < 0 (a term in more than half of the documents) "
    "by epsilon * (mean idf over the vocabulary)": {"floor": "none"},
    "negative idf clipped to 0: rank-bm25 replaces it by epsilon * (mean idf), not by 0": {"floor": "zero"},
    "negative idf replaced by epsilon itself: the floor is epsilon * (mean idf over the vocabulary)":
        {"floor": "epsilon"},
    "average document length wrong: empty documents count too (avgdl = total tokens / N, N = all documents)":
        {"avgdl_kind": "non-empty"},
    "average document length counted in distinct terms: |d| and avgdl count every token":
        {"avgdl_kind": "distinct"},
    "document length counted in distinct terms: |d| is the number of tokens, repeats included":
        {"length": "distinct"},
    "repeated query tokens counted once: rank-bm25 adds a term's contribution for every occurrence in the query":
        {"query_repeats": False},
}


def check_bm25(fn: Callable, rtol: float = 1e-6) -> CheckResult:
    """Exercise 3: ``fn(tokenized_corpus, query_tokens, k1=1.5, b=0.75) -> scores [N]``, equal to
    ``rank_bm25.BM25Okapi(tokenized_corpus, k1=k1, b=b).get_scores(query_tokens)``.

    Runs ``fn`` on :data:`EXERCISE_3_CORPUS` with two queries (the second with k1=1.2, b=0.5) and names
    the mistake when the scores match a known slip.
    """
    corpus = [list(d) for d in EXERCISE_3_CORPUS]
    outputs = []
    for query, k1, b in EXERCISE_3_QUERIES:
        try:
            out = fn([list(d) for d in corpus], list(query), k1=k1, b=b)
        except NotImplementedError:
            return CheckResult(False, "the function raises NotImplementedError: fill in the body")
        out = np.asarray(out, dtype=np.float64).reshape(-1) if np.ndim(out) <= 1 else np.asarray(out)
        if out.shape != (len(corpus),):
            return CheckResult(False, f"expected one score per document, shape ({len(corpus)},), got {out.shape}")
        if not np.isfinite(out).all():
            return CheckResult(False, "some scores are NaN or infinite: does an empty document divide by 0 (a "
                                      "document without the term scores 0)? Does df count occurrences instead "
                                      "of documents (then N - df + 0.5 can be negative)?")
        outputs.append(out)

    def matches(**variant) -> bool:
        return all(np.allclose(out, _bm25_variant(corpus, q, k1, b, **variant), rtol=rtol, atol=1e-9)
                   for out, (q, k1, b) in zip(outputs, EXERCISE_3_QUERIES))

    if matches():
        return CheckResult(True, "equal to rank-bm25's BM25Okapi, idf floor and all")
    q2, _, _ = EXERCISE_3_QUERIES[1]
    if np.allclose(outputs[0], _bm25_variant(corpus, EXERCISE_3_QUERIES[0][0], 1.5, 0.75), rtol=rtol, atol=1e-9) \
            and np.allclose(outputs[1], _bm25_variant(corpus, q2, 1.5, 0.75), rtol=rtol, atol=1e-9):
        return CheckResult(False, "k1 and b are ignored (hard-coded 1.5 and 0.75?): use the arguments")
    for mistake, variant in BM25_MISTAKES.items():
        if matches(**variant):
            return CheckResult(False, f"your scores match a common mistake: {mistake}")
    ref = _bm25_variant(corpus, EXERCISE_3_QUERIES[0][0], 1.5, 0.75)
    if np.argsort(-outputs[0], kind="stable").tolist() == np.argsort(-ref, kind="stable").tolist():
        hint = "the ranking of the first query is right but the scores differ"
    else:
        hint = "even the ranking of the first query differs"
    worst = max(float(np.abs(o - _bm25_variant(corpus, q, k1, b)).max())
                for o, (q, k1, b) in zip(outputs, EXERCISE_3_QUERIES))
    return CheckResult(False, f"the scores differ from BM25Okapi's ({hint}; largest difference {worst:.3g}); "
                              "check idf, its floor, the length normalisation and avgdl")


# ----------------------------------------------------------------------------- Exercise 4: dense miner

def exercise_4_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[set[int]]]:
    """Query vectors [6, 16], document vectors [60, 16] (unit length) and each query's positives (1 to 3
    documents, close to the query, so that a miner which keeps a positive shows it)."""
    rng = np.random.default_rng(seed)
    docs = rng.normal(size=(60, 16))
    positives = [{3}, {10, 41}, {7, 22, 55}, {30}, {5, 48}, {12, 13, 59}]
    queries = np.stack([docs[sorted(p)].mean(0) + 0.3 * rng.normal(size=16) for p in positives])
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return queries.astype(np.float32), docs.astype(np.float32), positives


def _reference_miner(q: np.ndarray, d: np.ndarray, positives: list[set[int]], k: int) -> list[list[int]]:
    scores = q @ d.T
    out = []
    for i, pos in enumerate(positives):
        order = [int(j) for j in np.argsort(-scores[i], kind="stable") if int(j) not in pos]
        out.append(order[:k])
    return out


def check_dense_miner(fn: Callable, k: int = 5) -> CheckResult:
    """Exercise 4: ``fn(query_vectors [Q, d], doc_vectors [N, d], positives: list[set[int]], k) -> list of Q
    lists of k document indices``, the k documents with the highest dot product with each query that
    are not among its positives, hardest first.

    Runs ``fn`` on :func:`exercise_4_data` (queries with 1, 2 and 3 positives) and names the mistake when
    it recognises one.
    """
    q, d, positives = exercise_4_data()
    try:
        out = fn(q.copy(), d.copy(), [set(p) for p in positives], k)
    except NotImplementedError:
        return CheckResult(False, "the function raises NotImplementedError: fill in the body")
    try:
        got = [[int(j) for j in row] for row in out]
    except (TypeError, ValueError):
        return CheckResult(False, "expected a list with one list of document indices (ints) per query")
    if len(got) != len(positives):
        return CheckResult(False, f"expected one list per query ({len(positives)}), got {len(got)}")
    right = _reference_miner(q, d, positives, k)
    if got == right:
        return CheckResult(True, "the k hardest non-positive documents, hardest first, for every query")
    scores = q @ d.T
    if any(len(row) < k for row in got):
        with_pos = [[int(j) for j in np.argsort(-scores[i], kind="stable")[:k] if int(j) not in positives[i]]
                    for i in range(len(positives))]
        if got == with_pos:
            return CheckResult(False, "fewer than k negatives: you took the top k and then removed the positives; "
                                      "search k + (number of positives) candidates before removing them")
        return CheckResult(False, f"every query needs exactly k={k} negatives; some lists are shorter")
    if any(len(row) != k for row in got):
        return CheckResult(False, f"every query needs exactly k={k} negatives; some lists are longer")
    if any(len(set(row)) != len(row) for row in got):
        return CheckResult(False, "a document appears twice in one query's negatives")
    if any(not 0 <= j < len(d) for row in got for j in row):
        return CheckResult(False, f"document indices must be in [0, {len(d)})")
    leaked = [i for i, row in enumerate(got) if set(row) & positives[i]]
    if leaked:
        multi = {i for i, p in enumerate(positives) if len(p) > 1}
        top_k = [[int(j) for j in np.argsort(-scores[i], kind="stable")[:k]] for i in range(len(positives))]
        if got == top_k:
            return CheckResult(False, "positives are not excluded: a labelled positive is returned as a negative "
                                      "(it is the closest document, so the loss would push the query away from "
                                      "its own answer)")
        if set(leaked) <= multi and all(len(set(got[i]) & positives[i]) <= len(positives[i]) - 1 for i in leaked):
            return CheckResult(False, "only one positive is excluded per query: queries with several positives "
                                      f"(here queries {sorted(leaked)}) still get the others as negatives; "
                                      "exclude every index in positives[i]")
        return CheckResult(False, f"queries {leaked} get one of their positives as a negative")
    if got == [row[::-1] for row in right]:
        return CheckResult(False, "the right documents in the wrong order: hardest (highest score) first")
    easiest = [[int(j) for j in np.argsort(scores[i], kind="stable") if int(j) not in positives[i]][:k]
               for i in range(len(positives))]
    if got == easiest:
        return CheckResult(False, "sorted ascending: these are the k *least* similar documents (the easiest "
                                  "negatives); sort by score descending")
    if [sorted(r) for r in got] == [sorted(r) for r in right]:
        return CheckResult(False, "the right documents, but not sorted hardest first")
    return CheckResult(False, "these are not the k highest-scoring non-positive documents (score = dot product "
                              "of query and document vectors)")


# ----------------------------------------------------------------------------- more to try: a teacher scorer

def _words(text: str) -> set[str]:
    return set(text.lower().split())


class StandInCrossEncoder:
    """Offline stand-in for ``sentence_transformers.CrossEncoder`` with its ``predict`` and ``rank`` calls.

    ``predict([(query, doc), ...]) -> np.ndarray`` of one score per pair: the share of the query's words that
    the document contains, plus a small length term. The score depends on the order within a pair (a
    swapped pair scores differently), so a wrapper that puts the document first shows it. Every call is
    recorded in ``calls``.
    """

    def __init__(self):
        self.calls: list[list[tuple[str, str]]] = []

    @staticmethod
    def pair_score(query: str, doc: str) -> float:
        q, d = _words(query), _words(doc)
        return len(q & d) / max(len(q), 1) + 0.01 * len(d)

    def predict(self, inputs, batch_size: int = 32, show_progress_bar: bool | None = None, **kwargs) -> np.ndarray:
        single = isinstance(inputs, (tuple, list)) and len(inputs) == 2 and all(isinstance(x, str) for x in inputs)
        pairs = [tuple(inputs)] if single else list(inputs)
        if not all(isinstance(p, (tuple, list)) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs):
            raise TypeError("CrossEncoder.predict expects a list of (query, document) pairs of strings")
        self.calls.append([tuple(p) for p in pairs])
        scores = np.array([self.pair_score(q, d) for q, d in pairs], dtype=np.float32)
        return scores[0] if single else scores

    def rank(self, query: str, documents, top_k: int | None = None, **kwargs) -> list[dict]:
        scores = self.predict([(query, d) for d in documents])
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [{"corpus_id": int(i), "score": float(scores[i])} for i in order]


_TEACHER_QUERIES = ["statins lower the risk of heart attacks in older adults",
                    "vitamin d deficiency is linked to bone fractures"]
_TEACHER_DOCS = ["statins reduce heart attacks",
                 "a large trial of statins in adults over seventy found fewer heart attacks and strokes",
                 "bone fractures in older adults with low vitamin d",
                 "heart",
                 "sleep and memory in adolescents: a cohort study of school performance"]


def check_teacher_scorer(make_scorer: Callable, rtol: float = 1e-5) -> CheckResult:
    """More to try, "a cross-encoder as the teacher": ``make_scorer(cross_encoder) -> scorer``, where
    ``scorer(query_text, doc_texts) -> scores [len(doc_texts)]`` in the order of ``doc_texts``, higher = more
    relevant, as :class:`~embedlessons.negatives.TeacherFilter` expects.

    Runs offline: ``make_scorer`` gets a :class:`StandInCrossEncoder` (the same ``predict`` and ``rank`` as
    sentence-transformers' ``CrossEncoder``); the scorer must return its ``predict`` scores of the (query,
    document) pairs, for two queries, and the checker names the mistake when it recognises one.
    """
    teacher = StandInCrossEncoder()
    try:
        scorer = make_scorer(teacher)
    except NotImplementedError:
        return CheckResult(False, "make_scorer raises NotImplementedError: fill in the body")
    if not callable(scorer):
        return CheckResult(False, f"make_scorer must return a function scorer(query, doc_texts), got {type(scorer).__name__}")
    docs = list(_TEACHER_DOCS)
    for query in _TEACHER_QUERIES:
        try:
            out = scorer(query, list(docs))
        except NotImplementedError:
            return CheckResult(False, "the scorer raises NotImplementedError: fill in the body")
        except TypeError as exc:
            return CheckResult(False, f"the scorer raised TypeError: {exc} (called as scorer(query_text, doc_texts))")
        try:
            got = np.asarray(out, dtype=np.float64).reshape(-1) if np.ndim(out) <= 1 else np.asarray(out, dtype=np.float64)
        except (TypeError, ValueError):
            return CheckResult(False, "the scorer must return numbers (one score per document), e.g. predict's array; "
                                      "rank() returns dicts")
        if got.shape != (len(docs),):
            return CheckResult(False, f"expected one score per document, shape ({len(docs)},), got {got.shape}")
        if not teacher.calls:
            return CheckResult(False, "the cross-encoder was never called: score the pairs with its predict")
        right = np.array([teacher.pair_score(query, d) for d in docs])
        close = lambda ref: np.allclose(got, ref, rtol=rtol, atol=1e-6)
        if close(right):
            continue
        if close(np.array([teacher.pair_score(d, query) for d in docs])):
            return CheckResult(False, "the pairs are (document, query): a cross-encoder expects (query, document), "
                                      "in the order it was trained on")
        if close(np.sort(right)[::-1]):
            return CheckResult(False, "the scores are in ranked order (as rank() returns them), not in the order of "
                                      "doc_texts: use predict, or put each score back at its corpus_id")
        if close(1 / (1 + np.exp(-right))):
            return CheckResult(False, "the scores went through a sigmoid: predict already applies the model's "
                                      "activation; return its scores as they are")
        other = [q for q in _TEACHER_QUERIES if q != query][0]
        if close(np.array([teacher.pair_score(other, d) for d in docs])):
            return CheckResult(False, "the scores belong to another query: use the query_text argument")
        return CheckResult(False, "the scores differ from the cross-encoder's predict on the (query, document) pairs")
    return CheckResult(True, f"one predict score per document, from (query, document) pairs, in the order of doc_texts "
                             f"({len(teacher.calls)} predict calls): ready for TeacherFilter(scorer, ...)")
