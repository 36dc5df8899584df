"""Recipes of section 5.7 (performance): padding and bucketing, mixed precision, timed on real texts.

Each function times the same work done in different ways and checks that the results agree, so a
speed-up is never bought with a silent change of output:

- :func:`encoding_padding_speed`: encode texts padded to ``max_length``, dynamically padded in input
  order, and dynamically padded after sorting by length (bucketing); the vectors must be equal.
- :func:`training_padding_speed`: training steps with batches padded to ``max_length``, dynamically padded
  random batches, and length-grouped batches (:func:`embedlessons.bucketing.length_grouped_batches`).
- :func:`precision_speed`: encoding and training steps in float32 against bfloat16 / float16 autocast,
  with the agreement of the vectors and the STS-B Spearman of each.
- :func:`gradcache_memory` (a recorded experiment): the peak memory and time of one step with the big
  batch, with GradCache (:mod:`embedlessons.gradcache`) and with sentence-transformers' cached MNRL.

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
from ..recorded import cpu_flags as _cpu_flags

__all__ = ["best_time", "encoding_padding_speed", "training_padding_speed", "precision_speed",
           "TRAINING_PADDING_MODES", "GRADCACHE_CONFIGS", "gradcache_step", "gradcache_memory"]

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
            row["sts_spearman"] = spearman(sts_similarities(model, sts, name, batch_size, max_length), sts.scores)
        results[name] = row
    return results


# ------------------------------------------------------------------------------------------------ GradCache memory
#: The configurations :func:`gradcache_memory` compares: ours without and with GradCache, and the library's.
GRADCACHE_CONFIGS = ("big", "gradcache", "st_cached")


def _current_rss() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _max_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024          # KiB on Linux


def _reset_peak() -> bool:
    """Reset the process's RSS high-water mark (what ``ru_maxrss`` reports); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _max_rss() < _current_rss() * 1.05 + (8 << 20)


def gradcache_step(config: str, mini_batch: int, model: str, batch_size: int, max_length: int,
                   seed: int = 0) -> dict:
    """One training step's memory and time, measured in *this* process (call it in a fresh one).

    The step is forward + backward of in-batch InfoNCE (t = 0.05, i.e. scale 20) on the first duplicate-free
    batch of ``batch_size`` SciFact (claim, abstract) training pairs, the model in train mode (dropout on),
    texts cut at ``max_length`` tokens; no optimizer step (its memory is the same for every configuration).
    ``config``: ``"big"`` (:func:`~embedlessons.gradcache.full_batch_backward`), ``"gradcache"``
    (:func:`~embedlessons.gradcache.gradcache_backward` with ``mini_batch`` rows) or ``"st_cached"``
    (sentence-transformers' ``CachedMultipleNegativesRankingLoss(mini_batch_size=mini_batch)`` on a
    ``SentenceTransformer`` of the same weights). ``model``: a folder or name both libraries load.

    Returns ``{"peak_rss", "saved", "seconds", "loss", "baseline_rss", "peak_reset"}``: ``peak_rss`` is the
    process's resident-set high-water mark during the step minus its size before it (bytes; the mark is reset
    first through ``/proc/self/clear_refs``, and ``peak_reset`` says whether that worked); ``saved`` is the peak
    of the tensors held for backward (:class:`~embedlessons.gradcache.SavedActivationMeter`, deterministic).
    """
    import functools
    import gc

    from ..data import load_retrieval
    from ..gradcache import SavedActivationMeter, full_batch_backward, gradcache_backward
    from ..training import NoDuplicatesBatchSampler, pairs_from_retrieval

    if config not in GRADCACHE_CONFIGS:
        raise ValueError(f"unknown config {config!r}; expected one of {GRADCACHE_CONFIGS}")
    pairs = pairs_from_retrieval(load_retrieval("scifact", "train"))
    rows = next(iter(NoDuplicatesBatchSampler(pairs, batch_size, seed=seed)))
    claims, abstracts = [pairs.anchors[i] for i in rows], [pairs.positives[i] for i in rows]
    loss_fn = functools.partial(in_batch_info_nce, temperature=0.05)
    if config == "st_cached":
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

        from ..models import _MINILM_ALIASES, _quiet_loading, minilm_path

        with _quiet_loading():
            net = SentenceTransformer(str(minilm_path()) if model in _MINILM_ALIASES else model, device="cpu")
        net.max_seq_length = max_length
        net.train()
        cached = CachedMultipleNegativesRankingLoss(net, scale=20.0, mini_batch_size=mini_batch)

        def step() -> float:
            loss = cached([net.preprocess(claims), net.preprocess(abstracts)], None)
            loss.backward()
            return loss.item()
    else:
        from ..models import load_model

        net = load_model(model, max_length=max_length).train()

        def step() -> float:
            if config == "big":
                return full_batch_backward(net, [claims, abstracts], loss_fn).loss.item()
            return gradcache_backward(net, [claims, abstracts], loss_fn, mini_batch).loss.item()
    gc.collect()
    reset_ok = _reset_peak()
    baseline = _current_rss()
    torch.manual_seed(seed)
    started = time.perf_counter()
    with SavedActivationMeter(exclude=net) as meter:
        loss = step()
    seconds = time.perf_counter() - started
    return {"peak_rss": _max_rss() - baseline, "saved": meter.peak_bytes, "seconds": seconds, "loss": loss,
            "baseline_rss": baseline, "peak_reset": reset_ok}


