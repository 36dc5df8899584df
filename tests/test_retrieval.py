"""Dense search, reranking and rank fusion on small hand-made runs and on real SciFact."""
import numpy as np
import pytest

from embedlessons.data import RetrievalDataset
from embedlessons.retrieval import dense_run, reciprocal_rank_fusion, rerank


def _tiny():
    corpus = {d: {"title": "", "text": d} for d in ["d1", "d2", "d3"]}
    return RetrievalDataset("tiny", "test", corpus, {"q1": "x", "q2": "y"}, {"q1": {"d1": 1}, "q2": {"d3": 1}})


def test_dense_run_is_a_dot_product_search():
    ds = _tiny()
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    d = np.array([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]])
    run = dense_run(q, d, ds, top_k=2)
    assert list(run["q1"]) == ["d1", "d2"] and run["q1"]["d1"] == pytest.approx(0.9)
    assert set(run["q2"]) == {"d3", "d2"}
    with pytest.raises(ValueError, match="differ in dimension"):
        dense_run(q, d[:, :1], ds)


def test_rerank_reorders_only_the_shortlist():
    first = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}}
    out = rerank(first, lambda q, ids: np.array([{"a": 0.1, "b": 0.9, "c": 5.0}[i] for i in ids]), depth=2)
    assert out == {"q": {"a": 0.1, "b": 0.9}}
    with pytest.raises(ValueError, match="returned shape"):
        rerank(first, lambda q, ids: np.zeros(1))


def test_reciprocal_rank_fusion_by_hand():
    r1 = {"q": {"a": 10.0, "b": 5.0}}
    r2 = {"q": {"b": 0.9, "c": 0.8}}
    fused = reciprocal_rank_fusion([r1, r2], k=60)["q"]
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["c"] == pytest.approx(1 / 62)
    assert list(fused)[0] == "b"
    # ties inside a run follow trec_eval (doc id descending): "z" ranks before "y"
    tied = reciprocal_rank_fusion([{"q": {"y": 1.0, "z": 1.0}}], k=0)["q"]
    assert tied == {"z": 1.0, "y": 0.5}
    with pytest.raises(ValueError, match="at least one run"):
        reciprocal_rank_fusion([])
