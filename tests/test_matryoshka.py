"""Matryoshka embeddings: truncation, the MRL loss (equal to sentence-transformers' MatryoshkaLoss in value and
gradients around MNRL and CoSENT), the two-stage search, and the error messages for bad input."""
import functools
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embedlessons.indexing import exact_search
from embedlessons.losses import cosent_loss, in_batch_info_nce
from embedlessons.matryoshka import MatryoshkaLoss, TwoStageIndex, truncate, two_stage_search
from embedlessons.task_losses import PrototypeLoss

st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")

B, D = 6, 16
TOL = dict(atol=1e-5, rtol=1e-5)
MNRL = functools.partial(in_batch_info_nce, temperature=0.05)


def _leaves(*shapes, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


class ColumnsAsModel(torch.nn.Module):
    """Stands in for a SentenceTransformer: each 'feature' dict carries its embeddings, so sentence-
    transformers' losses run on exactly the tensors ours get."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, features):
        return {"sentence_embedding": features["emb"]}

    def get_embedding_dimension(self):
        return self.dim


    # sentence-transformers >= 6.3 asks the model for its full width this way
    _get_untruncated_embedding_dimension = get_embedding_dimension


def _assert_same_value_and_grads(ours, theirs, inputs):
    torch.testing.assert_close(ours, theirs, **TOL)
    for go, gt in zip(torch.autograd.grad(ours, inputs, retain_graph=True),
                      torch.autograd.grad(theirs, inputs, retain_graph=True)):
        torch.testing.assert_close(go, gt, **TOL)


# ------------------------------------------------------------------------------------------ truncate
def test_truncate_keeps_the_prefix_and_renormalises():
    x = torch.tensor([[3.0, 4.0, 12.0], [1.0, 0.0, 5.0]])
    torch.testing.assert_close(truncate(x, 2), torch.tensor([[0.6, 0.8], [1.0, 0.0]]))
    torch.testing.assert_close(truncate(x, 2, renormalize=False), x[:, :2])
    np.testing.assert_allclose(truncate(x.numpy(), 2), [[0.6, 0.8], [1.0, 0.0]], atol=1e-7)
    assert truncate(x.numpy(), 2).dtype == np.float32
    batched = torch.randn(2, 3, D)                          # [B, K, d] negatives
    torch.testing.assert_close(truncate(batched, 4), F.normalize(batched[..., :4], dim=-1))
    torch.testing.assert_close(truncate(x, 3), F.normalize(x, dim=-1))


@pytest.mark.parametrize("dim, message", [(4, r"dim=4 is larger than the embeddings \(d=3\)"),
                                          (0, r"dim must be >= 1, got 0"), (-2, r"dim must be >= 1"),
                                          (1.5, r"dim must be an int")])
def test_truncate_errors(dim, message):
    with pytest.raises(ValueError, match=message):
        truncate(torch.randn(2, 3), dim)
    with pytest.raises(ValueError, match=message):
        truncate(np.ones((2, 3), dtype=np.float32), dim)


# ------------------------------------------------------------------------------------------ parity with ST
@pytest.mark.parametrize("n_hard", [0, 1])
@pytest.mark.parametrize("dims, weights", [([16, 8, 4], None), ([4, 16, 8], [1.0, 0.5, 2.0])])
def test_matryoshka_around_mnrl_equals_st(n_hard, dims, weights):
    cols = _leaves(*[(B, D)] * (2 + n_hard), seed=n_hard)
    ours = MatryoshkaLoss(MNRL, dims, weights)(*cols).loss
    model = ColumnsAsModel(D)
    st = st_losses.MatryoshkaLoss(model, st_losses.MultipleNegativesRankingLoss(model, scale=20.0), dims, weights)
    theirs = st([{"emb": c} for c in cols], None)
    _assert_same_value_and_grads(ours, theirs, cols)


def test_matryoshka_around_cosent_equals_st_and_scores_are_not_truncated():
    e1, e2 = _leaves((B, D), (B, D), seed=3)
    scores = torch.tensor([0.0, 2.5, 2.5, 4.0, 1.0, 5.0])
    ours = MatryoshkaLoss(cosent_loss, [16, 8, 2])(e1, e2, scores)
    model = ColumnsAsModel(D)
    st = st_losses.MatryoshkaLoss(model, st_losses.CoSENTLoss(model, scale=20.0), [16, 8, 2])
    theirs = st([{"emb": e1}, {"emb": e2}], scores)
    _assert_same_value_and_grads(ours.loss, theirs, [e1, e2])
    # and by definition, the sum over dims of the inner loss on truncated, renormalised embeddings
    manual = sum(cosent_loss(truncate(e1, m), truncate(e2, m), scores).loss for m in (16, 8, 2))
    torch.testing.assert_close(ours.loss, manual)
    assert {k for k in ours.stats if k.startswith("loss@")} == {"loss@16", "loss@8", "loss@2"}
    assert ours.stats["loss@8"] == pytest.approx(cosent_loss(truncate(e1, 8), truncate(e2, 8), scores).loss.item())


def test_n_dims_per_step_draws_like_st_with_the_same_seed():
    cols = _leaves((B, D), (B, D), seed=4)
    dims = [16, 12, 8, 4, 2]
    ours = MatryoshkaLoss(MNRL, dims, n_dims_per_step=2, seed=11)
    model = ColumnsAsModel(D)
    st = st_losses.MatryoshkaLoss(model, st_losses.MultipleNegativesRankingLoss(model, scale=20.0), dims,
                                  n_dims_per_step=2)
    for _ in range(3):                                      # several steps: the two generators stay in step
        state = random.getstate()
        random.seed(11) if _ == 0 else random.setstate(state)
        out = ours(*cols)
        theirs = st([{"emb": c} for c in cols], None)
        _assert_same_value_and_grads(out.loss, theirs, cols)
        assert len([k for k in out.stats if k.startswith("loss@")]) == 2
    # a fresh loss with the same seed repeats the draws; the full set is used with -1
    assert MatryoshkaLoss(MNRL, dims, n_dims_per_step=2, seed=11).dims_for_step() == \
        MatryoshkaLoss(MNRL, dims, n_dims_per_step=2, seed=11).dims_for_step()
    assert MatryoshkaLoss(MNRL, dims).dims_for_step() == [0, 1, 2, 3, 4]


def test_one_full_dim_is_the_inner_loss_and_gradcheck():
    a, p = _leaves((B, D), (B, D), seed=5)
    torch.testing.assert_close(MatryoshkaLoss(MNRL, [D])(a, p).loss, MNRL(a, p).loss, **TOL)
    a64, p64 = _leaves((3, 4), (3, 4), seed=6, dtype=torch.float64)
    loss = MatryoshkaLoss(functools.partial(in_batch_info_nce, temperature=0.2), [4, 2], [1.0, 0.5])
    assert torch.autograd.gradcheck(lambda x, y: loss(x, y).loss, (a64, p64))


def test_wrapping_a_module_loss_registers_its_parameters_and_labels_pass_through():
    inner = PrototypeLoss(3, D, temperature=0.1)
    loss = MatryoshkaLoss(inner, [16, 4])
    assert [n for n, _ in loss.named_parameters()] == ["loss.prototypes"]
    x = _leaves((B, D), seed=7)[0]
    labels = torch.tensor([0, 1, 2, 0, 1, 2.0])
    out = loss(x, labels)
    nested = PrototypeLoss(3, 4, 0.1, init=inner.prototypes[:, :4])      # the first 4 coordinates of each
    expected = inner(x, labels).loss + nested(truncate(x, 4), labels).loss
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert inner.prototypes.grad is not None


def test_run_cache_key_describes_the_wrapper():
    from embedlessons.training import _describe

    assert _describe(MatryoshkaLoss(MNRL, [8, 4])) == _describe(MatryoshkaLoss(MNRL, [4, 8]))   # same, sorted
    assert _describe(MatryoshkaLoss(MNRL, [8, 4])) != _describe(MatryoshkaLoss(MNRL, [8, 2]))
    assert _describe(MatryoshkaLoss(MNRL, [8, 4])) != _describe(MatryoshkaLoss(MNRL, [8, 4], [1, 2]))
    assert _describe(MatryoshkaLoss(MNRL, [8, 4])) != _describe(
        MatryoshkaLoss(functools.partial(in_batch_info_nce, temperature=0.1), [8, 4]))


@pytest.mark.parametrize("kwargs, message", [
    (dict(dims=[]), r"dims is empty"),
    (dict(dims=[8, 8, 4]), r"dims must be distinct, got \[8, 8, 4\]"),
    (dict(dims=[8, 0]), r"every dim must be an int >= 1, got 0"),
    (dict(dims=[8, -4]), r"every dim must be an int >= 1, got -4"),
    (dict(dims=[8, 4.5]), r"every dim must be an int >= 1, got 4.5"),
    (dict(dims=[8, 4], weights=[1.0]), r"weights has 1 entries but dims has 2"),
    (dict(dims=[8, 4], weights=[1.0, -1.0]), r"weights must be finite numbers >= 0"),
    (dict(dims=[8, 4], n_dims_per_step=0), r"n_dims_per_step must be -1 \(all dims\) or an int >= 1"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MatryoshkaLoss(MNRL, **kwargs)


def test_bad_calls():
    with pytest.raises(ValueError, match=r"dimension 32 in dims is larger than the embeddings \(d=16\)"):
        MatryoshkaLoss(MNRL, [32, 8])(torch.randn(B, D), torch.randn(B, D))
    with pytest.raises(ValueError, match=r"found no embedding input"):
        MatryoshkaLoss(MNRL, [8])(torch.randn(B), torch.randn(B))
    with pytest.raises(TypeError, match=r"loss must be callable"):
        MatryoshkaLoss("mnrl", [8])


# ------------------------------------------------------------------------------------------ two-stage search
@pytest.fixture(scope="module")
def docs_and_queries():
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((200, 32)).astype(np.float32)
    queries = docs[:20] + 0.5 * rng.standard_normal((20, 32)).astype(np.float32)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit(docs), unit(queries)


def test_two_stage_with_everything_shortlisted_is_exact_full_search(docs_and_queries):
    docs, queries = docs_and_queries
    exact_scores, exact_ids = exact_search(queries, docs, k=10)
    scores, ids = two_stage_search(queries, docs, short_dim=4, k=10, shortlist=len(docs))
    np.testing.assert_array_equal(ids, exact_ids)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)
    # with the full width in stage 1, a shortlist of k is already exact
    np.testing.assert_array_equal(two_stage_search(queries, docs, short_dim=32, k=10, shortlist=10)[1], exact_ids)


def test_short_shortlists_lose_recall_and_rerank_orders_by_full_vectors(docs_and_queries):
    docs, queries = docs_and_queries
    index = TwoStageIndex(docs, short_dim=4)
    _, exact_ids = exact_search(queries, docs, k=10)
    recall = lambda ids: np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact_ids)])
    small, large = recall(index.search(queries, 10, shortlist=10)[1]), recall(index.search(queries, 10, 150)[1])
    assert small < large <= 1.0 and small < 0.9
    # the final scores are full-vector inner products of the returned ids, best first
    scores, ids = index.search(queries, 10, shortlist=40)
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, docs[ids]), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-7).all()
    # every returned id was in the prefix shortlist
    short = index.shortlist(queries, 40)
    assert all(set(r) <= set(s) for r, s in zip(ids, short))


def test_renormalising_the_prefix_changes_the_shortlist():
    """Two documents with the same prefix direction but different prefix norms: without re-normalising, the
    one with the longer prefix wins stage 1 although its full vector is further from the query."""
    docs = np.array([[0.6, 0.0, 0.8], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    query = np.array([[0.6, 0.0, 0.8]], dtype=np.float32)
    assert TwoStageIndex(docs, 1, renormalize=False).shortlist(query, 1)[0, 0] == 1
    renorm = TwoStageIndex(docs, 1, renormalize=True).shortlist(query, 2)[0]
    assert set(renorm) == {0, 1}                            # tied after re-normalising
    scores, ids = TwoStageIndex(docs, 1).search(query, k=1, shortlist=2)
    assert ids[0, 0] == 0 and scores[0, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("call, message", [
    (lambda d, q: TwoStageIndex(d, short_dim=64), r"short_dim=64 is larger than the embeddings \(d=32\)"),
    (lambda d, q: TwoStageIndex(d, short_dim=0), r"short_dim must be >= 1"),
    (lambda d, q: TwoStageIndex(d, 8).search(q, k=10, shortlist=5), r"shortlist \(5\) must be >= k \(10\)"),
    (lambda d, q: TwoStageIndex(d, 8).search(q, k=10, shortlist=500), r"shortlist=500 is larger than the number"),
    (lambda d, q: TwoStageIndex(d, 8).search(q[:, :16], k=5), r"queries have dimension 16 but the documents 32"),
    (lambda d, q: TwoStageIndex(d[:0], 8), r"vectors must be a non-empty 2-D array"),
])
def test_two_stage_errors(docs_and_queries, call, message):
    with pytest.raises(ValueError, match=message):
        call(*docs_and_queries)
