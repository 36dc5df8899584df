"""Part 4 checkers: Exercise 5 (one multi-task step: temperature sampling of the task, then its weighted loss,
sections 4.3-4.4) and Exercise 6 (the Matryoshka loss, section 4.5).

Each checker runs the reader's function on inputs where the usual slips give different answers, compares with
the reference (:mod:`embedlessons.multitask`, :mod:`embedlessons.matryoshka`) and names the slip the answer
reproduces.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .common import CheckResult, call_reader, scalar_value

__all__ = ["check_multitask_step", "check_matryoshka_loss", "EXERCISE_5_TASKS", "exercise_6_inputs"]


# ======================================================================================= Exercise 5
#: Task name -> number of rows (in this order: the order the cumulative probabilities follow).
EXERCISE_5_TASKS = {"retrieval": 800, "sts": 5_749, "nli": 5_864, "news": 5_000, "tiny": 40}
_WEIGHTS = {"retrieval": 2.0, "sts": 0.5, "nli": 1.0, "news": 1.5, "tiny": 3.0}
_CASES = [(2.0, u) for u in (0.01, 0.03, 0.2, 0.45, 0.7, 0.995)] + [(1.0, u) for u in (0.02, 0.3, 0.999)] + \
         [(5.0, u) for u in (0.1, 0.26, 0.98)]


def _losses() -> dict[str, Callable]:
    """One loss per task, each giving a different value on its batch (so picking the wrong one shows)."""
    return {name: (lambda x, k=k: (x * (k + 1)).pow(2).mean()) for k, name in enumerate(EXERCISE_5_TASKS)}


def _batches() -> dict[str, tuple]:
    g = torch.Generator().manual_seed(5)
    return {name: (torch.randn(4, 3, generator=g),) for name in EXERCISE_5_TASKS}


def _probabilities(kind: str, temperature: float) -> np.ndarray:
    n = np.array(list(EXERCISE_5_TASKS.values()), dtype=np.float64)
    p = {"right": n ** (1 / temperature), "proportional": n, "inverted": n ** temperature,
         "uniform": np.ones_like(n)}[kind]
    return p / p.sum()


def _step_variant(temperature: float, u: float, probs: str = "right", weights: str = "right",
                  side: str = "right") -> tuple[str, float]:
    p = _probabilities(probs, temperature)
    names = list(EXERCISE_5_TASKS)
    i = int(np.searchsorted(np.cumsum(p), u, side=side))
    name = names[min(i, len(names) - 1)]
    loss = float(_losses()[name](*_batches()[name]))
    w = {"right": _WEIGHTS[name], "ignored": 1.0, "sorted": _WEIGHTS[sorted(names)[names.index(name)]]}[weights]
    return name, w * loss


_STEP_MISTAKES = {
    "the task is drawn in proportion to n (that is T = 1); temperature sampling uses n ** (1 / T)":
        dict(probs="proportional"),
    "the task is drawn in proportion to n ** T; the exponent is 1 / T (a larger T is closer to uniform)":
        dict(probs="inverted"),
    "every task is drawn with the same probability; temperature sampling uses n ** (1 / T)": dict(probs="uniform"),
    "the task's weight is ignored: return weight[task] * loss": dict(weights="ignored"),
    "the weight belongs to another task (weights looked up by position in sorted names?)": dict(weights="sorted"),
}


def check_multitask_step(fn: Callable) -> CheckResult:
    """Exercise 5: ``fn(task_losses, batches, sizes, weights, temperature, u) -> (task_name, loss)``.

    The reference: probabilities ``p_i = n_i ** (1 / T) / sum_j n_j ** (1 / T)`` over the tasks in the order of
    ``sizes``; the task is the first i whose cumulative probability exceeds ``u`` (``u`` in [0, 1), inverse-CDF
    sampling); the loss is ``weights[task] * task_losses[task](*batches[task])``. Accepts a float or a 0-dim
    tensor, and the task as its name.
    """
    losses, batches = _losses(), _batches()
    for temperature, u in _CASES:
        out, failed = call_reader(fn, losses, batches, dict(EXERCISE_5_TASKS), dict(_WEIGHTS), temperature, u,
                                  context=f"temperature {temperature}, u {u}")
        if failed is not None:
            return failed
        if not (isinstance(out, tuple) and len(out) == 2):
            return CheckResult(False, f"expected (task_name, loss), got {type(out).__name__}")
        name, value = out
        value = scalar_value(value)
        if isinstance(value, str):
            return CheckResult(False, value)
        if name not in EXERCISE_5_TASKS:
            return CheckResult(False, f"the task should be one of {list(EXERCISE_5_TASKS)}, got {name!r}")
        ref_name, ref_value = _step_variant(temperature, u)
        if name == ref_name and math.isclose(value, ref_value, rel_tol=1e-5, abs_tol=1e-7):
            continue
        for mistake, kwargs in _STEP_MISTAKES.items():
            m_name, m_value = _step_variant(temperature, u, **kwargs)
            if name == m_name and math.isclose(value, m_value, rel_tol=1e-5, abs_tol=1e-7) and \
                    (m_name, m_value) != (ref_name, ref_value):
                return CheckResult(False, f"your step matches a common mistake: {mistake}")
        if name != ref_name:
            return CheckResult(False, f"with temperature {temperature} and u = {u} the step's task is {ref_name!r}, "
                                      f"not {name!r}: take the first task whose cumulative probability exceeds u")
        return CheckResult(False, f"the task ({name!r}) is right but the loss is {value:.5f}, not {ref_value:.5f}: "
                                  f"call that task's loss on its batch and multiply by its weight")
    return CheckResult(True, f"right task and weighted loss in all {len(_CASES)} cases (temperatures 1, 2 and 5)")


# ======================================================================================= Exercise 6
def exercise_6_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor and positive embeddings [6, 16] whose rows have different norms (so normalising matters)."""
    g = torch.Generator().manual_seed(60 + seed)
    a = torch.randn(6, 16, generator=g) * torch.linspace(0.5, 3.0, 6)[:, None]
    p = a + 0.8 * torch.randn(6, 16, generator=g)
    return a, p


