"""Recipes of section 5.7 (performance): padding and bucketing, mixed precision, timed on real texts.

Each function times the same work done in different ways and checks that the results agree, so a
speed-up is never bought with a silent change of output:

- :func:`encoding_padding_speed`: encode texts padded to ``max_length``, dynamically padded in input
  order, and dynamically padded after sorting by length (bucketing); the vectors must be equal.
- :func:`training_padding_speed`: training steps with batches padded to ``max_length``, dynamically padded
  random batches, and length-grouped batches (:func:`embedlessons.bucketing.length_grouped_batches`).
- :func:`precision_speed`: encoding and training steps in float32 against bfloat16 / float16 autocast,
  with the agreement of the vectors and the STS-B Spearman of each.

Timings are the best of ``repeats`` runs after a warm-up (the minimum is the least noisy estimate of what
the work costs; the other runs were slowed by something else on the machine).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..bucketing import PADDING_MODES, encode_batches, length_grouped_batches, padding_share, token_lengths
from ..losses import in_batch_info_nce

__all__ = ["best_time", "encoding_padding_speed", "training_padding_speed", "precision_speed",
           "TRAINING_PADDING_MODES"]

TRAINING_PADDING_MODES = ("max_length", "dynamic", "grouped")


def best_time(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn``, after ``warmup`` untimed calls."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _tokenize(model, texts: Sequence[str], max_length: int, pad_to_max: bool) -> dict[str, torch.Tensor]:
    if not pad_to_max:
        return model.tokenize(list(texts), max_length=max_length)
    batch = model.tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                            return_tensors="pt")
    return {k: v.to(model.device) for k, v in batch.items()}


@torch.no_grad()
def _encode(model, texts: Sequence[str], batches: Sequence[Sequence[int]], max_length: int,
            pad_to_max: bool, dtype: torch.dtype | None = None) -> np.ndarray:
    model.eval()
    out = np.zeros((len(texts), model.dim), dtype=np.float32)
    with torch.autocast(model.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        for batch in batches:
            vectors = model(_tokenize(model, [texts[i] for i in batch], max_length, pad_to_max))
            out[list(batch)] = vectors.float().cpu().numpy()
    return out


def encoding_padding_speed(model, texts: Sequence[str], batch_size: int = 32, max_length: int = 256,
                           repeats: int = 3, modes: Sequence[str] = PADDING_MODES) -> dict[str, dict]:
    """Encode ``texts`` under each padding mode and time it.

    Args:
        model: a :class:`~embedlessons.models.BiEncoder`.
        texts: N strings (in the order a service or a corpus hands them over).
        batch_size, max_length: as in :func:`embedlessons.encoding.encode`.
        repeats: timed runs per mode (the best counts).
        modes: any of ``"max_length"``, ``"dynamic"``, ``"sorted"``.

    Returns:
        ``{mode: {"seconds", "texts_per_s", "padding_share", "max_abs_diff"}}``; ``max_abs_diff`` is the
        largest difference of any vector entry from the first mode's vectors (padding must not change them).
    """
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: nothing to encode")
    lengths = token_lengths(model.tokenizer, texts, max_length)
    results, reference = {}, None
    for mode in modes:
        batches = encode_batches(len(texts), batch_size, mode, lengths)
        pad_to_max = mode == "max_length"
        vectors = _encode(model, texts, batches, max_length, pad_to_max)
        seconds = best_time(lambda: _encode(model, texts, batches, max_length, pad_to_max), repeats, warmup=0)
        reference = vectors if reference is None else reference
        results[mode] = {"seconds": seconds, "texts_per_s": len(texts) / seconds,
                         "padding_share": padding_share(lengths, batches, max_length if pad_to_max else None),
                         "max_abs_diff": float(np.abs(vectors - reference).max())}
    return results


def _train_steps(model, pairs: Sequence[tuple[str, str]], batches: Sequence[Sequence[int]],
                 max_length: tuple[int, int], pad_to_max: bool, dtype: torch.dtype | None = None,
                 lr: float = 2e-5) -> list[float]:
    """Run one optimiser step per batch (in-batch InfoNCE) and return the losses; weights are restored."""
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    try:
        for batch in batches:
            rows = [pairs[i] for i in batch]
            with torch.autocast(model.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                a = model(_tokenize(model, [r[0] for r in rows], max_length[0], pad_to_max))
                p = model(_tokenize(model, [r[1] for r in rows], max_length[1], pad_to_max))
                loss = in_batch_info_nce(a.float(), p.float()).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    finally:
        model.load_state_dict(saved)
        model.eval()
    return losses


def training_padding_speed(model, pairs: Sequence[tuple[str, str]], batch_size: int = 16, steps: int = 3,
                           max_length: tuple[int, int] = (64, 256), seed: int = 0, mega_batch: int = 16,
                           modes: Sequence[str] = TRAINING_PADDING_MODES) -> dict[str, dict]:
    """Seconds per training step with batches padded to ``max_length``, dynamic, or grouped by length.

    ``"max_length"`` and ``"dynamic"`` train on the same random batches; ``"grouped"`` on
    :func:`~embedlessons.bucketing.length_grouped_batches` of the second column's length (other batches,
    so other in-batch negatives: a change of the training itself, not only of its speed). The model's
    weights are restored after each mode.

    Returns:
        ``{mode: {"seconds_per_step", "padding_share", "losses"}}`` (padding share over both columns).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    pairs = list(pairs)
    if len(pairs) < batch_size * steps:
        raise ValueError(f"{steps} steps of {batch_size} need {batch_size * steps} pairs, got {len(pairs)}")
    lengths = [token_lengths(model.tokenizer, [p[c] for p in pairs], max_length[c]) for c in (0, 1)]
    order = np.random.default_rng(seed).permutation(len(pairs))
    random_batches = [order[s * batch_size:(s + 1) * batch_size].tolist() for s in range(steps)]
    grouped = length_grouped_batches(lengths[1], batch_size, seed=seed, mega_batch=mega_batch)[:steps]
    results = {}
    for mode in modes:
        if mode not in TRAINING_PADDING_MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {TRAINING_PADDING_MODES}")
        batches = grouped if mode == "grouped" else random_batches
        pad_to_max = mode == "max_length"
        _train_steps(model, pairs, batches[:1], max_length, pad_to_max)          # warm-up
        start = time.perf_counter()
        losses = _train_steps(model, pairs, batches, max_length, pad_to_max)
        seconds = (time.perf_counter() - start) / len(batches)
        total = real = 0
        for c in (0, 1):
            share = padding_share(lengths[c], batches, max_length[c] if pad_to_max else None)
            used = sum(int(lengths[c][b].sum()) for b in batches)
            real += used
            total += used / (1 - share)
        results[mode] = {"seconds_per_step": seconds, "padding_share": 1 - real / total, "losses": losses}
    return results


