"""STSEvaluator and RetrievalEvaluator: equal to the metrics computed by hand, settings respected, errors."""
import functools

import numpy as np
import pytest

from embedlessons.data import RetrievalDataset, ScoredPairs, load_retrieval, load_sts
from embedlessons.evaluation import mrr_at_k, ndcg_at_k, recall_at_k, spearman
from embedlessons.evaluators import RetrievalEvaluator, STSEvaluator
from embedlessons.losses import in_batch_info_nce
from embedlessons.models import small_bert
from embedlessons.profile import CPU
from embedlessons.retrieval import dense_run
from embedlessons.training import TrainConfig, pairs_from_retrieval, train


pytestmark = pytest.mark.usefixtures("one_thread", "private_cache")   # tests/conftest.py


@pytest.fixture(scope="module")
def model():
    return small_bert(num_layers=1, hidden_size=64, num_heads=2, intermediate_size=128, seed=0)


@pytest.fixture(scope="module")
def sts():
    full = load_sts("stsb", "test")
    return ScoredPairs(full.name, full.split, full.sentences1[:200], full.sentences2[:200], full.scores[:200])


@pytest.fixture(scope="module")
def small_scifact():
    """40 SciFact test claims, their relevant abstracts and 60 distractors."""
    ds = load_retrieval("scifact", "test").subset(60, seed=0)
    qids = list(ds.queries)[:40]
    keep = {d for q in qids for d in ds.qrels[q]} | set(list(ds.corpus)[:60])
    return RetrievalDataset(ds.name, ds.split, {d: v for d, v in ds.corpus.items() if d in keep},
                            {q: ds.queries[q] for q in qids}, {q: ds.qrels[q] for q in qids})


def test_sts_evaluator_equals_spearman_of_cosines(model, sts):
    result = STSEvaluator(sts, max_length=32)(model)
    a = model.encode(sts.sentences1, max_length=32, cache=False, progress=False)
    b = model.encode(sts.sentences2, max_length=32, cache=False, progress=False)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert list(result) == ["stsb_spearman"]
    assert result["stsb_spearman"] == pytest.approx(spearman(cos, sts.scores), abs=1e-6)
    short = STSEvaluator(sts, max_length=4, name="short")(model)["short_spearman"]
    assert abs(short - result["stsb_spearman"]) > 1e-3                       # max_length is used


def test_retrieval_evaluator_equals_metrics_by_hand(model, small_scifact):
    ev = RetrievalEvaluator(small_scifact, CPU, k=10)
    result = ev(model)
    assert set(result) == {"scifact_ndcg@10", "scifact_mrr@10", "scifact_recall@100"}
    q = model.encode(list(small_scifact.queries.values()), max_length=CPU.query_max_length, cache=False,
                     progress=False)
    d = model.encode(small_scifact.doc_texts(), max_length=CPU.doc_max_length, cache=False, progress=False)
    run = dense_run(q, d, small_scifact)
    assert result["scifact_ndcg@10"] == pytest.approx(ndcg_at_k(small_scifact.qrels, run, 10), abs=1e-9)
    assert result["scifact_mrr@10"] == pytest.approx(mrr_at_k(small_scifact.qrels, run, 10), abs=1e-9)
    assert result["scifact_recall@100"] == pytest.approx(recall_at_k(small_scifact.qrels, run, 100), abs=1e-9)

    # a shorter document limit is honoured (and is part of the evaluator's cache key)
    short = RetrievalEvaluator(small_scifact, CPU, k=5, name="sf", doc_max_length=8)
    d8 = model.encode(small_scifact.doc_texts(), max_length=8, cache=False, progress=False)
    assert short(model)["sf_ndcg@5"] == pytest.approx(ndcg_at_k(small_scifact.qrels,
                                                                dense_run(q, d8, small_scifact), 5), abs=1e-9)
    assert short.cache_key != ev.cache_key
    assert RetrievalEvaluator(small_scifact, CPU).cache_key == ev.cache_key


def test_evaluator_inside_train_sees_the_trained_model(small_scifact):
    ev = RetrievalEvaluator(small_scifact, CPU, doc_max_length=32)
    m = small_bert(num_layers=1, hidden_size=64, num_heads=2, intermediate_size=128, seed=0)
    before = ev(m)
    pairs = pairs_from_retrieval(load_retrieval("scifact", "train"))
    hist = train(m, pairs, functools.partial(in_batch_info_nce, temperature=0.05),
                 TrainConfig(steps=4, batch_size=8, lr=1e-3, max_length=(16, 32), eval_every=2), evaluator=ev,
                 progress=False)
    assert [e["step"] for e in hist.evals] == [2, 4]
    assert hist.final_eval == ev(m) != before                               # re-encoded after training


def test_evaluator_errors(small_scifact, sts):
    with pytest.raises(ValueError, match="empty"):
        RetrievalEvaluator(RetrievalDataset("x", "test", {}, {}, {}), CPU)
    with pytest.raises(ValueError, match="k must be a positive int"):
        RetrievalEvaluator(small_scifact, CPU, k=0)
    with pytest.raises(ValueError, match="at least 2"):
        STSEvaluator(ScoredPairs("x", "test", ["a"], ["b"], np.array([1.0])))
