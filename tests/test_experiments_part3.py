"""Tests of embedlessons.experiments.part3 (the shared code of sections 3.1, 3.3, 3.4)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from embedlessons.experiments.part3 import (ResampleNegatives, build_triplets, contrastive_signal,
                                              evaluation_subset, fine_tune, leaked_queries, mine_negatives,
                                              paired_test, parameter_grad_norms, row_negatives, training_pool,
                                              training_rows)
from embedlessons.negatives import RelativeMargin, linear_ramp


@pytest.fixture(scope="module")
def pool():
    return training_pool(700, seed=0)


# ---------------------------------------------------------------------------------------------- data
def test_training_pool_keeps_every_relevant_abstract(pool):
    relevant = {d for rel in pool.qrels.values() for d in rel}
    assert len(pool.corpus) == 700
    assert relevant <= set(pool.corpus)
    assert len(relevant) == 565                     # SciFact train: 919 qrels over 565 abstracts
    assert training_pool(700, seed=0).doc_ids == pool.doc_ids   # seeded
    assert training_pool(700, seed=1).doc_ids != pool.doc_ids
    with pytest.raises(ValueError, match="between 565"):
        training_pool(100)


def test_evaluation_subset_size():
    ds = evaluation_subset(217)
    assert len(ds.queries) == 300 and len(ds.corpus) == 500


def test_training_rows(pool):
    rows = training_rows(pool)
    assert len(rows) == 917 and all(d in pool.qrels[q] for q, d in rows)
    leaked = leaked_queries(pool)
    test_claims = set(evaluation_subset(0).queries.values())
    assert len(leaked) == 2 and all(pool.queries[q] in test_claims for q in leaked)
    assert not {q for q, _ in rows} & leaked                   # no test claim is trained on
    with_leaked = training_rows(pool, drop_test_claims=False)
    assert len(with_leaked) == 919 and [r for r in with_leaked if r[0] not in leaked] == rows
    sub = training_rows(pool, max_rows=100, seed=0)
    assert len(sub) == 100 and sub == training_rows(pool, max_rows=100, seed=0)
    assert sub == [r for r in rows if r in set(sub)]           # original order kept


# ---------------------------------------------------------------------------------------------- negatives
def test_mined_negatives_exclude_positives_and_filters_apply(pool):
    mined, report = mine_negatives("bm25", pool, depth=20)
    assert report is None and len(mined) == 809
    for q, cands in mined.candidates.items():
        assert len(cands) == 20 and not {c.doc_id for c in cands} & set(pool.qrels[q])
        assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)
    kept, report = mine_negatives("bm25", pool, depth=20, filters=[RelativeMargin(0.05)])
    assert report.before == 809 * 20 and 0 < report.after < report.before
    for q, cands in kept.candidates.items():
        assert all(c.score < 0.95 * mined.reference_score(q) + 1e-9 for c in cands)
    rnd, _ = mine_negatives("random", pool, depth=5)
    assert rnd.method == "random" and all(len(c) == 5 for c in rnd.candidates.values())
    with pytest.raises(ValueError, match="needs a model"):
        mine_negatives("dense", pool)
    with pytest.raises(ValueError, match="unknown miner"):
        mine_negatives("tfidf", pool)


def test_row_negatives_hard_ratio(pool):
    mined, _ = mine_negatives("bm25", pool, depth=10)
    rows = training_rows(pool, max_rows=200)
    hard = row_negatives(mined, pool, rows, hard_ratio=1.0)
    assert hard == [mined.candidates[q][0].doc_id for q, _ in rows]       # the top candidate
    easy = row_negatives(mined, pool, rows, hard_ratio=0.0)
    top10 = {q: {c.doc_id for c in mined.candidates[q]} for q, _ in rows}
    in_top = np.mean([n in top10[q] for (q, _), n in zip(rows, easy)])
    assert in_top < 0.1                                                     # random: ~10/700 expected
    assert all(n not in pool.qrels[q] for (q, _), n in zip(rows, easy))
    half = row_negatives(mined, pool, rows, hard_ratio=0.5)
    share = np.mean([n == h for n, h in zip(half, hard)])
    assert 0.35 < share < 0.65


def test_build_triplets_texts_and_errors(pool):
    rows = training_rows(pool, max_rows=10)
    mined, _ = mine_negatives("bm25", pool, depth=5)
    negs = row_negatives(mined, pool, rows)
    ds = build_triplets(pool, rows, negs)
    text = dict(zip(pool.doc_ids, pool.doc_texts()))
    assert len(ds) == 10
    assert ds[0] == (pool.queries[rows[0][0]], text[rows[0][1]], text[negs[0]])
    with pytest.raises(ValueError, match="positives of their own query"):
        build_triplets(pool, rows, [d for _, d in rows])
    with pytest.raises(ValueError, match="rows but"):
        build_triplets(pool, rows, negs[:3])


class _State:
    def __init__(self, dataset, step):
        from embedlessons.training import TrainHistory

        self.dataset, self.step, self.history = dataset, step, TrainHistory()


def test_resample_negatives_follows_the_schedule(pool):
    mined, _ = mine_negatives("bm25", pool, depth=5)
    rows = training_rows(pool, max_rows=300)
    ds = build_triplets(pool, rows, row_negatives(mined, pool, rows, hard_ratio=0.0))
    cb = ResampleNegatives(mined, pool, rows, hard_ratio=linear_ramp(0.0, 1.0, 10))
    text = dict(zip(pool.doc_ids, pool.doc_texts()))
    top = [text[mined.candidates[q][0].doc_id] for q, _ in rows]
    shares = []
    for step in (1, 6, 11):
        state = _State(ds, step)
        cb.on_step_begin(state)
        shares.append(np.mean([ds[i][2] == top[i] for i in range(len(rows))]))
        assert state.history._pending[step]["hard_ratio"] == pytest.approx(min((step) / 10, 1.0))
    assert shares[0] < 0.25 and 0.4 < shares[1] < 0.8 and shares[2] == 1.0
    other = ResampleNegatives(mined, pool, rows, hard_ratio=linear_ramp(0.0, 1.0, 20))
    assert other.cache_key != cb.cache_key and "linear_ramp" in repr(cb)


# ---------------------------------------------------------------------------------------------- section 3.1
def test_contrastive_signal_matches_closed_form():
    rng = np.random.default_rng(0)
    q, p, n = rng.normal(size=(5, 8)), rng.normal(size=(5, 8)), rng.normal(size=(5, 3, 8))
    out = contrastive_signal(q, p, n, temperature=0.1)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    cands = np.concatenate([p[:, None], n], axis=1)
    cands /= np.linalg.norm(cands, axis=2, keepdims=True)
    logits = np.einsum("bd,bkd->bk", qn, cands) / 0.1
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    np.testing.assert_allclose(out["loss"], -np.log(prob[:, 0]), rtol=1e-10)
    np.testing.assert_allclose(out["p_positive"], prob[:, 0], rtol=1e-10)
    grad = (np.einsum("bk,bkd->bd", prob, cands) - cands[:, 0]) / 0.1
    np.testing.assert_allclose(out["grad_norm"], np.linalg.norm(grad, axis=1), rtol=1e-8)


def test_contrastive_signal_easy_negatives_give_no_gradient():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(4, 16))
    easy = contrastive_signal(q, q, -q[:, None].repeat(3, 1))          # negatives opposite the query
    hard = contrastive_signal(q, q, q[:, None].repeat(3, 1) + 0.1 * rng.normal(size=(4, 3, 16)))
    assert easy["loss"].max() < 1e-10 and easy["grad_norm"].max() < 1e-8
    assert hard["loss"].min() > 0.5 and hard["grad_norm"].min() > 0.3
    with pytest.raises(ValueError, match="expected queries"):
        contrastive_signal(q, q, q)
    with pytest.raises(ValueError, match="temperature"):
        contrastive_signal(q, q, q[:, None], temperature=0)


def test_parameter_grad_norms_per_query():
    from embedlessons.models import small_bert

    model = small_bert(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, seed=0)
    rng = np.random.default_rng(0)
    texts = ["a claim about cells", "another claim", "protein folding is fast"]
    pos = rng.normal(size=(3, 32)).astype(np.float32)
    neg = rng.normal(size=(3, 4, 32)).astype(np.float32)
    norms = parameter_grad_norms(model, texts, pos, neg, temperature=0.05)
    # the same gradient, computed for query 1 by hand
    q = model(model.tokenize([texts[1]], max_length=64))
    cands = torch.nn.functional.normalize(torch.cat([torch.tensor(pos[1:2]), torch.tensor(neg[1])]), dim=-1)
    loss = -torch.log_softmax(torch.nn.functional.normalize(q, dim=-1) @ cands.T / 0.05, dim=1)[0, 0]
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    expected = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))
    assert norms.shape == (3,) and norms[1] == pytest.approx(expected, rel=1e-5)
    assert not model.training
    with pytest.raises(ValueError, match="queries"):
        parameter_grad_norms(model, texts[:2], pos, neg)


# ---------------------------------------------------------------------------------------------- 3.3 / 3.4
def test_fine_tune_small_model_runs_and_caches(tmp_path, monkeypatch, pool):
    from embedlessons.models import small_bert
    from embedlessons.training import TrainConfig

    monkeypatch.setenv("EMBEDLESSONS_CACHE", str(tmp_path))
    rows = training_rows(pool, max_rows=16)
    mined, _ = mine_negatives("bm25", pool, depth=3)
    ds = build_triplets(pool, rows, row_negatives(mined, pool, rows))
    config = TrainConfig(steps=2, batch_size=8, lr=1e-3, max_length=16)

    def fresh():
        return small_bert(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, seed=0)

    model, history = fine_tune(ds, config, model=fresh())
    assert len(history.steps) == 2 and not history.from_cache
    again, cached = fine_tune(ds, config, model=fresh())
    assert cached.from_cache and cached.losses == history.losses
    assert again.fingerprint() == model.fingerprint()
    ndcg = evaluate_small(model)
    assert all(0 <= v <= 1 for v in ndcg.values())


def evaluate_small(model):
    from embedlessons.experiments.part3 import evaluate_per_query

    ds = evaluation_subset(20)
    ds.queries = dict(list(ds.queries.items())[:10])
    ds.qrels = {q: ds.qrels[q] for q in ds.queries}
    out = evaluate_per_query(model, ds, doc_max_length=16, query_max_length=16)
    assert set(out) == set(ds.queries)
    return out


def test_paired_test():
    a = {str(i): 0.5 + 0.1 * (i % 2) for i in range(200)}
    same = paired_test(a, a)
    assert same["diff"] == 0 and same["p"] == 1.0
    better = {q: v + 0.05 for q, v in a.items()}
    out = paired_test(better, a)
    assert out["diff"] == pytest.approx(0.05) and out["p"] < 0.001
    assert out["ci_low"] == pytest.approx(0.05) and out["ci_high"] == pytest.approx(0.05)
    rng = np.random.default_rng(0)
    noisy = {q: v + rng.normal(0, 0.2) for q, v in a.items()}
    res = paired_test(noisy, a, seed=0)
    assert res == paired_test(noisy, a, seed=0)                       # seeded
    assert res["ci_low"] < res["diff"] < res["ci_high"] and 0 < res["p"] <= 1
    with pytest.raises(ValueError, match="at least 2"):
        paired_test({"x": 1.0}, {"x": 0.0})


def test_train_top_layers_freezes_and_restores(tmp_path, monkeypatch, pool):
    from embedlessons.experiments.part3 import TrainTopLayers
    from embedlessons.models import small_bert
    from embedlessons.training import TrainConfig

    monkeypatch.setenv("EMBEDLESSONS_CACHE", str(tmp_path))
    rows = training_rows(pool, max_rows=16)
    mined, _ = mine_negatives("bm25", pool, depth=3)
    ds = build_triplets(pool, rows, row_negatives(mined, pool, rows))
    model = small_bert(num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _, history = fine_tune(ds, TrainConfig(steps=2, batch_size=8, lr=1e-2, max_length=16), model=model,
                           train_top_layers=1)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("transformer.encoder.layer.1.") for n in changed)
    assert all(p.requires_grad for p in model.parameters())            # unfrozen again
    full = small_bert(num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64, seed=0)
    _, other = fine_tune(ds, TrainConfig(steps=2, batch_size=8, lr=1e-2, max_length=16), model=full)
    assert not other.from_cache                                          # a different run-cache key
    with pytest.raises(ValueError, match="top 3 layers"):
        fine_tune(ds, TrainConfig(steps=1, batch_size=8, max_length=16), train_top_layers=3,
                  model=small_bert(num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64, seed=0))
    with pytest.raises(ValueError, match="integer"):
        TrainTopLayers(0)


# ---------------------------------------------------------------------------------------------- full size
def test_full_size_comparison_runs_end_to_end_on_a_small_setting(tiny_recorded_result):
    from embedlessons.experiments.part3 import FULL_SIZE_EXPERIMENT, full_size_comparison, recorded_full_size

    out, results_dir = tiny_recorded_result(FULL_SIZE_EXPERIMENT)      # its tiny setting: random + mixed
    assert set(out["ndcg"]) == {"BM25", "MiniLM", "random", "mixed"}
    assert all(0 < v < 1 for v in out["ndcg"].values())
    assert set(out["vs_minilm"]) == {"random", "mixed"} and set(out["seconds"]) == {"random", "mixed"}
    assert out["settings"]["corpus"] == len(evaluation_subset(10).doc_ids)
    assert len(out["per_query"]["mixed"]) == 300
    assert recorded_full_size(results_dir)["ndcg"] == out["ndcg"]
    with pytest.raises(ValueError, match="unknown kinds"):
        full_size_comparison(["hard"])


def test_recorded_full_size_result(tmp_path):
    from embedlessons.experiments.part3 import recorded_full_size

    with pytest.raises(FileNotFoundError, match="python -m embedlessons.experiments run scifact_hardneg_full_size"):
        recorded_full_size(tmp_path)
    stored = recorded_full_size()
    assert {"BM25", "MiniLM", "dense", "random"} <= set(stored["ndcg"])


def test_merge_full_size_combines_kinds_and_refuses_mismatches():
    from embedlessons.experiments.part3 import merge_full_size

    def result(kind, steps=150, bm25=0.5):
        return {"settings": {"kinds": [kind], "steps": steps}, "ndcg": {"BM25": bm25, kind: 0.7},
                "vs_minilm": {kind: {"diff": 0.1}}, "seconds": {kind: {"train": 1.0}},
                "per_query": {"BM25": {"q1": bm25}, "MiniLM": {"q1": 0.4}, kind: {"q1": 0.7}},
                "runs": [{"command": f"--kinds {kind}"}]}

    merged = merge_full_size([result("dense"), result("random")])
    assert merged["settings"]["kinds"] == ["dense", "random"]
    assert set(merged["vs_minilm"]) == {"dense", "random"} and len(merged["runs"]) == 2
    a = result("dense")
    merge_full_size([a, result("random")])
    assert a["settings"]["kinds"] == ["dense"]                  # inputs are not modified
    with pytest.raises(ValueError, match="different settings: \\['steps'\\]"):
        merge_full_size([result("dense"), result("random", steps=10)])
    with pytest.raises(ValueError, match="BM25 baseline differs"):
        merge_full_size([result("dense"), result("random", bm25=0.6)])
    with pytest.raises(ValueError, match="more than one run"):
        merge_full_size([result("dense"), result("dense")])
