"""embedlessons.lexical: BM25 equals rank_bm25.BM25Okapi; tokenizer; word overlap; errors."""

import json
import warnings
import os
from pathlib import Path

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from embedlessons.lexical import BM25, bm25_run, tokenize, word_overlap, word_overlap_scores

# "the" is in 5 of 6 docs (negative idf -> epsilon floor); "cat" in exactly 3 of 6 (idf exactly 0);
# one empty document; repeated terms inside documents.
TOY = [
    "the cat sat on the mat",
    "the dog ate the cat food food food",
    "the bird sang",
    "",
    "a cat and the dog and the bird and the fish",
    "the the the quantum physics of spin",
]
TOY_QUERIES = ["the cat", "dog food food", "quantum spin the", "unknown words only", "", "cat cat bird mat"]


def test_tokenize():
    assert tokenize("Hello, World! It's 3.14 -- naïve_test") == ["hello", "world", "it", "s", "3", "14", "naïve_test"]
    assert tokenize("") == [] and tokenize("  ... ") == []
    assert tokenize("IL-6 and TNF-α") == ["il", "6", "and", "tnf", "α"]
    with pytest.raises(TypeError, match="expects a str"):
        tokenize(None)


@pytest.mark.parametrize("k1,b,epsilon", [(1.5, 0.75, 0.25), (0.9, 0.4, 0.5), (2.0, 1.0, 0.1)])
def test_toy_scores_equal_rank_bm25(k1, b, epsilon):
    corpus = [tokenize(t) for t in TOY]
    ours, ref = BM25(corpus, k1=k1, b=b, epsilon=epsilon), BM25Okapi(corpus, k1=k1, b=b, epsilon=epsilon)
    assert ours.avgdl == ref.avgdl and ours.average_idf == pytest.approx(ref.average_idf, rel=1e-15)
    for term, j in ours.vocab.items():
        assert ours.idf[j] == pytest.approx(ref.idf[term], rel=1e-15), term
    the, cat = ours.idf[ours.vocab["the"]], ours.idf[ours.vocab["cat"]]
    assert the == pytest.approx(epsilon * ref.average_idf) and the > 0  # the negative-idf path was taken
    assert cat == 0.0  # idf log(3.5) - log(3.5): not negative, so no floor
    for q in TOY_QUERIES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rank-bm25's 0/0, see below
            expected = ref.get_scores(tokenize(q))
        if b == 1.0 and q:  # rank-bm25 divides 0 by 0 for the empty doc 3 (NaN); ours scores it 0
            assert np.isnan(expected[3])
            expected[3] = 0.0
        np.testing.assert_allclose(ours.get_scores(tokenize(q)), expected, rtol=1e-12, atol=0)
    # a hand check: "quantum" appears once in doc 5 (7 tokens)
    n, df, dl = 6, 1, 7
    idf = np.log(n - df + 0.5) - np.log(df + 0.5)
    tf_part = 1 * (k1 + 1) / (1 + k1 * (1 - b + b * dl / ours.avgdl))
    assert ours.get_scores(["quantum"])[5] == pytest.approx(idf * tf_part, rel=1e-14)


def test_batch_equals_single_and_search():
    bm25 = BM25([tokenize(t) for t in TOY])
    queries = [tokenize(q) for q in TOY_QUERIES]
    batch = bm25.get_scores_batch(queries)
    assert batch.shape == (len(queries), len(TOY)) and batch.dtype == np.float64
    for i, q in enumerate(queries):
        np.testing.assert_allclose(batch[i], bm25.get_scores(q), rtol=1e-15, atol=0)
    assert np.all(batch[3] == 0) and np.all(batch[4] == 0)  # unknown or no tokens
    idx, scores = bm25.search(queries, top_k=3)
    assert idx.shape == scores.shape == (len(queries), 3)
    for i in range(len(queries)):
        expected = np.argsort(-batch[i], kind="stable")[:3]  # score desc, then smaller index
        np.testing.assert_array_equal(idx[i], expected)
        np.testing.assert_array_equal(scores[i], batch[i, expected])
    assert list(idx[3]) == [0, 1, 2]  # all-zero scores: ties go to the smaller index
    idx, _ = bm25.search(queries, top_k=100)
    assert idx.shape == (len(queries), len(TOY))


def test_search_tie_order():
    # five identical docs tie on the top score; argpartition returns them out of index order
    texts = ["y"] * 40
    for i in (31, 3, 17, 25, 9):
        texts[i] = "x"
    texts[0] = texts[38] = "x w w"
    bm25 = BM25([tokenize(t) for t in texts])
    idx, scores = bm25.search([["x"]], top_k=7)
    assert list(idx[0]) == [3, 9, 17, 25, 31, 0, 38]
    assert scores[0, 0] == scores[0, 4] > scores[0, 5] == scores[0, 6] > 0
    assert list(bm25.search([["x"]], top_k=4)[0][0]) == [3, 9, 17, 25]  # tie across the cutoff
    assert list(bm25.search([["x"]], top_k=9)[0][0]) == [3, 9, 17, 25, 31, 0, 38, 1, 2]


