"""Hard-negative miners, false-negative filters and the mixed sampler (embedlessons.negatives)."""
import math

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from embedlessons.lexical import tokenize
from embedlessons.negatives import (AbsoluteMargin, Candidate, MaxScore, MinedNegatives, MixedSampler,
                                    RankWindow, RelativeMargin, TeacherFilter, apply_filters, linear_ramp,
                                    mine_bm25, mine_dense, mine_from_scores, normalize_positives,
                                    random_negatives)

DOCS = {
    "d0": "the cat sat on the mat",
    "d1": "a cat and a dog played in the garden",
    "d2": "dogs chase cats in the garden every day",
    "d3": "the stock market fell sharply on monday",
    "d4": "investors sold shares as the market fell",
    "d5": "a recipe for bread with flour water and salt",
    "d6": "the cat chased the dog around the mat",
    "d7": "bread and butter for breakfast",
    "d8": "the garden has roses and a small pond",
    "d9": "market prices of bread rose this week",
}
DOC_IDS = list(DOCS)
DOC_TEXTS = list(DOCS.values())
QUERIES = {"q_cat": "cat on the mat", "q_market": "market fell", "q_bread": "bread recipe"}
# different numbers of positives per query: 1, 2 and 3 (and qrels-style grades, one of them 0)
QRELS = {"q_cat": {"d0": 1}, "q_market": {"d3": 1, "d4": 2}, "q_bread": {"d5": 1, "d7": 1, "d9": 1, "d8": 0}}
POS = {"q_cat": ["d0"], "q_market": ["d3", "d4"], "q_bread": ["d5", "d7", "d9"]}


def _rank_bm25_scores(query):
    return BM25Okapi([tokenize(t) for t in DOC_TEXTS]).get_scores(tokenize(query))


# ----------------------------------------------------------------------------- miners

def test_normalize_positives_accepts_qrels_and_lists():
    assert normalize_positives(QRELS) == POS  # grade 0 is not a positive
    assert normalize_positives({"q": {"a", "a"}}) == {"q": ["a"]}
    assert normalize_positives(POS, ["q_cat", "other"]) == {"q_cat": ["d0"], "other": []}
    with pytest.raises(ValueError, match="no query has a positive"):
        normalize_positives(POS, ["x", "y"])
    with pytest.raises(TypeError, match="is a str"):
        normalize_positives({"q": "d0"})


def test_bm25_miner_equals_rank_bm25_and_excludes_every_positive():
    mined = mine_bm25(QUERIES, DOC_IDS, DOC_TEXTS, QRELS, depth=5)
    assert mined.method == "bm25" and len(mined) == 3 and mined.n_candidates() == 15
    for q, text in QUERIES.items():
        ref = _rank_bm25_scores(text)
        cands = mined.candidates[q]
        assert [c.rank for c in cands] == [1, 2, 3, 4, 5]
        assert not {c.doc_id for c in cands} & set(POS[q])
        # scores equal rank-bm25's, sorted descending, and they are the best non-positives
        for c in cands:
            assert c.score == pytest.approx(ref[DOC_IDS.index(c.doc_id)], abs=1e-12)
        non_pos = sorted((ref[i] for i, d in enumerate(DOC_IDS) if d not in POS[q]), reverse=True)
        assert [c.score for c in cands] == pytest.approx(non_pos[:5], abs=1e-12)
        assert mined.positive_scores[q] == pytest.approx({d: ref[DOC_IDS.index(d)] for d in POS[q]})
    # the cat query's positive d0 would be first; d6 ("the cat ... the mat") is the hardest negative
    assert mined.candidates["q_cat"][0].doc_id == "d6"


