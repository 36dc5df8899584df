"""Part 5 checkers: Exercise 7 (a pooling head that exports to ONNX, section 5.5) and Exercise 8 (a
request-batching step of an embedding service, section 5.5).

Each checker runs the reader's function on inputs where the usual slips give different answers, compares with
the reference and names the slip the answer reproduces.
"""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .common import CheckResult, call_reader

__all__ = ["check_pooling_head", "check_batched_encode", "exercise_7_inputs", "EXERCISE_8_REQUESTS"]


# ======================================================================================= Exercise 7
def exercise_7_inputs(seed: int = 0, batch: int = 4, tokens: int = 9, dim: int = 8
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token vectors [B, T, d] and an attention mask [B, T] with rows of different lengths (padding at the end),
    padded positions filled with large values so that pooling over them shows."""
    g = torch.Generator().manual_seed(70 + seed)
    x = torch.randn(batch, tokens, dim, generator=g) + 0.5
    lengths = torch.tensor([tokens, 1, max(2, tokens // 2), max(1, tokens - 2)][:batch] + [3] * max(0, batch - 4))
    mask = (torch.arange(tokens)[None, :] < lengths[:, None]).long()
    x = torch.where(mask[..., None].bool(), x, torch.full_like(x, 7.0))
    return x, mask


def _pool_variant(x: torch.Tensor, mask: torch.Tensor, kind: str = "right") -> torch.Tensor:
    m = mask[..., None].to(x.dtype)
    if kind == "all_tokens":
        return F.normalize(x.mean(1), dim=-1)
    if kind == "no_normalize":
        return (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if kind == "cls":
        return F.normalize(x[:, 0], dim=-1)
    if kind == "normalize_tokens_first":
        return (F.normalize(x, dim=-1) * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return F.normalize((x * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)


_POOL_MISTAKES = {
    "the padding is averaged in: multiply by the mask and divide by the number of real tokens (mask.sum(1))":
        "all_tokens",
    "the vectors are not normalised: end with F.normalize(..., dim=-1), so the dot product is the cosine":
        "no_normalize",
    "this is the [CLS] vector, not the mean of the real tokens": "cls",
    "the token vectors are normalised before pooling; normalise the pooled sentence vector instead":
        "normalize_tokens_first",
}


class _Head(torch.nn.Module):
    """Tiny embedding layer + the reader's pooling head: a graph the checker exports to ONNX."""

    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn
        self.embed = torch.nn.Embedding(50, 8)
        torch.nn.init.normal_(self.embed.weight, generator=torch.Generator().manual_seed(7))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.fn(self.embed(input_ids), attention_mask)


def _export_and_run(fn: Callable) -> tuple[float | None, str]:
    """Export ``_Head(fn)`` with dynamic batch and sequence axes, run it in ONNX Runtime on other shapes and
    return (largest difference from PyTorch, message)."""
    import onnxruntime as ort

    import warnings

    head = _Head(fn).eval()
    ids = torch.randint(1, 50, (2, 5), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 5, dtype=torch.long)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "head.onnx"
        try:
            with warnings.catch_warnings():           # tracer warnings: the ONNX Runtime run below decides
                warnings.simplefilter("ignore")
                torch.onnx.export(head, (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                                  output_names=["sentence_embedding"], dynamo=False, opset_version=17,
                                  dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                                "attention_mask": {0: "batch", 1: "sequence"},
                                                "sentence_embedding": {0: "batch"}})
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:           # noqa: BLE001 - report to the reader
            return None, (f"the head does not export to ONNX ({type(exc).__name__}: {str(exc)[:200]}); use torch "
                          f"operations only (no NumPy, .item() or Python loops over lengths)")
        x_ids = torch.randint(1, 50, (5, 11), generator=torch.Generator().manual_seed(2))
        _, x_mask = exercise_7_inputs(3, batch=5, tokens=11)
        with torch.no_grad():
            expected = head(x_ids, x_mask).numpy()
        try:
            got = session.run(None, {"input_ids": x_ids.numpy(), "attention_mask": x_mask.numpy()})[0]
        except Exception as exc:           # noqa: BLE001
            return None, (f"the exported graph fails on another batch and length ({type(exc).__name__}: "
                          f"{str(exc)[:200]}): a shape was fixed at export time")
    if got.shape != expected.shape:
        return None, f"the exported graph returns shape {got.shape} on a [5, 11] batch, expected {expected.shape}"
    return float(np.abs(got - expected).max()), ""


def check_pooling_head(fn: Callable) -> CheckResult:
    """Exercise 7: ``fn(token_embeddings [B, T, d], attention_mask [B, T]) -> [B, d]``.

    The reference: the mean of the real tokens' vectors (the mask's ones), L2-normalised. Checked on inputs
    whose padded positions hold large values, then exported to ONNX (dynamic batch and sequence axes) and run
    in ONNX Runtime on another batch size and length, which must give PyTorch's values.
    """
    for seed in (0, 1):
        x, mask = exercise_7_inputs(seed)
        out, failed = call_reader(fn, x.clone(), mask.clone(), context="token_embeddings [4, 9, 8], mask [4, 9]")
        if failed is not None:
            return failed
        if not isinstance(out, torch.Tensor):
            return CheckResult(False, f"expected a torch tensor [B, d], got {type(out).__name__}")
        if tuple(out.shape) != (4, 8):
            return CheckResult(False, f"expected shape [4, 8] (one vector per text), got {tuple(out.shape)}; "
                                      f"pool over the token axis (dim 1)")
        ref = _pool_variant(x, mask)
        if torch.allclose(out.float(), ref, atol=1e-5):
            continue
        for mistake, kind in _POOL_MISTAKES.items():
            if torch.allclose(out.float(), _pool_variant(x, mask, kind), atol=1e-5):
                return CheckResult(False, f"your head matches a common mistake: {mistake}")
        return CheckResult(False, "the vectors differ from the normalised mean of the real tokens; check the mask, "
                                  "the axis (1) and the normalisation")
    gap, message = _export_and_run(fn)
    if gap is None:
        return CheckResult(False, message)
    if gap > 1e-4:
        return CheckResult(False, f"ONNX Runtime's output differs from PyTorch's by {gap:.1e} on another shape: "
                                  f"something was traced as a constant")
    return CheckResult(True, "the normalised masked mean, and it exports to ONNX: ONNX Runtime equals PyTorch "
                             "on a [5, 11] batch (largest difference below 1e-4)")


# ======================================================================================= Exercise 8
#: Texts per request, in arrival order (one request larger than half the batch limit, one alone over it).
EXERCISE_8_REQUESTS = (3, 1, 5, 2, 2, 7, 1, 1, 4, 12, 2, 3)
_MAX_BATCH = 8


def _vector(text: str, dim: int = 4) -> np.ndarray:
    digest = hashlib.blake2b(text.encode(), digest_size=4 * dim).digest()
    return np.frombuffer(digest, dtype=np.uint32).astype(np.float64) / 2 ** 32


def _requests(sizes=EXERCISE_8_REQUESTS) -> list[list[str]]:
    return [[f"request {r} text {i}" for i in range(n)] for r, n in enumerate(sizes)]


def reference_groups(sizes, max_batch: int) -> list[list[int]]:
    """Requests grouped in arrival order, greedily: a group takes the next request while its texts fit in
    ``max_batch``; a request larger than ``max_batch`` goes alone (requests are never split)."""
    groups, current, n = [], [], 0
    for r, size in enumerate(sizes):
        if current and n + size > max_batch:
            groups.append(current)
            current, n = [], 0
        current.append(r)
        n += size
    return groups + ([current] if current else [])


class _RecordingEncoder:
    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, texts):
        texts = list(texts)
        self.calls.append(texts)
        return np.stack([_vector(t) for t in texts]) if texts else np.zeros((0, 4))


