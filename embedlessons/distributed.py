"""Data-parallel training with in-batch negatives gathered from every process.

With data parallelism, W processes (ranks) each take B rows of a global batch of W * B, run forward and backward
on their own rows, and average their gradients (``DistributedDataParallel`` does this with an all-reduce
during the backward pass). For a loss that treats rows independently, that average is the gradient of the
global batch. In-batch InfoNCE (:func:`~embedlessons.losses.in_batch_info_nce`) is not such a loss: with only
its own rows, each rank's anchors see B - 1 negatives, not W * B - 1. So each rank gathers the positives of all
ranks and scores its local anchors against all of them (:func:`distributed_info_nce`, as in DPR, Karpukhin et
al. 2020, and CLIP, Radford et al. 2021).

The gather has to carry gradients back to the rank that produced each embedding (:func:`gather_with_grad`):
rank r's positives are negatives in every other rank's loss, so the gradient for them is a sum over all ranks'
losses. The common shortcut (:func:`gather_no_grad_local_slice`: gather without a graph and put the local,
differentiable slice back) drops those terms. The tests show that gather="grad" with averaged gradients gives
exactly the single-process gradient of the combined batch, and that the shortcut and gather="none" do not.

Command line (gloo on CPU, NCCL when CUDA is available)::

    torchrun --nproc_per_node 2 -m embedlessons.distributed --steps 5 --batch-size 8

fine-tunes a small random BERT (or ``--model minilm``) on SciFact (claim, abstract) pairs: each step takes a
duplicate-free global batch of W * B pairs, rank r its rows r*B .. (r+1)*B - 1; rank 0 prints the loss.

References:
    Karpukhin et al. (2020), Dense Passage Retrieval for Open-Domain Question Answering, Section 3.2
    (in-batch negatives); Radford et al. (2021), CLIP (gathered features over workers); Li et al. (2020),
    PyTorch Distributed: Experiences on Accelerating Data Parallel Training (DDP, gradient averaging).
"""
from __future__ import annotations

import argparse
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .losses import LossOutput, _check, _positive, _stats

__all__ = ["GATHERS", "world", "gather_with_grad", "gather_no_grad_local_slice", "distributed_info_nce",
           "average_gradients", "local_rows", "free_port", "spawn", "parity_worker", "train", "main"]

GATHERS = ("grad", "local", "none")


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group; ``(0, 1)`` when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _check_same_rows(x: Tensor) -> None:
    """All-gather needs the same shape on every rank: say so instead of hanging or failing obscurely."""
    rows = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(rows) for _ in range(world()[1])]
    dist.all_gather(sizes, rows)
    if len({int(s) for s in sizes}) > 1:
        raise ValueError(f"expected the same number of rows on every rank (drop the last incomplete batch), "
                         f"got {[int(s) for s in sizes]}")


def gather_with_grad(x: Tensor) -> Tensor:
    """All ranks' ``x`` [B, ...] concatenated in rank order, [W * B, ...], differentiable with respect to every slice.

    Uses ``torch.distributed.nn.functional.all_gather``, whose backward sends the gradient of each slice back to
    the rank that owns it and sums what arrives: rank r's ``x.grad`` is the sum over *all* ranks' losses of
    d loss_s / d x_r. That is what the global loss needs, because rank r's rows appear in every other rank's loss
    (as negatives). Without a process group (one process) it returns ``x``.

    Why not the shortcut of :func:`gather_no_grad_local_slice` (plain ``all_gather``, which has no graph, then
    the local slice put back)? Its gradient keeps only d loss_r / d x_r, this rank's own loss: the terms through
    which the other ranks' losses depend on x_r are lost. The shortcut is right only when every rank computes
    the loss of the *whole* global batch (all anchors), where loss_r already contains those terms; in
    :func:`distributed_info_nce` each rank computes the loss of its own anchors only, and the shortcut gives a
    different gradient (test_distributed.py measures it).
    """
    rank, size = world()
    if size == 1:
        return x
    _check_same_rows(x)
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():     # deprecated in favour of functional collectives; still the clearest
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)
        return torch.cat(all_gather(x), dim=0)