def precision_speed(model, texts: Sequence[str], pairs: Sequence[tuple[str, str]] | None = None,
                    sts=None, dtypes: Sequence[str] = ("float32", "bfloat16"), batch_size: int = 32,
                    max_length: int = 128, repeats: int = 3, train_steps: int = 2) -> dict[str, dict]:
    """Encoding (and optionally training) under autocast to each dtype, against float32.

    Args:
        model: a :class:`~embedlessons.models.BiEncoder` on the CPU or a GPU.
        texts: texts to encode and time (sorted by length, as the package's encoder does).
        pairs: (anchor, positive) pairs for ``train_steps`` timed training steps of ``batch_size`` (or None).
        sts: a :class:`~embedlessons.data.ScoredPairs` whose Spearman is computed under each dtype (or None).
        dtypes: ``"float32"`` (no autocast), ``"bfloat16"`` or ``"float16"`` (autocast).

    Returns:
        ``{dtype: {"encode_seconds", "texts_per_s", "min_cosine", "max_abs_diff"[, "train_seconds_per_step"]
        [, "sts_spearman"]}}``; cosines and differences are against the float32 vectors.
    """
    from ..evaluation import spearman

    texts = list(texts)
    lengths = token_lengths(model.tokenizer, texts, max_length)
    batches = encode_batches(len(texts), batch_size, "sorted", lengths)
    results, reference = {}, None
    for name in dtypes:
        if name not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"unknown dtype {name!r}; choose float32, bfloat16 or float16")
        dtype = None if name == "float32" else getattr(torch, name)
        vectors = _encode(model, texts, batches, max_length, False, dtype)
        seconds = best_time(lambda: _encode(model, texts, batches, max_length, False, dtype), repeats, warmup=0)
        reference = vectors if reference is None else reference
        cos = (vectors * reference).sum(1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1))
        row = {"encode_seconds": seconds, "texts_per_s": len(texts) / seconds, "min_cosine": float(cos.min()),
               "max_abs_diff": float(np.abs(vectors - reference).max())}
        if pairs is not None and train_steps:
            batches_t = [list(range(s * batch_size, (s + 1) * batch_size)) for s in range(train_steps)]
            _train_steps(model, pairs, batches_t[:1], (max_length, max_length), False, dtype)     # warm-up
            start = time.perf_counter()
            _train_steps(model, pairs, batches_t, (max_length, max_length), False, dtype)
            row["train_seconds_per_step"] = (time.perf_counter() - start) / train_steps
        if sts is not None:
            both = list(sts.sentences1) + list(sts.sentences2)
            v = _encode(model, both, encode_batches(len(both), batch_size, "sorted",
                                                    token_lengths(model.tokenizer, both, max_length)),
                        max_length, False, dtype)
            v /= np.linalg.norm(v, axis=1, keepdims=True).clip(1e-12)
            n = len(sts.sentences1)
            row["sts_spearman"] = spearman((v[:n] * v[n:]).sum(1), sts.scores)
        results[name] = row
    return results
