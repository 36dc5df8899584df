"""Hard-negative mining: candidates from BM25 or a dense model, false-negative filters, mixed sampling.

A *hard negative* for a query is a document the retriever scores high that is not labelled relevant.
Training against such documents teaches more than random ones (Karpukhin et al. 2020, DPR; Xiong et al.
2021, ANCE), but relevance labels are sparse: many top-ranked "negatives" are relevant documents nobody
judged (Qu et al. 2021, RocketQA). So mining is two steps:

1. **Mine** candidates per query: :func:`mine_bm25` (lexical, :class:`~embedlessons.lexical.BM25`),
   :func:`mine_dense` (a bi-encoder, exact NumPy search or a FAISS index), or :func:`random_negatives`.
   Positives are never candidates. Each candidate keeps its score and its rank among the non-positives
   (rank 1 = the hardest), and the positives' own scores are kept for the margin filters.
2. **Filter** likely false negatives with :func:`apply_filters` and any combination of
   :class:`RankWindow` (skip the top ranks), :class:`AbsoluteMargin`, :class:`RelativeMargin`
   (NV-Retriever's "TopK-PercPos", Moreira et al. 2024), :class:`MaxScore` and :class:`TeacherFilter`
   (a cross-encoder or larger model). The report says how many candidates each filter removed.

Multiple positives: the margin filters compare a candidate with the query's *weakest* positive (the
minimum positive score), so a kept negative scores below every labelled positive. This is the
conservative choice (it removes the most candidates); sentence-transformers' ``mine_hard_negatives``
makes the same choice.

:class:`MixedSampler` then draws, per training query, a fraction ``hard_ratio`` of negatives from the
mined pool and the rest at random, with a ratio that may follow a schedule over training steps.

Example::

    >>> ds = load_retrieval("scifact", "train")
    >>> mined = mine_bm25(ds.queries, ds.doc_ids, ds.doc_texts(), ds.qrels, depth=50)
    >>> kept, report = apply_filters(mined, [RankWindow(skip_top=2), RelativeMargin(0.05)])
    >>> print(report)                      # removed per filter
    >>> kept.negatives(k=4)                # {query_id: [doc_id, ...]} hardest first
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from .lexical import BM25, tokenize

__all__ = [
    "Candidate", "MinedNegatives", "normalize_positives", "mine_bm25", "mine_dense", "mine_from_scores",
    "random_negatives", "RankWindow", "AbsoluteMargin", "RelativeMargin", "MaxScore", "TeacherFilter",
    "FilterReport", "apply_filters", "MixedSampler", "linear_ramp",
]

Positives = Mapping[str, object]  # query_id -> {doc_id: relevance} (qrels) or an iterable of doc ids


class Candidate(NamedTuple):
    """One mined negative: its document, the miner's score, and its rank among the query's
    non-positive documents (1 = highest scored)."""

    doc_id: str
    score: float
    rank: int


@dataclass
class MinedNegatives:
    """Negative candidates per query, hardest first, and the scores of the positives.

    Attributes:
        method: ``"bm25"``, ``"dense"``, ``"random"`` ... (for reports).
        candidates: query_id -> candidates sorted by rank (positives never appear).
        positive_scores: query_id -> {positive doc_id: score} by the same scorer (NaN for random).
        depth: how many candidates per query the miner was asked for.
    """

    method: str
    candidates: dict[str, list[Candidate]]
    positive_scores: dict[str, dict[str, float]]
    depth: int

    @property
    def query_ids(self) -> list[str]:
        return list(self.candidates)

    def __len__(self) -> int:
        return len(self.candidates)

    def n_candidates(self) -> int:
        """Total number of candidates over all queries."""
        return sum(len(c) for c in self.candidates.values())

    def negatives(self, k: int | None = None) -> dict[str, list[str]]:
        """query_id -> the (up to) ``k`` best-ranked negative doc ids (all when ``k`` is None)."""
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
            raise ValueError(f"k must be an integer >= 1 or None, got {k!r}")
        return {q: [c.doc_id for c in cands[:k]] for q, cands in self.candidates.items()}

    def reference_score(self, query_id: str) -> float:
        """The margin reference of a query: the minimum score of its positives."""
        pos = self.positive_scores.get(query_id, {})
        if not pos:
            raise ValueError(f"query {query_id!r} has no positive, so a margin filter has no reference score")
        return min(pos.values())

    def scores(self) -> np.ndarray:
        """Every candidate's score, flattened: float64 [n_candidates]."""
        return np.array([c.score for cands in self.candidates.values() for c in cands], dtype=np.float64)

    def subset(self, query_ids: Iterable[str]) -> MinedNegatives:
        """The same mining restricted to ``query_ids`` (which must all be present)."""
        query_ids = list(query_ids)
        unknown = [q for q in query_ids if q not in self.candidates]
        if unknown:
            raise ValueError(f"{len(unknown)} query id(s) not mined, e.g. {unknown[:3]}")
        return MinedNegatives(self.method, {q: list(self.candidates[q]) for q in query_ids},
                              {q: dict(self.positive_scores.get(q, {})) for q in query_ids}, self.depth)

    def __repr__(self) -> str:
        return (f"MinedNegatives({self.method!r}, queries={len(self)}, candidates={self.n_candidates()}, "
                f"depth={self.depth})")


