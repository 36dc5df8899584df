"""int8 and binary quantisation: equal to sentence-transformers' quantize_embeddings number for number, binary
search equal to its semantic_search_faiss (documents; scores up to the documented affine map), memory sizes,
and the error messages for bad input."""
import numpy as np
import pytest

from embedlessons.indexing import exact_search
from embedlessons.quantization import (BinaryIndex, binary_search, dequantize_int8, int8_ranges, int8_search,
                                       memory_bytes, quantize_binary, quantize_int8, unpack_binary)

st_quant = pytest.importorskip("sentence_transformers.util.quantization")


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((300, 24)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[:15] + 0.3 * rng.standard_normal((15, 24)).astype(np.float32)
    return docs, queries / np.linalg.norm(queries, axis=1, keepdims=True)


def test_memory_bytes_of_each_representation():
    assert memory_bytes(1000, 384) == 1000 * 384 * 4
    assert memory_bytes(1000, 384, "float16") == 1000 * 384 * 2
    assert memory_bytes(1000, 384, "int8") == 1000 * 384
    assert memory_bytes(1000, 384, "binary") == 1000 * 48
    assert memory_bytes(10, 13, "binary") == 10 * 2                     # 13 bits take 2 bytes
    codes = quantize_binary(np.random.default_rng(1).standard_normal((10, 13)).astype(np.float32))
    assert codes.nbytes == memory_bytes(10, 13, "binary")
    with pytest.raises(ValueError, match=r"unknown precision 'int4'; choose one of"):
        memory_bytes(10, 8, "int4")
    with pytest.raises(ValueError, match=r"n_vectors must be an integer >= 1"):
        memory_bytes(0, 8)


# ------------------------------------------------------------------------------------------ int8
def test_int8_equals_st_with_ranges_calibration_and_self_ranges(corpus):
    docs, queries = corpus
    calibration = docs[:200]
    ranges = int8_ranges(calibration)
    np.testing.assert_array_equal(ranges, st_quant._get_quantization_ranges(docs, "int8", calibration))
    for ours, theirs in [
        (quantize_int8(docs, ranges=ranges), st_quant.quantize_embeddings(docs, "int8", ranges=ranges)),
        (quantize_int8(queries, calibration=calibration),
         st_quant.quantize_embeddings(queries, "int8", calibration_embeddings=calibration)),
        (quantize_int8(docs), st_quant.quantize_embeddings(docs, "int8")),
    ]:
        assert ours.dtype == theirs.dtype == np.int8
        np.testing.assert_array_equal(ours, theirs)
    # values outside the calibration range are clipped (the queries reach beyond the 200 docs' range)
    codes = quantize_int8(docs, ranges=ranges)
    assert codes.min() == -128 and codes.max() == 127


def test_int8_constant_dimension_and_clipping():
    x = np.array([[0.5, -1.0], [0.5, 0.0], [0.5, 1.0]], dtype=np.float32)
    codes = quantize_int8(x)
    np.testing.assert_array_equal(codes, st_quant.quantize_embeddings(x, "int8"))
    assert (codes[:, 0] == codes[0, 0]).all()                          # a constant dimension: one bucket
    # min -> the first bucket; max -> the last one, or the one below where (max - min) / step rounds under 255
    assert codes[0, 1] == -128 and codes[1, 1] == -1 and codes[2, 1] in (126, 127)
    outside = quantize_int8(np.array([[0.5, -5.0], [0.5, 5.0]], dtype=np.float32), ranges=int8_ranges(x))
    np.testing.assert_array_equal(outside[:, 1], [-128, 127])


def test_dequantize_is_within_one_bucket_and_int8_search_matches_exact_on_it(corpus):
    docs, queries = corpus
    ranges = int8_ranges(docs)
    deq = dequantize_int8(quantize_int8(docs, ranges), ranges)
    step = (ranges[1] - ranges[0]) / 255
    assert ((docs - deq) >= -1e-6).all() and ((docs - deq) <= step + 1e-6).all()
    scores, ids = int8_search(queries, quantize_int8(docs, ranges), ranges, k=10)
    ref_scores, ref_ids = exact_search(queries, deq, k=10)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-6)
    np.testing.assert_allclose(deq, st_quant._dequantize_embeddings(quantize_int8(docs, ranges), "int8", ranges),
                               atol=1e-6)
    # and the int8 ranking is close to the float one
    _, float_ids = exact_search(queries, docs, k=10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, float_ids)]) >= 0.9


