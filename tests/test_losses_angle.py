"""AnglE (Li & Li 2023) beside CoSENT: parity with sentence-transformers' AnglELoss in value and gradients,
a float64 gradcheck, what the angle similarity reduces to, and the error messages for bad input."""
import pytest
import torch
import torch.nn.functional as F

from embedlessons.losses import angle_loss, angle_similarity, cosent_loss

st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
st_util = pytest.importorskip("sentence_transformers.util")

B = 6
TOL = dict(atol=1e-5, rtol=1e-5)
SCORES = torch.tensor([0.0, 2.5, 2.5, 4.0, 1.0, 5.0])      # with a tie


def _leaves(*shapes, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


@pytest.mark.parametrize("d", [8, 7])                      # an odd width is padded with one zero
@pytest.mark.parametrize("scale", [20.0, 5.0])
def test_angle_equals_st_angleloss_value_and_gradients(d, scale):
    e1, e2 = _leaves((B, d), (B, d), seed=d)
    ours = angle_loss(e1, e2, SCORES, scale=scale).loss
    theirs = st_losses.AnglELoss(model=None, scale=scale).compute_loss_from_embeddings([e1, e2], SCORES)
    torch.testing.assert_close(ours, theirs, **TOL)
    for go, gt in zip(torch.autograd.grad(ours, [e1, e2], retain_graph=True),
                      torch.autograd.grad(theirs, [e1, e2])):
        torch.testing.assert_close(go, gt, **TOL)


@pytest.mark.parametrize("d", [8, 7])
def test_angle_similarity_equals_st_pairwise_angle_sim(d):
    x, y = _leaves((B, d), (B, d), seed=10 + d)
    torch.testing.assert_close(angle_similarity(x, y), st_util.pairwise_angle_sim(x, y), **TOL)


def test_gradcheck_double_precision():
    e1, e2 = _leaves((5, 6), (5, 6), seed=3, dtype=torch.float64)
    scores = torch.tensor([0.1, 0.9, 0.4, 0.4, 0.7], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: angle_loss(a, b, scores, scale=5.0).loss, (e1, e2))


def test_without_the_sine_term_angle_is_cosent_on_the_cosine():
    """Vectors whose second halves are zero have no imaginary part: the angle similarity is then |cos|,
    and for pairs with positive cosines AnglE equals CoSENT exactly."""
    g = torch.Generator().manual_seed(4)
    base = torch.rand(B, 4, generator=g) + 0.1                  # positive entries: every cosine > 0
    e1 = torch.cat([base, torch.zeros(B, 4)], dim=1)
    e2 = torch.cat([base + 0.3 * torch.rand(B, 4, generator=g), torch.zeros(B, 4)], dim=1)
    torch.testing.assert_close(angle_similarity(e1, e2), F.cosine_similarity(e1, e2, dim=-1))
    torch.testing.assert_close(angle_loss(e1, e2, SCORES).loss, cosent_loss(e1, e2, SCORES).loss)
    # with the imaginary halves filled in, the two losses differ
    e1b, e2b = _leaves((B, 8), (B, 8), seed=5)
    assert abs(angle_loss(e1b, e2b, SCORES).loss.item() - cosent_loss(e1b, e2b, SCORES).loss.item()) > 1e-3


def test_identical_vectors_have_similarity_one_and_stats_are_cosines():
    x = torch.randn(4, 6)
    torch.testing.assert_close(angle_similarity(x, x), torch.ones(4))
    out = angle_loss(x, x, torch.arange(4.0))
    assert out.stats["pos_sim"] == pytest.approx(1.0) and out.stats.keys() >= {"accuracy", "pos_sim", "neg_sim"}
    # all scores tied: no ordered pair, the loss is log(1 + 0) = 0
    assert angle_loss(*_leaves((4, 6), (4, 6)), torch.ones(4)).loss.item() == pytest.approx(0.0)


@pytest.mark.parametrize("call, message", [
    (lambda: angle_loss(torch.randn(3, 4), torch.randn(3, 4), torch.rand(4)),
     r"batch sizes differ: emb1 has 3 rows, scores has 4"),
    (lambda: angle_loss(torch.randn(3, 4), torch.randn(3, 5), torch.rand(3)),
     r"embedding dims differ: emb1 has d=4, emb2 has d=5"),
    (lambda: angle_loss(torch.randn(3, 4), torch.randn(3, 4), torch.rand(3, 1)), r"scores must have shape \[B\]"),
    (lambda: angle_loss(torch.randn(3, 4), torch.randn(3, 4), torch.rand(3), scale=0.0),
     r"scale must be a finite number > 0, got 0.0"),
    (lambda: angle_similarity(torch.randn(4), torch.randn(4)), r"emb1 must have shape \[B, d\]"),
    (lambda: angle_similarity(torch.randn(2, 4), [[0.0] * 4] * 2), r"emb2 must be a torch.Tensor, got list"),
])
def test_bad_input_messages(call, message):
    with pytest.raises(ValueError, match=message):
        call()