# ----------------------------------------------------------------------------- input checks


def normalize_positives(positives: Positives, query_ids: Sequence[str] | None = None,
                        min_relevance: int = 1) -> dict[str, list[str]]:
    """query_id -> list of positive doc ids (input order, no duplicates).

    ``positives`` may be qrels (``{qid: {doc_id: grade}}``, a grade >= ``min_relevance`` is positive)
    or ``{qid: iterable of doc ids}``. With ``query_ids``, the result has exactly those keys (a query
    missing from ``positives`` gets an empty list) and it is an error if no query has a positive.
    """
    if not isinstance(positives, Mapping):
        raise TypeError(f"positives must be a dict query_id -> doc ids (or qrels), got {type(positives).__name__}")
    out: dict[str, list[str]] = {}
    for qid, docs in positives.items():
        if isinstance(docs, Mapping):
            ids = [d for d, g in docs.items() if g >= min_relevance]
        elif isinstance(docs, str):
            raise TypeError(f"positives[{qid!r}] is a str; give a list/set of doc ids (or {{doc_id: grade}})")
        else:
            ids = list(docs)
        out[qid] = list(dict.fromkeys(ids))
    if query_ids is None:
        return out
    if query_ids and not any(out.get(q) for q in query_ids):
        raise ValueError("no query has a positive: do the ids of `positives` match those of `queries`? "
                         f"(e.g. queries {list(query_ids)[:3]}, positives {list(positives)[:3]})")
    return {q: out.get(q, []) for q in query_ids}


def _check_corpus(doc_ids: Sequence[str], doc_texts: Sequence[str] | None = None) -> dict[str, int]:
    if isinstance(doc_ids, str):
        raise TypeError("doc_ids must be a list of ids, not one str")
    if len(doc_ids) == 0:
        raise ValueError("the corpus is empty: no document to mine negatives from")
    row = {d: i for i, d in enumerate(doc_ids)}
    if len(row) != len(doc_ids):
        dup = [d for d in doc_ids if doc_ids.count(d) > 1][:3] if len(doc_ids) < 10_000 else "..."
        raise ValueError(f"doc_ids contains duplicates (e.g. {dup})")
    if doc_texts is not None and len(doc_texts) != len(doc_ids):
        raise ValueError(f"{len(doc_texts)} doc_texts but {len(doc_ids)} doc_ids")
    return row


def _check_positives_in_corpus(pos: Mapping[str, list[str]], row: Mapping[str, int]) -> None:
    missing = [(q, d) for q, ds in pos.items() for d in ds if d not in row]
    if missing:
        raise ValueError(f"{len(missing)} positive doc id(s) are not in the corpus, e.g. "
                         f"{missing[:3]} (query, doc); pass the full corpus or drop those qrels")


def _check_depth(depth: int, n_docs: int, pos: Mapping[str, list[str]], what: str = "depth") -> None:
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {depth!r}")
    q, n_pos = max(pos.items(), key=lambda kv: len(kv[1]), default=(None, []))
    available = n_docs - len(n_pos)
    if depth > available:
        raise ValueError(f"{what}={depth} negatives asked for, but the corpus has {n_docs} documents and "
                         f"query {q!r} has {len(n_pos)} positive(s), so at most {available} negatives exist")


def _query_ids(queries) -> list[str]:
    if isinstance(queries, Mapping):
        return list(queries)
    if isinstance(queries, str):
        raise TypeError("queries must be a dict query_id -> text (or a list of query ids)")
    return list(queries)


