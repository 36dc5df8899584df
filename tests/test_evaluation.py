"""embedlessons.evaluation against pytrec_eval (trec_eval 9.x), on synthetic and real SciFact runs."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import pytrec_eval

from embedlessons import evaluation as ev
from embedlessons.lexical import bm25_run

# pytrec_eval measure -> (our function, k) ; recip_rank is compared separately (it has no cutoff)
MEASURES = {
    "ndcg_cut_1": (ev.ndcg_at_k, 1), "ndcg_cut_5": (ev.ndcg_at_k, 5), "ndcg_cut_10": (ev.ndcg_at_k, 10),
    "ndcg_cut_100": (ev.ndcg_at_k, 100),
    "recall_5": (ev.recall_at_k, 5), "recall_10": (ev.recall_at_k, 10), "recall_100": (ev.recall_at_k, 100),
    "P_5": (ev.precision_at_k, 5), "P_10": (ev.precision_at_k, 10),
    "map": (ev.average_precision, None), "map_cut_10": (ev.average_precision, 10),
}
PYTREC_MEASURES = {"ndcg_cut.1,5,10,100", "recall.5,10,100", "P.5,10", "map", "map_cut.10", "recip_rank"}


def pytrec(qrels, run, measures=PYTREC_MEASURES):
    return pytrec_eval.RelevanceEvaluator(qrels, set(measures)).evaluate(run)


def cut(run, k):
    """Top k of each query under trec_eval's order (score desc, doc id desc), written out independently."""
    return {q: dict(sorted(d.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:k]) for q, d in run.items()}


def assert_equal_to_pytrec(qrels, run, atol=1e-12):
    ref = pytrec(qrels, run)
    assert set(ref) == set(qrels) & set(run)
    for name, (fn, k) in MEASURES.items():
        ours = fn(qrels, run, k, per_query=True, missing="skip")
        assert set(ours) == set(ref)
        for q in ref:
            assert ours[q] == pytest.approx(ref[q][name], abs=atol), (name, q)
        assert fn(qrels, run, k, missing="skip") == pytest.approx(np.mean([ref[q][name] for q in ref]), abs=atol)
    # MRR: without a cutoff it is recip_rank; with cutoff k it is recip_rank of the run cut to k
    full = ev.mrr_at_k(qrels, run, k=None, per_query=True, missing="skip")
    for q in ref:
        assert full[q] == pytest.approx(ref[q]["recip_rank"], abs=atol)
    for k in (1, 3, 10):
        ref_k = pytrec(qrels, cut(run, k), {"recip_rank"})
        ours_k = ev.mrr_at_k(qrels, run, k, per_query=True, missing="skip")
        for q in ref_k:
            assert ours_k[q] == pytest.approx(ref_k[q]["recip_rank"], abs=atol)
    return ref


def random_case(seed, graded=True, n_queries=40, n_docs=60):
    """Random qrels and a run with many tied scores; doc ids whose string order differs from numeric order."""
    rng = np.random.default_rng(seed)
    doc_ids = [f"d{i}" for i in rng.permutation(10 * n_docs)[:n_docs]]
    qrels, run = {}, {}
    for qi in range(n_queries):
        q = f"q{qi}"
        judged = rng.choice(n_docs, size=rng.integers(1, 12), replace=False)
        grades = rng.integers(0, 4 if graded else 2, size=len(judged))
        qrels[q] = {doc_ids[j]: int(g) for j, g in zip(judged, grades)}
        retrieved = rng.choice(n_docs, size=rng.integers(1, n_docs), replace=False)
        # one decimal -> lots of exact ties, exercising the doc-id tie rule
        run[q] = {doc_ids[j]: float(np.round(rng.normal(), 1)) for j in retrieved}
    run["not_judged"] = {"d1": 1.0}  # in the run only: ignored by everyone
    return qrels, run


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_graded_equals_pytrec(seed):
    qrels, run = random_case(seed, graded=True)
    n_ties = sum(len(d) - len(set(d.values())) for d in run.values())
    assert n_ties > 100  # the tie rule is really exercised
    assert max(sum(g >= 1 for g in r.values()) for r in qrels.values()) >= 5  # several relevant docs
    ref = assert_equal_to_pytrec(qrels, run)
    assert len(ref) == 40