def test_bm25_run():
    doc_ids = [f"doc{i}" for i in range(len(TOY))]
    queries = {f"q{i}": q for i, q in enumerate(TOY_QUERIES)}
    run = bm25_run(TOY, doc_ids, queries, top_k=2)
    bm25 = BM25([tokenize(t) for t in TOY])
    assert set(run) == set(queries)
    for qid, text in queries.items():
        scores = bm25.get_scores(tokenize(text))
        assert len(run[qid]) == 2
        assert sorted(run[qid].values(), reverse=True) == pytest.approx(sorted(scores, reverse=True)[:2])
    assert set(run["q0"]) == {"doc0", "doc5"}  # "the cat": doc 5 wins on three "the"s in 7 tokens


def test_word_overlap():
    assert word_overlap("the cat sat", "the cat ran") == 0.5
    assert word_overlap("A cat.", "a CAT") == 1.0
    assert word_overlap("dog", "cat") == 0.0
    assert word_overlap("", "") == 0.0
    assert word_overlap("a a a b", "b") == 0.5  # sets, not counts
    np.testing.assert_array_equal(word_overlap_scores(["the cat sat", "dog"], ["the cat ran", "dog"]), [0.5, 1.0])
    with pytest.raises(ValueError, match="different lengths"):
        word_overlap_scores(["a"], ["a", "b"])
    with pytest.raises(TypeError, match="lists of texts"):
        word_overlap_scores("abc", "abd")


def test_errors():
    with pytest.raises(ValueError, match="empty"):
        BM25([])
    with pytest.raises(ValueError, match="every document .* is empty"):
        BM25([[], []])
    with pytest.raises(TypeError, match="list of token lists"):
        BM25("the cat sat")
    with pytest.raises(TypeError, match="document 0 must be a list of str tokens"):
        BM25(["the cat sat", "a dog"])  # texts, not token lists
    with pytest.raises(ValueError, match="k1"):
        BM25([["a"]], k1=-1)
    bm25 = BM25([["a", "b"], ["b"]])
    with pytest.raises(TypeError, match="query_tokens must be a list of str tokens"):
        bm25.get_scores("a b")
    with pytest.raises(TypeError, match="query 1"):
        bm25.get_scores_batch([["a"], "b"])
    with pytest.raises(ValueError, match="top_k"):
        bm25.search([["a"]], top_k=0)
    with pytest.raises(ValueError, match="doc_ids"):
        bm25_run(["a", "b"], ["d1"], {"q": "a"})


# ----------------------------------------------------------------------------- real data


def test_scifact_scores_equal_rank_bm25():
    root = os.environ.get("EMBEDLESSONS_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
    path = Path(root) / "scifact"
    if not (path / "corpus.jsonl").exists():
        pytest.skip(f"SciFact not found under {path} (set EMBEDLESSONS_DATA)")
    docs = [json.loads(line) for line in open(path / "corpus.jsonl", encoding="utf-8")]
    queries = [json.loads(line)["text"] for line in open(path / "queries.jsonl", encoding="utf-8")]
    corpus = [tokenize(d["title"] + " " + d["text"]) for d in docs]
    assert len(corpus) == 5183
    ours, ref = BM25(corpus), BM25Okapi(corpus)
    sample = [tokenize(queries[i]) for i in np.random.default_rng(0).choice(len(queries), 20, replace=False)]
    batch = ours.get_scores_batch(sample)
    assert np.count_nonzero(ours.idf == 0.25 * ours.average_idf) > 0  # negative-idf terms exist ("of", "the", ...)
    for i, q in enumerate(sample):
        expected = ref.get_scores(q)
        np.testing.assert_allclose(batch[i], expected, rtol=1e-8, atol=0)
        np.testing.assert_allclose(ours.get_scores(q), expected, rtol=1e-8, atol=0)
        top_ref = np.argsort(-expected, kind="stable")[:10]
        np.testing.assert_array_equal(ours.search([q], top_k=10)[0][0], top_ref)


def test_word_overlap_matrix_equals_pairwise():
    from embedlessons.lexical import word_overlap, word_overlap_matrix

    qs = ["a cat sat", "Dogs bark!", ""]
    ds = ["the cat sat down", "dogs and cats", "nothing here", ""]
    m = word_overlap_matrix(qs, ds)
    assert m.shape == (3, 4)
    np.testing.assert_allclose(m, [[word_overlap(q, d) for d in ds] for q in qs])


def test_bm25_pair_scores_is_symmetric_mean_of_directed_scores():
    from rank_bm25 import BM25Okapi

    from embedlessons.lexical import bm25_pair_scores

    a = ["a man plays a guitar", "a plane takes off", "a woman slices an onion"]
    b = ["a man is playing guitar", "the plane is landing", "a man plays a flute"]
    texts = sorted(set(a) | set(b))
    ref = BM25Okapi([tokenize(t) for t in texts])
    expected = [(ref.get_scores(tokenize(x))[texts.index(y)] + ref.get_scores(tokenize(y))[texts.index(x)]) / 2
                for x, y in zip(a, b)]
    np.testing.assert_allclose(bm25_pair_scores(a, b, batch_size=2), expected, rtol=1e-12)
    np.testing.assert_allclose(bm25_pair_scores(b, a), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="different lengths"):
        bm25_pair_scores(a, b[:2])
