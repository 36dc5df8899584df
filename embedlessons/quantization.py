"""Embedding quantisation: int8 (scalar) and binary codes, their memory, and search with rescoring.

A float32 embedding of d dimensions takes 4d bytes. Two cheap codes (Shakir, Aarsen & Lee 2024 describe both
for sentence-transformers):

- **int8** (:func:`quantize_int8`): each dimension j is cut into 256 equal buckets between a calibration
  minimum and maximum (:func:`int8_ranges`), stored as an int8: d bytes, 4x smaller. The ranges must come
  from representative embeddings (a calibration set) and be reused for every vector.
- **binary** (:func:`quantize_binary`): one bit per dimension, ``x_j > 0``, packed 8 to a byte: d/8 bytes,
  32x smaller. Documents are compared by Hamming distance (a popcount), which FAISS's ``IndexBinaryFlat``
  computes exactly (:class:`BinaryIndex`). *Rescoring* fetches ``rescore_multiplier * k`` candidates by Hamming
  distance, then scores them by the float query against the documents' +-1 vectors and keeps the best k: the
  query stays precise, only the documents are compressed (as BPR does, Yamada et al. 2021).

Both equal sentence-transformers' ``quantize_embeddings`` ("int8", "ubinary") number for number, and
:meth:`BinaryIndex.search` returns the same documents as its ``semantic_search_faiss`` (see there for the
scores). :func:`memory_bytes` gives the size of each representation.
"""
from __future__ import annotations

import numpy as np

from .indexing import _faiss, _positive_int, _vectors, exact_search

__all__ = ["PRECISIONS", "memory_bytes", "int8_ranges", "quantize_int8", "dequantize_int8", "int8_search",
           "quantize_binary", "unpack_binary", "BinaryIndex", "binary_search"]

PRECISIONS = ("float32", "float16", "int8", "binary")