def gather_no_grad_local_slice(x: Tensor) -> Tensor:
    """The naive gather, for comparison: other ranks' slices as constants, this rank's slice with its graph.

    Gives the same values as :func:`gather_with_grad` but, with a loss of local anchors only, a different
    gradient (see :func:`gather_with_grad`).
    """
    rank, size = world()
    if size == 1:
        return x
    _check_same_rows(x)
    slices = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(slices, x.detach().contiguous())
    slices[rank] = x
    return torch.cat(slices, dim=0)


def distributed_info_nce(anchor: Tensor, positive: Tensor, temperature: float | Tensor = 0.05,
                         gather: str = "grad") -> LossOutput:
    """In-batch InfoNCE of this rank's anchors against the positives of every rank (global in-batch negatives).

    Row i of rank r is scored by cosine / t against all W * B positives; its own positive sits at column
    ``r * B + i`` of the gathered matrix, hence labels ``arange(B) + r * B``. Mean over the B local rows.

    Args:
        anchor: [B, d] this rank's anchors; B must be the same on every rank.
        positive: [B, d] their positives.
        temperature: t > 0 (float or 0-dim tensor).
        gather: ``"grad"`` (:func:`gather_with_grad`, the right one), ``"local"``
            (:func:`gather_no_grad_local_slice`, the shortcut) or ``"none"`` (only this rank's B positives:
            B - 1 negatives per anchor, as if the ranks were separate runs).

    References:
        Karpukhin et al. (2020), DPR, Section 3.2; Radford et al. (2021), CLIP; Gao et al. (2021), GradCache
        (the same global batch on one device).

    Inputs:
        (anchor, positive) pairs, no labels; B rows per rank.

    Relations:
        With gather="grad" and gradients averaged over the W ranks (DDP), the loss averaged over ranks and the
        gradient equal those of :func:`~embedlessons.losses.in_batch_info_nce` on the combined batch of W * B
        rows (the rank order is the row order). Each rank's loss is ``in_batch_info_nce`` with the other
        ranks' positives as extra candidate columns; written out here to show the label offset. In one process
        (no process group) it *is* ``in_batch_info_nce``. sentence-transformers: ``MultipleNegativesRankingLoss
        (gather_across_devices=True)``.

    Example:
        >>> out = distributed_info_nce(model(q_batch), model(d_batch), gather="grad")   # doctest: +SKIP
        >>> out.loss.backward()                                                          # doctest: +SKIP
    """
    if gather not in GATHERS:
        raise ValueError(f"expected gather to be one of {GATHERS}, got {gather!r}")
    _check(anchor=(anchor, 2), positive=(positive, 2))
    t = _positive(temperature, "temperature")
    rank, _ = world()
    a, p = F.normalize(anchor, dim=-1), F.normalize(positive, dim=-1)
    if gather == "none":
        candidates, offset = p, 0
    else:
        candidates = (gather_with_grad if gather == "grad" else gather_no_grad_local_slice)(p)
        offset = rank * len(a)
    sims = a @ candidates.T                                 # [B, W * B]
    labels = torch.arange(len(a), device=a.device) + offset
    loss = F.cross_entropy(sims / t, labels)
    rows = torch.arange(len(a), device=a.device)
    off_target = torch.ones_like(sims, dtype=torch.bool)
    off_target[rows, labels] = False
    return LossOutput(loss, _stats(sims, labels, sims[rows, labels], sims[off_target]))


def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """All-reduce every ``.grad`` and divide by W: what DDP does during backward (in buckets, overlapped)."""
    _, size = world()
    if size == 1:
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= size


