"""Evaluators: callables ``evaluator(model) -> dict[str, float]`` that :func:`embedlessons.training.train` runs
during and after training.

Both embed with ``model.encode`` (batched, length-sorted, cached by the model's fingerprint, so evaluating an
unchanged model twice costs nothing and a model that has trained since is re-encoded), and both describe
themselves through ``cache_key`` so that the trainer's run cache can tell evaluators apart.

Four task families, scored as MTEB scores them (Muennighoff et al. 2023): retrieval (NDCG@10), STS (Spearman
of cosines), classification (accuracy of a logistic regression on frozen embeddings) and clustering (V-measure
of k-means on embeddings).

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

__all__ = ["STSEvaluator", "RetrievalEvaluator", "ClassificationEvaluator", "ClusteringEvaluator",
           "logistic_regression_accuracy", "kmeans_v_measure"]


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def _check_labelled(x, y, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
    if x.ndim != 2:
        raise ValueError(f"{what}: embeddings must be 2-D [n, dim], got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{what}: need one label per embedding, got {len(x)} embeddings and labels of shape "
                         f"{y.shape}")
    if len(np.unique(y)) < 2:
        raise ValueError(f"{what}: need at least 2 distinct labels, got {np.unique(y).tolist()}")
    return x, y


def logistic_regression_accuracy(train_x, train_y, test_x, test_y, samples_per_label: int | None = 8,
                                 n_experiments: int = 10, seed: int = 0, max_iter: int = 100) -> dict:
    """Accuracy of a logistic regression fitted on frozen embeddings (MTEB's classification protocol).

    Each experiment draws ``samples_per_label`` training rows of every label (all rows: None), fits
    scikit-learn's ``LogisticRegression(max_iter=max_iter)`` and predicts the whole test set. The defaults
    (8 rows per label, 10 experiments, ``max_iter=100``) are those of ``mteb`` 2.x's ``AbsTaskClassification``.

    Args:
        train_x [n, d], train_y [n], test_x [m, d], test_y [m]: embeddings and integer labels.
        samples_per_label, n_experiments, seed: the training samples (experiment e uses seed + e).

    Returns:
        ``{"accuracy": mean over experiments, "std": their standard deviation, "runs": [accuracy of each],
        "correct": [m] share of experiments that got each test row right}`` (``correct`` pairs two models
        row by row for a paired test).
    """
    from sklearn.linear_model import LogisticRegression

    train_x, train_y = _check_labelled(train_x, train_y, "training set")
    test_x, test_y = _check_labelled(test_x, test_y, "test set")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"training and test embeddings differ in width: {train_x.shape[1]} vs {test_x.shape[1]}")
    if not isinstance(n_experiments, int) or n_experiments < 1:
        raise ValueError(f"n_experiments must be a positive int, got {n_experiments!r}")
    labels = np.unique(train_y)
    runs, correct = [], np.zeros(len(test_y))
    for e in range(n_experiments):
        rng = np.random.default_rng(seed + e)
        if samples_per_label is None:
            rows = np.arange(len(train_y))
        else:
            rows = np.concatenate([rng.permutation(np.flatnonzero(train_y == c))[:samples_per_label]
                                   for c in labels])
        clf = LogisticRegression(max_iter=max_iter)
        clf.fit(train_x[rows], train_y[rows])
        hit = clf.predict(test_x) == test_y
        runs.append(float(hit.mean()))
        correct += hit
    return {"accuracy": float(np.mean(runs)), "std": float(np.std(runs)), "runs": runs,
            "correct": (correct / n_experiments).tolist()}


def kmeans_v_measure(x, y, n_runs: int = 5, seed: int = 0, n_clusters: int | None = None) -> dict:
    """V-measure of k-means clusters of embeddings against the labels (MTEB's clustering protocol).

    k-means (scikit-learn, ``n_init=1``, k = the number of labels unless given) runs ``n_runs`` times with
    seeds ``seed, seed + 1, ...``; V-measure is the harmonic mean of homogeneity (each cluster holds one
    label) and completeness (each label sits in one cluster), from 0 to 1 (Rosenberg & Hirschberg 2007).
    ``mteb`` 2.x runs ``MiniBatchKMeans`` (``n_init=1``) on resamples of the set; full k-means here is
    deterministic for a given seed.

    Args:
        x [n, d]: embeddings (L2-normalised here, so k-means groups by cosine). y [n]: labels.

    Returns:
        ``{"v_measure": mean over runs, "std": their standard deviation, "runs": [V-measure of each]}``.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import v_measure_score

    x, y = _check_labelled(x, y, "clustering set")
    k = n_clusters or len(np.unique(y))
    if not isinstance(n_runs, int) or n_runs < 1:
        raise ValueError(f"n_runs must be a positive int, got {n_runs!r}")
    x = _normalised(x)
    runs = [float(v_measure_score(y, KMeans(n_clusters=k, n_init=1, random_state=seed + r).fit_predict(x)))
            for r in range(n_runs)]
    return {"v_measure": float(np.mean(runs)), "std": float(np.std(runs)), "runs": runs}


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


class ClassificationEvaluator:
    """Accuracy of a logistic regression on the model's frozen embeddings (see :func:`logistic_regression_accuracy`).

    Args:
        train, test: :class:`~embedlessons.data.LabelledTexts` (e.g. AG News train and test samples).
        max_length: token limit. name: metric prefix. samples_per_label, n_experiments, seed: as in
            :func:`logistic_regression_accuracy`.

    Returns (on call): ``{"<name>_accuracy": mean accuracy}``; :meth:`details` also gives the per-row scores.
    """

    def __init__(self, train, test, max_length: int = 64, name: str = "ag_news", samples_per_label: int | None = 8,
                 n_experiments: int = 10, seed: int = 0, batch_size: int = 64):
        for what, part in (("train", train), ("test", test)):
            if len(part.texts) != len(part.labels) or len(part.texts) == 0:
                raise ValueError(f"{what}: need a non-empty set with one label per text, got {len(part.texts)} "
                                 f"texts and {len(part.labels)} labels")
        self.train, self.test, self.max_length, self.name = train, test, max_length, name
        self.options = dict(samples_per_label=samples_per_label, n_experiments=n_experiments, seed=seed)
        self.batch_size = batch_size
        self.cache_key = ["ClassificationEvaluator", name, max_length, self.options,
                          _digest([train.texts, np.asarray(train.labels).tolist(), test.texts,
                                   np.asarray(test.labels).tolist()])]

    def details(self, model) -> dict:
        enc = lambda t: model.encode(t, max_length=self.max_length, batch_size=self.batch_size, progress=False)
        return logistic_regression_accuracy(enc(self.train.texts), self.train.labels, enc(self.test.texts),
                                            self.test.labels, **self.options)

    def __call__(self, model) -> dict[str, float]:
        return {f"{self.name}_accuracy": self.details(model)["accuracy"]}

    def __repr__(self) -> str:
        return f"ClassificationEvaluator({self.name!r}, train={len(self.train.texts)}, test={len(self.test.texts)})"


class ClusteringEvaluator:
    """V-measure of k-means on the model's embeddings (see :func:`kmeans_v_measure`).

    Args:
        texts: :class:`~embedlessons.data.LabelledTexts` to cluster (k = its number of labels).
        max_length, name, n_runs, seed: token limit, metric prefix and the k-means runs.

    Returns (on call): ``{"<name>_v_measure": mean V-measure}``; :meth:`details` also gives each run.
    """

    def __init__(self, texts, max_length: int = 64, name: str = "ag_news", n_runs: int = 5, seed: int = 0,
                 batch_size: int = 64):
        if len(texts.texts) != len(texts.labels) or len(texts.texts) == 0:
            raise ValueError(f"need a non-empty set with one label per text, got {len(texts.texts)} texts and "
                             f"{len(texts.labels)} labels")
        self.texts, self.max_length, self.name, self.batch_size = texts, max_length, name, batch_size
        self.options = dict(n_runs=n_runs, seed=seed)
        self.cache_key = ["ClusteringEvaluator", name, max_length, self.options,
                          _digest([texts.texts, np.asarray(texts.labels).tolist()])]

    def details(self, model) -> dict:
        x = model.encode(self.texts.texts, max_length=self.max_length, batch_size=self.batch_size, progress=False)
        return kmeans_v_measure(x, self.texts.labels, **self.options)

    def __call__(self, model) -> dict[str, float]:
        return {f"{self.name}_v_measure": self.details(model)["v_measure"]}

    def __repr__(self) -> str:
        return f"ClusteringEvaluator({self.name!r}, n={len(self.texts.texts)})"