def memory_bytes(n_vectors: int, dim: int, precision: str = "float32") -> int:
    """Bytes to store ``n_vectors`` embeddings of ``dim`` dimensions: float32 4d, float16 2d, int8 d, binary
    ceil(d / 8) each (int8 also needs its ranges, 2 x d float32 once, not counted here)."""
    n, d = _positive_int(n_vectors, "n_vectors"), _positive_int(dim, "dim")
    per_vector = {"float32": 4 * d, "float16": 2 * d, "int8": d, "binary": (d + 7) // 8}
    if precision not in per_vector:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    return n * per_vector[precision]


def _floats(x, name: str) -> np.ndarray:
    """A non-empty, finite 2-D float array, keeping its float dtype (int8 maths follows the input's dtype)."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be float embeddings, got dtype {x.dtype} (already quantised?)")
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array [n, d], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return x


# ----------------------------------------------------------------------------------------------- int8
def int8_ranges(calibration) -> np.ndarray:
    """Per-dimension ``[min, max]`` of calibration embeddings [n, d] (n >= 2): float32 array [2, d]."""
    x = _floats(calibration, "calibration embeddings")
    if len(x) < 2:
        raise ValueError("int8 ranges need at least 2 calibration embeddings (a range from one vector is empty)")
    return np.vstack([x.min(axis=0), x.max(axis=0)]).astype(np.float32)


def _steps(ranges: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(ranges)
    if r.shape != (2, d):
        raise ValueError(f"ranges must have shape (2, {d}) (a min and a max per dimension), got {r.shape}")
    r = r.astype(np.float32)
    if not np.isfinite(r).all() or (r[1] < r[0]).any():
        raise ValueError("ranges must be finite with max >= min in every dimension")
    starts = r[0]
    steps = (r[1] - starts) / 255
    return starts, np.where(steps == 0, 1, steps)                 # a constant dimension: one bucket


def quantize_int8(embeddings, ranges=None, calibration=None) -> np.ndarray:
    """int8 codes [n, d]: ``clip(floor((x - min_j) / step_j), 0, 255) - 128`` with ``step_j = (max_j - min_j) / 255``.

    Values outside the calibration range are clipped to the first / last bucket. Give ``ranges`` (from
    :func:`int8_ranges`) or ``calibration`` embeddings; with neither, the ranges of ``embeddings`` themselves
    are used (fine for a corpus, wrong for a handful of queries, which must reuse the corpus ranges).
    """
    x = _floats(embeddings, "embeddings")
    if ranges is None:
        ranges = int8_ranges(x if calibration is None else calibration)
    starts, steps = _steps(ranges, x.shape[1])
    buckets = np.clip(np.floor((x - starts) / steps), 0, 255)
    return (buckets - 128).astype(np.int8)


def dequantize_int8(codes, ranges) -> np.ndarray:
    """Back to floats [n, d] (float32): the lower edge of each code's bucket, ``(code + 128) * step + min``."""
    c = np.asarray(codes)
    if c.dtype != np.int8 or c.ndim != 2:
        raise ValueError(f"codes must be a 2-D int8 array, got dtype {c.dtype} and shape {c.shape}")
    starts, steps = _steps(ranges, c.shape[1])
    return ((c.astype(np.float64) + 128) * steps + starts).astype(np.float32)


def int8_search(queries, codes, ranges, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Exact search of float queries against int8 documents: inner products with the dequantised documents,
    ``(scores float32 [Q, k], ids int64 [Q, k])`` (the query is not quantised)."""
    return exact_search(_vectors(queries, "queries"), dequantize_int8(codes, ranges), k)


# ----------------------------------------------------------------------------------------------- binary
def quantize_binary(embeddings) -> np.ndarray:
    """Packed sign bits: uint8 [n, ceil(d / 8)], bit j set where ``x_j > 0`` (big-endian within a byte, as
    ``np.packbits``; the last byte is padded with 0 bits)."""
    return np.packbits(_floats(embeddings, "embeddings") > 0, axis=-1)


def unpack_binary(codes, dim: int) -> np.ndarray:
    """The +-1 vectors [n, dim] (float32) of packed codes: +1 where the bit is set, -1 where it is not."""
    c = np.asarray(codes)
    if c.dtype != np.uint8 or c.ndim < 1:
        raise ValueError(f"codes must be a uint8 array of packed bits, got dtype {c.dtype}")
    dim = _positive_int(dim, "dim")
    if dim > 8 * c.shape[-1] or dim <= 8 * (c.shape[-1] - 1):
        raise ValueError(f"codes of {c.shape[-1]} bytes hold {8 * c.shape[-1] - 7}..{8 * c.shape[-1]} dims, "
                         f"not {dim}")
    bits = np.unpackbits(c, axis=-1)[..., :dim]
    return bits.astype(np.float32) * 2 - 1


class BinaryIndex:
    """Hamming-distance search over binary codes (FAISS ``IndexBinaryFlat``: exact), with optional rescoring.

    Args:
        vectors: [N, d] float document embeddings (quantised here with :func:`quantize_binary`).

    Attributes:
        codes: uint8 [N, ceil(d / 8)]; dim: d; index: the FAISS binary index.
    """

    def __init__(self, vectors):
        x = _floats(vectors, "vectors")
        self.dim = x.shape[1]
        self.codes = quantize_binary(x)
        self.index = _faiss().IndexBinaryFlat(8 * self.codes.shape[1])
        self.index.add(self.codes)

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def memory_bytes(self) -> int:
        return int(self.codes.nbytes)

    def search(self, queries, k: int = 10, rescore: bool = True, rescore_multiplier: int = 2
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` documents per query: ``(scores [Q, k], ids int64 [Q, k])``.

        ``rescore=False``: the query is binarised too; scores are Hamming distances (int32, *smaller is
        better*), in FAISS's order. ``rescore=True``: the ``k * rescore_multiplier`` nearest by Hamming distance
        are re-scored by ``q . s`` (float32, larger is better), with q the float query and s the document's
        +-1 vector, and the best k kept.

        sentence-transformers' ``semantic_search_faiss(..., corpus_precision="ubinary")`` rescores with 0/1
        bits instead, ``q . b``; since ``s = 2b - 1``, ``q . s = 2 (q . b) - sum(q)``: for each query the same
        order, so the same documents, and scores that differ by that affine map.
        """
        q = _floats(queries, "queries").astype(np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {q.shape[1]} but the index holds {self.dim}-dim vectors")
        k, mult = _positive_int(k, "k"), _positive_int(rescore_multiplier, "rescore_multiplier")
        if k > len(self):
            raise ValueError(f"k={k} is larger than the number of indexed vectors ({len(self)})")
        n = min(k * mult, len(self)) if rescore else k
        distances, ids = self.index.search(quantize_binary(q), n)
        if not rescore:
            return distances, ids.astype(np.int64)
        signs = unpack_binary(self.codes[ids], self.dim)                       # [Q, n, d] of +-1
        scores = np.einsum("qd,qnd->qn", q.astype(np.float64), signs)            # sorted in float64
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return (np.take_along_axis(scores, order, 1).astype(np.float32),
                np.take_along_axis(ids, order, 1).astype(np.int64))

    def __repr__(self) -> str:
        return f"BinaryIndex(n={len(self)}, d={self.dim}, bytes={self.memory_bytes})"


def binary_search(queries, vectors, k: int = 10, rescore: bool = True, rescore_multiplier: int = 2
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One-off :meth:`BinaryIndex.search` over ``vectors``; build a :class:`BinaryIndex` once to search often."""
    return BinaryIndex(vectors).search(queries, k, rescore, rescore_multiplier)