def test_random_binary_equals_pytrec():
    qrels, run = random_case(7, graded=False)
    assert_equal_to_pytrec(qrels, run)


def test_negative_grades_and_no_relevant():
    qrels = {"q1": {"a": -1, "b": 2, "c": 0}, "q2": {"a": 0, "b": 0}}
    run = {"q1": {"a": 3.0, "b": 2.0, "c": 1.0}, "q2": {"a": 1.0, "b": 0.5}}
    ref = assert_equal_to_pytrec(qrels, run)
    assert ref["q2"]["ndcg_cut_10"] == 0.0 and ev.ndcg_at_k(qrels, run, per_query=True)["q2"] == 0.0
    assert ev.mrr_at_k(qrels, run, per_query=True) == {"q1": 0.5, "q2": 0.0}


def test_tie_rule_doc_id_descending():
    # equal scores: trec_eval ranks by doc id descending as strings, so "d9" > "d10" > "d1"
    qrels = {"q": {"d1": 1}}
    run = {"q": {"d1": 0.5, "d10": 0.5, "d9": 0.5}}
    assert ev.rank_documents(run["q"]) == ["d9", "d10", "d1"]
    assert ev.mrr_at_k(qrels, run) == pytest.approx(1 / 3)
    assert pytrec(qrels, run, {"recip_rank"})["q"]["recip_rank"] == pytest.approx(1 / 3)
    assert ev.recall_at_k(qrels, run, k=2) == 0.0
    assert ev.recall_at_k(qrels, run, k=3) == 1.0


def test_hand_computed_values():
    qrels = {"q": {"a": 3, "b": 1, "z": 2}}  # z never retrieved
    run = {"q": {"a": 0.1, "x": 0.9, "b": 0.5}}  # ranking: x, b, a
    dcg = 1 / np.log2(3) + 3 / np.log2(4)
    idcg = 3 + 2 / np.log2(3) + 1 / np.log2(4)
    assert ev.ndcg_at_k(qrels, run, k=10) == pytest.approx(dcg / idcg, abs=1e-15)
    assert ev.mrr_at_k(qrels, run) == 0.5
    assert ev.recall_at_k(qrels, run, k=2) == pytest.approx(1 / 3)
    assert ev.precision_at_k(qrels, run, k=5) == pytest.approx(2 / 5)
    assert ev.average_precision(qrels, run) == pytest.approx((1 / 2 + 2 / 3) / 3)
    out = ev.evaluate_run(qrels, run, k_values=(2, 10))
    assert out["ndcg@10"] == pytest.approx(dcg / idcg) and out["mrr@2"] == 0.5 and out["recall@2"] == pytest.approx(1 / 3)
    assert set(out) == {f"{m}@{k}" for m in ("ndcg", "mrr", "recall", "precision") for k in (2, 10)} | {"map"}


def test_evaluate_run_matches_single_metrics():
    qrels, run = random_case(3)
    out = ev.evaluate_run(qrels, run, k_values=(1, 10, 100), missing="skip")
    assert out["ndcg@10"] == ev.ndcg_at_k(qrels, run, 10, missing="skip")
    assert out["mrr@10"] == ev.mrr_at_k(qrels, run, 10, missing="skip")
    assert out["recall@100"] == ev.recall_at_k(qrels, run, 100, missing="skip")
    assert out["map"] == ev.average_precision(qrels, run, missing="skip")
    per_q = ev.evaluate_run(qrels, run, per_query=True, missing="skip")
    assert per_q["ndcg@10"] == ev.ndcg_at_k(qrels, run, 10, per_query=True, missing="skip")


