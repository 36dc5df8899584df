"""Classification and clustering losses of Part 4: label prototypes with a temperature, the centre loss and
its update rule; shapes, float64 gradchecks, closed forms, and the error messages for bad input."""
import math

import pytest
import torch
import torch.nn.functional as F

from embedlessons.task_losses import (CenterLoss, PrototypeLoss, center_loss, class_labels, class_means,
                                      prototype_loss, update_centers)

B, D, C = 6, 5, 3
LABELS = torch.tensor([0, 1, 2, 0, 1, 2])


def _leaves(*shapes, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


# ------------------------------------------------------------------------------------------ prototypes
def test_prototype_loss_is_cross_entropy_over_cosines_and_gradchecks():
    x, p = _leaves((B, D), (C, D), seed=1, dtype=torch.float64)
    out = prototype_loss(x, LABELS, p, temperature=0.1)
    logits = F.normalize(x, dim=-1) @ F.normalize(p, dim=-1).T / 0.1
    rows = [-(logits[i, LABELS[i]] - logits[i].logsumexp(0)) for i in range(B)]
    torch.testing.assert_close(out.loss, torch.stack(rows).mean())
    assert out.loss.dim() == 0 and set(out.stats) == {"accuracy", "pos_sim", "neg_sim"}
    assert torch.autograd.gradcheck(lambda a, b: prototype_loss(a, LABELS, b, temperature=0.2).loss, (x, p))


def test_float_labels_as_the_trainer_passes_them_are_accepted():
    x, p = _leaves((B, D), (C, D), seed=2)
    torch.testing.assert_close(prototype_loss(x, LABELS.float(), p).loss, prototype_loss(x, LABELS, p).loss)


def test_embeddings_on_their_prototypes_classify_perfectly_and_lower_temperature_sharpens():
    protos = torch.eye(C, D)
    x = protos[LABELS] + 0.01 * torch.randn(B, D, generator=torch.Generator().manual_seed(3))
    warm, cold = prototype_loss(x, LABELS, protos, 1.0), prototype_loss(x, LABELS, protos, 0.05)
    assert warm.stats["accuracy"] == cold.stats["accuracy"] == 1.0
    assert cold.loss < warm.loss and cold.stats["pos_sim"] > 0.99
    # and the chance level: all prototypes identical -> log C at any temperature
    same = torch.ones(C, D)
    assert prototype_loss(x, LABELS, same, 0.05).loss.item() == pytest.approx(math.log(C), abs=1e-5)


def test_prototype_module_learns_its_prototypes_and_optionally_its_temperature():
    loss = PrototypeLoss(C, D, temperature=0.1, learn_temperature=True, seed=0)
    x = _leaves((B, D), seed=4)[0]
    out = loss(x, LABELS.float())
    out.loss.backward()
    assert loss.prototypes.grad is not None and loss.prototypes.grad.abs().sum() > 0
    assert loss.temperature.log_t.grad is not None and out.stats["temperature"] == pytest.approx(0.1)
    assert {n for n, _ in loss.named_parameters()} == {"prototypes", "temperature.log_t"}
    fixed = PrototypeLoss(C, D, temperature=0.1)
    assert [n for n, _ in fixed.named_parameters()] == ["prototypes"]
    assert torch.equal(PrototypeLoss(C, D, seed=0).prototypes, fixed.prototypes)        # seeded
    assert not torch.equal(PrototypeLoss(C, D, seed=1).prototypes, fixed.prototypes)


def test_training_steps_separate_the_classes():
    """A few Adam steps on free embeddings and prototypes drive the loss down and the accuracy to 1."""
    torch.manual_seed(0)
    x = torch.randn(12, D, requires_grad=True)
    y = torch.arange(12) % C
    loss = PrototypeLoss(C, D, temperature=0.1)
    opt = torch.optim.Adam([x, *loss.parameters()], lr=0.1)
    first = None
    for _ in range(25):
        out = loss(x, y)
        first = out.loss.item() if first is None else first
        opt.zero_grad(); out.loss.backward(); opt.step()
    assert out.loss.item() < 0.3 * first and out.stats["accuracy"] == 1.0
    assert torch.equal(loss.predict(x), y)


def test_class_means_start_prototypes_where_the_classes_are():
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    means = class_means(x, torch.tensor([0, 0, 1]), 2)
    torch.testing.assert_close(means, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    torch.testing.assert_close(class_means(x, torch.tensor([0, 0, 1]), 2, normalize=False),
                               torch.tensor([[2.0, 0.0], [0.0, 2.0]]))
    loss = PrototypeLoss(2, 2, init=means)
    assert torch.equal(loss.predict(x), torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match=r"classes \[2\] have no embedding"):
        class_means(x, torch.tensor([0, 0, 1]), 3)


# ------------------------------------------------------------------------------------------ centres
def test_center_loss_closed_form_and_gradcheck():
    x = torch.tensor([[3.0, 4.0], [0.0, 2.0]])             # normalised: (0.6, 0.8) and (0, 1)
    centers = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    out = center_loss(x, torch.tensor([0, 1]), centers)
    assert out.loss.item() == pytest.approx(0.5 * (0.0 + 2.0) / 2)        # distances^2: 0 and 2
    assert out.stats["accuracy"] == 0.5
    raw = center_loss(x, torch.tensor([0, 1]), centers, normalize=False)
    assert raw.loss.item() == pytest.approx(0.5 * ((2.4 ** 2 + 3.2 ** 2) + (1.0 + 4.0)) / 2)
    e, c = _leaves((B, D), (C, D), seed=5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: center_loss(a, LABELS, b).loss, (e, c))


def test_update_centers_follows_wen_et_al():
    centers = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    update_centers(centers, x, torch.tensor([0, 0, 1]), alpha=0.5)
    # class 0: delta = ((0-1) + (0-0), (0-0) + (0-1)) / 3 -> c = 0 - 0.5 * (-1/3, -1/3)
    torch.testing.assert_close(centers[0], torch.tensor([1 / 6, 1 / 6]))
    torch.testing.assert_close(centers[1], torch.tensor([1.0, 1.0]))          # at its only point: stays
    torch.testing.assert_close(centers[2], torch.tensor([5.0, 5.0]))          # absent class: stays


def test_center_module_moves_centres_only_in_training_and_combines_the_terms():
    loss = CenterLoss(C, D, center_weight=0.5, alpha=0.5)
    x = _leaves((B, D), seed=6)[0]
    with torch.no_grad():
        before = loss.centers.clone()
    out = loss(x, LABELS)
    assert not torch.equal(loss.centers, before)                              # moved toward the class means
    expected = out.stats["classify"] + 0.5 * out.stats["center"]
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    out.loss.backward()
    assert loss.classifier.prototypes.grad is not None and "centers" in dict(loss.named_buffers())
    frozen = loss.centers.clone()
    loss.eval()
    loss(x, LABELS)
    assert torch.equal(loss.centers, frozen)
    alone = CenterLoss(C, D, classify=False)(x, LABELS)
    assert alone.loss.item() == pytest.approx(alone.stats["center"]) and "classify" not in alone.stats


def test_repeated_updates_converge_to_the_class_means():
    loss = CenterLoss(C, D, classify=False, alpha=0.5)
    x = F.normalize(_leaves((B, D), seed=7)[0].detach(), dim=-1)
    for _ in range(60):
        loss(x.clone().requires_grad_(), LABELS)
    torch.testing.assert_close(loss.centers, class_means(x, LABELS, C), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("call, message", [
    (lambda: prototype_loss(torch.randn(4, 5), torch.tensor([0, 1, 2]), torch.randn(3, 5)),
     r"batch sizes differ: embeddings has 4 rows, labels has 3"),
    (lambda: prototype_loss(torch.randn(4, 5), torch.tensor([0, 1, 2, 3]), torch.randn(3, 5)),
     r"labels must lie in \[0, 3\) for 3 classes, got 0..3"),
    (lambda: prototype_loss(torch.randn(4, 5), torch.tensor([0, 1, 2, -1]), torch.randn(3, 5)),
     r"labels must lie in \[0, 3\)"),
    (lambda: prototype_loss(torch.randn(2, 5), torch.tensor([0.0, 1.5]), torch.randn(3, 5)),
     r"labels must be whole numbers"),
    (lambda: prototype_loss(torch.randn(2, 5), torch.tensor([[0], [1]]), torch.randn(3, 5)),
     r"labels must have shape \[B\]"),
    (lambda: prototype_loss(torch.randn(2, 5), torch.tensor([0, 1]), torch.randn(3, 4)),
     r"prototypes have d=4 but the embeddings have d=5"),
    (lambda: prototype_loss(torch.randn(2, 5), torch.tensor([0, 0]), torch.randn(1, 5)),
     r"prototypes need at least 2 classes"),
    (lambda: prototype_loss(torch.randn(2, 5), torch.tensor([0, 1]), torch.randn(3, 5), temperature=0.0),
     r"temperature must be a finite number > 0"),
    (lambda: prototype_loss(torch.randn(5), torch.tensor([0]), torch.randn(3, 5)),
     r"embeddings must have shape \[B, d\]"),
    (lambda: PrototypeLoss(1, 5), r"n_classes must be an int >= 2"),
    (lambda: PrototypeLoss(3, 5, init=torch.randn(3, 4)), r"init must be a tensor of shape \[3, 5\]"),
    (lambda: center_loss(torch.randn(2, 5), torch.tensor([0, 1]), torch.zeros(2, 6)),
     r"centers have d=6 but the embeddings have d=5"),
    (lambda: update_centers(torch.zeros(2, 5), torch.randn(2, 5), torch.tensor([0, 1]), alpha=0.0),
     r"alpha must be in \(0, 1\]"),
    (lambda: CenterLoss(3, 5, center_weight=-1.0), r"center_weight must be a finite number >= 0"),
    (lambda: CenterLoss(3, 5, center_weight=0.0, classify=False), r"no loss left"),
    (lambda: class_labels([0, 1], 2), r"labels must be a torch.Tensor, got list"),
])
def test_bad_input_messages(call, message):
    with pytest.raises(ValueError, match=message):
        call()
