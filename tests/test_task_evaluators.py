"""Classification and clustering scores of embeddings: equal to scikit-learn run by hand, right on clear
cases, per-row scores that pair two models, and clear errors."""
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import v_measure_score

from embedlessons.data import LabelledTexts
from embedlessons.evaluators import (ClassificationEvaluator, ClusteringEvaluator, kmeans_v_measure,
                                     logistic_regression_accuracy)


def blobs(n_per_class=30, n_classes=4, dim=8, spread=0.3, seed=0):
    """Points around 4 fixed centres (the same for every seed: seed 0 trains, seed 1 tests)."""
    centres = np.random.default_rng(99).normal(size=(n_classes, dim)) * 3
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    return centres[y] + spread * rng.normal(size=(len(y), dim)), y


def test_accuracy_equals_sklearn_on_the_same_sample():
    x, y = blobs(spread=3.0)                                   # overlapping classes: accuracy well below 1
    tx, ty = blobs(spread=3.0, seed=1)
    out = logistic_regression_accuracy(x, y, tx, ty, samples_per_label=8, n_experiments=3, seed=5)
    for e, acc in enumerate(out["runs"]):                      # experiment e: 8 rows per label, seed 5 + e
        rng = np.random.default_rng(5 + e)
        rows = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:8] for c in range(4)])
        expected = (LogisticRegression(max_iter=100).fit(x[rows], y[rows]).predict(tx) == ty).mean()
        assert acc == pytest.approx(expected)
    assert out["accuracy"] == pytest.approx(np.mean(out["runs"])) and 0.3 < out["accuracy"] < 0.95
    assert np.mean(out["correct"]) == pytest.approx(out["accuracy"])          # per-row shares average to it
    assert len(out["correct"]) == len(ty) and set(np.round(np.array(out["correct"]) * 3)) <= {0, 1, 2, 3}
    everything = logistic_regression_accuracy(x, y, tx, ty, samples_per_label=None, n_experiments=1)
    assert everything["accuracy"] == pytest.approx((LogisticRegression(max_iter=100).fit(x, y).predict(tx)
                                                    == ty).mean())


def test_separable_classes_are_classified_and_clustered_perfectly_and_noise_is_not():
    x, y = blobs()
    tx, ty = blobs(seed=1)
    assert logistic_regression_accuracy(x, y, tx, ty)["accuracy"] == 1.0
    assert kmeans_v_measure(tx, ty, n_runs=3)["v_measure"] == pytest.approx(1.0)
    noise = np.random.default_rng(2).normal(size=tx.shape)
    assert kmeans_v_measure(noise, ty, n_runs=3)["v_measure"] < 0.2
    assert logistic_regression_accuracy(x, y, noise, ty)["accuracy"] < 0.45       # chance is 0.25


def test_v_measure_equals_sklearn_kmeans_on_normalised_vectors():
    x, y = blobs(spread=2.5)
    out = kmeans_v_measure(x, y, n_runs=2, seed=3)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    for r, v in enumerate(out["runs"]):
        assert v == pytest.approx(v_measure_score(y, KMeans(4, n_init=1, random_state=3 + r).fit_predict(unit)))
    assert out["v_measure"] == pytest.approx(np.mean(out["runs"]))
    assert kmeans_v_measure(x, y, n_runs=2, seed=3) == out                         # seeded


@pytest.mark.parametrize("call, message", [
    (lambda x, y: logistic_regression_accuracy(x[0], y, x, y), r"training set: embeddings must be 2-D"),
    (lambda x, y: logistic_regression_accuracy(x, y[:-1], x, y), r"training set: need one label per embedding"),
    (lambda x, y: logistic_regression_accuracy(x, y, x[:, :3], y), r"differ in width: 8 vs 3"),
    (lambda x, y: logistic_regression_accuracy(x, np.zeros_like(y), x, y), r"at least 2 distinct labels"),
    (lambda x, y: logistic_regression_accuracy(x, y, x, y, n_experiments=0), r"n_experiments must be"),
    (lambda x, y: kmeans_v_measure(x, y, n_runs=0), r"n_runs must be a positive int"),
    (lambda x, y: kmeans_v_measure(x, y[:5]), r"clustering set: need one label per embedding"),
])
def test_bad_input_gets_a_clear_error(call, message):
    x, y = blobs()
    with pytest.raises(ValueError, match=message):
        call(x, y)


class FakeModel:
    """Encodes a text as a fixed vector per topic word: what the evaluators do with a model."""

    def encode(self, texts, max_length=None, batch_size=None, progress=False):
        basis = {"sport": [1, 0, 0], "money": [0, 1, 0], "space": [0, 0, 1]}
        return np.array([basis[t.split()[0]] + 0.01 * np.random.default_rng(len(t)).normal(size=3) for t in texts])


def test_evaluators_encode_and_score_labelled_texts():
    words = ["sport", "money", "space"]
    texts = [f"{w} item {i}" for i in range(12) for w in words]
    labels = np.array([j for _ in range(12) for j in range(3)])
    data = LabelledTexts("toy", "test", texts, labels, words)
    cls = ClassificationEvaluator(data, data, name="toy")
    assert cls(FakeModel()) == {"toy_accuracy": 1.0} and len(cls.details(FakeModel())["correct"]) == 36
    assert ClusteringEvaluator(data, name="toy")(FakeModel())["toy_v_measure"] == pytest.approx(1.0)
    assert cls.cache_key != ClassificationEvaluator(data, data, name="toy", samples_per_label=4).cache_key
    with pytest.raises(ValueError, match="need a non-empty set"):
        ClusteringEvaluator(LabelledTexts("toy", "test", [], np.array([]), words))