def _topk_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices [Q, k] of each row's k largest scores; ties go to the smaller index (deterministic)."""
    k = min(k, scores.shape[1])
    idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, idx, axis=1)
    idx = np.take_along_axis(idx, np.lexsort((idx, -vals), axis=1), axis=1)
    kth = np.take_along_axis(scores, idx[:, -1:], axis=1)
    for r in np.flatnonzero((scores >= kth).sum(axis=1) > k):  # ties straddling the cutoff
        idx[r] = np.argsort(-scores[r], kind="stable")[:k]
    return idx


# ----------------------------------------------------------------------------- miners


def mine_from_scores(scores: np.ndarray, query_ids: Sequence[str], doc_ids: Sequence[str],
                     positives: Positives, depth: int = 100, method: str = "scores") -> MinedNegatives:
    """Mine from a full score matrix [n_queries, n_docs] (rows follow ``query_ids``, columns ``doc_ids``).

    The positives of each query are masked out, then the ``depth`` highest-scored documents become
    the candidates (ties: smaller column first). Used by :func:`mine_bm25` and :func:`mine_dense`.
    """
    scores = np.asarray(scores, dtype=np.float64)
    query_ids = list(query_ids)
    row = _check_corpus(doc_ids)
    if scores.shape != (len(query_ids), len(doc_ids)):
        raise ValueError(f"scores must be [n_queries={len(query_ids)}, n_docs={len(doc_ids)}], got {scores.shape}")
    pos = normalize_positives(positives, query_ids)
    _check_positives_in_corpus(pos, row)
    _check_depth(depth, len(doc_ids), pos)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    masked = scores.copy()
    for i, q in enumerate(query_ids):
        masked[i, [row[d] for d in pos[q]]] = -np.inf
    top = _topk_rows(masked, depth)
    candidates, positive_scores = {}, {}
    for i, q in enumerate(query_ids):
        candidates[q] = [Candidate(doc_ids[j], float(scores[i, j]), r) for r, j in enumerate(top[i], start=1)]
        positive_scores[q] = {d: float(scores[i, row[d]]) for d in pos[q]}
    return MinedNegatives(method, candidates, positive_scores, depth)


def mine_bm25(queries: Mapping[str, str], doc_ids: Sequence[str], doc_texts: Sequence[str],
              positives: Positives, depth: int = 100, *, k1: float = 1.5, b: float = 0.75,
              epsilon: float = 0.25, bm25: BM25 | None = None, batch_size: int = 512) -> MinedNegatives:
    """Static BM25 negatives: the ``depth`` best BM25 documents of each query that are not positives.

    Args:
        queries: query_id -> text (the training queries).
        doc_ids, doc_texts: the corpus (e.g. ``ds.doc_ids``, ``ds.doc_texts()``).
        positives: qrels ``{qid: {doc_id: grade}}`` or ``{qid: [doc_id, ...]}``.
        depth: candidates per query.
        k1, b, epsilon: BM25Okapi parameters (rank-bm25's defaults); or pass a built ``bm25`` index over
            ``[tokenize(t) for t in doc_texts]``.

    Returns:
        :class:`MinedNegatives` with BM25 scores (float64, equal to ``rank_bm25.BM25Okapi``).

    References: Robertson & Zaragoza (2009); DPR (Karpukhin et al. 2020) uses BM25 negatives.
    """
    if not isinstance(queries, Mapping):
        raise TypeError("queries must be a dict query_id -> text")
    row = _check_corpus(doc_ids, doc_texts)
    qids = list(queries)
    pos = normalize_positives(positives, qids)
    _check_positives_in_corpus(pos, row)
    _check_depth(depth, len(doc_ids), pos)
    if bm25 is None:
        bm25 = BM25([tokenize(t) for t in doc_texts], k1=k1, b=b, epsilon=epsilon)
    elif bm25.n_docs != len(doc_ids):
        raise ValueError(f"the bm25 index holds {bm25.n_docs} documents but doc_ids has {len(doc_ids)}")
    parts = []
    for start in range(0, len(qids), batch_size):
        batch = qids[start:start + batch_size]
        scores = bm25.get_scores_batch([tokenize(queries[q]) for q in batch])
        parts.append(mine_from_scores(scores, batch, doc_ids, {q: pos[q] for q in batch}, depth, "bm25"))
    return _concat(parts, "bm25", depth)


