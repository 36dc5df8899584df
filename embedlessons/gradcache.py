"""GradCache: the gradient of a big in-batch-negatives batch with the activation memory of a small one.

In-batch InfoNCE (:func:`~embedlessons.losses.in_batch_info_nce`) gets better with bigger batches, because every
other row's positive is a negative. But backpropagation keeps every layer's activations of every row until the
backward pass, so memory grows with the batch size. Gradient accumulation does not help here: the loss of one
row depends on *all* rows' embeddings, so the batch cannot be cut into independent micro-batches
(:func:`accumulation_backward` shows that each micro-batch then sees only its own few negatives, a different
loss with a different gradient).

GradCache (Gao, Zhang, Han, Callan 2021) splits the computation at the embeddings instead. The loss needs only
the embeddings [B, d], which are small; the encoder needs its activations only to turn d loss / d embedding
into d loss / d parameters. So (:func:`gradcache_backward`):

1. embed every column in chunks of ``mini_batch`` rows **without** a graph (``torch.no_grad``);
2. make the full-batch embeddings leaf tensors, compute the loss of the whole batch and back-propagate it
   to them only: their ``.grad`` is the "cache", d loss / d embedding [B, d];
3. embed each chunk again **with** a graph and call ``emb_chunk.backward(cached_grad_chunk)``; by the chain
   rule the parameter gradients add up to exactly those of the full-batch loss. Only one chunk's
   activations are alive at a time. Dropout must draw the same masks as in step 1 (the cache belongs to
   those embeddings), so each chunk's random state is saved in step 1 and replayed in step 3.

The price is a second forward pass (about a third more compute than forward + backward). sentence-transformers
ships this as ``CachedMultipleNegativesRankingLoss``; the tests check that both give the same gradient.
:class:`SavedActivationMeter` measures what is held for backward, to show the memory saving
(``bench/gradcache_memory.py`` measures the process's peak memory).

References:
    Gao, Zhang, Han, Callan (2021), Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup
    (RepL4NLP), Section 3 (the representation gradient cache) and Section 3.3 (random states).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from .losses import LossOutput
from .training import _lengths

__all__ = ["gradcache_backward", "accumulation_backward", "full_batch_backward", "SavedActivationMeter",
           "saved_activation_bytes"]

LossFn = Callable[..., "LossOutput | Tensor"]


# ------------------------------------------------------------------------------------------------ helpers
def _check_columns(columns: Sequence[Sequence[str]]) -> int:
    """Columns are C >= 1 lists of B >= 1 strings each; returns B."""
    if isinstance(columns, str) or not isinstance(columns, Sequence) or len(columns) == 0:
        raise ValueError(f"expected columns as a non-empty list of text lists (e.g. [queries, documents]), "
                         f"got {type(columns).__name__} {columns!r:.60}")
    for c, col in enumerate(columns):
        if isinstance(col, str) or not isinstance(col, Sequence) or not all(isinstance(t, str) for t in col):
            raise ValueError(f"expected column {c} to be a list of strings, got {type(col).__name__}")
    sizes = [len(col) for col in columns]
    if len(set(sizes)) > 1:
        raise ValueError(f"expected every column to have the same number of rows (row i of each column belongs "
                         f"together), got lengths {sizes}")
    if sizes[0] == 0:
        raise ValueError("expected a batch of at least one row, got empty columns")
    return sizes[0]


def _check_size(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected {name} to be an int >= 1, got {value!r}")
    return value


def _as_output(out) -> LossOutput:
    """Accept a LossOutput or a scalar tensor (as :func:`~embedlessons.training.train` does)."""
    if isinstance(out, Tensor):
        out = LossOutput(out, {})
    if not isinstance(out, LossOutput) or not isinstance(out.loss, Tensor) or out.loss.dim() != 0:
        raise TypeError(f"expected loss_fn to return a LossOutput with a scalar loss (or a scalar tensor), "
                        f"got {type(out).__name__}")
    return out


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    """The generator states a forward pass on ``device`` draws dropout from (CPU, and CUDA when on a GPU)."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


