"""FAISS indexes for dense retrieval: exact (Flat), inverted lists (IVF), graphs (HNSW), product quantisation.

Every index here scores by inner product, which equals cosine similarity for L2-normalised vectors
(what :meth:`BiEncoder.encode` returns). The families trade recall for speed and memory
(Johnson, Douze & Jégou 2019, "Billion-scale similarity search with GPUs"):

- **Flat** (``IndexFlatIP``): exact search, N x d float32 in memory, cost O(N d) per query.
- **IVF** (``IndexIVFFlat``): k-means splits the vectors into ``nlist`` cells; a query scans only
  the ``nprobe`` nearest cells. More ``nprobe`` = higher recall, slower.
- **HNSW** (``IndexHNSWFlat``): a navigable small-world graph with ``M`` links per node (Malkov &
  Yashunin 2018); ``ef_construction`` sets build quality, ``ef_search`` the search beam width.
  Fast and accurate, but the graph costs memory on top of the raw vectors.
- **PQ** (``IndexPQ``): each vector is cut into ``m`` sub-vectors, each replaced by the id of one of
  2^``nbits`` centroids (Jégou, Douze & Schmid 2011): m * nbits / 8 bytes per vector instead of 4 d.
  Scores are approximate, so recall drops.
- **IVF-PQ** (``IndexIVFPQ``): IVF's cell pruning plus PQ codes (the usual billion-scale setting).

:func:`search` returns ``(scores, ids)``; :func:`exact_search` is the NumPy reference;
:func:`recall_at_k` compares an approximate result with the exact one; :func:`index_memory_bytes`
is the size of the serialised index (what it takes on disk and, roughly, in memory).
"""
from __future__ import annotations

import contextlib
import time
import warnings
from typing import Iterator

import numpy as np

__all__ = ["INDEX_KINDS", "build_flat", "build_ivf", "build_hnsw", "build_pq", "build_ivfpq", "build_index",
           "set_search_params", "search", "exact_search", "recall_at_k", "index_memory_bytes",
           "search_latency", "describe_index", "faiss_threads"]

INDEX_KINDS = ("flat", "ivf", "hnsw", "pq", "ivfpq")


def _faiss():
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise ImportError("embedlessons.indexing needs faiss: pip install faiss-cpu") from err
    return faiss


def _vectors(x, name: str = "vectors") -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array [n, d], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return x


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


@contextlib.contextmanager
def faiss_threads(n: int | None) -> Iterator[None]:
    """Run FAISS with ``n`` OpenMP threads inside the block (None: leave as is).

    On a small, busy machine (2 shared cores) one thread is often several times *faster* than FAISS's
    default, because OpenMP threads wait for each other; ``with faiss_threads(1): ...``."""
    faiss = _faiss()
    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _training_sample(x: np.ndarray, max_train: int | None, seed: int) -> np.ndarray:
    if max_train is None or len(x) <= max_train:
        return x
    idx = np.sort(np.random.default_rng(seed).choice(len(x), max_train, replace=False))
    return x[idx]


def _few_points(cp, n_train: int, k: int, what: str) -> None:
    """FAISS prints one C-level warning per k-means run (one per PQ sub-quantiser) when there are fewer
    than 39 training points per centroid. Say it once, as a Python warning, and silence FAISS's copies."""
    if n_train < 39 * k:
        warnings.warn(f"{what}: {n_train} training vectors for {k} centroids (FAISS suggests at least "
                      f"{39 * k}); the centroids are less well placed", UserWarning, stacklevel=3)
    cp.min_points_per_centroid = 1  # only used for FAISS's own warning


def build_flat(vectors) -> "faiss.IndexFlatIP":
    """Exact inner-product index over ``vectors`` [N, d] (float32)."""
    faiss = _faiss()
    x = _vectors(vectors)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return index