def _concat(parts: list[MinedNegatives], method: str, depth: int) -> MinedNegatives:
    cands, pos = {}, {}
    for p in parts:
        cands.update(p.candidates)
        pos.update(p.positive_scores)
    return MinedNegatives(method, cands, pos, depth)


def mine_dense(queries: Mapping[str, str] | Sequence[str], doc_ids: Sequence[str], positives: Positives,
               depth: int = 100, *, model=None, doc_texts: Sequence[str] | None = None,
               query_vectors: np.ndarray | None = None, doc_vectors: np.ndarray | None = None,
               index=None, query_max_length: int = 64, doc_max_length: int = 128, batch_size: int = 32,
               progress: bool = False) -> MinedNegatives:
    """Dense negatives: the ``depth`` documents closest to each query (dot product) that are not positives.

    Give either a ``model`` (a :class:`~embedlessons.models.BiEncoder`; ``queries`` must then map id ->
    text and ``doc_texts`` is needed) or precomputed ``query_vectors`` [n_queries, d] (rows in the order
    of ``queries``) and ``doc_vectors`` [n_docs, d] (rows in ``doc_ids`` order). Vectors from the
    model are L2-normalised, so scores are cosines.

    Search is exact (NumPy, the whole score matrix) unless ``index`` is a FAISS index built over
    ``doc_vectors`` in ``doc_ids`` order (see :mod:`embedlessons.indexing`); then the candidates are
    what the index returns for ``depth`` + (most positives of a query) neighbours, minus the
    positives, and an approximate index may return fewer than ``depth``. Positive scores are always
    exact dot products.

    References: ANCE (Xiong et al. 2021) mines with the model being trained; RocketQA (Qu et al.
    2021) shows that many such negatives are unlabelled positives.
    """
    qids = _query_ids(queries)
    row = _check_corpus(doc_ids, doc_texts)
    pos = normalize_positives(positives, qids)
    _check_positives_in_corpus(pos, row)
    _check_depth(depth, len(doc_ids), pos)
    if model is not None:
        if not isinstance(queries, Mapping):
            raise TypeError("with a model, queries must be a dict query_id -> text")
        if doc_texts is None and doc_vectors is None:
            raise ValueError("with a model, pass doc_texts (or precomputed doc_vectors)")
        if query_vectors is None:
            query_vectors = model.encode([queries[q] for q in qids], max_length=query_max_length,
                                         batch_size=batch_size, progress=progress, desc="queries")
        if doc_vectors is None:
            doc_vectors = model.encode(list(doc_texts), max_length=doc_max_length, batch_size=batch_size,
                                       progress=progress, desc="documents")
    if query_vectors is None or doc_vectors is None:
        raise ValueError("mine_dense needs a model (with query and doc texts) or query_vectors and doc_vectors")
    qv = np.ascontiguousarray(query_vectors, dtype=np.float32)
    dv = np.ascontiguousarray(doc_vectors, dtype=np.float32)
    if qv.ndim != 2 or dv.ndim != 2 or qv.shape[1] != dv.shape[1]:
        raise ValueError(f"query_vectors [Q, d] and doc_vectors [N, d] must share d, got {qv.shape} and {dv.shape}")
    if qv.shape[0] != len(qids) or dv.shape[0] != len(doc_ids):
        raise ValueError(f"got {qv.shape[0]} query vectors for {len(qids)} queries and {dv.shape[0]} doc "
                         f"vectors for {len(doc_ids)} documents")
    if index is None:
        parts = []
        for start in range(0, len(qids), 1024):
            batch = qids[start:start + 1024]
            scores = qv[start:start + len(batch)] @ dv.T
            parts.append(mine_from_scores(scores, batch, doc_ids, {q: pos[q] for q in batch}, depth, "dense"))
        return _concat(parts, "dense", depth)

    if index.ntotal != len(doc_ids) or index.d != dv.shape[1]:
        raise ValueError(f"the index holds {index.ntotal} vectors of dim {index.d}, expected "
                         f"{len(doc_ids)} of dim {dv.shape[1]} (built over doc_vectors?)")
    max_pos = max((len(p) for p in pos.values()), default=0)
    k = min(depth + max_pos, len(doc_ids))
    scores, ids = index.search(qv, k)
    candidates, positive_scores = {}, {}
    for i, q in enumerate(qids):
        excluded = {row[d] for d in pos[q]}
        kept = [(int(j), float(s)) for j, s in zip(ids[i], scores[i]) if j >= 0 and j not in excluded][:depth]
        candidates[q] = [Candidate(doc_ids[j], s, r) for r, (j, s) in enumerate(kept, start=1)]
        positive_scores[q] = {d: float(qv[i] @ dv[row[d]]) for d in pos[q]}
    return MinedNegatives("dense", candidates, positive_scores, depth)