def check_batched_encode(fn: Callable) -> CheckResult:
    """Exercise 8: ``fn(requests: list[list[str]], encode, max_batch) -> list[np.ndarray]``.

    The reference: go through the requests in arrival order, put consecutive requests in one forward pass
    while their texts fit in ``max_batch`` (a request larger than ``max_batch`` goes alone; requests are never
    split), call ``encode`` once per pass, and hand each request the rows of its own texts, [n_r, d].
    """
    requests = _requests()
    encoder = _RecordingEncoder()
    out, failed = call_reader(fn, [list(r) for r in requests], encoder, _MAX_BATCH,
                              context=f"{len(requests)} requests of {list(EXERCISE_8_REQUESTS)} texts, "
                                      f"max_batch {_MAX_BATCH}")
    if failed is not None:
        return failed
    if not isinstance(out, (list, tuple)) or len(out) != len(requests):
        return CheckResult(False, f"expected a list of {len(requests)} arrays (one per request), got "
                                  f"{type(out).__name__}{'' if not hasattr(out, '__len__') else f' of {len(out)}'}")
    for r, (texts, vectors) in enumerate(zip(requests, out)):
        expected = np.stack([_vector(t) for t in texts])
        vectors = np.asarray(vectors)
        if vectors.shape != expected.shape:
            return CheckResult(False, f"request {r} sent {len(texts)} texts but got an array of shape "
                                      f"{vectors.shape}, expected {expected.shape}: slice each request's rows "
                                      f"from its pass by the running offset")
        if not np.allclose(vectors, expected):
            return CheckResult(False, f"request {r} got vectors of other texts: hand back the rows in the order "
                                      f"the texts were sent (running offset within the pass)")
    calls = encoder.calls
    groups = reference_groups(EXERCISE_8_REQUESTS, _MAX_BATCH)
    if len(calls) == len(requests):
        return CheckResult(False, "encode was called once per request: that is no batching; put consecutive "
                                  "requests into one call while their texts fit in max_batch")
    if len(calls) == 1:
        return CheckResult(False, f"encode was called once with all {len(calls[0])} texts: a forward pass may "
                                  f"hold at most max_batch = {_MAX_BATCH} texts (unless one request alone is "
                                  f"larger)")
    owner = {t: r for r, texts in enumerate(requests) for t in texts}
    for call in calls:
        ids = [owner.get(t) for t in call]
        for r in set(ids):
            if r is not None and ids.count(r) != len(requests[r]):
                return CheckResult(False, f"request {r}'s texts were split over several forward passes; keep a "
                                          f"request whole (a large one goes alone)")
        if len(call) > _MAX_BATCH and len(set(ids)) > 1:
            return CheckResult(False, f"a forward pass held {len(call)} texts from several requests, more than "
                                      f"max_batch = {_MAX_BATCH}")
    order = [owner[t] for call in calls for t in call]
    if order != sorted(order):
        return CheckResult(False, "the requests were not served in arrival order (first come, first served): "
                                  "a request waiting longer must not be passed by later ones")
    got_groups = [sorted({owner[t] for t in call}) for call in calls]
    if got_groups != groups:
        return CheckResult(False, f"the passes group the requests as {got_groups}, but greedy grouping in "
                                  f"arrival order gives {groups}: close a pass only when the next request "
                                  f"does not fit")
    return CheckResult(True, f"{len(requests)} requests served in {len(calls)} forward passes of at most "
                             f"{_MAX_BATCH} texts (the one larger request alone), each request given its own rows")
