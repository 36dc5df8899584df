"""Lexical baselines: a tokenizer, vectorised Okapi BM25, and word overlap for STS.

BM25 follows Robertson & Zaragoza (2009), "The Probabilistic Relevance Framework: BM25
and Beyond", Foundations and Trends in IR 3(4). The exact variant, defaults and idf
floor are those of ``rank_bm25.BM25Okapi`` (rank-bm25 0.2.2), whose scores ours equal
to floating-point rounding. For a query q and a document d of length |d|:

    score(q, d) = sum over query tokens t (repeats count again) of
                  idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))

    idf(t) = log(N - n(t) + 0.5) - log(n(t) + 0.5)

N = number of documents (empty ones included), n(t) = documents containing t, avgdl =
mean document length in tokens. A term in more than half of the documents gets a negative
idf; rank-bm25 (and we) replace every negative idf by epsilon * mean idf, where the mean is
taken over the whole vocabulary *before* the replacement. Query tokens absent from the
corpus add nothing; a document without any query token scores 0. (Where rank-bm25 divides
0 by 0 -- k1 = 0, or b = 1 and an empty document -- it returns NaN; we return 0. That is
the only difference.)

rank-bm25 loops over query tokens and over every document in Python. Here the per
(term, document) weights are computed once into a sparse [vocab, n_docs] matrix W, and a
batch of queries becomes a sparse [n_queries, vocab] count matrix Q, so scoring is one
sparse product Q @ W.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from .evaluation import run_from_scores

_WORD = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens: ``re.findall(r"\\w+", text.lower())`` (punctuation dropped, Unicode-aware)."""
    if not isinstance(text, str):
        raise TypeError(f"tokenize expects a str, got {type(text).__name__}")
    return _WORD.findall(text.lower())


def _check_tokens(tokens, what: str) -> None:
    if isinstance(tokens, str) or not isinstance(tokens, (list, tuple)):
        raise TypeError(f"{what} must be a list of str tokens (use tokenize(text)), got {type(tokens).__name__}")
    if tokens and not isinstance(tokens[0], str):
        raise TypeError(f"{what} must contain str tokens, got {type(tokens[0]).__name__}")