def test_missing_queries_convention():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    run = {"q1": {"a": 1.0, "c": 0.5}, "q3": {"a": 1.0}}
    with pytest.raises(ValueError, match="missing from the run"):
        ev.ndcg_at_k(qrels, run)
    assert ev.ndcg_at_k(qrels, run, missing="skip") == 1.0  # pytrec_eval: only q1 evaluated
    assert set(pytrec(qrels, run, {"ndcg_cut.10"})) == {"q1"}
    assert ev.ndcg_at_k(qrels, run, missing="zero") == 0.5
    assert ev.mrr_at_k(qrels, run, missing="zero", per_query=True) == {"q1": 1.0, "q2": 0.0}
    with pytest.raises(ValueError, match="missing must be"):
        ev.ndcg_at_k(qrels, run, missing="ignore")
    with pytest.raises(ValueError, match="no query is in both"):
        ev.ndcg_at_k({"q9": {"a": 1}}, run, missing="skip")


def test_bad_input():
    qrels, run = {"q": {"a": 1}}, {"q": {"a": 1.0}}
    with pytest.raises(ValueError, match="qrels is empty"):
        ev.ndcg_at_k({}, run)
    with pytest.raises(ValueError, match="run is empty"):
        ev.evaluate_run(qrels, {})
    for bad_k in (0, -1, 2.5):
        with pytest.raises(ValueError, match="k must be an integer >= 1"):
            ev.recall_at_k(qrels, run, k=bad_k)
    with pytest.raises(ValueError, match="k_values"):
        ev.evaluate_run(qrels, run, k_values=(10, 0))
    with pytest.raises(ValueError, match="NaN"):
        ev.mrr_at_k(qrels, {"q": {"a": float("nan")}})
    with pytest.raises(TypeError, match="dicts"):
        ev.ndcg_at_k([("q", "a", 1)], run)


# ----------------------------------------------------------------------------- run_from_scores


def test_run_from_scores_top_k_and_ties():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 50)).astype(np.float32)
    qids, dids = [f"q{i}" for i in range(5)], [f"doc{j}" for j in range(50)]
    run = ev.run_from_scores(scores, qids, dids, top_k=7)
    for i, q in enumerate(qids):
        expected = np.argsort(-scores[i])[:7]
        assert list(run[q]) and set(run[q]) == {dids[j] for j in expected}
        assert all(run[q][dids[j]] == float(scores[i, j]) for j in expected)
    # ties across the cutoff: keep what trec_eval would rank first (larger doc id string)
    tied = np.array([[1.0, 0.5, 0.5, 0.5, 0.2]])
    run = ev.run_from_scores(tied, ["q"], ["a", "b", "c", "d", "e"], top_k=3)
    assert run == {"q": {"a": 1.0, "d": 0.5, "c": 0.5}}
    # top_k larger than the corpus keeps everything
    assert len(ev.run_from_scores(tied, ["q"], list("abcde"), top_k=100)["q"]) == 5


def test_run_from_scores_exclude_and_chunks():
    scores = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    run = ev.run_from_scores(scores, ["x", "y"], ["x", "y", "z"], top_k=2, exclude={"x": ["x"], "y": {"y", "nope"}})
    assert run == {"x": {"y": 2.0, "z": 1.0}, "y": {"z": 3.0, "x": 1.0}}
    run = ev.run_from_scores(scores, ["x", "y"], ["x", "y", "z"], top_k=3, exclude={"x": ["x"]})
    assert run["x"] == {"y": 2.0, "z": 1.0}  # an excluded doc is never returned, even when top_k allows it
    big = np.random.default_rng(1).normal(size=(10, 30))
    ids = [str(i) for i in range(30)]
    assert ev.run_from_scores(big, ids[:10], ids, 5, chunk_size=3) == ev.run_from_scores(big, ids[:10], ids, 5)