def _rng(seed: int, *keys: object) -> np.random.Generator:
    """A generator that depends only on (seed, keys), not on call order or PYTHONHASHSEED."""
    return np.random.default_rng([seed] + [zlib.crc32(str(k).encode()) for k in keys])


def _draw_excluding(rng: np.random.Generator, n_docs: int, n: int, excluded: set[int]) -> list[int]:
    """``n`` distinct indices in [0, n_docs) not in ``excluded``, uniformly at random."""
    if n > n_docs - len(excluded):
        raise ValueError(f"cannot draw {n} negatives: the corpus has {n_docs} documents and "
                         f"{len(excluded)} are excluded (positives or already drawn)")
    if len(excluded) > n_docs // 2:  # mostly excluded: choose from the allowed list
        allowed = np.setdiff1d(np.arange(n_docs), np.fromiter(excluded, int, len(excluded)))
        return [int(i) for i in rng.choice(allowed, n, replace=False)]
    out: list[int] = []
    taken = set(excluded)
    while len(out) < n:
        for i in rng.integers(0, n_docs, size=2 * (n - len(out)) + 4):
            i = int(i)
            if i not in taken:
                taken.add(i)
                out.append(i)
                if len(out) == n:
                    break
    return out


def random_negatives(queries: Mapping[str, str] | Sequence[str], doc_ids: Sequence[str], positives: Positives,
                     n: int, seed: int = 0) -> MinedNegatives:
    """``n`` uniformly random non-positive documents per query (no repeats), the baseline of DPR's
    Table 3. Scores are NaN (no scorer was involved); ranks are the draw order. Deterministic: a
    query's draw depends only on ``seed`` and its id."""
    qids = _query_ids(queries)
    row = _check_corpus(doc_ids)
    pos = normalize_positives(positives, qids)
    _check_positives_in_corpus(pos, row)
    _check_depth(n, len(doc_ids), pos, what="n")
    cands, pscores = {}, {}
    for q in qids:
        drawn = _draw_excluding(_rng(seed, q), len(doc_ids), n, {row[d] for d in pos[q]})
        cands[q] = [Candidate(doc_ids[j], math.nan, r) for r, j in enumerate(drawn, start=1)]
        pscores[q] = {d: math.nan for d in pos[q]}
    return MinedNegatives("random", cands, pscores, n)


# ----------------------------------------------------------------------------- filters
# A filter is called per query with its candidates and positive scores and returns a keep-mask.


def _need_scores(name: str, cands: list[Candidate]) -> np.ndarray:
    s = np.array([c.score for c in cands], dtype=np.float64)
    if np.isnan(s).any():
        raise ValueError(f"{name} needs scores, but these candidates have none (random negatives?)")
    return s


@dataclass(frozen=True)
class RankWindow:
    """Keep candidates with ``skip_top < rank <= max_rank`` (ranks among non-positives, from 1).

    Skipping the very top is the cheapest false-negative guard (e.g. RocketQA and many BGE recipes
    sample from ranks beyond the first few); ``max_rank`` stops negatives from getting easy.
    """

    skip_top: int = 0
    max_rank: int | None = None

    def __post_init__(self):
        if self.skip_top < 0:
            raise ValueError(f"skip_top must be >= 0, got {self.skip_top}")
        if self.max_rank is not None and self.max_rank <= self.skip_top:
            raise ValueError(f"max_rank ({self.max_rank}) must be > skip_top ({self.skip_top})")

    @property
    def name(self) -> str:
        hi = "" if self.max_rank is None else f", up to rank {self.max_rank}"
        return f"rank window (skip top {self.skip_top}{hi})"

    def __call__(self, query_id: str, cands: list[Candidate], mined: MinedNegatives) -> np.ndarray:
        r = np.array([c.rank for c in cands])
        hi = np.inf if self.max_rank is None else self.max_rank
        return (r > self.skip_top) & (r <= hi)


