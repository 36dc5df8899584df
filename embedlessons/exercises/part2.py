"""Part 2 checkers: Exercise 2 (InfoNCE with explicit negatives, section 2.2) and two of section 2.7's
"more to try" exercises: the symmetric in-batch loss (section 2.3) and GradCache (Gao et al. 2021).

Each checker runs the reader's function on inputs where the usual slips give different numbers, compares
with the reference (:mod:`embedlessons.losses`), and names the mistake when the answer reproduces one.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .common import CheckResult, call_reader, scalar_value

__all__ = ["check_info_nce", "EXERCISE_2_SHAPES", "check_symmetric_info_nce", "SYMMETRIC_SHAPES",
           "check_grad_cache", "GRAD_CACHE_SENTENCES"]

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


def _call_loss(fn: Callable, inputs: tuple, shapes: str) -> float | CheckResult:
    """The reader's loss on ``inputs`` as a float, or a failed :class:`CheckResult` saying what went wrong."""
    out, failed = call_reader(fn, *inputs, context=f"inputs: {shapes}")
    if failed is not None:
        return failed
    value = scalar_value(out)
    if isinstance(value, str):
        return CheckResult(False, value)
    if not math.isfinite(value):
        return CheckResult(False, f"the loss is {value} (NaN or infinite); check for log(0) or a division by 0")
    return value


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
        value = _call_loss(fn, (a.clone(), p.clone(), n.clone(), t),
                           f"anchor {tuple(a.shape)}, positive {tuple(p.shape)}, negatives {tuple(n.shape)}")
        if isinstance(value, CheckResult):
            return value
        close = lambda ref: math.isclose(value, ref, rel_tol=rtol, abs_tol=atol)
        if not close(_variant(a, p, n, t)):
            for mistake, kwargs in _MISTAKES.items():
                if close(_variant(a, p, n, t, **kwargs)):
                    return CheckResult(False, f"your loss matches a common mistake: {mistake}")
            return CheckResult(False, f"the loss is {value:.5f} but the reference gives {_variant(a, p, n, t):.5f} "
                                      f"(temperature {t}); check the normalisation, the target and the temperature")
        got.append(value)
    return CheckResult(True, f"equal to the reference InfoNCE on both input sets (losses {got[0]:.4f}, {got[1]:.4f})")


# ============================================================================ more to try: the symmetric loss
# K = 2 hard negatives per row, so that using them (or not) in either direction changes the number.
SYMMETRIC_SHAPES = {"B": 5, "K": 2, "d": 8}