def gradcache_memory(model: str = "all-MiniLM-L6-v2", batch_size: int = 128, max_length: int = 128,
                     mini_batches: Sequence[int] = (8, 16, 32), st_mini_batches: Sequence[int] = (8, 16, 32),
                     threads: int = 1, seed: int = 0) -> dict:
    """Peak memory and time of one step: the big batch vs GradCache vs sentence-transformers' cached MNRL.

    Every configuration (:func:`gradcache_step`) runs in its own fresh Python process with ``threads`` threads, so
    none inherits another's heap. ``model="small_bert"`` uses a random small BERT (the tiny setting).

    Returns ``{"settings", "rows", "per_query"}``: ``rows`` maps ``"big"``, ``"gradcache_8"``, ...,
    ``"st_cached_8"``, ... to the measurements of :func:`gradcache_step` plus ``peak_rss_ratio``,
    ``saved_ratio`` and ``time_ratio`` against the big batch; ``per_query`` holds the same numbers per
    configuration (here the "queries" are the measurements: one step has no per-query scores).
    """
    import json
    import os
    import subprocess
    import sys

    from ..models import model_folder

    configs = [("big", "big", 0)] + [(f"gradcache_{m}", "gradcache", int(m)) for m in mini_batches] + \
              [(f"st_cached_{m}", "st_cached", int(m)) for m in st_mini_batches]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"}
    rows = {}
    with model_folder(model) as source:
        for name, config, m in configs:
            code = ("import json, torch; from embedlessons.experiments.part5_performance import gradcache_step; "
                    f"torch.set_num_threads({int(threads)}); "
                    f"print('RESULT ' + json.dumps(gradcache_step({config!r}, {m}, {source!r}, {int(batch_size)}, "
                    f"{int(max_length)}, {int(seed)})))")
            run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
            line = [x for x in run.stdout.splitlines() if x.startswith("RESULT ")]
            if run.returncode or not line:
                raise RuntimeError(f"{name} failed (exit code {run.returncode}):\n{run.stderr[-3000:]}")
            rows[name] = json.loads(line[0][len("RESULT "):])
    big = rows["big"]
    for r in rows.values():
        r.update(peak_rss_ratio=r["peak_rss"] / big["peak_rss"], saved_ratio=r["saved"] / big["saved"],
                 time_ratio=r["seconds"] / big["seconds"])
    settings = {"model": str(model), "batch_size": batch_size, "max_length": max_length,
                "mini_batches": list(mini_batches), "st_mini_batches": list(st_mini_batches), "threads": threads,
                "seed": seed}
    per_query = {name: {k: r[k] for k in ("peak_rss", "saved", "seconds", "loss")} for name, r in rows.items()}
    return {"settings": settings, "rows": rows, "per_query": per_query}