def _info_nce(a: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    a, p = F.normalize(a, dim=-1), F.normalize(p, dim=-1)
    return F.cross_entropy(a @ p.T / 0.05, torch.arange(len(a)))


def _squared_distance(a: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    # depends on the norms of its inputs, so a missing re-normalisation shows (InfoNCE normalises itself)
    return (a - p).pow(2).sum(-1).mean()


# dims not sorted, with weights that differ, so that sorting one without the other shows
_DIMS, _DIM_WEIGHTS = [4, 16, 8], [0.25, 1.0, 0.5]


def _mrl_variant(loss, a, p, dims, weights, renormalize=True, use_weights=True, sort_dims_only=False,
                 axis="features") -> float:
    pairs = list(zip(sorted(dims, reverse=True), weights)) if sort_dims_only else list(zip(dims, weights))
    total = 0.0
    for m, w in pairs:
        x, y = (a[:, :m], p[:, :m]) if axis == "features" else (a[:m], p[:m])
        if renormalize:
            x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
        total = total + (w if use_weights else 1.0) * float(loss(x, y))
    return total


_MRL_MISTAKES = {
    "the prefixes are not re-normalised: F.normalize(e[:, :m], dim=-1) before the loss":
        dict(renormalize=False),
    "the weights are ignored: sum w_m * loss at dim m": dict(use_weights=False),
    "the dims were sorted but the weights were not: each weight belongs to the dim at the same position":
        dict(sort_dims_only=True),
    "the wrong axis is truncated: e[:m] keeps the first m rows (texts); the prefix is e[:, :m], the first m "
    "coordinates": dict(axis="rows"),
    "the wrong axis is truncated, and the prefixes are not re-normalised": dict(axis="rows", renormalize=False),
}


def check_matryoshka_loss(fn: Callable) -> CheckResult:
    """Exercise 6: ``fn(loss, anchor [B,d], positive [B,d], dims, weights) -> scalar``.

    The reference: ``sum_m w_m * loss(normalize(anchor[:, :m]), normalize(positive[:, :m]))`` over the
    (dim, weight) pairs as given (any order of summation). Runs with two different inner losses (so the answer
    must call ``loss``, not a fixed InfoNCE) and two input sets, and checks that the result has a gradient.
    """
    got = []
    for seed, loss in enumerate((_info_nce, _squared_distance)):
        a, p = exercise_6_inputs(seed)
        a.requires_grad_(True)
        out, failed = call_reader(fn, loss, a, p.clone(), list(_DIMS), list(_DIM_WEIGHTS),
                                  context=f"inputs [6, 16], dims {_DIMS}, weights {_DIM_WEIGHTS}")
        if failed is not None:
            return failed
        value = scalar_value(out)
        if isinstance(value, str):
            return CheckResult(False, value)
        close = lambda ref: math.isclose(value, ref, rel_tol=1e-5, abs_tol=1e-6)
        ref = _mrl_variant(loss, a.detach(), p, _DIMS, _DIM_WEIGHTS)
        if not close(ref):
            for mistake, kwargs in _MRL_MISTAKES.items():
                if close(_mrl_variant(loss, a.detach(), p, _DIMS, _DIM_WEIGHTS, **kwargs)):
                    return CheckResult(False, f"your loss matches a common mistake: {mistake}")
            name = loss.__name__.strip("_")
            return CheckResult(False, f"the loss is {value:.5f} but the reference gives {ref:.5f} (inner loss {name}); "
                                      f"check the prefix, the normalisation, the weights and that you call `loss`")
        if not (isinstance(out, torch.Tensor) and out.requires_grad):
            return CheckResult(False, "the value is right but carries no gradient: keep it a tensor (no .item() or "
                                      "float() inside) so that training can back-propagate through it")
        got.append(value)
    return CheckResult(True, f"equal to the reference Matryoshka loss with both inner losses ({got[0]:.4f}, "
                             f"{got[1]:.4f})")