def _symmetric_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Anchors, related positives and hard negatives [B, K, d], rows of very different norms."""
    g = torch.Generator().manual_seed(100 + seed)
    B, K, d = SYMMETRIC_SHAPES["B"], SYMMETRIC_SHAPES["K"], SYMMETRIC_SHAPES["d"]
    a = torch.randn(B, d, generator=g) * torch.linspace(0.3, 3.0, B)[:, None]
    p = a + 0.9 * torch.randn(B, d, generator=g)
    n = (a[:, None] + 1.2 * torch.randn(B, K, d, generator=g)) * torch.linspace(0.5, 2.0, K)[None, :, None]
    return a, p, n


def _symmetric_variant(a, p, n, t, normalise=True, forward_hard=True, backward_hard=False, backward=True,
                       combine="mean", temp="divide") -> float:
    """The symmetric in-batch loss of :func:`embedlessons.losses.in_batch_info_nce`, or one slip in it."""
    if normalise:
        a, p, n = (F.normalize(x, dim=-1) for x in (a, p, n))
    scale = {"divide": lambda x: x / t, "multiply": lambda x: x * t, "none": lambda x: x}[temp]
    hard = n.transpose(0, 1).reshape(-1, a.shape[-1])                # [K*B, d], shared by every row
    labels = torch.arange(len(a))
    forward_cands = torch.cat([p, hard]) if forward_hard else p
    loss_ap = F.cross_entropy(scale(a @ forward_cands.T), labels)
    if not backward:
        return loss_ap.item()
    backward_cands = torch.cat([a, hard]) if backward_hard else a
    loss_pa = F.cross_entropy(scale(p @ backward_cands.T), labels)
    return ((loss_ap + loss_pa) / 2 if combine == "mean" else loss_ap + loss_pa).item()


_SYMMETRIC_MISTAKES = {
    "the loss is one-way (anchor -> positives only); add the positive -> anchors cross-entropy and average "
    "the two": dict(backward=False),
    "the hard negatives are also candidates in the positive -> anchors direction; there the candidates are "
    "the B anchors only": dict(backward_hard=True),
    "the hard negatives are missing from the anchor -> positives direction (candidates: the B positives, "
    "then every row's hard negatives)": dict(forward_hard=False),
    "the hard negatives are missing from the anchor -> positives direction, and used in the reverse one":
        dict(forward_hard=False, backward_hard=True),
    "the two directions are summed; average them": dict(combine="sum"),
    "embeddings are not L2-normalised (cosine similarities: F.normalize each input)": dict(normalise=False),
    "the similarities are multiplied by the temperature; divide them by it (logits = sim / t)":
        dict(temp="multiply"),
    "the temperature is ignored (logits = sim / t)": dict(temp="none"),
}


def check_symmetric_info_nce(fn: Callable, rtol: float = 1e-4, atol: float = 1e-5) -> CheckResult:
    """More to try, "the symmetric loss": ``fn(anchor [B,d], positive [B,d], hard_negatives [B,K,d], t) -> scalar``.

    The reference is ``in_batch_info_nce(anchor, positive, hard_negatives, t, symmetric=True)``: the mean of
    the anchor -> candidates cross-entropy (candidates: the B positives, then the B*K hard negatives of all
    rows) and the positive -> anchors one (candidates: the B anchors), each with target i for row i. Runs on
    two input sets (temperatures 0.1 and 0.5) and names the slip the answer reproduces, if any.
    """
    got = []
    for seed, t in enumerate(_TEMPERATURES):
        a, p, n = _symmetric_inputs(seed)
        value = _call_loss(fn, (a.clone(), p.clone(), n.clone(), t),
                           f"anchor {tuple(a.shape)}, positive {tuple(p.shape)}, hard_negatives {tuple(n.shape)}")
        if isinstance(value, CheckResult):
            return value
        close = lambda ref: math.isclose(value, ref, rel_tol=rtol, abs_tol=atol)
        reference = _symmetric_variant(a, p, n, t)
        if not close(reference):
            for mistake, kwargs in _SYMMETRIC_MISTAKES.items():
                if close(_symmetric_variant(a, p, n, t, **kwargs)):
                    return CheckResult(False, f"your loss matches a common mistake: {mistake}")
            return CheckResult(False, f"the loss is {value:.5f} but the reference gives {reference:.5f} (temperature "
                                      f"{t}); check the candidates of each direction, the targets and the averaging")
        got.append(value)
    return CheckResult(True, f"equal to in_batch_info_nce(..., symmetric=True) on both input sets "
                             f"(losses {got[0]:.4f}, {got[1]:.4f})")


# ============================================================================ more to try: GradCache
#: Short test sentences (written for the checker, not data): 8 anchors and their paraphrases.
GRAD_CACHE_SENTENCES: tuple[tuple[str, str], ...] = (
    ("A man is playing a guitar.", "Someone plays the guitar."),
    ("Two dogs run across a field of grass.", "Dogs are running outside."),
    ("A woman slices an onion in the kitchen.", "Someone is cutting vegetables."),
    ("The train leaves the station at noon.", "A train departs at midday."),
    ("Children are swimming in a lake.", "Kids swim in the water."),
    ("A chef cooks pasta.", "Pasta is being made by a cook."),
    ("An old man reads a newspaper on a bench in the park.", "A man is reading outdoors."),
    ("It is raining.", "The weather is wet."),
)
_GRAD_CACHE_RUNS = ((2, 0.05), (3, 0.1))        # (chunk size, temperature); 3 leaves a shorter last chunk


def _tiny_model():
    """A 1-layer, 32-wide random BERT bi-encoder on MiniLM's tokenizer, dropout off (eval mode)."""
    from ..models import small_bert

    return small_bert(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, seed=0).eval()