class BM25:
    """Okapi BM25 over a sparse term-document matrix; scores equal ``rank_bm25.BM25Okapi``.

    tokenized_corpus: list of documents, each a list of str tokens (see ``tokenize``).
    k1 (term-frequency saturation), b (length normalisation), epsilon (idf floor as a
    fraction of the mean idf) have rank-bm25's defaults.
    """

    def __init__(self, tokenized_corpus: Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75,
                 epsilon: float = 0.25):
        if isinstance(tokenized_corpus, str) or not isinstance(tokenized_corpus, (list, tuple)):
            raise TypeError(f"tokenized_corpus must be a list of token lists, got {type(tokenized_corpus).__name__}")
        if len(tokenized_corpus) == 0:
            raise ValueError("tokenized_corpus is empty")
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"need k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1, self.b, self.epsilon = k1, b, epsilon

        # document-term counts, CSR [n_docs, vocab]
        self.vocab: dict[str, int] = {}
        indptr, indices, counts = [0], [], []
        for i, doc in enumerate(tokenized_corpus):
            _check_tokens(doc, f"document {i}")
            for term, c in Counter(doc).items():
                indices.append(self.vocab.setdefault(term, len(self.vocab)))
                counts.append(c)
            indptr.append(len(indices))
        if not self.vocab:
            raise ValueError("every document in tokenized_corpus is empty")
        self.n_docs = len(tokenized_corpus)
        self.doc_len = np.array([len(doc) for doc in tokenized_corpus], dtype=np.int64)
        self.avgdl = int(self.doc_len.sum()) / self.n_docs
        indices = np.array(indices, dtype=np.int64)
        tf = np.array(counts, dtype=np.int64)

        # idf per term, with rank-bm25's floor for negative values
        df = np.bincount(indices, minlength=len(self.vocab))
        idf = np.log(self.n_docs - df + 0.5) - np.log(df + 0.5)
        # mean idf as rank-bm25 computes it: a plain left-to-right sum (np.sum would sum pairwise)
        self.average_idf = float(np.cumsum(idf)[-1]) / len(idf)
        idf[idf < 0] = epsilon * self.average_idf
        self.idf = idf

        # weight of each (doc, term) entry; same operation order as rank-bm25
        dl = np.repeat(self.doc_len, np.diff(indptr))
        w = idf[indices] * (tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / self.avgdl)))
        doc_term = sp.csr_matrix((w, indices, np.array(indptr)), shape=(self.n_docs, len(self.vocab)))
        self.weights = doc_term.T.tocsr()  # [vocab, n_docs]

    def _query_matrix(self, queries_tokens: Sequence[Sequence[str]]) -> sp.csr_matrix:
        """Sparse [n_queries, vocab] matrix of query-token counts (unknown tokens dropped)."""
        if isinstance(queries_tokens, str) or not isinstance(queries_tokens, (list, tuple)):
            raise TypeError("queries_tokens must be a list of token lists")
        rows, cols = [], []
        for i, q in enumerate(queries_tokens):
            _check_tokens(q, f"query {i}")
            for t in q:
                j = self.vocab.get(t)
                if j is not None:
                    rows.append(i)
                    cols.append(j)
        data = np.ones(len(rows), dtype=np.float64)
        # duplicate (row, col) entries are summed -> token counts
        return sp.csr_matrix((data, (rows, cols)), shape=(len(queries_tokens), len(self.vocab)))

    def get_scores_batch(self, queries_tokens: Sequence[Sequence[str]]) -> np.ndarray:
        """BM25 scores of every document for a batch of tokenized queries: float64 [n_queries, n_docs]."""
        return (self._query_matrix(queries_tokens) @ self.weights).toarray()

    def get_scores(self, query_tokens: Sequence[str]) -> np.ndarray:
        """BM25 scores of every document for one tokenized query: float64 [n_docs]."""
        _check_tokens(query_tokens, "query_tokens")
        return self.get_scores_batch([query_tokens])[0]

    def search(self, queries_tokens: Sequence[Sequence[str]], top_k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-k documents per query: (indices int64 [n_queries, k], scores float64 [n_queries, k]).

        Rows are sorted by score, descending; equal scores go to the smaller document
        index (also at the cutoff). k = min(top_k, n_docs).
        """
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
        scores = self.get_scores_batch(queries_tokens)
        k = min(top_k, self.n_docs)
        idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(scores, idx, axis=1)
        order = np.lexsort((idx, -vals), axis=1)  # by score desc, then index asc
        idx = np.take_along_axis(idx, order, axis=1)
        # rows where docs tied at the k-th score straddle the cutoff: redo with a stable full sort
        kth = np.take_along_axis(scores, idx[:, -1:], axis=1)
        for r in np.flatnonzero((scores >= kth).sum(axis=1) > k):
            idx[r] = np.argsort(-scores[r], kind="stable")[:k]
        return idx, np.take_along_axis(scores, idx, axis=1)


def bm25_run(corpus_texts: Sequence[str], doc_ids: Sequence[str], queries: Mapping[str, str],
             top_k: int = 100, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25,
             batch_size: int = 512) -> dict[str, dict[str, float]]:
    """BM25 retrieval run {query_id: {doc_id: score}} keeping the top_k docs per query.

    corpus_texts[i] is the text of doc_ids[i] (for BEIR: title + " " + text); queries maps
    query id -> text. Texts are tokenized with ``tokenize``. Ties at the cutoff follow the
    trec_eval rule (see ``evaluation.run_from_scores``).
    """
    if len(corpus_texts) != len(doc_ids):
        raise ValueError(f"{len(corpus_texts)} corpus_texts but {len(doc_ids)} doc_ids")
    bm25 = BM25([tokenize(t) for t in corpus_texts], k1=k1, b=b, epsilon=epsilon)
    qids = list(queries)
    run: dict[str, dict[str, float]] = {}
    for start in range(0, len(qids), batch_size):
        batch = qids[start:start + batch_size]
        scores = bm25.get_scores_batch([tokenize(queries[q]) for q in batch])
        run.update(run_from_scores(scores, batch, doc_ids, top_k=top_k))
    return run


def word_overlap(a: str, b: str) -> float:
    """Jaccard overlap |A & B| / |A | B| of the token sets of two texts (0.0 if both are empty)."""
    sa, sb = set(tokenize(a)), set(tokenize(b))
    union = sa | sb
    return len(sa & sb) / len(union) if union else 0.0


def word_overlap_scores(list_a: Sequence[str], list_b: Sequence[str]) -> np.ndarray:
    """Pairwise ``word_overlap(list_a[i], list_b[i])``: float64 [n]."""
    if isinstance(list_a, str) or isinstance(list_b, str):
        raise TypeError("word_overlap_scores expects two lists of texts, not str")
    if len(list_a) != len(list_b):
        raise ValueError(f"lists have different lengths: {len(list_a)} vs {len(list_b)}")
    return np.array([word_overlap(a, b) for a, b in zip(list_a, list_b)], dtype=np.float64)


def word_overlap_matrix(queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
    """Jaccard overlap of every query with every document: float64 [n_queries, n_docs].

    Vectorised with binary sparse matrices: |A & B| = Q @ D.T and |A | B| = |A| + |B| - |A & B|.
    """
    if isinstance(queries, str) or isinstance(docs, str):
        raise TypeError("word_overlap_matrix expects two lists of texts, not str")
    vocab: dict[str, int] = {}

    def binary(texts: Sequence[str]) -> sp.csr_matrix:
        rows, cols = [], []
        for i, t in enumerate(texts):
            for tok in set(tokenize(t)):
                rows.append(i)
                cols.append(vocab.setdefault(tok, len(vocab)))
        return rows, cols

    qr, qc = binary(queries)
    dr, dc = binary(docs)
    q = sp.csr_matrix((np.ones(len(qr)), (qr, qc)), shape=(len(queries), len(vocab)))
    d = sp.csr_matrix((np.ones(len(dr)), (dr, dc)), shape=(len(docs), len(vocab)))
    inter = (q @ d.T).toarray()
    union = np.asarray(q.sum(1)) + np.asarray(d.sum(1)).T - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def bm25_pair_scores(list_a: Sequence[str], list_b: Sequence[str], batch_size: int = 512,
                     **bm25_kwargs) -> np.ndarray:
    """BM25 as a pair scorer for STS: the mean of score(a -> b) and score(b -> a), with the index
    built over every distinct sentence of both lists (so idf reflects the whole set). float64 [n]."""
    if isinstance(list_a, str) or isinstance(list_b, str):
        raise TypeError("bm25_pair_scores expects two lists of texts, not str")
    if len(list_a) != len(list_b):
        raise ValueError(f"lists have different lengths: {len(list_a)} vs {len(list_b)}")
    texts = sorted(set(list_a) | set(list_b))
    row = {t: i for i, t in enumerate(texts)}
    bm25 = BM25([tokenize(t) for t in texts], **bm25_kwargs)

    def directed(queries: Sequence[str], targets: Sequence[str]) -> np.ndarray:
        out = np.empty(len(queries))
        for s in range(0, len(queries), batch_size):
            q = queries[s:s + batch_size]
            cols = [row[t] for t in targets[s:s + batch_size]]
            out[s:s + len(q)] = bm25.get_scores_batch([tokenize(t) for t in q])[np.arange(len(q)), cols]
        return out

    return (directed(list_a, list_b) + directed(list_b, list_a)) / 2