# ------------------------------------------------------------------------------------------------ helpers of 5.7
#: CPU features that decide whether low-precision autocast can be fast on a CPU (Linux ``/proc/cpuinfo`` names).
LOW_PRECISION_FLAGS = ("avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16")


def cpu_flags(flags: Sequence[str] = LOW_PRECISION_FLAGS, cpuinfo: str = "/proc/cpuinfo") -> dict:
    """:func:`embedlessons.recorded.cpu_flags`, asking by default for the low-precision flags:
    ``{"model": str, "flags": {flag: bool}}``."""
    return _cpu_flags(flags, cpuinfo)


def gradient_gap(grads: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """``|g - g_ref| / |g_ref|`` with every parameter's gradient in one vector (L2 norms)."""
    if set(grads) != set(reference) or not reference:
        raise ValueError(f"expected gradients of the same parameters, got {len(grads)} and {len(reference)} "
                         f"(differing: {sorted(set(grads) ^ set(reference))[:3]})")
    diff = sum(float(((grads[n] - reference[n]) ** 2).sum()) for n in reference)
    return (diff / sum(float((g ** 2).sum()) for g in reference.values())) ** 0.5


def _run_for_grads(model, run: Callable[[], object], seed: int) -> tuple[object, dict[str, torch.Tensor], int]:
    """``run()`` from zeroed gradients and a fixed seed: (its output, the parameter gradients, peak saved bytes)."""
    from ..gradcache import SavedActivationMeter

    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    with SavedActivationMeter(exclude=model) as meter:
        out = run()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out, grads, meter.peak_bytes


def splitting_the_batch(model, columns: Sequence[Sequence[str]], loss_fn: Callable, sizes: Sequence[int] = (4, 8),
                        max_length: int | None = None, seed: int = 0) -> dict[str, dict]:
    """The big batch's gradient against two ways of processing it ``k`` rows at a time.

    For each ``k`` in ``sizes``: gradient accumulation (:func:`~embedlessons.gradcache.accumulation_backward`,
    one loss per ``k`` rows) and GradCache (:func:`~embedlessons.gradcache.gradcache_backward`, ``k`` rows per
    forward pass, one loss over the whole batch). Run the model in eval mode to compare the negatives alone
    (with dropout on, every run draws other masks).

    Returns ``{"big": row, "accumulation_<k>": row, "gradcache_<k>": row, ...}``; each row has ``loss``,
    ``grad_gap`` (:func:`gradient_gap` to the big batch), ``saved`` (peak bytes held for backward,
    :class:`~embedlessons.gradcache.SavedActivationMeter`), ``saved_ratio`` (to the big batch) and
    ``negatives`` (in-batch negatives per anchor).
    """
    from ..gradcache import accumulation_backward, full_batch_backward, gradcache_backward

    n = len(columns[0])
    runs = {"big": (lambda: full_batch_backward(model, columns, loss_fn, max_length), n)}
    for k in sizes:
        runs[f"accumulation_{k}"] = (lambda k=k: accumulation_backward(model, columns, loss_fn, k, max_length),
                                     min(k, n))
        runs[f"gradcache_{k}"] = (lambda k=k: gradcache_backward(model, columns, loss_fn, k, max_length), n)
    rows, reference = {}, None
    for name, (run, rows_seen) in runs.items():
        out, grads, saved = _run_for_grads(model, run, seed)
        reference = grads if reference is None else reference
        rows[name] = {"loss": float(out.loss), "grad_gap": gradient_gap(grads, reference), "saved": saved,
                      "negatives": rows_seen - 1}
    for row in rows.values():
        row["saved_ratio"] = row["saved"] / rows["big"]["saved"]
    return rows


def distributed_gaps(anchors: Sequence[str], positives: Sequence[str], world_size: int = 2,
                     temperature: float = 0.05, max_length: int = 32, model_kwargs: dict | None = None,
                     timeout: float = 120.0) -> dict[str, dict]:
    """Data parallelism on ``world_size`` CPU processes against one process on the combined batch.

    Spawns :func:`~embedlessons.distributed.parity_worker` (gloo): each process takes its share of the rows
    and computes :func:`~embedlessons.distributed.distributed_info_nce` with every ``gather`` mode, and once
    through ``DistributedDataParallel``; then one process computes in-batch InfoNCE on all rows.

    Returns ``{"single": {"loss"}, mode: {"loss", "grad_gap"}, ...}`` for the modes ``"grad"``, ``"local"``,
    ``"none"`` and ``"ddp"`` (losses averaged over the processes; ``grad_gap`` as :func:`gradient_gap`).
    """
    import tempfile
    from pathlib import Path

    from ..distributed import free_port, parity_worker, spawn
    from ..models import small_bert

    anchors, positives = list(anchors), list(positives)
    if len(anchors) != len(positives) or len(anchors) % world_size:
        raise ValueError(f"expected as many anchors as positives, divisible by {world_size} processes, got "
                         f"{len(anchors)} and {len(positives)}")
    with tempfile.TemporaryDirectory(prefix="ddp_") as folder:
        path = str(Path(folder) / "grads.pt")
        spawn(parity_worker, world_size, (free_port(), path, anchors, positives, temperature, max_length,
                                          model_kwargs), timeout=timeout)
        results = torch.load(path)
    model = small_bert(**(model_kwargs or {})).eval()
    loss = in_batch_info_nce(model(model.tokenize(anchors, max_length)), model(model.tokenize(positives, max_length)),
                             temperature=temperature).loss
    loss.backward()
    single = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    out = {"single": {"loss": loss.item()}}
    for mode, r in results.items():
        out[mode] = {"loss": r["loss"], "grad_gap": gradient_gap(r["grads"], single)}
    return out


def training_padding_shares(tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int,
                            max_length: tuple[int, int] = (64, 256), seed: int = 0,
                            mega_batch: int = 16) -> dict[str, float]:
    """Padding share over *all* training batches of ``pairs`` under the modes of :func:`training_padding_speed`.

    The same batches as there (a seeded random order for ``"max_length"`` and ``"dynamic"``,
    :func:`~embedlessons.bucketing.length_grouped_batches` of the second column for ``"grouped"``), every full
    batch instead of the first few: a count of token positions, nothing is run. Both columns count.
    """
    pairs = list(pairs)
    lengths = [token_lengths(tokenizer, [p[c] for p in pairs], max_length[c]) for c in (0, 1)]
    order = np.random.default_rng(seed).permutation(len(pairs))
    random_batches = [order[s:s + batch_size].tolist() for s in range(0, len(pairs) - batch_size + 1, batch_size)]
    grouped = length_grouped_batches(lengths[1], batch_size, seed=seed, mega_batch=mega_batch)
    out = {}
    for mode, batches in (("max_length", random_batches), ("dynamic", random_batches), ("grouped", grouped)):
        real = sum(int(lengths[c][b].sum()) for c in (0, 1) for b in batches)
        total = sum(len(b) * (max_length[c] if mode == "max_length" else int(lengths[c][b].max()))
                    for c in (0, 1) for b in batches)
        out[mode] = 1 - real / total
    return out


def sts_similarities(model, sts, dtype: str = "float32", batch_size: int = 32, max_length: int = 128) -> np.ndarray:
    """Cosine of each pair of ``sts`` (a :class:`~embedlessons.data.ScoredPairs`) with the model run under autocast
    to ``dtype`` (``"float32"``: no autocast): [N] float32, e.g. for
    :func:`~embedlessons.stats.paired_bootstrap_spearman`."""
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"unknown dtype {dtype!r}; choose float32, bfloat16 or float16")
    both = list(sts.sentences1) + list(sts.sentences2)
    batches = encode_batches(len(both), batch_size, "sorted", token_lengths(model.tokenizer, both, max_length))
    v = _encode(model, both, batches, max_length, False, None if dtype == "float32" else getattr(torch, dtype))
    v /= np.linalg.norm(v, axis=1, keepdims=True).clip(1e-12)
    n = len(sts.sentences1)
    return (v[:n] * v[n:]).sum(1)


__all__ += ["LOW_PRECISION_FLAGS", "cpu_flags", "gradient_gap", "splitting_the_batch", "distributed_gaps",
            "training_padding_shares", "sts_similarities"]