def _grads(model) -> torch.Tensor:
    """All parameter gradients flattened into one vector (zeros where a parameter got none)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1)
                      for p in model.parameters()])


def _reference_grads(model, anchors, positives, chunk_size, t, kind="full") -> tuple[float, torch.Tensor]:
    """(loss, gradient) of one full batch, or of one slip: plain gradient accumulation, one side only."""
    from ..losses import in_batch_info_nce

    model.zero_grad(set_to_none=True)
    embed = lambda texts: model(model.tokenize(list(texts)))
    if kind in ("full", "anchors only", "positives only"):
        a, p = embed(anchors), embed(positives)
        if kind == "anchors only":
            p = p.detach()
        if kind == "positives only":
            a = a.detach()
        loss = in_batch_info_nce(a, p, temperature=t).loss
        loss.backward()
        value = loss.item()
    else:                                 # plain accumulation: a loss per chunk, with in-chunk negatives only
        starts = range(0, len(anchors), chunk_size)
        chunk_losses = []
        for s in starts:
            loss = in_batch_info_nce(embed(anchors[s:s + chunk_size]), embed(positives[s:s + chunk_size]),
                                     temperature=t).loss
            (loss / (len(starts) if kind == "accumulation, mean" else 1)).backward()
            chunk_losses.append(loss.item())
        value = sum(chunk_losses) / len(chunk_losses)
    grads = _grads(model)
    model.zero_grad(set_to_none=True)
    return value, grads


def check_grad_cache(fn: Callable, rtol: float = 1e-4) -> CheckResult:
    """More to try, GradCache: ``fn(model, anchors, positives, chunk_size, temperature) -> loss``.

    ``fn`` must leave in ``model``'s parameters (``p.grad``) the gradient of the *full-batch*
    ``in_batch_info_nce(model(anchors), model(positives), temperature=t)`` while running the model on at
    most ``chunk_size`` texts at a time with gradients, and return that loss (a float or 0-dim tensor).
    Embed a list of texts with ``model(model.tokenize(texts))`` ([n, d], L2-normalised).

    The check runs a tiny random BERT (dropout off) on :data:`GRAD_CACHE_SENTENCES` twice (chunk sizes 2
    and 3, temperatures 0.05 and 0.1), compares the gradients with one full-batch backward pass
    (relative error below ``rtol``), and recognises plain gradient accumulation, a missing side and
    a gradient scaled by the number of chunks.

    References:
        Gao, Zhang, Han, Callan (2021), Scaling Deep Contrastive Learning Batch Size under Memory Limited
        Setup (GradCache).
    """
    anchors = [a for a, _ in GRAD_CACHE_SENTENCES]
    positives = [p for _, p in GRAD_CACHE_SENTENCES]
    model = _tiny_model()
    for chunk_size, t in _GRAD_CACHE_RUNS:
        ref_loss, ref = _reference_grads(model, anchors, positives, chunk_size, t)
        calls: list[int] = []
        hook = model.register_forward_pre_hook(lambda mod, args: calls.append(len(args[0]["input_ids"])))
        model.zero_grad(set_to_none=True)
        try:
            value = _call_loss(fn, (model, list(anchors), list(positives), chunk_size, t),
                               f"{len(anchors)} anchors, {len(positives)} positives, chunk_size {chunk_size}")
        finally:
            hook.remove()
        if isinstance(value, CheckResult):
            return value
        if model.training:
            model.eval()
            return CheckResult(False, "the model was left in training mode: with dropout on, the re-embedding "
                                      "pass differs from the cached one; keep model.eval() for this check")
        got = _grads(model)
        model.zero_grad(set_to_none=True)
        if calls and max(calls) > chunk_size:
            return CheckResult(False, f"the model ran on {max(calls)} texts at once; GradCache runs it on at most "
                                      f"chunk_size = {chunk_size} texts per call (embed the batch chunk by chunk)")
        if not torch.any(got != 0):
            return CheckResult(False, "no gradient reached the model's parameters: re-embed each chunk *with* "
                                      "gradients and call embeddings.backward(cached_gradient_of_that_chunk)")
        error = lambda g, target=ref: ((g - target).norm() / target.norm()).item()    # relative distance
        if error(got) > rtol:
            for kind, hint in (
                    ("accumulation, mean", "plain gradient accumulation (a loss per chunk, averaged): each chunk "
                                           "then sees only its own rows as negatives, not the whole batch"),
                    ("accumulation, sum", "plain gradient accumulation (a loss per chunk, summed): each chunk then "
                                          "sees only its own rows as negatives, not the whole batch"),
                    ("anchors only", "only the anchors' side: backpropagate the cached gradient into the "
                                     "positives' chunks too"),
                    ("positives only", "only the positives' side: backpropagate the cached gradient into the "
                                       "anchors' chunks too")):
                if error(got, _reference_grads(model, anchors, positives, chunk_size, t, kind)[1]) < rtol:
                    return CheckResult(False, f"your gradients match a common mistake: {hint}")
            ratio = (got @ ref / (ref @ ref)).item()
            if error(got / ratio) < rtol:
                return CheckResult(False, f"the gradients point the right way but are {ratio:.3g} times the "
                                          f"full-batch ones; backpropagate the gradient of the batch-mean loss, "
                                          f"once per chunk, without rescaling it")
            return CheckResult(False, f"the gradients differ from one full-batch backward pass (relative error "
                                      f"{error(got):.2g}, chunk_size {chunk_size}); the cached gradient of each "
                                      f"chunk must come from the loss over all cached embeddings")
        if not math.isclose(value, ref_loss, rel_tol=1e-4, abs_tol=1e-6):
            return CheckResult(False, f"the gradients are right, but the returned loss is {value:.5f}; the "
                                      f"full-batch loss is {ref_loss:.5f} (return the loss on all cached embeddings)")
    return CheckResult(True, "the gradients equal one full-batch backward pass for chunk sizes "
                             f"{' and '.join(str(c) for c, _ in _GRAD_CACHE_RUNS)}, with at most chunk_size "
                             "texts per forward pass")
