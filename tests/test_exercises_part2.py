"""The Exercise 2 checker accepts right InfoNCE answers and names each common wrong one."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embedlessons.exercises.part2 import check_info_nce
from embedlessons.losses import info_nce


def right_cross_entropy(anchor, positive, negatives, temperature):
    a, p, n = (F.normalize(x, dim=-1) for x in (anchor, positive, negatives))
    logits = torch.cat([(a * p).sum(-1, keepdim=True), torch.einsum("bd,bkd->bk", a, n)], 1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(a), dtype=torch.long))


def right_logsumexp_float(anchor, positive, negatives, temperature):
    """Written differently: candidates stacked, -log softmax by hand, returned as a Python float."""
    a = anchor / anchor.norm(dim=1, keepdim=True)
    cands = torch.cat([positive[:, None], negatives], 1)
    cands = cands / cands.norm(dim=2, keepdim=True)
    s = (cands @ a[:, :, None]).squeeze(2) / temperature
    return float((s.logsumexp(1) - s[:, 0]).mean())


def right_numpy_loops(anchor, positive, negatives, temperature):
    """Row by row in NumPy, returned as a 0-dim tensor."""
    losses = []
    for a, p, ns in zip(anchor.numpy(), positive.numpy(), negatives.numpy()):
        cos = [a @ c / np.linalg.norm(a) / np.linalg.norm(c) for c in [p, *ns]]
        z = np.array(cos) / temperature
        losses.append(np.log(np.exp(z).sum()) - z[0])
    return torch.tensor(np.mean(losses))


@pytest.mark.parametrize("fn", [right_cross_entropy, right_logsumexp_float, right_numpy_loops,
                                lambda a, p, n, t: info_nce(a, p, n, t).loss,
                                lambda a, p, n, t: right_cross_entropy(a, p, n, t).reshape(1)])
def test_right_answers_pass(fn):
    result = check_info_nce(fn)
    assert result.passed and bool(result), result.message
    assert "equal to the reference" in result.message


def _wrong(normalise=True, labels="zeros", temp="divide", reduction="mean", positive_last=False):
    def fn(anchor, positive, negatives, temperature):
        a, p, n = (F.normalize(x, dim=-1) for x in (anchor, positive, negatives)) if normalise else \
            (anchor, positive, negatives)
        pos, neg = (a * p).sum(-1, keepdim=True), torch.einsum("bd,bkd->bk", a, n)
        sims = torch.cat([neg, pos], 1) if positive_last else torch.cat([pos, neg], 1)
        logits = {"divide": sims / temperature, "multiply": sims * temperature, "none": sims}[temp]
        target = torch.arange(len(a)) if labels == "arange" else torch.zeros(len(a), dtype=torch.long)
        return F.cross_entropy(logits, target, reduction=reduction)
    return fn


@pytest.mark.parametrize("kwargs, diagnosis", [
    (dict(normalise=False), "not L2-normalised"),
    (dict(labels="arange"), "wrong target index: the positive is candidate 0 in every row"),
    (dict(positive_last=True), "wrong target index: the target is a negative"),
    (dict(temp="multiply"), "multiplied by the temperature"),
    (dict(temp="none"), "temperature is ignored"),
    (dict(reduction="sum"), "summed over the batch; take the mean"),
])
def test_common_mistakes_are_named(kwargs, diagnosis):
    result = check_info_nce(_wrong(**kwargs))
    assert not result.passed
    assert diagnosis in result.message, result.message


def test_other_wrong_answers():
    def stub(anchor, positive, negatives, temperature):
        raise NotImplementedError
    assert "NotImplementedError: fill in the body" in check_info_nce(stub).message
    res = check_info_nce(_wrong(reduction="none"))
    assert not res.passed and "expected a scalar loss" in res.message and "(4,)" in res.message
    assert "NaN or infinite" in check_info_nce(lambda a, p, n, t: torch.tensor(float("nan"))).message
    broken = lambda a, p, n, t: (a @ n).sum()                 # [B,d] @ [B,K,d]: shape error
    res = check_info_nce(broken)
    assert not res.passed and "raised RuntimeError" in res.message and "negatives (4, 5, 8)" in res.message
    res = check_info_nce(_wrong(temp="multiply", reduction="sum"))    # two mistakes at once: no name fits
    assert not res.passed and "the reference gives" in res.message
    assert "expected a scalar loss" in check_info_nce(lambda a, p, n, t: "0.5x").message