def test_run_from_scores_errors():
    s = np.zeros((2, 3))
    with pytest.raises(ValueError, match="shape"):
        ev.run_from_scores(s, ["a"], ["x", "y", "z"])
    with pytest.raises(ValueError, match="2-D"):
        ev.run_from_scores(np.zeros(3), ["a"], ["x", "y", "z"])
    with pytest.raises(ValueError, match="top_k"):
        ev.run_from_scores(s, ["a", "b"], ["x", "y", "z"], top_k=0)
    with pytest.raises(ValueError, match="NaN"):
        ev.run_from_scores(np.array([[0.0, np.nan, 1.0], [0, 0, 0]]), ["a", "b"], ["x", "y", "z"])
    with pytest.raises(ValueError, match="duplicates"):
        ev.run_from_scores(s, ["a", "b"], ["x", "x", "z"])


# ----------------------------------------------------------------------------- STS


def test_sts_correlations():
    x, y = [1, 2, 3, 4, 5], [5, 6, 7, 8, 7]
    assert ev.spearman(x, y) == pytest.approx(8 / np.sqrt(95), abs=1e-12)  # ranks of y: 1, 2, 3.5, 5, 3.5
    assert ev.pearson(x, y) == pytest.approx(6 / np.sqrt(52), abs=1e-12)
    assert ev.evaluate_sts(np.array(x), np.array(y)) == {"spearman": ev.spearman(x, y), "pearson": ev.pearson(x, y)}
    assert ev.spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert isinstance(ev.spearman(x, y), float)
    with pytest.raises(ValueError, match="different lengths"):
        ev.spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="constant"):
        ev.pearson([1, 2, 3], [2, 2, 2])
    with pytest.raises(ValueError, match="NaN"):
        ev.evaluate_sts([1, 2, float("nan")], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 2"):
        ev.spearman([1], [1])


# ----------------------------------------------------------------------------- real data: SciFact + BM25


def scifact_dir() -> Path:
    root = os.environ.get("EMBEDLESSONS_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
    path = Path(root) / "scifact"
    if not (path / "corpus.jsonl").exists():
        pytest.skip(f"SciFact not found under {path} (set EMBEDLESSONS_DATA)")
    return path


def load_scifact_test():
    """BEIR SciFact, read directly: (doc_ids, doc texts = title + ' ' + text, test queries, test qrels)."""
    path = scifact_dir()
    docs = [json.loads(line) for line in open(path / "corpus.jsonl", encoding="utf-8")]
    queries = {(q := json.loads(line))["_id"]: q["text"] for line in open(path / "queries.jsonl", encoding="utf-8")}
    qrels: dict[str, dict[str, int]] = {}
    for line in list(open(path / "qrels" / "test.tsv", encoding="utf-8"))[1:]:
        q, d, s = line.strip().split("\t")
        qrels.setdefault(q, {})[d] = int(s)
    return [d["_id"] for d in docs], [d["title"] + " " + d["text"] for d in docs], \
        {q: queries[q] for q in qrels}, qrels


@pytest.fixture(scope="module")
def scifact_bm25():
    doc_ids, texts, queries, qrels = load_scifact_test()
    assert len(doc_ids) == 5183 and len(queries) == 300
    return qrels, bm25_run(texts, doc_ids, queries, top_k=100)


def test_scifact_bm25_equals_pytrec(scifact_bm25):
    qrels, run = scifact_bm25
    assert all(len(docs) == 100 for docs in run.values())
    ref = assert_equal_to_pytrec(qrels, run, atol=1e-12)
    assert len(ref) == 300


def test_scifact_bm25_reference_numbers(scifact_bm25):
    # measured reference point (CURRICULUM: BM25 NDCG@10 = 0.652 on SciFact test)
    qrels, run = scifact_bm25
    out = ev.evaluate_run(qrels, run, k_values=(10, 100))
    assert out["ndcg@10"] == pytest.approx(0.6519, abs=1e-4)
    assert out["mrr@10"] == pytest.approx(0.6186, abs=1e-4)
    assert out["recall@100"] == pytest.approx(0.8731, abs=1e-4)
    assert out["map"] == pytest.approx(0.6132, abs=1e-4)
