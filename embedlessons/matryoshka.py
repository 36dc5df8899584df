"""Matryoshka embeddings: train so that every prefix of the vector is an embedding too.

Matryoshka Representation Learning (Kusupati et al. 2022) applies the training loss to the first m
coordinates of each embedding, for several m (e.g. 32, 64, ..., 384), and sums the results. The first
coordinates are then pushed to carry the most information, so a vector truncated to its first m coordinates
(and re-normalised) is still a good embedding: cheaper to store and to search.

- :func:`truncate`: the first ``dim`` coordinates, re-normalised by default (cosine needs unit length again:
  a prefix of a unit vector is shorter than 1).
- :class:`MatryoshkaLoss`: wraps any loss of :mod:`embedlessons.losses` (or :mod:`embedlessons.task_losses`);
  equal to sentence-transformers' ``MatryoshkaLoss`` in value and gradients.
- :class:`TwoStageIndex` / :func:`two_stage_search`: shortlist with short prefixes (an exact FAISS flat
  index), then rerank the shortlist with the full vectors.
"""
from __future__ import annotations

import hashlib
import math
import random
from typing import Callable, Sequence

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

from .indexing import _positive_int, _vectors, build_flat, search
from .losses import LossOutput

__all__ = ["truncate", "MatryoshkaLoss", "TwoStageIndex", "two_stage_search"]


def _check_dim(dim, width: int, what: str = "dim") -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise ValueError(f"{what} must be an int, got {dim!r}")
    if dim < 1:
        raise ValueError(f"{what} must be >= 1, got {dim}")
    if dim > width:
        raise ValueError(f"{what}={dim} is larger than the embeddings (d={width})")
    return int(dim)


def truncate(embeddings: Tensor | np.ndarray, dim: int, renormalize: bool = True) -> Tensor | np.ndarray:
    """The first ``dim`` coordinates of each embedding ``[..., d] -> [..., dim]``, L2-normalised again unless
    ``renormalize=False``. Works on a torch tensor (differentiable) or a NumPy array (returns float32).

    Without re-normalising, dot products of prefixes are not cosines: a prefix of a unit vector has norm < 1,
    and different vectors lose different amounts.
    """
    if isinstance(embeddings, Tensor):
        if embeddings.dim() < 1 or embeddings.shape[-1] == 0:
            raise ValueError(f"embeddings must have shape [..., d] with d >= 1, got {tuple(embeddings.shape)}")
        out = embeddings[..., :_check_dim(dim, embeddings.shape[-1])]
        return F.normalize(out, dim=-1) if renormalize else out
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim < 1 or x.shape[-1] == 0:
        raise ValueError(f"embeddings must have shape [..., d] with d >= 1, got {x.shape}")
    out = x[..., :_check_dim(dim, x.shape[-1])]
    if not renormalize:
        return np.ascontiguousarray(out)
    norm = np.linalg.norm(out, axis=-1, keepdims=True)
    return np.ascontiguousarray(out / np.maximum(norm, 1e-12))     # like F.normalize's eps


