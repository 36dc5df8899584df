"""Part 2 checker: Exercise 2, InfoNCE with explicit negatives (section 2.2)."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .common import CheckResult, call_reader, scalar_value

__all__ = ["check_info_nce", "EXERCISE_2_SHAPES"]

# B <= K + 1, so that the "labels = arange(B)" mistake still runs and gives a (wrong) number.
EXERCISE_2_SHAPES = {"B": 4, "K": 5, "d": 8}
_TEMPERATURES = (0.1, 0.5)       # the second input set confirms a match and catches an ignored temperature


def _inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random embeddings whose rows have very different norms, so that a missing normalisation shows."""
    g = torch.Generator().manual_seed(seed)
    B, K, d = EXERCISE_2_SHAPES["B"], EXERCISE_2_SHAPES["K"], EXERCISE_2_SHAPES["d"]
    a = torch.randn(B, d, generator=g) * torch.linspace(0.3, 3.0, B)[:, None]
    p = a + 0.8 * torch.randn(B, d, generator=g)                 # related to the anchor: loss well below chance
    n = torch.randn(B, K, d, generator=g) * torch.linspace(0.5, 2.5, K)[None, :, None]
    return a, p, n


def _variant(a, p, n, t, normalise=True, target="index 0", temp="divide", reduce="mean") -> float:
    """The reference loss, or one common mistake in it."""
    if normalise:
        a, p, n = (F.normalize(x, dim=-1) for x in (a, p, n))
    pos = (a * p).sum(-1, keepdim=True)
    neg = torch.einsum("bd,bkd->bk", a, n)
    logits = torch.cat([pos, neg], 1)
    logits = {"divide": logits / t, "multiply": logits * t, "none": logits}[temp]
    B = len(a)
    labels = {"index 0": torch.zeros(B, dtype=torch.long), "index 1": torch.ones(B, dtype=torch.long),
              "arange": torch.arange(B)}[target]
    return F.cross_entropy(logits, labels, reduction=reduce).item()


_MISTAKES = {
    "embeddings are not L2-normalised (InfoNCE uses cosine similarity: F.normalize each input)":
        dict(normalise=False),
    "wrong target index: the positive is candidate 0 in every row (labels = zeros(B)), not arange(B)":
        dict(target="arange"),
    "wrong target index: the target is a negative; put the positive at index 0 of the candidates "
    "(cat([pos, neg])) with labels zeros(B), or point the label at wherever the positive is":
        dict(target="index 1"),
    "the similarities are multiplied by the temperature; divide them by it (logits = sim / t)":
        dict(temp="multiply"),
    "the temperature is ignored (logits = sim / t)": dict(temp="none"),
    "the loss is summed over the batch; take the mean": dict(reduce="sum"),
}


def check_info_nce(fn: Callable, rtol: float = 1e-4, atol: float = 1e-5) -> CheckResult:
    """Exercise 2: ``fn(anchor [B,d], positive [B,d], negatives [B,K,d], temperature) -> scalar``.

    The reference is cross-entropy over the K+1 cosine similarities divided by the temperature, with the
    positive at index 0, averaged over the batch (:func:`embedlessons.losses.info_nce`). The reader's
    function runs on two input sets (temperatures 0.1 and 0.5); on a mismatch the checker names the
    common mistake whose number the answer reproduces.
    """
    got = []
    for seed, t in enumerate(_TEMPERATURES):
        a, p, n = _inputs(seed)
        out, failed = call_reader(fn, a.clone(), p.clone(), n.clone(), t, context=(
            f"inputs: anchor {tuple(a.shape)}, positive {tuple(p.shape)}, negatives {tuple(n.shape)}"))
        if failed is not None:
            return failed
        value = scalar_value(out)
        if isinstance(value, str):
            return CheckResult(False, value)
        if not math.isfinite(value):
            return CheckResult(False, f"the loss is {value} (NaN or infinite); check for log(0) or a division by 0")
        close = lambda ref: math.isclose(value, ref, rel_tol=rtol, abs_tol=atol)
        if not close(_variant(a, p, n, t)):
            for mistake, kwargs in _MISTAKES.items():
                if close(_variant(a, p, n, t, **kwargs)):
                    return CheckResult(False, f"your loss matches a common mistake: {mistake}")
            return CheckResult(False, f"the loss is {value:.5f} but the reference gives {_variant(a, p, n, t):.5f} "
                                      f"(temperature {t}); check the normalisation, the target and the temperature")
        got.append(value)
    return CheckResult(True, f"equal to the reference InfoNCE on both input sets (losses {got[0]:.4f}, {got[1]:.4f})")
