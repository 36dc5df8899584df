"""Exercise 5 (a multi-task step) and Exercise 6 (the Matryoshka loss) checkers: right answers written in
different ways pass, each common wrong one fails with its name; the references equal the package's code."""
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embedlessons.exercises.part4 import (EXERCISE_5_TASKS, check_matryoshka_loss, check_multitask_step,
                                          exercise_6_inputs)
from embedlessons.losses import in_batch_info_nce
from embedlessons.matryoshka import MatryoshkaLoss
from embedlessons.multitask import task_probabilities


# ----------------------------------------------------------------------------- Exercise 5
def step_with_the_package(task_losses, batches, sizes, weights, temperature, u):
    names = list(sizes)
    p = task_probabilities([sizes[n] for n in names], "temperature", temperature)
    name = names[int(np.searchsorted(np.cumsum(p), u, side="right"))]
    return name, weights[name] * task_losses[name](*batches[name])


def step_with_a_loop(task_losses, batches, sizes, weights, temperature, u):
    """A reader's plain-Python answer: returns a float, accumulates the probabilities in a loop."""
    scaled = {n: k ** (1.0 / temperature) for n, k in sizes.items()}
    total, acc = sum(scaled.values()), 0.0
    for name, s in scaled.items():
        acc += s / total
        if u < acc:
            break
    return name, float(weights[name] * task_losses[name](*batches[name]))


def step_in_log_space(task_losses, batches, sizes, weights, temperature, u):
    logits = torch.log(torch.tensor([float(v) for v in sizes.values()])) / temperature
    cdf = torch.softmax(logits, 0).cumsum(0)
    i = int((cdf <= u).sum())
    name = list(sizes)[i]
    return name, task_losses[name](*batches[name]) * weights[name]


@pytest.mark.parametrize("answer", [step_with_the_package, step_with_a_loop, step_in_log_space])
def test_right_multitask_steps_pass(answer):
    result = check_multitask_step(answer)
    assert result.passed, result.message


def _wrong(probs=None, weight="right"):
    def fn(task_losses, batches, sizes, weights, temperature, u):
        n = np.array(list(sizes.values()), dtype=float)
        p = {"proportional": n, "inverted": n ** temperature, "uniform": np.ones_like(n), None: n ** (1 / temperature)}[probs]
        names = list(sizes)
        name = names[int(np.searchsorted(np.cumsum(p / p.sum()), u, side="right"))]
        w = {"right": weights[name], "ignored": 1.0, "sorted": weights[sorted(names)[names.index(name)]]}[weight]
        return name, w * task_losses[name](*batches[name])
    return fn


@pytest.mark.parametrize("answer, named", [
    (_wrong("proportional"), "in proportion to n (that is T = 1)"),
    (_wrong("inverted"), "n ** T"),
    (_wrong("uniform"), "same probability"),
    (_wrong(weight="ignored"), "weight is ignored"),
    (_wrong(weight="sorted"), "belongs to another task"),
])
def test_common_multitask_mistakes_are_named(answer, named):
    result = check_multitask_step(answer)
    assert not result.passed and named in result.message, result.message


def test_other_wrong_steps_fail_with_a_reason():
    assert "NotImplementedError" in check_multitask_step(lambda *a: (_ for _ in ()).throw(NotImplementedError())).message
    assert "(task_name, loss)" in check_multitask_step(lambda *a: 1.0).message
    first_task = lambda losses, batches, sizes, weights, t, u: ("retrieval", weights["retrieval"] * losses["retrieval"](
        *batches["retrieval"]))
    assert "the step's task is" in check_multitask_step(first_task).message
    assert "should be one of" in check_multitask_step(lambda *a: ("vision", 1.0)).message
    assert list(EXERCISE_5_TASKS)[-1] == "tiny"


# ----------------------------------------------------------------------------- Exercise 6
def mrl_loop(loss, anchor, positive, dims, weights):
    total = 0
    for m, w in zip(dims, weights):
        total = total + w * loss(F.normalize(anchor[:, :m], dim=-1), F.normalize(positive[:, :m], dim=-1))
    return total


def mrl_sorted_pairs(loss, anchor, positive, dims, weights):
    """Sorts (dim, weight) pairs together, and normalises by dividing by the norm."""
    terms = []
    for m, w in sorted(zip(dims, weights), reverse=True):
        a, p = anchor[..., :m], positive[..., :m]
        terms.append(w * loss(a / a.norm(dim=1, keepdim=True), p / p.norm(dim=1, keepdim=True)))
    return torch.stack(terms).sum()


def mrl_with_the_package(loss, anchor, positive, dims, weights):
    return MatryoshkaLoss(loss, dims, weights)(anchor, positive).loss


@pytest.mark.parametrize("answer", [mrl_loop, mrl_sorted_pairs, mrl_with_the_package])
def test_right_matryoshka_losses_pass(answer):
    result = check_matryoshka_loss(answer)
    assert result.passed, result.message


def _mrl_wrong(renorm=True, weights_used=True, sort_dims=False, rows=False, detach=False):
    def fn(loss, anchor, positive, dims, weights):
        ds = sorted(dims, reverse=True) if sort_dims else dims
        total = 0
        for m, w in zip(ds, weights):
            a, p = (anchor[:m], positive[:m]) if rows else (anchor[:, :m], positive[:, :m])
            if renorm:
                a, p = F.normalize(a, dim=-1), F.normalize(p, dim=-1)
            total = total + (w if weights_used else 1.0) * loss(a, p)
        return float(total) if detach else total
    return fn


@pytest.mark.parametrize("answer, named", [
    (_mrl_wrong(renorm=False), "not re-normalised"),
    (_mrl_wrong(weights_used=False), "weights are ignored"),
    (_mrl_wrong(sort_dims=True), "sorted but the weights were not"),
    (_mrl_wrong(rows=True), "wrong axis"),
    (_mrl_wrong(detach=True), "no gradient"),
    (lambda loss, a, p, dims, w: in_batch_info_nce(a, p).loss, "reference gives"),
])
def test_common_matryoshka_mistakes_are_named(answer, named):
    result = check_matryoshka_loss(answer)
    assert not result.passed and named in result.message, result.message


def test_the_reference_is_sentence_transformers_and_our_wrapper():
    # the checker's reference (sum of weighted prefix losses) is what MatryoshkaLoss computes
    a, p = exercise_6_inputs(0)
    inner = functools.partial(in_batch_info_nce, temperature=0.05)
    ours = MatryoshkaLoss(inner, [4, 16, 8], [0.25, 1.0, 0.5])(a, p).loss
    assert float(ours) == pytest.approx(float(mrl_loop(lambda x, y: inner(x, y).loss, a, p, [4, 16, 8],
                                                       [0.25, 1.0, 0.5])), rel=1e-6)