class MatryoshkaLoss(nn.Module):
    """Matryoshka loss: ``sum_m w_m * loss(truncate(e_1, m), truncate(e_2, m), ..., scores)`` over the dims m.

    Every embedding input (a tensor of rank >= 2: [B, d] or [B, K, d]) is truncated to its first m coordinates
    and re-normalised; other inputs (scores, labels [B]) pass through unchanged. Dims are used largest first,
    as sentence-transformers sorts them.

    Args:
        loss: any loss that takes embeddings (and scores) and returns a :class:`~embedlessons.losses.LossOutput`
            or a scalar tensor, e.g. ``functools.partial(in_batch_info_nce, temperature=0.05)``.
        dims: the prefix lengths, e.g. ``[384, 256, 128, 64, 32]``: distinct ints >= 1, at most the embedding
            width (checked when called). Include the full width, or the full vector is not trained.
        weights: one weight >= 0 per dim (default 1 each, as in the paper and sentence-transformers).
        n_dims_per_step: -1 (default): every dim every step; n > 0: a random n of them per step (cheaper),
            drawn with Python's ``random.Random(seed)`` as sentence-transformers draws with ``random``.
        seed: seeds that draw.

    References:
        Kusupati et al. (2022), Matryoshka Representation Learning (the MRL objective, with equal weights).

    Inputs:
        whatever the wrapped loss takes.

    Relations:
        Equals sentence-transformers' ``MatryoshkaLoss(model, loss, matryoshka_dims, matryoshka_weights,
        n_dims_per_step)`` in value and gradients (that wrapper truncates and normalises the model output, then
        calls the inner loss, which normalises again, as here). Unlike it, this one does not truncate
        embedding-shaped labels (distillation targets). Stats: the wrapped loss's stats at the largest dim
        used, and ``loss@<m>`` for each dim used.

    Example:
        >>> loss = MatryoshkaLoss(functools.partial(in_batch_info_nce, temperature=0.05), [64, 32, 16])
        >>> loss(torch.randn(4, 64), torch.randn(4, 64)).stats["loss@16"]  # doctest: +SKIP
    """

    def __init__(self, loss: Callable[..., LossOutput | Tensor], dims: Sequence[int],
                 weights: Sequence[float] | None = None, n_dims_per_step: int = -1, seed: int = 0):
        super().__init__()
        if not callable(loss):
            raise TypeError(f"loss must be callable, got {type(loss).__name__}")
        dims = list(dims) if not isinstance(dims, (int, np.integer)) else [dims]
        if not dims:
            raise ValueError("dims is empty: give at least one prefix length")
        for d in dims:
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
                raise ValueError(f"every dim must be an int >= 1, got {d!r} in {dims}")
        if len(set(dims)) != len(dims):
            raise ValueError(f"dims must be distinct, got {dims}")
        weights = [1.0] * len(dims) if weights is None else [float(w) for w in weights]
        if len(weights) != len(dims):
            raise ValueError(f"weights has {len(weights)} entries but dims has {len(dims)}; give one weight per dim")
        if any(not (math.isfinite(w) and w >= 0) for w in weights):
            raise ValueError(f"weights must be finite numbers >= 0, got {weights}")
        if isinstance(n_dims_per_step, bool) or not isinstance(n_dims_per_step, int) or \
                not (n_dims_per_step == -1 or n_dims_per_step >= 1):
            raise ValueError(f"n_dims_per_step must be -1 (all dims) or an int >= 1, got {n_dims_per_step!r}")
        order = sorted(range(len(dims)), key=lambda i: dims[i], reverse=True)
        self.dims = [int(dims[i]) for i in order]
        self.weights = [weights[i] for i in order]
        self.loss, self.n_dims_per_step, self.seed = loss, n_dims_per_step, seed
        self._rng = random.Random(seed)

    def dims_for_step(self) -> list[int]:
        """Indices (into :attr:`dims`) used this step, in order; draws from the seeded generator."""
        idx = list(range(len(self.dims)))
        if 0 < self.n_dims_per_step < len(idx):
            idx = sorted(self._rng.sample(range(len(self.dims)), self.n_dims_per_step))
        return idx

    def forward(self, *inputs) -> LossOutput:
        embedded = [isinstance(x, Tensor) and x.dim() >= 2 for x in inputs]
        if not any(embedded):
            raise ValueError("MatryoshkaLoss found no embedding input (a tensor [B, d] or [B, K, d])")
        for x, is_emb in zip(inputs, embedded):
            if is_emb and self.dims[0] > x.shape[-1]:
                raise ValueError(f"dimension {self.dims[0]} in dims is larger than the embeddings "
                                 f"(d={x.shape[-1]})")
        total, stats = 0.0, {}
        for n, i in enumerate(self.dims_for_step()):
            m = self.dims[i]
            out = self.loss(*[truncate(x, m) if e else x for x, e in zip(inputs, embedded)])
            if isinstance(out, Tensor):
                out = LossOutput(out, {})
            if n == 0:
                stats.update(out.stats)
            stats[f"loss@{m}"] = out.loss.detach().float().item()
            total = total + self.weights[i] * out.loss
        return LossOutput(total, stats)

    def cache_key(self) -> list:
        from .training import _describe

        key = ["MatryoshkaLoss", _describe(self.loss), self.dims, self.weights, self.n_dims_per_step, self.seed]
        if 0 < self.n_dims_per_step < len(self.dims):     # a reused loss continues its draws: a different run
            key.append(hashlib.blake2b(repr(self._rng.getstate()).encode(), digest_size=8).hexdigest())
        return key

    def extra_repr(self) -> str:
        return f"dims={self.dims}, weights={self.weights}, n_dims_per_step={self.n_dims_per_step}"


