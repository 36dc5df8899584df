"""Part 2's checkers accept right answers and name each common wrong one: Exercise 2 (InfoNCE with explicit
negatives), the symmetric in-batch loss and GradCache (section 2.7's "more to try")."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embedlessons.exercises.part2 import check_grad_cache, check_info_nce, check_symmetric_info_nce
from embedlessons.losses import in_batch_info_nce, info_nce


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


# ------------------------------------------------------------------------------------------ the symmetric loss
def right_symmetric(anchor, positive, hard_negatives, temperature):
    a, p, n = (F.normalize(x, dim=-1) for x in (anchor, positive, hard_negatives))
    cands = torch.cat([p, n.transpose(0, 1).reshape(-1, a.shape[1])])         # B positives, then B*K hard
    labels = torch.arange(len(a))
    forward = F.cross_entropy(a @ cands.T / temperature, labels)
    backward = F.cross_entropy(p @ a.T / temperature, labels)
    return (forward + backward) / 2


def right_symmetric_other_order(anchor, positive, hard_negatives, temperature):
    """Hard negatives in row-major order (row 0's K, then row 1's ...): a permutation of the candidates."""
    a, p, n = (F.normalize(x, dim=-1) for x in (anchor, positive, hard_negatives))
    cands = torch.cat([n.reshape(-1, a.shape[1]), p])                         # positives last: target shifts
    target = torch.arange(len(a)) + n.shape[0] * n.shape[1]
    return float((F.cross_entropy(a @ cands.T / temperature, target)
                  + F.cross_entropy(p @ a.T / temperature, torch.arange(len(a)))) / 2)


@pytest.mark.parametrize("fn", [right_symmetric, right_symmetric_other_order,
                                lambda a, p, n, t: in_batch_info_nce(a, p, n, t, symmetric=True).loss])
def test_symmetric_right_answers_pass(fn):
    result = check_symmetric_info_nce(fn)
    assert result.passed, result.message
    assert "symmetric=True" in result.message


def _wrong_symmetric(normalise=True, forward_hard=True, backward_hard=False, backward=True, combine="mean",
                     temp="divide"):
    def fn(anchor, positive, hard_negatives, temperature):
        a, p, n = ((F.normalize(x, dim=-1) for x in (anchor, positive, hard_negatives)) if normalise
                   else (anchor, positive, hard_negatives))
        scale = {"divide": lambda x: x / temperature, "multiply": lambda x: x * temperature,
                 "none": lambda x: x}[temp]
        hard = n.transpose(0, 1).reshape(-1, a.shape[1])
        labels = torch.arange(len(a))
        loss = F.cross_entropy(scale(a @ (torch.cat([p, hard]) if forward_hard else p).T), labels)
        if backward:
            reverse = F.cross_entropy(scale(p @ (torch.cat([a, hard]) if backward_hard else a).T), labels)
            loss = (loss + reverse) / 2 if combine == "mean" else loss + reverse
        return loss
    return fn


@pytest.mark.parametrize("kwargs, diagnosis", [
    (dict(backward=False), "one-way"),
    (dict(backward_hard=True), "also candidates in the positive -> anchors direction"),
    (dict(forward_hard=False), "missing from the anchor -> positives direction (candidates"),
    (dict(forward_hard=False, backward_hard=True), "and used in the reverse one"),
    (dict(combine="sum"), "summed; average them"),
    (dict(normalise=False), "not L2-normalised"),
    (dict(temp="multiply"), "multiplied by the temperature"),
    (dict(temp="none"), "temperature is ignored"),
])
def test_symmetric_mistakes_are_named(kwargs, diagnosis):
    result = check_symmetric_info_nce(_wrong_symmetric(**kwargs))
    assert not result.passed
    assert diagnosis in result.message, result.message


def test_symmetric_other_wrong_answers():
    def stub(anchor, positive, hard_negatives, temperature):
        raise NotImplementedError
    assert "NotImplementedError: fill in the body" in check_symmetric_info_nce(stub).message
    res = check_symmetric_info_nce(_wrong_symmetric(combine="sum", normalise=False))    # two slips: no name fits
    assert not res.passed and "the reference gives" in res.message
    res = check_symmetric_info_nce(lambda a, p, n, t: a @ n)
    assert not res.passed and "raised RuntimeError" in res.message and "hard_negatives (5, 2, 8)" in res.message


# ------------------------------------------------------------------------------------------ GradCache
def embed(model, texts):
    return model(model.tokenize(list(texts)))


def right_grad_cache(model, anchors, positives, chunk_size, temperature):
    chunks = lambda texts: [texts[i:i + chunk_size] for i in range(0, len(texts), chunk_size)]
    with torch.no_grad():                                                   # 1. cache, no graph
        a = torch.cat([embed(model, c) for c in chunks(anchors)])
        p = torch.cat([embed(model, c) for c in chunks(positives)])
    a.requires_grad_(True)
    p.requires_grad_(True)
    loss = in_batch_info_nce(a, p, temperature=temperature).loss            # 2. loss on the cache
    loss.backward()
    for texts, cached in ((anchors, a), (positives, p)):                    # 3. re-embed with gradients
        for start, c in zip(range(0, len(texts), chunk_size), chunks(texts)):
            embed(model, c).backward(cached.grad[start:start + len(c)])
    return loss.detach()


def plain_accumulation(model, anchors, positives, chunk_size, temperature, average=True):
    n_chunks = -(-len(anchors) // chunk_size)
    total = 0.0
    for s in range(0, len(anchors), chunk_size):
        loss = in_batch_info_nce(embed(model, anchors[s:s + chunk_size]), embed(model, positives[s:s + chunk_size]),
                                 temperature=temperature).loss
        (loss / n_chunks if average else loss).backward()
        total += loss.item() / n_chunks
    return total


def test_grad_cache_right_answer_passes():
    result = check_grad_cache(right_grad_cache)
    assert result.passed, result.message
    assert "full-batch backward pass" in result.message


def test_grad_cache_full_batch_is_named():
    """One backward pass on the whole batch gives the right gradients, but is not GradCache."""
    def full_batch(model, anchors, positives, chunk_size, temperature):
        loss = in_batch_info_nce(embed(model, anchors), embed(model, positives), temperature=temperature).loss
        loss.backward()
        return loss
    result = check_grad_cache(full_batch)
    assert not result.passed and "at most chunk_size" in result.message, result.message


@pytest.mark.parametrize("wrong, diagnosis", [
    (plain_accumulation, "plain gradient accumulation (a loss per chunk, averaged)"),
    (lambda *args: plain_accumulation(*args, average=False), "plain gradient accumulation (a loss per chunk, summed)"),
])
def test_grad_cache_plain_accumulation_is_named(wrong, diagnosis):
    result = check_grad_cache(wrong)
    assert not result.passed and diagnosis in result.message, result.message


def _grad_cache_variant(sides=("anchors", "positives"), scale=1.0, train_mode=False, loss_of_last_chunk=False):
    def fn(model, anchors, positives, chunk_size, temperature):
        if train_mode:
            model.train()
        chunks = lambda texts: [texts[i:i + chunk_size] for i in range(0, len(texts), chunk_size)]
        with torch.no_grad():
            a = torch.cat([embed(model, c) for c in chunks(anchors)]).requires_grad_(True)
            p = torch.cat([embed(model, c) for c in chunks(positives)]).requires_grad_(True)
        loss = in_batch_info_nce(a, p, temperature=temperature).loss
        loss.backward()
        for side, texts, cached in (("anchors", anchors, a), ("positives", positives, p)):
            if side in sides:
                for start, c in zip(range(0, len(texts), chunk_size), chunks(texts)):
                    embed(model, c).backward(scale * cached.grad[start:start + len(c)])
        if loss_of_last_chunk:
            return in_batch_info_nce(a[-chunk_size:], p[-chunk_size:], temperature=temperature).loss
        return loss
    return fn


@pytest.mark.parametrize("kwargs, diagnosis", [
    (dict(sides=("anchors",)), "only the anchors' side"),
    (dict(sides=("positives",)), "only the positives' side"),
    (dict(sides=()), "no gradient reached the model's parameters"),
    (dict(scale=4.0), "times the full-batch ones"),
    (dict(train_mode=True), "left in training mode"),
    (dict(loss_of_last_chunk=True), "the returned loss is"),
])
def test_grad_cache_mistakes_are_named(kwargs, diagnosis):
    result = check_grad_cache(_grad_cache_variant(**kwargs))
    assert not result.passed and diagnosis in result.message, result.message


def test_grad_cache_other_wrong_answers():
    def stub(model, anchors, positives, chunk_size, temperature):
        raise NotImplementedError
    assert "NotImplementedError: fill in the body" in check_grad_cache(stub).message
    res = check_grad_cache(lambda model, a, p, c, t: model(a))           # texts instead of a tokenizer batch
    assert not res.passed and "raised" in res.message and "chunk_size 2" in res.message
    assert "expected a scalar loss" in check_grad_cache(lambda m, a, p, c, t: torch.zeros(3)).message