@dataclass(frozen=True)
class AbsoluteMargin:
    """Keep a candidate only if ``score < ref - margin``, ref = the query's minimum positive score."""

    margin: float

    def __post_init__(self):
        if not self.margin >= 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")

    @property
    def name(self) -> str:
        return f"absolute margin {self.margin:g}"

    def __call__(self, query_id, cands, mined) -> np.ndarray:
        return _need_scores(self.name, cands) < mined.reference_score(query_id) - self.margin


@dataclass(frozen=True)
class RelativeMargin:
    """Keep a candidate only if ``score < ref - |ref| * margin`` (ref = minimum positive score).

    For ref >= 0 this is ``score < ref * (1 - margin)``: with margin 0.05 a negative may reach 95% of
    the positive's score, NV-Retriever's best setting "TopK-PercPos" (Moreira et al. 2024) and
    sentence-transformers' ``relative_margin``. Using ``|ref|`` keeps the rule meaningful when the
    positive's score is negative (the threshold then stays *below* the positive).
    """

    margin: float

    def __post_init__(self):
        if not 0 <= self.margin < 1:
            raise ValueError(f"relative margin must be in [0, 1), got {self.margin}")

    @property
    def name(self) -> str:
        return f"relative margin {self.margin:g}"

    def __call__(self, query_id, cands, mined) -> np.ndarray:
        ref = mined.reference_score(query_id)
        return _need_scores(self.name, cands) < ref - abs(ref) * self.margin


@dataclass(frozen=True)
class MaxScore:
    """Keep candidates with ``score <= max_score`` (an absolute ceiling, e.g. a near-duplicate cosine)."""

    max_score: float

    @property
    def name(self) -> str:
        return f"max score {self.max_score:g}"

    def __call__(self, query_id, cands, mined) -> np.ndarray:
        return _need_scores(self.name, cands) <= self.max_score


@dataclass(frozen=True)
class TeacherFilter:
    """Ask a stronger scorer (a cross-encoder, a larger bi-encoder) and drop what it calls relevant.

    Args:
        scorer: ``scorer(query_text, doc_texts) -> scores [len(doc_texts)]``, higher = more relevant
            (e.g. ``CrossEncoder.score`` or a function over a larger model's embeddings).
        queries: query_id -> text; corpus: doc_id -> text (positives included, for ``margin``).
        threshold: drop candidates whose teacher score is ``>= threshold``.
        margin: also drop candidates whose teacher score is ``>= (teacher's minimum positive score) -
            margin``. At least one of ``threshold`` and ``margin`` is needed.

    RocketQA (Qu et al. 2021) denoises hard negatives with a cross-encoder in this way.
    """

    scorer: Callable[[str, list[str]], object]
    queries: Mapping[str, str]
    corpus: Mapping[str, str]
    threshold: float | None = None
    margin: float | None = None
    label: str = "teacher"

    def __post_init__(self):
        if self.threshold is None and self.margin is None:
            raise ValueError("TeacherFilter needs a threshold, a margin, or both")
        if not callable(self.scorer):
            raise TypeError("scorer must be callable(query_text, doc_texts) -> scores")

    @property
    def name(self) -> str:
        parts = ([f"score >= {self.threshold:g}"] if self.threshold is not None else []) + \
                ([f"within {self.margin:g} of the positive"] if self.margin is not None else [])
        return f"{self.label} ({', '.join(parts)})"

    def _score(self, query_id: str, doc_ids: list[str]) -> np.ndarray:
        if query_id not in self.queries:
            raise ValueError(f"TeacherFilter: query {query_id!r} is not in its queries mapping")
        missing = [d for d in doc_ids if d not in self.corpus]
        if missing:
            raise ValueError(f"TeacherFilter: doc id(s) {missing[:3]} are not in its corpus mapping")
        s = np.asarray(self.scorer(self.queries[query_id], [self.corpus[d] for d in doc_ids]), dtype=np.float64)
        if s.shape != (len(doc_ids),):
            raise ValueError(f"the teacher returned shape {s.shape} for {len(doc_ids)} documents")
        return s

    def __call__(self, query_id, cands, mined) -> np.ndarray:
        t = self._score(query_id, [c.doc_id for c in cands])
        keep = np.ones(len(cands), dtype=bool)
        if self.threshold is not None:
            keep &= t < self.threshold
        if self.margin is not None:
            pos = list(mined.positive_scores.get(query_id, {}))
            if not pos:
                raise ValueError(f"query {query_id!r} has no positive, so the teacher margin has no reference")
            keep &= t < self._score(query_id, pos).min() - self.margin
        return keep