# ----------------------------------------------------------------------------------------------- search
class TwoStageIndex:
    """Shortlist with prefixes, rerank with full vectors.

    Stage 1 searches the first ``short_dim`` coordinates (re-normalised unless ``renormalize=False``) of the
    documents exactly, with a FAISS flat inner-product index, for ``shortlist`` candidates per query; stage 2
    scores those candidates by the inner product of the *full* query and document vectors and keeps the top
    ``k``. Stage 1 costs ``short_dim / d`` of a full flat search; stage 2 is ``shortlist x d`` per query. The
    result is exact full-vector search whenever the true top ``k`` are in the shortlist.

    Args:
        vectors: [N, d] document embeddings (float32; unit length for cosine).
        short_dim: prefix length of stage 1 (<= d).
        renormalize: re-normalise the prefixes (what a Matryoshka model is trained for).

    References:
        Kusupati et al. (2022), Matryoshka Representation Learning ("adaptive retrieval": shortlist
        with a low dimension, rerank with a higher one).
    """

    def __init__(self, vectors, short_dim: int, renormalize: bool = True):
        self.vectors = _vectors(vectors)
        self.short_dim = _check_dim(short_dim, self.vectors.shape[1], "short_dim")
        self.renormalize = renormalize
        self.index = build_flat(truncate(self.vectors, self.short_dim, renormalize))

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def __len__(self) -> int:
        return len(self.vectors)

    def shortlist(self, queries, n: int) -> np.ndarray:
        """Stage 1 only: ids [Q, n] of the n best documents by the prefix vectors."""
        q = _vectors(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {q.shape[1]} but the documents {self.dim}")
        return search(self.index, truncate(q, self.short_dim, self.renormalize), n)[1]

    def search(self, queries, k: int = 10, shortlist: int = 100) -> tuple[np.ndarray, np.ndarray]:
        """``(scores float32 [Q, k], ids int64 [Q, k])``, best first by the full vectors (ties: smaller id)."""
        q = _vectors(queries, "queries")
        k, shortlist = _positive_int(k, "k"), _positive_int(shortlist, "shortlist")
        if shortlist < k:
            raise ValueError(f"shortlist ({shortlist}) must be >= k ({k}): the rerank keeps k of the shortlist")
        if shortlist > len(self):
            raise ValueError(f"shortlist={shortlist} is larger than the number of documents ({len(self)})")
        cand = self.shortlist(q, shortlist)                              # [Q, S]
        scores = np.einsum("qd,qsd->qs", q, self.vectors[cand])          # full-vector inner products
        order = np.lexsort((cand, -scores), axis=1)[:, :k]               # by score, then by id
        return (np.take_along_axis(scores, order, 1).astype(np.float32),
                np.take_along_axis(cand, order, 1).astype(np.int64))

    def __repr__(self) -> str:
        return f"TwoStageIndex(n={len(self)}, d={self.dim}, short_dim={self.short_dim})"


def two_stage_search(queries, vectors, short_dim: int, k: int = 10, shortlist: int = 100,
                     renormalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One-off :class:`TwoStageIndex` search: ``(scores [Q, k], ids [Q, k])``. Build the index once instead
    when searching repeatedly (or timing)."""
    return TwoStageIndex(vectors, short_dim, renormalize).search(queries, k, shortlist)