def build_ivf(vectors, nlist: int = 100, nprobe: int = 1, seed: int = 0,
              max_train: int | None = None) -> "faiss.IndexIVFFlat":
    """IVF index: k-means with ``nlist`` cells (trained on ``vectors``, or ``max_train`` of them),
    a query visits the ``nprobe`` closest cells. Needs N >= nlist; FAISS wants ~39 * nlist points
    to train well. ``nprobe = nlist`` makes it exact."""
    faiss = _faiss()
    x = _vectors(vectors)
    nlist, nprobe = _positive_int(nlist, "nlist"), _positive_int(nprobe, "nprobe")
    if nlist > len(x):
        raise ValueError(f"nlist={nlist} cells need at least as many training vectors, got {len(x)}")
    if nprobe > nlist:
        raise ValueError(f"nprobe ({nprobe}) cannot exceed nlist ({nlist})")
    quantizer = faiss.IndexFlatIP(x.shape[1])
    index = faiss.IndexIVFFlat(quantizer, x.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    train = _training_sample(x, max_train, seed)
    _few_points(index.cp, len(train), nlist, "IVF")
    index.train(train)
    index.add(x)
    index.nprobe = nprobe
    return index


def build_hnsw(vectors, M: int = 32, ef_construction: int = 40, ef_search: int = 16,
               deterministic: bool = True) -> "faiss.IndexHNSWFlat":
    """HNSW graph index: ``M`` neighbours per node (memory ~ N * M * 2 * 4 bytes of links on top of the
    vectors), ``ef_construction`` candidates while building, ``ef_search`` while searching (>= k).

    ``deterministic=True`` inserts with one thread: a parallel build gives a slightly different graph
    on each run (and so slightly different recall), which printed results must not depend on."""
    faiss = _faiss()
    x = _vectors(vectors)
    M = _positive_int(M, "M")
    if M < 2:
        raise ValueError(f"M must be >= 2 (links per node), got {M}")
    ef_construction, ef_search = _positive_int(ef_construction, "ef_construction"), _positive_int(ef_search, "ef_search")
    index = faiss.IndexHNSWFlat(x.shape[1], M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.hnsw.efSearch = ef_search
    with faiss_threads(1 if deterministic else None):
        index.add(x)
    return index


def _check_pq(d: int, m: int, nbits: int, n_train: int) -> None:
    m, nbits = _positive_int(m, "m"), _positive_int(nbits, "nbits")
    if d % m:
        raise ValueError(f"m (sub-quantisers) must divide the dimension d={d}, got m={m}")
    if nbits > 16:
        raise ValueError(f"nbits must be <= 16 (2^nbits centroids per sub-quantiser), got {nbits}")
    if n_train < 2 ** nbits:
        raise ValueError(f"PQ with nbits={nbits} trains {2 ** nbits} centroids per sub-quantiser and needs at "
                         f"least that many training vectors, got {n_train}")


def build_pq(vectors, m: int = 48, nbits: int = 8, seed: int = 0, max_train: int | None = None) -> "faiss.IndexPQ":
    """Product-quantised index (no pruning: every code is scanned): ``m`` sub-vectors of d/m dims,
    each stored as an ``nbits``-bit centroid id, so m * nbits / 8 bytes per vector."""
    faiss = _faiss()
    x = _vectors(vectors)
    train = _training_sample(x, max_train, seed)
    _check_pq(x.shape[1], m, nbits, len(train))
    index = faiss.IndexPQ(x.shape[1], m, nbits, faiss.METRIC_INNER_PRODUCT)
    index.pq.cp.seed = seed
    _few_points(index.pq.cp, len(train), 2 ** nbits, "PQ")
    index.train(train)
    index.add(x)
    return index


def build_ivfpq(vectors, nlist: int = 100, m: int = 48, nbits: int = 8, nprobe: int = 1, seed: int = 0,
                max_train: int | None = None) -> "faiss.IndexIVFPQ":
    """IVF cells + PQ codes of the residuals (vector minus its cell centroid)."""
    faiss = _faiss()
    x = _vectors(vectors)
    nlist, nprobe = _positive_int(nlist, "nlist"), _positive_int(nprobe, "nprobe")
    train = _training_sample(x, max_train, seed)
    if nlist > len(train):
        raise ValueError(f"nlist={nlist} cells need at least as many training vectors, got {len(train)}")
    if nprobe > nlist:
        raise ValueError(f"nprobe ({nprobe}) cannot exceed nlist ({nlist})")
    _check_pq(x.shape[1], m, nbits, len(train))
    quantizer = faiss.IndexFlatIP(x.shape[1])
    index = faiss.IndexIVFPQ(quantizer, x.shape[1], nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.pq.cp.seed = seed
    _few_points(index.cp, len(train), nlist, "IVF-PQ coarse quantiser")
    _few_points(index.pq.cp, len(train), 2 ** nbits, "IVF-PQ codes")
    index.train(train)
    index.add(x)
    index.nprobe = nprobe
    return index


_BUILDERS = {"flat": build_flat, "ivf": build_ivf, "hnsw": build_hnsw, "pq": build_pq, "ivfpq": build_ivfpq}


def build_index(kind: str, vectors, **params):
    """Build an index by name (``"flat"``, ``"ivf"``, ``"hnsw"``, ``"pq"``, ``"ivfpq"``) with its
    builder's parameters, e.g. ``build_index("hnsw", x, M=32, ef_search=64)``."""
    if kind not in _BUILDERS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {INDEX_KINDS}")
    import inspect

    allowed = set(inspect.signature(_BUILDERS[kind]).parameters) - {"vectors"}
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"{kind} index has no parameter(s) {sorted(unknown)}; it takes {sorted(allowed)}")
    return _BUILDERS[kind](vectors, **params)


def set_search_params(index, nprobe: int | None = None, ef_search: int | None = None):
    """Change the search-time knobs of a built index (``nprobe`` for IVF kinds, ``ef_search`` for HNSW)."""
    faiss = _faiss()
    if nprobe is not None:
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is None:
            raise ValueError(f"nprobe applies to IVF indexes, not {type(index).__name__}")
        nprobe = _positive_int(nprobe, "nprobe")
        if nprobe > ivf.nlist:
            raise ValueError(f"nprobe ({nprobe}) cannot exceed nlist ({ivf.nlist})")
        ivf.nprobe = nprobe
    if ef_search is not None:
        if not hasattr(index, "hnsw"):
            raise ValueError(f"ef_search applies to HNSW indexes, not {type(index).__name__}")
        index.hnsw.efSearch = _positive_int(ef_search, "ef_search")
    return index


def search(index, queries, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` by inner product: ``(scores float32 [Q, k], ids int64 [Q, k])``, best first.

    An approximate index may find fewer than ``k`` vectors for a query; the missing slots have id -1
    (and score -inf for IP indexes, as FAISS returns them)."""
    q = _vectors(queries, "queries")
    k = _positive_int(k, "k")
    if q.shape[1] != index.d:
        raise ValueError(f"queries have dimension {q.shape[1]} but the index holds vectors of dimension {index.d}")
    if index.ntotal == 0:
        raise ValueError("the index is empty")
    if k > index.ntotal:
        raise ValueError(f"k={k} is larger than the number of indexed vectors ({index.ntotal})")
    return index.search(q, k)


def exact_search(queries, vectors, k: int = 10, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference: ``(scores float32 [Q, k], ids int64 [Q, k])`` by inner product, ties to the
    smaller id."""
    q, x = _vectors(queries, "queries"), _vectors(vectors)
    k = _positive_int(k, "k")
    if q.shape[1] != x.shape[1]:
        raise ValueError(f"queries have dimension {q.shape[1]}, vectors {x.shape[1]}")
    if k > len(x):
        raise ValueError(f"k={k} is larger than the number of vectors ({len(x)})")
    ids = np.empty((len(q), k), dtype=np.int64)
    scores = np.empty((len(q), k), dtype=np.float32)
    for s in range(0, len(q), batch_size):
        sims = q[s:s + batch_size] @ x.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(sims, top, axis=1)
        order = np.lexsort((top, -vals), axis=1)
        ids[s:s + len(sims)] = np.take_along_axis(top, order, axis=1)
        scores[s:s + len(sims)] = np.take_along_axis(vals, order, axis=1)
    return scores, ids


def recall_at_k(approx_ids, exact_ids, k: int | None = None, *, per_query: bool = False) -> float | np.ndarray:
    """Mean over queries of |approx top-k ∩ exact top-k| / k (the usual ANN "k-recall@k").

    Both are int arrays [Q, >= k] of ids; -1 (not found) never matches. ``k`` defaults to the
    width of ``exact_ids``. ``per_query=True`` returns the [Q] array of each query's recall instead."""
    a, e = np.asarray(approx_ids), np.asarray(exact_ids)
    if a.ndim != 2 or e.ndim != 2 or a.shape[0] != e.shape[0]:
        raise ValueError(f"approx_ids and exact_ids must be 2-D with the same number of rows, got {a.shape} "
                         f"and {e.shape}")
    if a.shape[0] == 0:
        raise ValueError("no queries")
    k = e.shape[1] if k is None else _positive_int(k, "k")
    if k > a.shape[1] or k > e.shape[1]:
        raise ValueError(f"k={k} exceeds the result width ({a.shape[1]} approximate, {e.shape[1]} exact)")
    hits = np.array([len(set(row_a[row_a >= 0].tolist()) & set(row_e.tolist()))
                     for row_a, row_e in zip(a[:, :k], e[:, :k])])
    return hits / k if per_query else float(hits.sum() / (k * a.shape[0]))


def index_memory_bytes(index) -> int:
    """Size in bytes of ``faiss.serialize_index(index)``: vectors or codes, graph links, centroids."""
    return int(_faiss().serialize_index(index).size)


def search_latency(index, queries, k: int = 10, repeats: int = 3, threads: int | None = 1) -> float:
    """Median (over ``repeats``) seconds per query when queries arrive one at a time, with ``threads``
    FAISS threads (1 = the cost of one query on one core; None = FAISS's default)."""
    q = _vectors(queries, "queries")
    times = []
    with faiss_threads(threads):
        search(index, q[:1], k)  # warm-up
        for _ in range(_positive_int(repeats, "repeats")):
            start = time.perf_counter()
            for i in range(len(q)):
                index.search(q[i:i + 1], k)
            times.append((time.perf_counter() - start) / len(q))
    return float(np.median(times))


def describe_index(index) -> str:
    """A one-line description with the parameters that matter."""
    faiss = _faiss()
    name = type(index).__name__
    ivf = faiss.try_extract_index_ivf(index)
    parts = [f"n={index.ntotal}", f"d={index.d}"]
    if ivf is not None:
        parts += [f"nlist={ivf.nlist}", f"nprobe={ivf.nprobe}"]
    if hasattr(index, "hnsw"):
        parts += [f"M={index.hnsw.nb_neighbors(1)}", f"efConstruction={index.hnsw.efConstruction}",
                  f"efSearch={index.hnsw.efSearch}"]
    pq = getattr(index, "pq", None)
    if pq is not None:
        parts += [f"m={pq.M}", f"nbits={pq.nbits}"]
    return f"{name}({', '.join(parts)})"