Filter = Callable[[str, list[Candidate], MinedNegatives], np.ndarray]


@dataclass
class FilterReport:
    """What :func:`apply_filters` removed.

    Attributes:
        before, after: candidates before and after all filters.
        removed: filter name -> candidates it removed (each filter sees what the previous ones kept).
        removed_ids: filter name -> {query_id: [removed doc ids]} (to inspect what a filter caught).
        queries_emptied: queries left with no candidate.
    """

    before: int
    after: int
    removed: dict[str, int] = field(default_factory=dict)
    removed_ids: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    queries_emptied: int = 0

    def rows(self) -> list[dict]:
        """One row per filter (for :func:`embedlessons.book.show_table`)."""
        rows, left = [], self.before
        for name, n in self.removed.items():
            left -= n
            rows.append({"filter": name, "removed": n, "left": left})
        return rows

    def __str__(self) -> str:
        lines = [f"{self.before} candidates"] + [f"  - {r['filter']}: removed {r['removed']}, {r['left']} left"
                                                 for r in self.rows()]
        return "\n".join(lines + [f"{self.after} kept; {self.queries_emptied} queries left without a negative"])


def apply_filters(mined: MinedNegatives, filters: Sequence[Filter]) -> tuple[MinedNegatives, FilterReport]:
    """Apply ``filters`` in order, per query; return the kept candidates (ranks unchanged) and a report.

    Positives are never candidates (the miners exclude them), so no filter can turn one into a
    negative. Put cheap filters first: a :class:`TeacherFilter` only scores what earlier filters kept.
    """
    if not isinstance(mined, MinedNegatives):
        raise TypeError(f"apply_filters expects MinedNegatives, got {type(mined).__name__}")
    filters = list(filters)
    names = [getattr(f, "name", getattr(f, "__name__", type(f).__name__)) for f in filters]
    if len(set(names)) != len(names):
        names = [f"{i + 1}. {n}" for i, n in enumerate(names)]
    report = FilterReport(before=mined.n_candidates(), after=0, removed={n: 0 for n in names},
                          removed_ids={n: {} for n in names})
    kept_all = {}
    for q, cands in mined.candidates.items():
        cands = list(cands)
        for f, name in zip(filters, names):
            if not cands:
                break
            keep = np.asarray(f(q, cands, mined), dtype=bool)
            if keep.shape != (len(cands),):
                raise ValueError(f"filter {name!r} returned a mask of shape {keep.shape} for {len(cands)} candidates")
            gone = [c.doc_id for c, k in zip(cands, keep) if not k]
            if gone:
                report.removed[name] += len(gone)
                report.removed_ids[name][q] = gone
            cands = [c for c, k in zip(cands, keep) if k]
        kept_all[q] = cands
        report.queries_emptied += not cands
    report.after = sum(len(c) for c in kept_all.values())
    out = MinedNegatives(mined.method, kept_all, {q: dict(p) for q, p in mined.positive_scores.items()}, mined.depth)
    return out, report


# ----------------------------------------------------------------------------- mixing hard and random


