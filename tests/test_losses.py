"""Part 2 losses: parity with sentence-transformers (value and gradients), gradchecks, the log(K+1)
chance level, and the error messages for bad input."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from embedlessons.losses import (LearnableTemperature, LossOutput, cosent_loss, in_batch_info_nce, info_nce,
                                 mse_cosine_loss, simcse_loss, triplet_loss)

st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")

B, D, K = 6, 8, 3
TOL = dict(atol=1e-5, rtol=1e-5)


def _leaves(*shapes, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


def _assert_same_value_and_grads(ours, theirs, inputs):
    """``ours``/``theirs``: scalar losses built from ``inputs`` (leaf tensors)."""
    torch.testing.assert_close(ours, theirs, **TOL)
    g_ours = torch.autograd.grad(ours, inputs, retain_graph=True, allow_unused=True)
    g_theirs = torch.autograd.grad(theirs, inputs, retain_graph=True, allow_unused=True)
    for go, gt in zip(g_ours, g_theirs):
        torch.testing.assert_close(go, gt, **TOL)


# ------------------------------------------------------------------------------------------ parity with ST
@pytest.mark.parametrize("temperature", [0.05, 0.5])
@pytest.mark.parametrize("n_hard", [0, 1, 2])
def test_in_batch_equals_mnrl(temperature, n_hard):
    a, p, n = _leaves((B, D), (B, D), (B, n_hard, D), seed=n_hard)
    ours = in_batch_info_nce(a, p, n if n_hard else None, temperature=temperature).loss
    mnrl = st_losses.MultipleNegativesRankingLoss(model=None, scale=1 / temperature)
    theirs = mnrl.compute_loss_from_embeddings([a, p, *n.unbind(1)], None)
    _assert_same_value_and_grads(ours, theirs, [a, p, n] if n_hard else [a, p])


def test_hard_negative_as_2d_tensor_equals_one_column():
    a, p, n = _leaves((B, D), (B, D), (B, D))
    torch.testing.assert_close(in_batch_info_nce(a, p, n).loss, in_batch_info_nce(a, p, n[:, None]).loss)


@pytest.mark.parametrize("n_hard", [0, 2])
def test_symmetric_equals_st_symmetric(n_hard):
    """ST's symmetric loss = mean of anchor->(positives + hard negatives) and positive->anchors, one
    softmax per direction (partition_mode="per_direction"); ours is documented the same way."""
    a, p, n = _leaves((B, D), (B, D), (B, n_hard, D), seed=3)
    ours = in_batch_info_nce(a, p, n if n_hard else None, temperature=0.05, symmetric=True).loss
    st = st_losses.MultipleNegativesRankingLoss(model=None, scale=20.0, directions=("query_to_doc", "doc_to_query"),
                                                partition_mode="per_direction")
    theirs = st.compute_loss_from_embeddings([a, p, *n.unbind(1)], None)
    _assert_same_value_and_grads(ours, theirs, [a, p, n] if n_hard else [a, p])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        legacy = st_losses.MultipleNegativesSymmetricRankingLoss(model=None, scale=20.0)
    torch.testing.assert_close(ours, legacy.compute_loss_from_embeddings([a, p, *n.unbind(1)], None), **TOL)
    # and by definition: the average of the two one-way losses
    back = F.cross_entropy(F.normalize(p, dim=-1) @ F.normalize(a, dim=-1).T / 0.05, torch.arange(B))
    fwd = in_batch_info_nce(a, p, n if n_hard else None, temperature=0.05).loss
    torch.testing.assert_close(ours, (fwd + back) / 2)


@pytest.mark.parametrize("distance, metric, margin", [("cosine", "COSINE", 0.5), ("euclidean", "EUCLIDEAN", 1.0),
                                                      ("cosine", "COSINE", 0.0)])
def test_triplet_equals_st(distance, metric, margin):
    a, p, n = _leaves((B, D), (B, D), (B, D), seed=4)
    ours = triplet_loss(a, p, n, margin=margin, distance=distance)
    st = st_losses.TripletLoss(model=None, distance_metric=getattr(st_losses.TripletDistanceMetric, metric),
                               triplet_margin=margin)
    theirs = st.compute_loss_from_embeddings([a, p, n], None)
    assert 0 < ours.stats["active"] < 1          # some rows inside the margin, some not: both branches tested
    _assert_same_value_and_grads(ours.loss, theirs, [a, p, n])


def test_cosent_equals_st():
    e1, e2 = _leaves((B, D), (B, D), seed=5)
    scores = torch.tensor([0.0, 2.5, 2.5, 4.0, 1.0, 5.0])   # with a tie
    ours = cosent_loss(e1, e2, scores, scale=20.0).loss
    theirs = st_losses.CoSENTLoss(model=None, scale=20.0).compute_loss_from_embeddings([e1, e2], scores)
    _assert_same_value_and_grads(ours, theirs, [e1, e2])


def test_mse_equals_cosine_similarity_loss():
    e1, e2 = _leaves((B, D), (B, D), seed=6)
    scores = torch.tensor([0.0, 0.5, 0.5, 0.8, 0.2, 1.0])
    ours = mse_cosine_loss(e1, e2, scores).loss
    theirs = st_losses.CosineSimilarityLoss(model=None).compute_loss_from_embeddings([e1, e2], scores)
    _assert_same_value_and_grads(ours, theirs, [e1, e2])


def test_simcse_is_one_way_in_batch():
    v1, v2 = _leaves((B, D), (B, D), seed=7)
    torch.testing.assert_close(simcse_loss(v1, v2, 0.05).loss, in_batch_info_nce(v1, v2, temperature=0.05).loss)


# ------------------------------------------------------------------------------------------ InfoNCE itself
def test_gradcheck_double_precision():
    a, p, n = _leaves((4, 5), (4, 5), (4, 3, 5), seed=8, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda *x: info_nce(*x, temperature=0.2).loss, (a, p, n))
    assert torch.autograd.gradcheck(lambda *x: in_batch_info_nce(*x, temperature=0.2).loss, (a, p, n))
    assert torch.autograd.gradcheck(lambda *x: in_batch_info_nce(*x, temperature=0.2, symmetric=True).loss,
                                    (a, p, n))


def test_info_nce_is_cross_entropy_over_k_plus_1():
    a, p, n = _leaves((B, D), (B, D), (B, K, D), seed=9)
    za, zp, zn = (F.normalize(x, dim=-1) for x in (a, p, n))
    cands = torch.cat([zp[:, None], zn], dim=1)                        # [B, K+1, d], positive first
    logits = (cands @ za[:, :, None]).squeeze(-1) / 0.1
    ref = F.cross_entropy(logits, torch.zeros(B, dtype=torch.long))
    _assert_same_value_and_grads(info_nce(a, p, n, 0.1).loss, ref, [a, p, n])
    # and written out as -log softmax, row by row
    rows = [-(logits[i, 0] - logits[i].logsumexp(0)) for i in range(B)]
    torch.testing.assert_close(info_nce(a, p, n, 0.1).loss, torch.stack(rows).mean())


@pytest.mark.parametrize("k", [1, 4, 15, 63])
def test_chance_level_is_log_k_plus_1(k):
    """Identical embeddings carry no information: the loss is exactly log(K+1), at any temperature."""
    x = torch.randn(1, D).expand(B, D)
    out = info_nce(x, x, x[:, None].expand(B, k, D), temperature=0.05)
    assert abs(out.loss.item() - math.log(k + 1)) < 1e-5
    # in-batch with B rows is a B-way classification: log(B)
    assert abs(in_batch_info_nce(x, x).loss.item() - math.log(B)) < 1e-5


def test_stats_and_tensor_temperature():
    a = torch.eye(4)
    out = info_nce(a, a, -a[:, None].repeat(1, 2, 1), temperature=torch.tensor(0.1))
    assert isinstance(out, LossOutput) and out.stats["accuracy"] == 1.0
    assert out.stats["pos_sim"] == pytest.approx(1.0) and out.stats["neg_sim"] == pytest.approx(-1.0)
    ib = in_batch_info_nce(a, a)
    assert ib.stats["accuracy"] == 1.0 and ib.stats["neg_sim"] == pytest.approx(0.0)
    assert all(isinstance(v, float) for v in out.stats.values())
    assert cosent_loss(a, a, torch.arange(4.0)).stats.keys() >= {"accuracy", "pos_sim", "neg_sim"}


def test_learnable_temperature_gets_gradients_and_stays_in_bounds():
    temp = LearnableTemperature(0.07)
    assert temp().item() == pytest.approx(0.07)
    a, p = _leaves((B, D), (B, D), seed=10)
    in_batch_info_nce(a, p, temperature=temp()).loss.backward()
    assert temp.log_t.grad is not None and temp.log_t.grad.abs().item() > 1e-4
    with torch.no_grad():
        temp.log_t.fill_(-20.0)
    assert temp().item() == pytest.approx(0.01)
    with pytest.raises(ValueError, match="min_value <= init"):
        LearnableTemperature(2.0)


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("call, message", [
    (lambda: info_nce(torch.randn(4, 8), torch.randn(3, 8), torch.randn(4, 2, 8)),
     r"batch sizes differ: anchor has 4 rows, positive has 3"),
    (lambda: info_nce(torch.randn(4, 8), torch.randn(4, 7), torch.randn(4, 2, 8)),
     r"embedding dims differ: anchor has d=8, positive has d=7"),
    (lambda: info_nce(torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)),
     r"negatives must have shape \[B, K, d\] \(rank 3\), got \(4, 8\)"),
    (lambda: info_nce(torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 0, 8)),
     r"negatives is empty"),
    (lambda: in_batch_info_nce(torch.randn(0, 8), torch.randn(0, 8)), r"anchor is empty"),
    (lambda: in_batch_info_nce(torch.randn(8), torch.randn(8)), r"anchor must have shape \[B, d\]"),
    (lambda: in_batch_info_nce(torch.full((2, 3), float("nan")), torch.randn(2, 3)),
     r"anchor contains NaN or infinite values"),
    (lambda: in_batch_info_nce(torch.randn(2, 3), torch.randn(2, 3), torch.randn(3, 3)),
     r"batch sizes differ: anchor has 2 rows, hard_negatives has 3"),
    (lambda: in_batch_info_nce(torch.randn(2, 3), torch.randn(2, 3), temperature=0.0),
     r"temperature must be a finite number > 0, got 0.0"),
    (lambda: info_nce(torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 1, 3), temperature=torch.tensor(-1.0)),
     r"temperature must be a finite number > 0, got -1.0"),
    (lambda: in_batch_info_nce(torch.randn(2, 3), torch.randn(2, 3), temperature=torch.ones(2)),
     r"temperature must be a float or a 0-dim tensor"),
    (lambda: triplet_loss(torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3), distance="dot"),
     r"distance must be 'cosine' or 'euclidean'"),
    (lambda: triplet_loss(torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3), margin=-0.1),
     r"margin must be a finite number >= 0"),
    (lambda: cosent_loss(torch.randn(3, 4), torch.randn(3, 4), torch.rand(4)),
     r"batch sizes differ: emb1 has 3 rows, scores has 4"),
    (lambda: cosent_loss(torch.randn(3, 4), torch.randn(3, 4), torch.rand(3, 1)), r"scores must have shape \[B\]"),
    (lambda: mse_cosine_loss(torch.randn(3, 4), torch.randn(3, 4), torch.tensor([0.0, 2.5, 5.0])),
     r"scores must lie in \[-1, 1\].*divide STS-B's 0-5 scores by 5"),
    (lambda: simcse_loss(torch.randn(3, 4), [[0.0] * 4] * 3), r"view2 must be a torch.Tensor, got list"),
])
def test_bad_input_messages(call, message):
    with pytest.raises(ValueError, match=message):
        call()