# ------------------------------------------------------------------------------------------ binary
@pytest.mark.parametrize("d", [24, 13])
def test_binary_codes_equal_st_ubinary_and_unpack_to_signs(d):
    x = np.random.default_rng(d).standard_normal((20, d)).astype(np.float32)
    codes = quantize_binary(x)
    np.testing.assert_array_equal(codes, st_quant.quantize_embeddings(x, "ubinary"))
    assert codes.shape == (20, (d + 7) // 8) and codes.dtype == np.uint8
    np.testing.assert_array_equal(unpack_binary(codes, d), np.where(x > 0, 1.0, -1.0))


def test_hamming_search_without_rescoring_equals_popcount_and_st(corpus):
    docs, queries = corpus
    dist, ids = binary_search(queries, docs, k=5, rescore=False)
    signs_q, signs_d = np.where(queries > 0, 1, -1), np.where(docs > 0, 1, -1)
    hamming = (signs_q[:, None, :] != signs_d[None, :, :]).sum(-1)          # [Q, N] by counting
    np.testing.assert_array_equal(dist, np.take_along_axis(hamming, ids, 1))
    np.testing.assert_array_equal(dist[:, 0], hamming.min(1))
    results, _ = st_quant.semantic_search_faiss(queries, corpus_embeddings=quantize_binary(docs),
                                                corpus_precision="ubinary", top_k=5, rescore=False)
    np.testing.assert_array_equal(ids, [[r["corpus_id"] for r in row] for row in results])
    np.testing.assert_array_equal(dist, [[r["score"] for r in row] for row in results])


@pytest.mark.parametrize("multiplier", [1, 4])
def test_rescored_search_returns_st_documents_with_plus_minus_one_scores(corpus, multiplier):
    docs, queries = corpus
    index = BinaryIndex(docs)
    scores, ids = index.search(queries, k=10, rescore=True, rescore_multiplier=multiplier)
    results, _ = st_quant.semantic_search_faiss(queries, corpus_embeddings=index.codes, corpus_precision="ubinary",
                                                top_k=10, rescore=True, rescore_multiplier=multiplier)
    st_ids = np.array([[r["corpus_id"] for r in row] for row in results])
    st_scores = np.array([[r["score"] for r in row] for row in results])
    np.testing.assert_array_equal(ids, st_ids)
    # ST scores q . b with 0/1 bits; ours q . s with s = 2b - 1
    np.testing.assert_allclose(scores, 2 * st_scores - queries.sum(1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, np.where(docs[ids] > 0, 1.0, -1.0)),
                               atol=1e-5)


def test_rescoring_recovers_recall_lost_to_hamming_distance(corpus):
    docs, queries = corpus
    _, exact_ids = exact_search(queries, docs, k=10)
    recall = lambda ids: np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact_ids)])
    index = BinaryIndex(docs)
    plain = recall(index.search(queries, 10, rescore=False)[1])
    rescored = recall(index.search(queries, 10, rescore=True, rescore_multiplier=4)[1])
    assert rescored > plain
    assert index.memory_bytes == memory_bytes(len(docs), docs.shape[1], "binary")
    assert index.memory_bytes * 32 == memory_bytes(len(docs), docs.shape[1], "float32")


@pytest.mark.parametrize("call, message", [
    (lambda d: quantize_int8(quantize_int8(d)), r"embeddings must be float embeddings, got dtype int8"),
    (lambda d: quantize_int8(d, ranges=np.zeros((2, 5))), r"ranges must have shape \(2, 24\)"),
    (lambda d: quantize_int8(d, ranges=np.stack([np.ones(24), np.zeros(24)])), r"max >= min"),
    (lambda d: int8_ranges(d[:1]), r"at least 2 calibration embeddings"),
    (lambda d: quantize_int8(np.full((2, 3), np.nan, dtype=np.float32)), r"contain NaN or infinite values"),
    (lambda d: dequantize_int8(d, int8_ranges(d)), r"codes must be a 2-D int8 array"),
    (lambda d: quantize_binary(d[0]), r"must be a non-empty 2-D array"),
    (lambda d: unpack_binary(quantize_binary(d), 30), r"codes of 3 bytes hold 17..24 dims, not 30"),
    (lambda d: unpack_binary(d, 24), r"codes must be a uint8 array"),
    (lambda d: BinaryIndex(d).search(d[:2, :16], k=3), r"queries have dimension 16 but the index holds 24"),
    (lambda d: BinaryIndex(d[:5]).search(d[:2], k=6), r"k=6 is larger than the number of indexed vectors \(5\)"),
    (lambda d: BinaryIndex(d).search(d[:2], k=3, rescore_multiplier=0), r"rescore_multiplier must be an integer"),
])
def test_bad_input_messages(corpus, call, message):
    with pytest.raises(ValueError, match=message):
        call(corpus[0])