def linear_ramp(start: float, end: float, steps: int, warmup: int = 0) -> Callable[[int], float]:
    """A schedule ``step -> ratio``: ``start`` until ``warmup``, then linear to ``end`` at ``warmup + steps``,
    then ``end`` (e.g. start with random negatives and make them harder, a curriculum)."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    for v in (start, end):
        if not 0 <= v <= 1:
            raise ValueError(f"ratios must be in [0, 1], got {v}")

    def ratio(step: int) -> float:
        t = min(max((step - warmup) / steps, 0.0), 1.0)
        return start + (end - start) * t

    ratio.__qualname__ = f"linear_ramp({start}, {end}, {steps}, warmup={warmup})"
    return ratio


class MixedSampler:
    """Negatives per query: a fraction ``hard_ratio`` from the mined pool, the rest uniformly random.

    Args:
        mined: the hard pool (:class:`MinedNegatives`, typically after :func:`apply_filters`).
        doc_ids: the corpus the random negatives come from.
        positives: qrels or ``{qid: [doc_id, ...]}``; positives are never drawn.
        hard_ratio: a float in [0, 1] or a schedule ``step -> ratio`` (see :func:`linear_ramp`).
        hard_pool: draw hard negatives from the best ``hard_pool`` candidates (all when None).
        hard_strategy: ``"random"`` (uniform within the pool) or ``"top"`` (best-ranked first).
        seed: the draws depend only on (seed, query id, step), so they are reproducible in any order.

    With ``n`` negatives and ratio ``r``, ``floor(r * n)`` are hard, plus one more with probability
    ``frac(r * n)``: the expected share is exactly ``r`` even for ``n = 1``. A query whose pool is too
    small gets random negatives for the missing hard ones.
    """

    def __init__(self, mined: MinedNegatives, doc_ids: Sequence[str], positives: Positives,
                 hard_ratio: float | Callable[[int], float] = 0.5, hard_pool: int | None = None,
                 hard_strategy: str = "random", seed: int = 0):
        self.row = _check_corpus(doc_ids)
        self.doc_ids = list(doc_ids)
        self.positives = normalize_positives(positives, mined.query_ids)
        _check_positives_in_corpus(self.positives, self.row)
        unknown = [c.doc_id for cs in mined.candidates.values() for c in cs if c.doc_id not in self.row]
        if unknown:
            raise ValueError(f"{len(unknown)} mined doc id(s) are not in doc_ids, e.g. {unknown[:3]}")
        if hard_strategy not in ("random", "top"):
            raise ValueError(f"hard_strategy must be 'random' or 'top', got {hard_strategy!r}")
        if hard_pool is not None and hard_pool < 1:
            raise ValueError(f"hard_pool must be >= 1 or None, got {hard_pool}")
        if not callable(hard_ratio) and not 0 <= hard_ratio <= 1:
            raise ValueError(f"hard_ratio must be in [0, 1] or a schedule step -> ratio, got {hard_ratio}")
        self.mined, self.hard_ratio, self.hard_pool = mined, hard_ratio, hard_pool
        self.hard_strategy, self.seed = hard_strategy, seed

    def ratio(self, step: int = 0) -> float:
        r = float(self.hard_ratio(step)) if callable(self.hard_ratio) else float(self.hard_ratio)
        if not 0 <= r <= 1:
            raise ValueError(f"the hard_ratio schedule gave {r} at step {step}; it must be in [0, 1]")
        return r

    def sample(self, query_id: str, n: int, step: int = 0) -> list[str]:
        """``n`` distinct negative doc ids for ``query_id`` at training ``step``: hard ones first."""
        if query_id not in self.mined.candidates:
            raise ValueError(f"query {query_id!r} was not mined")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        excluded = {self.row[d] for d in self.positives[query_id]}
        if n > len(self.doc_ids) - len(excluded):
            raise ValueError(f"{n} negatives asked for, but the corpus has {len(self.doc_ids)} documents and "
                             f"query {query_id!r} has {len(excluded)} positive(s)")
        rng = _rng(self.seed, query_id, step)
        exact = self.ratio(step) * n
        n_hard = int(math.floor(exact)) + int(rng.random() < exact - math.floor(exact))
        pool = [self.row[c.doc_id] for c in self.mined.candidates[query_id][:self.hard_pool]]
        pool = [j for j in pool if j not in excluded]
        n_hard = min(n_hard, len(pool))
        if self.hard_strategy == "top":
            hard = pool[:n_hard]
        else:
            hard = [pool[i] for i in sorted(rng.choice(len(pool), n_hard, replace=False))] if n_hard else []
        rand = _draw_excluding(rng, len(self.doc_ids), n - n_hard, excluded | set(hard))
        return [self.doc_ids[j] for j in hard + rand]

    def sample_many(self, query_ids: Sequence[str], n: int, step: int = 0) -> list[list[str]]:
        """:meth:`sample` for each query id."""
        return [self.sample(q, n, step) for q in query_ids]

    def __repr__(self) -> str:
        ratio = getattr(self.hard_ratio, "__qualname__", None) if callable(self.hard_ratio) else self.hard_ratio
        return (f"MixedSampler({self.mined.method}, hard_ratio={ratio}, hard_pool={self.hard_pool}, "
                f"hard_strategy={self.hard_strategy!r}, seed={self.seed})")