def test_queries_with_different_numbers_of_positives():
    """Queries with 1, 2 and 3 positives: each gets `depth` negatives, none a positive, and the margin
    reference is that query's own weakest positive.

    sentence-transformers' mine_hard_negatives has needed fixes here: before PR #2848
    (huggingface/sentence-transformers) a query had exactly one positive, its own row, and the review of
    PR #2818 found that masking positives by text position missed repeated texts, so a positive could come
    back as a negative; PR #3504 later fixed its count of queries lacking negatives (reported num_negatives
    times too many). Here each query's positives are its own list of doc ids, and counts are per query."""
    scores = np.array([[9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
                       [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
                       [5, 5, 5, 5, 5, 5, 5, 5, 5, 5]], dtype=float)
    pos = {"a": ["d1"], "b": ["d9", "d7"], "c": ["d0", "d4", "d8"]}
    mined = mine_from_scores(scores, ["a", "b", "c"], DOC_IDS, pos, depth=6)
    assert mined.negatives() == {
        "a": ["d0", "d2", "d3", "d4", "d5", "d6"],
        "b": ["d8", "d6", "d5", "d4", "d3", "d2"],
        "c": ["d1", "d2", "d3", "d5", "d6", "d7"],   # all tied: corpus order, positives skipped
    }
    assert [mined.reference_score(q) for q in "abc"] == [8.0, 7.0, 5.0]
    # the margin is measured against each query's own weakest positive
    kept, report = apply_filters(mined, [AbsoluteMargin(1.5)])
    assert kept.negatives() == {"a": ["d3", "d4", "d5", "d6"], "b": ["d5", "d4", "d3", "d2"], "c": []}
    assert report.removed == {"absolute margin 1.5": 2 + 2 + 6} and report.queries_emptied == 1
    # depth so large that the 3-positive query cannot be served: a clear error naming it
    with pytest.raises(ValueError, match="query 'c' has 3 positive"):
        mine_from_scores(scores, ["a", "b", "c"], DOC_IDS, pos, depth=8)
    assert mine_from_scores(scores, ["a", "b", "c"], DOC_IDS, pos, depth=7).n_candidates() == 21


def test_dense_miner_exact_and_faiss_agree():
    import faiss

    rng = np.random.default_rng(0)
    docs = rng.normal(size=(10, 16)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[[0, 3, 5]] + 0.3 * rng.normal(size=(3, 16)).astype(np.float32)
    qids = list(QUERIES)
    exact = mine_dense(qids, DOC_IDS, POS, depth=4, query_vectors=queries, doc_vectors=docs)
    brute = queries @ docs.T
    for i, q in enumerate(qids):
        order = [j for j in np.argsort(-brute[i]) if DOC_IDS[j] not in POS[q]][:4]
        assert [c.doc_id for c in exact.candidates[q]] == [DOC_IDS[j] for j in order]
        assert [c.score for c in exact.candidates[q]] == pytest.approx(brute[i, order], abs=1e-5)
        assert exact.positive_scores[q] == pytest.approx({d: brute[i, DOC_IDS.index(d)] for d in POS[q]}, abs=1e-5)
    index = faiss.IndexFlatIP(16)
    index.add(docs)
    via_faiss = mine_dense(qids, DOC_IDS, POS, depth=4, query_vectors=queries, doc_vectors=docs, index=index)
    assert via_faiss.negatives() == exact.negatives()
    small = faiss.IndexFlatIP(16)
    small.add(docs[:5])
    with pytest.raises(ValueError, match="index holds 5"):
        mine_dense(qids, DOC_IDS, POS, depth=4, query_vectors=queries, doc_vectors=docs, index=small)
    with pytest.raises(ValueError, match="share d"):
        mine_dense(qids, DOC_IDS, POS, query_vectors=queries[:, :8], doc_vectors=docs, depth=2)
    with pytest.raises(ValueError, match="needs a model"):
        mine_dense(qids, DOC_IDS, POS, depth=2)


def test_dense_miner_with_a_model():
    from embedlessons.models import small_bert

    model = small_bert(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, seed=0)
    mined = mine_dense(QUERIES, DOC_IDS, QRELS, depth=3, model=model, doc_texts=DOC_TEXTS)
    qv = model.encode(list(QUERIES.values()), max_length=64, progress=False)
    dv = model.encode(DOC_TEXTS, max_length=128, progress=False)
    again = mine_dense(QUERIES, DOC_IDS, QRELS, depth=3, query_vectors=qv, doc_vectors=dv)
    assert mined.negatives() == again.negatives()


def test_random_negatives_deterministic_and_valid():
    a = random_negatives(QUERIES, DOC_IDS, QRELS, n=5, seed=1)
    b = random_negatives(list(reversed(list(QUERIES))), DOC_IDS, QRELS, n=5, seed=1)
    assert a.negatives() == {q: b.negatives()[q] for q in QUERIES}  # independent of query order
    assert a.negatives() != random_negatives(QUERIES, DOC_IDS, QRELS, n=5, seed=2).negatives()
    for q, negs in a.negatives().items():
        assert len(set(negs)) == 5 and not set(negs) & set(POS[q])
    assert all(math.isnan(c.score) for c in a.candidates["q_cat"])
    # the 3-positive query can get at most 7 negatives from 10 docs
    assert len(random_negatives(QUERIES, DOC_IDS, QRELS, n=7).candidates["q_bread"]) == 7
    with pytest.raises(ValueError, match="at most 7 negatives"):
        random_negatives(QUERIES, DOC_IDS, QRELS, n=8)
    with pytest.raises(ValueError, match="needs scores"):
        apply_filters(a, [MaxScore(1.0)])


@pytest.mark.parametrize("call, match", [
    (lambda: mine_bm25(QUERIES, [], [], QRELS), "corpus is empty"),
    (lambda: mine_dense(QUERIES, [], QRELS, query_vectors=np.zeros((3, 2)), doc_vectors=np.zeros((0, 2))),
     "corpus is empty"),
    (lambda: random_negatives(QUERIES, [], QRELS, n=1), "corpus is empty"),
    (lambda: mine_bm25(QUERIES, DOC_IDS, DOC_TEXTS, {"q_cat": ["d0", "nope"]}), "not in the corpus"),
    (lambda: mine_bm25(QUERIES, DOC_IDS + ["d0"], DOC_TEXTS + ["x"], QRELS), "duplicates"),
    (lambda: mine_bm25(QUERIES, DOC_IDS, DOC_TEXTS[:3], QRELS), "3 doc_texts but 10"),
    (lambda: mine_bm25(QUERIES, DOC_IDS, DOC_TEXTS, QRELS, depth=0), "depth must be an integer >= 1"),
    (lambda: mine_bm25(QUERIES, DOC_IDS, DOC_TEXTS, QRELS, depth=20), "at most 7 negatives"),
    (lambda: mine_bm25(QUERIES, DOC_IDS, DOC_TEXTS, {"1": ["d0"]}), "ids of `positives` match"),
])
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- filters

def _toy(scores, pos_scores, qid="q"):
    cands = [Candidate(f"n{i}", float(s), i + 1) for i, s in enumerate(scores)]
    return MinedNegatives("toy", {qid: cands}, {qid: pos_scores}, len(cands))


def test_each_filter_alone():
    mined = _toy([0.95, 0.85, 0.80, 0.76, 0.70, 0.50], {"p1": 0.90, "p2": 0.80})  # ref = min = 0.80

    def kept(f):
        return apply_filters(mined, [f])[0].negatives()["q"]

    assert kept(RankWindow(skip_top=2)) == ["n2", "n3", "n4", "n5"]
    assert kept(RankWindow(skip_top=1, max_rank=3)) == ["n1", "n2"]
    assert kept(AbsoluteMargin(0.0)) == ["n3", "n4", "n5"]  # strictly below the weakest positive
    assert kept(AbsoluteMargin(0.05)) == ["n4", "n5"]       # < 0.75
    assert kept(RelativeMargin(0.05)) == ["n4", "n5"]       # < 0.80 * 0.95 = 0.76 (0.76 itself removed)
    assert kept(RelativeMargin(0.15)) == ["n5"]             # < 0.68
    assert kept(MaxScore(0.8)) == ["n2", "n3", "n4", "n5"]  # <= 0.8


def test_relative_margin_with_a_negative_positive_score():
    """With a negative positive score, `ref * (1 - margin)` lies *above* the positive and would keep
    negatives that score higher than it (sentence-transformers issue #3819). Using |ref| keeps the
    threshold below the positive."""
    mined = _toy([-0.49, -0.52, -0.60], {"p": -0.50})
    kept, report = apply_filters(mined, [RelativeMargin(0.05)])
    assert kept.negatives()["q"] == ["n2"]  # < -0.50 - 0.025 = -0.525
    assert report.removed["relative margin 0.05"] == 2


def test_filters_compose_and_report_counts():
    mined = _toy([0.95, 0.85, 0.80, 0.76, 0.70, 0.50, 0.40], {"p": 0.90})
    calls = []

    def teacher(query, docs):
        calls.append(list(docs))
        return [{"text n4": 0.99}.get(d, 0.1) for d in docs]

    f_teacher = TeacherFilter(teacher, queries={"q": "query"}, corpus={f"n{i}": f"text n{i}" for i in range(7)},
                              threshold=0.5)
    kept, report = apply_filters(mined, [RankWindow(skip_top=1), MaxScore(0.9), RelativeMargin(0.1), f_teacher])
    # rank window drops n0; max score none left above 0.9; relative margin (< 0.81) drops n1; teacher n4
    assert kept.negatives()["q"] == ["n2", "n3", "n5", "n6"]
    assert report.removed == {"rank window (skip top 1)": 1, "max score 0.9": 0, "relative margin 0.1": 1,
                              "teacher (score >= 0.5)": 1}
    assert report.removed_ids["teacher (score >= 0.5)"] == {"q": ["n4"]}
    assert (report.before, report.after) == (7, 4)
    assert [r["left"] for r in report.rows()] == [6, 6, 5, 4]
    assert calls == [["text n2", "text n3", "text n4", "text n5", "text n6"]]  # teacher sees survivors only
    assert "4 kept" in str(report)
    # ranks are kept from the original mining
    assert [c.rank for c in kept.candidates["q"]] == [3, 4, 6, 7]


def test_teacher_margin_against_the_positive():
    mined = _toy([0.9, 0.8, 0.7], {"p": 0.95})
    corpus = {"p": "P", "n0": "A", "n1": "B", "n2": "C"}
    teacher_scores = {"P": 5.0, "A": 4.9, "B": 2.0, "C": 4.2}
    f = TeacherFilter(lambda q, docs: [teacher_scores[d] for d in docs], {"q": "Q"}, corpus, margin=0.5)
    assert apply_filters(mined, [f])[0].negatives()["q"] == ["n1", "n2"]  # teacher >= 4.5 removed
    with pytest.raises(ValueError, match="threshold, a margin"):
        TeacherFilter(lambda q, d: d, {}, {})
    bad = TeacherFilter(lambda q, docs: [1.0], {"q": "Q"}, corpus, threshold=0.0)
    with pytest.raises(ValueError, match="returned shape"):
        apply_filters(mined, [bad])


def test_margin_needs_a_positive_and_filters_validate():
    mined = _toy([0.5], {})
    with pytest.raises(ValueError, match="no positive"):
        apply_filters(mined, [AbsoluteMargin(0.1)])
    with pytest.raises(ValueError):
        RankWindow(skip_top=3, max_rank=3)
    with pytest.raises(ValueError):
        RelativeMargin(1.0)
    with pytest.raises(ValueError):
        AbsoluteMargin(-0.1)


# ----------------------------------------------------------------------------- mixed sampler

def _big_corpus(n=200):
    doc_ids = [f"d{i}" for i in range(n)]
    pos = {f"q{i}": [f"d{i}", f"d{i + 1}"] for i in range(20)}
    scores = np.random.default_rng(0).normal(size=(20, n))
    mined = mine_from_scores(scores, list(pos), doc_ids, pos, depth=10)
    return doc_ids, pos, mined


def test_mixed_sampler_ratio_and_determinism():
    doc_ids, pos, mined = _big_corpus()
    hard_sets = {q: set(v) for q, v in mined.negatives().items()}
    for ratio in (0.0, 0.3, 0.5, 1.0):
        s = MixedSampler(mined, doc_ids, pos, hard_ratio=ratio, seed=0)
        n_hard = n_all = 0
        for step in range(50):
            for q in pos:
                negs = s.sample(q, 4, step=step)
                assert len(negs) == len(set(negs)) == 4 and not set(negs) & set(pos[q])
                n_hard += sum(d in hard_sets[q] for d in negs)
                n_all += 4
        share = n_hard / n_all
        # random draws land in the 10-doc hard pool with probability 10/198: allow for it (4000 draws)
        expected = ratio + (1 - ratio) * 10 / 198
        assert abs(share - expected) < 0.03, (ratio, share)
    s = MixedSampler(mined, doc_ids, pos, hard_ratio=0.5, seed=3)
    assert s.sample("q1", 4, step=7) == MixedSampler(mined, doc_ids, pos, 0.5, seed=3).sample("q1", 4, step=7)
    assert s.sample("q1", 4, step=7) != s.sample("q1", 4, step=8)
    top = MixedSampler(mined, doc_ids, pos, hard_ratio=1.0, hard_strategy="top")
    assert top.sample("q2", 3) == mined.negatives(3)["q2"]


def test_mixed_sampler_ratio_one_negative_unbiased():
    """With one negative per query and ratio 0.3, about 30% of the draws are hard (not 0%)."""
    doc_ids, pos, mined = _big_corpus()
    s = MixedSampler(mined, doc_ids, pos, hard_ratio=0.3, hard_pool=1, hard_strategy="top", seed=0)
    hits = sum(s.sample(q, 1, step)[0] == mined.candidates[q][0].doc_id for step in range(100) for q in pos)
    assert 0.26 < hits / 2000 < 0.34


def test_mixed_sampler_schedule_and_errors():
    ramp = linear_ramp(0.0, 1.0, steps=100, warmup=10)
    assert [ramp(s) for s in (0, 10, 60, 110, 500)] == pytest.approx([0, 0, 0.5, 1, 1])
    doc_ids, pos, mined = _big_corpus()
    s = MixedSampler(mined, doc_ids, pos, hard_ratio=ramp)
    hard = set(mined.negatives()["q0"])
    assert s.ratio(0) == 0.0 and s.ratio(200) == 1.0
    assert set(s.sample("q0", 4, step=200)) <= hard
    with pytest.raises(ValueError, match="198 negatives|corpus has 200"):
        s.sample("q0", 199)
    with pytest.raises(ValueError, match="not mined"):
        s.sample("nope", 2)
    with pytest.raises(ValueError, match="hard_ratio"):
        MixedSampler(mined, doc_ids, pos, hard_ratio=1.5)
    with pytest.raises(ValueError, match="gave 2.0"):
        MixedSampler(mined, doc_ids, pos, hard_ratio=lambda step: 2.0).sample("q0", 2)
    with pytest.raises(ValueError, match="not in doc_ids"):
        MixedSampler(mined, doc_ids[:50], {q: p for q, p in pos.items()}, 0.5)
    with pytest.raises(ValueError, match="corpus is empty"):
        MixedSampler(mined, [], pos)
    # a pool smaller than the hard share is topped up with random negatives
    tiny = mined.subset(["q0"])
    tiny.candidates["q0"] = tiny.candidates["q0"][:1]
    negs = MixedSampler(tiny, doc_ids, pos, hard_ratio=1.0).sample("q0", 5)
    assert len(set(negs)) == 5 and negs[0] == tiny.candidates["q0"][0].doc_id


def test_scifact_bm25_mining_matches_rank_bm25():
    from embedlessons.data import load_retrieval

    ds = load_retrieval("scifact", "train")
    mined = mine_bm25(ds.queries, ds.doc_ids, ds.doc_texts(), ds.qrels, depth=30)
    assert len(mined) == 809 and mined.n_candidates() == 809 * 30
    n_pos = [len(p) for p in mined.positive_scores.values()]
    assert max(n_pos) > 1  # SciFact train has multi-positive queries
    for q, cands in mined.candidates.items():
        assert not {c.doc_id for c in cands} & set(ds.qrels[q])
    ref = BM25Okapi([tokenize(t) for t in ds.doc_texts()])
    for q in list(ds.queries)[:3]:
        scores = ref.get_scores(tokenize(ds.queries[q]))
        got = [c.score for c in mined.candidates[q]]
        assert got == pytest.approx([scores[ds.doc_ids.index(c.doc_id)] for c in mined.candidates[q]], rel=1e-9)