@contextlib.contextmanager
def _replay_rng(state: tuple[Tensor, Tensor | None], device: torch.device) -> Iterator[None]:
    """Run the block with the generators set to ``state``; afterwards they are back where they were."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        yield


# ------------------------------------------------------------------------------------------------ GradCache
def gradcache_backward(model: nn.Module, columns: Sequence[Sequence[str]], loss_fn: LossFn, mini_batch: int,
                       max_length: int | Sequence[int] | None = None, replay_rng: bool = True) -> LossOutput:
    """Back-propagate the loss of the whole batch, holding the activations of only ``mini_batch`` rows at a time.

    Args:
        model: a :class:`~embedlessons.models.BiEncoder` (``tokenize`` + ``forward(batch) -> [b, d]``); train or
            eval mode. Its parameters' ``.grad`` are *added to*, as ``loss.backward()`` does: zero them first.
        columns: C lists of B texts, e.g. ``[queries, documents]``; row i of every column belongs together.
        loss_fn: called as ``loss_fn(emb_1, ..., emb_C)`` on the full-batch embeddings [B, d], returns a
            :class:`~embedlessons.losses.LossOutput` (or a scalar tensor), e.g.
            ``functools.partial(in_batch_info_nce, temperature=0.05)``. Parameters of the loss (a learnable
            temperature) get their gradient in step 2.
        mini_batch: rows per forward pass (m >= 1); the last chunk may be smaller.
        max_length: token limit, one int or one per column (default: the model's ``max_length``). Each chunk is
            tokenised on its own, padded to its own longest text.
        replay_rng: replay step 1's random state in step 3 (the default). ``False`` only shows what goes
            wrong without it: with dropout on, step 3 draws other masks than those the cache was computed
            for, and the gradient is wrong.

    Returns:
        The full-batch :class:`~embedlessons.losses.LossOutput` (loss detached: the backward is already done),
        with ``stats["mini_batches"]``, the number of forward passes per column.

    Shapes: each column's chunk c gives embeddings [m, d]; the cache is [B, d] per column.
    After the call, the torch random state is where step 1 left it (as with one ordinary forward pass).
    """
    n = _check_columns(columns)
    _check_size(mini_batch, "mini_batch")
    lengths = _lengths(max_length or model.max_length, len(columns))
    device = model.device
    pieces = _chunks(n, mini_batch)
    # Step 1: embed every chunk without a graph; remember each chunk's tokens and random state.
    batches, states, embeddings = [], [], []
    with torch.no_grad():
        for texts, length in zip(columns, lengths):
            col_batches, col_states, col_emb = [], [], []
            for piece in pieces:
                col_batches.append(model.tokenize(list(texts[piece]), max_length=length))
                col_states.append(_rng_state(device))
                col_emb.append(model(col_batches[-1]))
            batches.append(col_batches)
            states.append(col_states)
            embeddings.append(torch.cat(col_emb))
    # Step 2: the loss of the whole batch, back-propagated to the embeddings only: the cache.
    leaves = [e.detach().requires_grad_() for e in embeddings]
    out = _as_output(loss_fn(*leaves))
    out.loss.backward()
    for c, leaf in enumerate(leaves):
        if leaf.grad is None:
            raise ValueError(f"loss_fn did not use column {c}: expected every column to reach the loss")
    # Step 3: each chunk again, with a graph, fed its slice of the cache.
    for col_batches, col_states, leaf in zip(batches, states, leaves):
        for piece, batch, state in zip(pieces, col_batches, col_states):
            with _replay_rng(state, device) if replay_rng else contextlib.nullcontext():
                emb = model(batch)
            emb.backward(leaf.grad[piece])
    return LossOutput(out.loss.detach(), {**out.stats, "mini_batches": len(pieces)})


def full_batch_backward(model: nn.Module, columns: Sequence[Sequence[str]], loss_fn: LossFn,
                        max_length: int | Sequence[int] | None = None, chunk: int | None = None) -> LossOutput:
    """The plain big batch: embed every column with a graph, compute the loss, ``backward()``.

    Args:
        model, columns, loss_fn, max_length: as in :func:`gradcache_backward`.
        chunk: ``None`` embeds each column in one forward pass. An int embeds it in forward passes of that
            many rows, all graphs kept until the one backward (the memory of the big batch): with dropout on,
            this draws the same masks as ``gradcache_backward(..., mini_batch=chunk)`` from the same seed,
            which makes it the exact reference for GradCache's gradient.

    Returns the :class:`~embedlessons.losses.LossOutput` (loss detached).
    """
    n = _check_columns(columns)
    lengths = _lengths(max_length or model.max_length, len(columns))
    pieces = _chunks(n, n if chunk is None else _check_size(chunk, "chunk"))
    embeddings = [torch.cat([model(model.tokenize(list(texts[p]), max_length=length)) for p in pieces])
                  for texts, length in zip(columns, lengths)]
    out = _as_output(loss_fn(*embeddings))
    out.loss.backward()
    return LossOutput(out.loss.detach(), out.stats)


def accumulation_backward(model: nn.Module, columns: Sequence[Sequence[str]], loss_fn: LossFn, micro_batch: int,
                          max_length: int | Sequence[int] | None = None) -> LossOutput:
    """Plain gradient accumulation: the loss of each micro-batch on its own, gradients averaged.

    Each micro-batch of k rows is embedded, its loss computed and back-propagated (weighted by k / B, so the
    result is the mean over rows, as for the big batch); its graph is then freed. The memory is that of
    ``micro_batch`` rows, like GradCache, **but it is a different loss**: with in-batch negatives each anchor
    now competes against the k - 1 other rows of its micro-batch only, not against the B - 1 rows of the
    batch, so the gradient differs from the big batch's (and the loss is lower: an easier task). For losses
    without in-batch interactions (e.g. :func:`~embedlessons.losses.triplet_loss`) the two agree.

    Args: as :func:`gradcache_backward`, with ``micro_batch`` rows per micro-batch.

    Returns a :class:`~embedlessons.losses.LossOutput`: the row-weighted mean of the micro-batch losses (and of
    their stats), detached.
    """
    n = _check_columns(columns)
    _check_size(micro_batch, "micro_batch")
    lengths = _lengths(max_length or model.max_length, len(columns))
    total, stats = 0.0, {}
    for piece in _chunks(n, micro_batch):
        weight = (piece.stop - piece.start) / n
        embeddings = [model(model.tokenize(list(texts[piece]), max_length=length))
                      for texts, length in zip(columns, lengths)]
        out = _as_output(loss_fn(*embeddings))
        (out.loss * weight).backward()
        total += out.loss.item() * weight
        for key, value in out.stats.items():
            stats[key] = stats.get(key, 0.0) + float(value) * weight
    return LossOutput(torch.tensor(total), stats)


# ------------------------------------------------------------------------------------------------ memory
class SavedActivationMeter:
    """Context manager: bytes of the tensors autograd holds for backward, now and at the peak.

    What it counts: every tensor autograd saves for a backward pass while the block runs (through
    ``torch.autograd.graph.saved_tensors_hooks``), by its storage, each storage once however many times it
    is saved (a tensor saved by two operations, or views of one tensor, count once), from the moment it is
    saved until the graph that holds it is freed (after its backward, or when the graph is dropped).
    Storages of ``exclude``'s parameters and buffers are not counted (they exist anyway).

    What it does not count: tensors not saved for backward (a layer's output that no backward needs, the
    transient work memory of a forward or backward, anything under ``torch.no_grad``, where nothing is
    saved), gradients, optimizer state, the allocator's caching and fragmentation. It is deterministic (it
    depends on shapes, not on timing or the allocator) and works on CPU and GPU; for the process's real peak
    see ``bench/gradcache_memory.py`` (peak RSS) or ``torch.cuda.max_memory_allocated``.

    Attributes: ``peak_bytes``, ``current_bytes`` (alive now), ``saved_count`` (tensors packed in all).

    Example:
        >>> with SavedActivationMeter(exclude=model) as meter:     # doctest: +SKIP
        ...     full_batch_backward(model, [queries, docs], loss_fn)
        >>> meter.peak_bytes                                       # doctest: +SKIP
    """

    def __init__(self, exclude: nn.Module | None = None):
        self._excluded = set() if exclude is None else {
            t.untyped_storage().data_ptr() for t in [*exclude.parameters(), *exclude.buffers()]}
        self._alive: dict[tuple, list[int]] = {}            # storage key -> [bytes, times saved and alive]
        self.current_bytes = self.peak_bytes = self.saved_count = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, tensor: Tensor) -> _Saved:
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), str(tensor.device))
        self.saved_count += 1
        if storage.data_ptr() in self._excluded:
            return _Saved(tensor, None, self)
        entry = self._alive.setdefault(key, [storage.nbytes(), 0])
        if entry[1] == 0:
            self.current_bytes += entry[0]
            self.peak_bytes = max(self.peak_bytes, self.current_bytes)
        entry[1] += 1
        return _Saved(tensor, key, self)

    def _release(self, key: tuple) -> None:
        entry = self._alive[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.current_bytes -= entry[0]
            del self._alive[key]

    @staticmethod
    def _unpack(saved: _Saved) -> Tensor:
        return saved.tensor

    def __enter__(self) -> SavedActivationMeter:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


class _Saved:
    """A tensor saved for backward; when autograd drops it, the meter stops counting it."""

    __slots__ = ("tensor", "key", "meter")

    def __init__(self, tensor: Tensor, key: tuple | None, meter: SavedActivationMeter):
        self.tensor, self.key, self.meter = tensor, key, meter

    def __del__(self) -> None:
        if self.key is not None:
            self.meter._release(self.key)


def saved_activation_bytes(fn: Callable[[], object], exclude: nn.Module | None = None) -> int:
    """Peak bytes held for backward while ``fn()`` runs (see :class:`SavedActivationMeter` for what counts).

    Example: ``saved_activation_bytes(lambda: gradcache_backward(model, cols, loss_fn, 8), exclude=model)``.
    """
    with SavedActivationMeter(exclude) as meter:
        fn()
    return meter.peak_bytes
