"""Part 5 checkers accept right answers written several ways and name the common mistakes."""
import numpy as np
import torch
import torch.nn.functional as F

from embedlessons.exercises.part5 import (EXERCISE_8_REQUESTS, check_batched_encode, check_pooling_head,
                                          reference_groups)
from embedlessons.models import pool


# ---------------------------------------------------------------------------------------------- Exercise 7
def right_head(x, mask):
    m = mask.unsqueeze(-1).float()
    return F.normalize((x * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)


def right_head_other_way(x, mask):           # sum then normalise: the division by the count cancels
    return F.normalize(torch.einsum("btd,bt->bd", x, mask.to(x.dtype)), p=2, dim=1)


def library_head(x, mask):
    return F.normalize(pool(x, mask, "mean"), dim=-1)


def test_pooling_head_accepts_right_answers():
    for fn in (right_head, right_head_other_way, library_head):
        result = check_pooling_head(fn)
        assert result.passed, result.message


def test_pooling_head_names_mistakes():
    cases = {
        "padding is averaged in": lambda x, m: F.normalize(x.mean(1), dim=-1),
        "not normalised": lambda x, m: (x * m[..., None]).sum(1) / m.sum(1, keepdim=True),
        "[CLS]": lambda x, m: F.normalize(x[:, 0], dim=-1),
        "before pooling": lambda x, m: (F.normalize(x, dim=-1) * m[..., None]).sum(1) / m.sum(1, keepdim=True),
    }
    for phrase, fn in cases.items():
        result = check_pooling_head(fn)
        assert not result.passed and phrase in result.message, (phrase, result.message)


def test_pooling_head_reports_template_shape_and_untraceable_code():
    def template(x, m):
        raise NotImplementedError
    assert "NotImplementedError" in check_pooling_head(template).message
    assert "shape" in check_pooling_head(lambda x, m: right_head(x, m).T).message

    def numpy_inside(x, mask):        # right values, but the lengths become constants of the exported graph
        n = int(mask.sum(1).max().item())
        return right_head(x[:, :n], mask[:, :n])
    result = check_pooling_head(numpy_inside)
    assert not result.passed and ("ONNX" in result.message or "constant" in result.message), result.message


# ---------------------------------------------------------------------------------------------- Exercise 8
def greedy(requests, encode, max_batch):
    out, group, n = [], [], 0

    def flush():
        vectors = encode([t for r in group for t in r])
        start = 0
        for r in group:
            out.append(vectors[start:start + len(r)])
            start += len(r)

    for r in requests:
        if group and n + len(r) > max_batch:
            flush()
            group, n = [], 0
        group.append(r)
        n += len(r)
    if group:
        flush()
    return out


def greedy_with_offsets(requests, encode, max_batch):      # the same, written with precomputed groups
    sizes = [len(r) for r in requests]
    result = [None] * len(requests)
    for group in reference_groups(sizes, max_batch):
        vectors = encode([t for i in group for t in requests[i]])
        offsets = np.cumsum([0] + [sizes[i] for i in group])
        for i, a, b in zip(group, offsets[:-1], offsets[1:]):
            result[i] = vectors[a:b]
    return result


def test_batched_encode_accepts_right_answers():
    for fn in (greedy, greedy_with_offsets):
        result = check_batched_encode(fn)
        assert result.passed, result.message


def test_batched_encode_names_mistakes():
    def one_per_request(requests, encode, max_batch):
        return [encode(r) for r in requests]

    def all_at_once(requests, encode, max_batch):
        v = encode([t for r in requests for t in r])
        offsets = np.cumsum([0] + [len(r) for r in requests])
        return [v[a:b] for a, b in zip(offsets[:-1], offsets[1:])]

    def split_requests(requests, encode, max_batch):
        texts = [t for r in requests for t in r]
        v = np.concatenate([encode(texts[s:s + max_batch]) for s in range(0, len(texts), max_batch)])
        offsets = np.cumsum([0] + [len(r) for r in requests])
        return [v[a:b] for a, b in zip(offsets[:-1], offsets[1:])]

    def wrong_rows(requests, encode, max_batch):
        out = greedy(requests, encode, max_batch)
        return [o[::-1] for o in out]

    def largest_first(requests, encode, max_batch):
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i]))
        got = greedy([requests[i] for i in order], encode, max_batch)
        result = [None] * len(requests)
        for i, g in zip(order, got):
            result[i] = g
        return result

    cases = {one_per_request: "once per request", all_at_once: "at most max_batch", split_requests: "split",
             wrong_rows: "other texts", largest_first: "arrival order"}
    for fn, phrase in cases.items():
        result = check_batched_encode(fn)
        assert not result.passed and phrase in result.message, (fn.__name__, result.message)


def test_reference_groups_never_split_and_fit():
    groups = reference_groups(EXERCISE_8_REQUESTS, 8)
    assert [r for g in groups for r in g] == list(range(len(EXERCISE_8_REQUESTS)))
    for g in groups:
        assert len(g) == 1 or sum(EXERCISE_8_REQUESTS[r] for r in g) <= 8
