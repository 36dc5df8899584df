"""FAISS index builders, search, recall and memory (embedlessons.indexing)."""
import numpy as np
import pytest

from embedlessons.indexing import (INDEX_KINDS, build_flat, build_hnsw, build_index, build_ivf, build_ivfpq,
                                   build_pq, describe_index, exact_search, faiss_threads, index_memory_bytes,
                                   recall_at_k, search, search_latency, set_search_params)

D = 32


def _clustered(n, seed, n_clusters=50, noise=0.35):
    """Unit vectors around 50 fixed random centres (the centres do not depend on ``seed``)."""
    centres = np.random.default_rng(0).normal(size=(n_clusters, D))
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, n_clusters, n)] + noise * rng.normal(size=(n, D))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    x, q = _clustered(5000, 1), _clustered(200, 2)
    with faiss_threads(1):  # fast and reproducible on a small shared machine
        yield x, q, exact_search(q, x, 10)[1]


def test_exact_search_matches_a_full_sort(data):
    x, q, _ = data
    scores, ids = exact_search(q, x, 10)
    full = q @ x.T
    assert (ids == np.argsort(-full, axis=1, kind="stable")[:, :10]).all()
    assert scores == pytest.approx(np.take_along_axis(full, ids, axis=1), abs=1e-6)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_flat_equals_exact_numpy_search(data):
    x, q, exact = data
    index = build_flat(x)
    scores, ids = search(index, q, 10)
    assert (ids == exact).all()
    assert scores == pytest.approx(np.take_along_axis(q @ x.T, ids, axis=1), abs=1e-5)
    assert recall_at_k(ids, exact) == 1.0
    assert index_memory_bytes(index) >= 5000 * D * 4


def test_ivf_recall_grows_with_nprobe(data):
    x, q, exact = data
    index = build_ivf(x, nlist=50, nprobe=1)
    recalls = []
    for nprobe in (1, 3, 50):
        set_search_params(index, nprobe=nprobe)
        recalls.append(recall_at_k(search(index, q, 10)[1], exact))
    # measured 0.94, 1.00, 1.00: probing a single cell misses neighbours across cell borders,
    # probing all cells is exact
    assert 0.85 < recalls[0] < 0.99
    assert recalls[1] >= 0.99 and recalls[2] == 1.0
    assert "nlist=50, nprobe=50" in describe_index(index)


def test_hnsw_recall_and_determinism(data):
    x, q, exact = data
    index = build_hnsw(x, M=16, ef_construction=40, ef_search=16)
    r16 = recall_at_k(search(index, q, 10)[1], exact)
    set_search_params(index, ef_search=128)
    r128 = recall_at_k(search(index, q, 10)[1], exact)
    assert r16 > 0.95 and r128 > 0.995 and r128 >= r16  # measured 0.987 and 1.000
    again = build_hnsw(x, M=16, ef_construction=40, ef_search=128)
    assert (search(again, q, 10)[1] == search(index, q, 10)[1]).all()
    # the graph costs memory on top of the vectors
    assert index_memory_bytes(index) > 1.5 * index_memory_bytes(build_flat(x))


def test_pq_trades_recall_for_memory(data):
    x, q, exact = data
    flat_bytes = index_memory_bytes(build_flat(x))
    pq = build_pq(x, m=16, nbits=6)
    ivfpq = build_ivfpq(x, nlist=50, m=16, nbits=6, nprobe=5)
    r_pq = recall_at_k(search(pq, q, 10)[1], exact)
    r_ivfpq = recall_at_k(search(ivfpq, q, 10)[1], exact)
    # 16 codes of 6 bits (12 bytes) per vector instead of 32 float32 (128 bytes): far smaller, less exact
    assert index_memory_bytes(pq) < 0.25 * flat_bytes
    assert 0.3 < r_pq < 0.5 and 0.5 < r_ivfpq < 0.75  # measured 0.394 and 0.611
    assert r_ivfpq > r_pq  # IVF-PQ encodes residuals within a cell, which are smaller: finer codes
    # more sub-quantisers, better recall
    assert recall_at_k(search(build_pq(x, m=32, nbits=6), q, 10)[1], exact) > r_pq


def test_build_index_by_name_and_latency(data):
    x, q, exact = data
    for kind, params in [("flat", {}), ("ivf", {"nlist": 20, "nprobe": 20}), ("hnsw", {"M": 8}),
                         ("pq", {"m": 8, "nbits": 4}), ("ivfpq", {"nlist": 20, "m": 8, "nbits": 4})]:
        index = build_index(kind, x[:1000], **params)
        assert index.ntotal == 1000
    assert set(INDEX_KINDS) == {"flat", "ivf", "hnsw", "pq", "ivfpq"}
    assert search_latency(build_flat(x), q[:20], k=10, repeats=1) > 0


def test_recall_at_k_definition():
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at_k(np.array([[3, 2, 1], [4, 9, -1]]), exact) == pytest.approx((3 + 1) / 6)
    assert recall_at_k(np.array([[1, 9, 9], [5, 4, 9]]), exact, k=2) == pytest.approx((1 + 2) / 4)
    with pytest.raises(ValueError, match="same number of rows"):
        recall_at_k(exact[:1], exact)
    with pytest.raises(ValueError, match="exceeds"):
        recall_at_k(exact, exact, k=4)


@pytest.mark.parametrize("call, match", [
    (lambda x: build_ivf(x, nlist=0), "nlist must be an integer >= 1"),
    (lambda x: build_ivf(x[:10], nlist=20), "at least as many training vectors"),
    (lambda x: build_ivf(x, nlist=10, nprobe=11), "cannot exceed nlist"),
    (lambda x: build_hnsw(x, M=1), "M must be >= 2"),
    (lambda x: build_hnsw(x, ef_search=0), "ef_search must be"),
    (lambda x: build_pq(x, m=5), "must divide the dimension"),
    (lambda x: build_pq(x[:100], m=8, nbits=8), "needs at least that many"),
    (lambda x: build_pq(x, m=8, nbits=20), "nbits must be <= 16"),
    (lambda x: build_ivfpq(x, nlist=10, m=7), "must divide"),
    (lambda x: build_flat(np.zeros((0, D))), "non-empty 2-D"),
    (lambda x: build_flat(np.full((3, D), np.nan)), "NaN"),
    (lambda x: build_index("lsh", x), "unknown index kind"),
    (lambda x: build_index("hnsw", x, nprobe=3), "has no parameter"),
    (lambda x: set_search_params(build_flat(x), nprobe=2), "IVF indexes"),
    (lambda x: set_search_params(build_flat(x), ef_search=2), "HNSW indexes"),
    (lambda x: search(build_flat(x), x[:2, :8], 5), "dimension 8"),
    (lambda x: search(build_flat(x[:5]), x[:2], 6), "larger than the number"),
    (lambda x: search(build_flat(x), x[:2], 0), "k must be"),
])
def test_bad_parameters_raise(call, match):
    x = _clustered(500, 3)
    with pytest.raises(ValueError, match=match):
        call(x)


def test_few_training_points_warn_once(capfd):
    x = _clustered(600, 4)
    with pytest.warns(UserWarning, match="600 training vectors for 256 centroids") as record:
        build_pq(x, m=8, nbits=8)
    assert len(record) == 1
    assert "WARNING clustering" not in capfd.readouterr().err  # FAISS's per-sub-quantiser copies are silenced