def local_rows(rows: Sequence, rank: int, world_size: int) -> list:
    """Rank ``rank``'s share of a global batch: rows ``rank * B .. (rank + 1) * B - 1``, B = len(rows) / W."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"expected 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if len(rows) % world_size:
        raise ValueError(f"expected a global batch divisible by the {world_size} ranks, got {len(rows)} rows")
    b = len(rows) // world_size
    return list(rows[rank * b:(rank + 1) * b])


# ------------------------------------------------------------------------------------------------ launching
def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for ``MASTER_PORT`` / ``init_method``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn: Callable, world_size: int, args: tuple = (), timeout: float = 120.0) -> None:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` fresh processes; raise if one fails or time runs out.

    ``fn`` must be importable (a module-level function). On a timeout the processes are terminated.
    """
    import torch.multiprocessing as mp

    context = mp.start_processes(fn, args=(world_size, *args), nprocs=world_size, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + timeout
    while not context.join(timeout=max(0.1, min(1.0, deadline - time.monotonic()))):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
            raise TimeoutError(f"{world_size} processes of {fn.__name__} still running after {timeout:.0f} s")


def _init(rank: int, world_size: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)


def parity_worker(rank: int, world_size: int, port: int, out_path: str, anchors: Sequence[str],
                  positives: Sequence[str], temperature: float = 0.05, max_length: int = 32,
                  model_kwargs: dict | None = None) -> None:
    """One rank of the gradient check: its share of the combined batch, every ``gather`` mode, and DDP.

    The model (:func:`~embedlessons.models.small_bert` with ``model_kwargs``, eval mode: no dropout) is the same
    on every rank. For each mode of :data:`GATHERS`: zero the gradients, the loss of :func:`distributed_info_nce`
    on this rank's rows, backward, :func:`average_gradients`; then once more with gather="grad" through
    ``DistributedDataParallel`` (key ``"ddp"``). Rank 0 saves ``{mode: {"loss": mean over ranks, "grads":
    {name: tensor}}}`` to ``out_path`` with ``torch.save``.
    """
    from torch.nn.parallel import DistributedDataParallel

    from .models import small_bert

    _init(rank, world_size, port)
    try:
        model = small_bert(**(model_kwargs or {})).eval()
        batches = [model.tokenize(local_rows(col, rank, world_size), max_length=max_length)
                   for col in (anchors, positives)]
        results = {}

        def record(name: str, loss: Tensor, module: nn.Module) -> None:
            mean = loss.detach().clone()
            dist.all_reduce(mean)
            results[name] = {"loss": float(mean) / world_size,
                             "grads": {n: p.grad.detach().clone() for n, p in module.named_parameters()
                                       if p.grad is not None}}

        for mode in GATHERS:
            model.zero_grad(set_to_none=True)
            out = distributed_info_nce(model(batches[0]), model(batches[1]), temperature, gather=mode)
            out.loss.backward()
            average_gradients(model.parameters())
            record(mode, out.loss, model)
        model.zero_grad(set_to_none=True)
        ddp = DistributedDataParallel(model)
        out = distributed_info_nce(ddp(batches[0]), ddp(batches[1]), temperature, gather="grad")
        out.loss.backward()                                  # DDP averages the gradients during this call
        record("ddp", out.loss, model)
        if rank == 0:
            torch.save(results, out_path)
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------ training
def train(steps: int = 5, batch_size: int = 8, lr: float = 1e-4, max_length: int = 64, temperature: float = 0.05,
          gather: str = "grad", model_name: str = "small", max_rows: int | None = None, seed: int = 0,
          log: Callable[[str], None] = print) -> list[float]:
    """Data-parallel fine-tuning on SciFact (claim, abstract) pairs; run once per rank (``torchrun``), or alone.

    The process group comes from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
    ``MASTER_PORT``): gloo on CPU, NCCL when CUDA is available (one GPU per rank, ``LOCAL_RANK``). Without it the
    run is one process (W = 1). Each step every rank draws the same duplicate-free global batch of W * B pairs
    (:class:`~embedlessons.training.NoDuplicatesBatchSampler` with batch size W * B, same seed), embeds its own
    B rows (:func:`local_rows`) with the model wrapped in ``DistributedDataParallel``, takes
    :func:`distributed_info_nce` with ``gather``, and steps AdamW on the averaged gradients.

    Args:
        steps, batch_size (per rank), lr, max_length, temperature, gather, seed: as named.
        model_name: ``"small"`` (:func:`~embedlessons.models.small_bert`, random, 2 layers, seconds on a CPU)
            or ``"minilm"`` (all-MiniLM-L6-v2).
        max_rows: use only the first this many pairs (None: all 919).
        log: called on rank 0 with one line per step.

    Returns the per-step loss averaged over ranks (on every rank).
    """
    from torch.nn.parallel import DistributedDataParallel

    from .data import load_retrieval
    from .models import load_model, small_bert
    from .training import NoDuplicatesBatchSampler, PairDataset, _batches, pairs_from_retrieval

    if gather not in GATHERS:
        raise ValueError(f"expected gather to be one of {GATHERS}, got {gather!r}")
    if model_name not in ("small", "minilm"):
        raise ValueError(f"expected model_name 'small' or 'minilm', got {model_name!r}")
    launched = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    cuda = torch.cuda.is_available()
    if launched and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank, size = world()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    try:
        pairs = pairs_from_retrieval(load_retrieval("scifact", "train"))
        if max_rows is not None:
            pairs = PairDataset(pairs.anchors[:max_rows], pairs.positives[:max_rows])
        model = (small_bert(seed=seed) if model_name == "small" else load_model("all-MiniLM-L6-v2")).to(device)
        pooler = getattr(model.transformer, "pooler", None)
        for p in pooler.parameters() if pooler is not None else []:
            p.requires_grad_(False)                     # unused by mean pooling; DDP would wait for its gradient
        module = DistributedDataParallel(model) if size > 1 else model
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
        batches = _batches(NoDuplicatesBatchSampler(pairs, batch_size * size, seed=seed))
        torch.manual_seed(seed + rank)                  # dropout masks differ between ranks, as in DDP training
        model.train()
        losses = []
        for step in range(1, steps + 1):
            rows = local_rows(next(batches), rank, size)
            claims = model.tokenize([pairs.anchors[i] for i in rows], max_length=max_length)
            abstracts = model.tokenize([pairs.positives[i] for i in rows], max_length=max_length)
            out = distributed_info_nce(module(claims), module(abstracts), temperature, gather=gather)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()                         # DDP all-reduces (averages) the gradients here
            optimizer.step()
            mean = out.loss.detach().clone()
            if size > 1:
                dist.all_reduce(mean)
            losses.append(float(mean) / size)
            if rank == 0:
                log(f"step {step}/{steps} loss {losses[-1]:.4f} (mean of {size} ranks, global batch "
                    f"{batch_size * size}, gather={gather}, accuracy {out.stats['accuracy']:.3f} on rank 0)")
        model.eval()
        return losses
    finally:
        if launched and dist.is_initialized():
            dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m embedlessons.distributed",
        description="Data-parallel contrastive fine-tuning with in-batch negatives gathered across ranks. "
                    "Launch with: torchrun --nproc_per_node 2 -m embedlessons.distributed --steps 5")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per rank (global batch: W times this)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--gather", choices=GATHERS, default="grad")
    parser.add_argument("--model", choices=("small", "minilm"), default="small")
    parser.add_argument("--max-rows", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train(steps=args.steps, batch_size=args.batch_size, lr=args.lr, max_length=args.max_length,
          temperature=args.temperature, gather=args.gather, model_name=args.model, max_rows=args.max_rows,
          seed=args.seed, log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
