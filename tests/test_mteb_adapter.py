"""embedlessons.mteb_adapter: the real mteb package (2.x) scores our bi-encoders exactly as our own evaluators do.

Tolerances: the STS correlations and MRR are compared to 1e-9 (MTEB does not round them; the STS cosines are
computed differently, sklearn's ``1 - paired_cosine_distances`` vs our dot of normalised vectors, but in float32
both give the same ranks here). MTEB rounds NDCG, MAP and recall to 5 decimals (``round(x, 5)`` in
``mteb._evaluators.retrieval_metrics``), so for those we check that MTEB's number is our unrounded number rounded
the same way (equivalent to |ours - mteb| <= 5e-6, but tighter).
"""
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

mteb = pytest.importorskip("mteb")

from embedlessons.data import RetrievalDataset, UnknownDatasetError  # noqa: E402
from embedlessons.evaluation import average_precision, mrr_at_k, ndcg_at_k, recall_at_k  # noqa: E402
from embedlessons.evaluators import RetrievalEvaluator, STSEvaluator  # noqa: E402
from embedlessons.models import load_model, small_bert  # noqa: E402
from embedlessons.mteb_adapter import (MTEBEncoder, local_retrieval_task, local_sts_task,  # noqa: E402
                                       mteb_document_texts, run_mteb)
from embedlessons.retrieval import dense_run  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py

BATCH = 64
CASES = {  # model, token limits (documents and STS sentences / queries), distractors, encoder cache
    "small_bert": dict(load=lambda: small_bert(seed=0), max_length=128, query_max_length=64, distractors=150,
                       cache=False),     # 169 docs: recall@100 is not trivially 1; fresh encodings on both sides
    "minilm": dict(load=lambda: load_model("all-MiniLM-L6-v2"), max_length=128, query_max_length=64,
                   distractors=50, cache=True),   # MTEB reuses the vectors our evaluators just cached
}


@pytest.fixture(scope="module")
def private_cache_dir(tmp_path_factory):
    """Embeddings go to a folder of this module, never into the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDLESSONS_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.delenv("EMBEDLESSONS_NO_CACHE", raising=False)
        yield


@pytest.fixture(scope="module")
def small_model():
    return small_bert(seed=0)


@pytest.fixture(scope="module", params=list(CASES))
def case(request, private_cache_dir):
    """One model: our evaluators' numbers and MTEB's on 60 STS-B test pairs and 20 SciFact test claims."""
    spec = CASES[request.param]
    model = spec["load"]()
    sts = local_sts_task("stsb", "test", max_pairs=60)
    ret = local_retrieval_task("scifact", "test", n_distractors=spec["distractors"], max_queries=20)
    pairs, ds = sts.embedlessons_data, ret.embedlessons_data

    # ours: STSEvaluator as it is; retrieval = RetrievalEvaluator's steps on MTEB's document text
    ours_sts = STSEvaluator(pairs, max_length=spec["max_length"], batch_size=BATCH)(model)["stsb_spearman"]
    q = model.encode(list(ds.queries.values()), max_length=spec["query_max_length"], batch_size=BATCH,
                     progress=False)
    d = model.encode(mteb_document_texts(ds), max_length=spec["max_length"], batch_size=BATCH, progress=False)
    run = dense_run(q, d, ds, top_k=len(ds.corpus))
    ours = {"ndcg_at_10": ndcg_at_k(ds.qrels, run, 10), "map_at_10": average_precision(ds.qrels, run, 10),
            "mrr_at_10": mrr_at_k(ds.qrels, run, 10), "recall_at_10": recall_at_k(ds.qrels, run, 10),
            "recall_at_100": recall_at_k(ds.qrels, run, 100)}
    profile = SimpleNamespace(doc_max_length=spec["max_length"], query_max_length=spec["query_max_length"],
                              encode_batch_size=BATCH)
    evaluator = RetrievalEvaluator(ds, profile)(model)

    encoder = MTEBEncoder(model, max_length=spec["max_length"], query_max_length=spec["query_max_length"],
                          batch_size=BATCH, cache=spec["cache"])
    rng_before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    theirs = run_mteb(encoder, [sts, ret])
    rng_after = (random.getstate(), np.random.get_state()[1], torch.get_rng_state())
    print(f"\n{request.param}: ours STS {ours_sts:.6f} {ours}\n  mteb {theirs}")
    return SimpleNamespace(name=request.param, model=model, ds=ds, pairs=pairs, encoder=encoder, ours_sts=ours_sts,
                           ours=ours, evaluator=evaluator, theirs=theirs, rng=(rng_before, rng_after))


def test_sts_spearman_equals_ours(case):
    theirs = case.theirs["stsb"]
    assert theirs["cosine_spearman"] == pytest.approx(case.ours_sts, abs=1e-9)
    assert theirs["main_score"] == theirs["cosine_spearman"]
    assert -1 <= theirs["cosine_spearman"] <= 1 and theirs["cosine_spearman"] != 0


@pytest.mark.parametrize("metric", ["ndcg_at_10", "map_at_10", "recall_at_10", "recall_at_100"])
def test_rounded_retrieval_metrics_equal_ours(case, metric):
    assert case.theirs["scifact"][metric] == pytest.approx(round(case.ours[metric], 5), abs=1e-12)


def test_mrr_and_retrieval_evaluator_equal_ours(case):
    theirs = case.theirs["scifact"]
    assert theirs["mrr_at_10"] == pytest.approx(case.ours["mrr_at_10"], abs=1e-9)   # not rounded by MTEB
    assert theirs["main_score"] == theirs["ndcg_at_10"]
    # RetrievalEvaluator itself embeds ds.doc_texts(), unstripped; on this subset the texts coincide
    assert mteb_document_texts(case.ds) == case.ds.doc_texts()
    assert theirs["ndcg_at_10"] == pytest.approx(round(case.evaluator["scifact_ndcg@10"], 5), abs=1e-12)
    assert theirs["recall_at_100"] == pytest.approx(round(case.evaluator["scifact_recall@100"], 5), abs=1e-12)
    assert theirs["mrr_at_10"] == pytest.approx(case.evaluator["scifact_mrr@10"], abs=1e-9)


def test_mteb_ran_our_model_once_per_text(case):
    meta = case.encoder.mteb_model_meta
    assert meta.name.startswith("embedlessons/") and meta.revision == case.model.fingerprint()
    assert meta.loader is None
    assert case.encoder.texts_encoded == 2 * len(case.pairs) + len(case.ds.queries) + len(case.ds.corpus)
    assert case.rng[0][0] == case.rng[1][0] and np.array_equal(case.rng[0][1], case.rng[1][1])
    assert torch.equal(case.rng[0][2], case.rng[1][2])   # mteb's seed(42) calls did not leak out
    if case.name == "minilm":   # a trained model is far better than chance: the numbers are not degenerate
        assert case.theirs["stsb"]["cosine_spearman"] > 0.7 and case.theirs["scifact"]["ndcg_at_10"] > 0.5
        assert meta.name == "embedlessons/all-MiniLM-L6-v2"


def test_no_result_reuse_between_models_of_one_name(private_cache_dir):
    task = local_sts_task("stsb", "test", max_pairs=20)
    a = run_mteb(MTEBEncoder(small_bert(seed=0), max_length=64, name="same"), task)["stsb"]["cosine_spearman"]
    b = run_mteb(MTEBEncoder(small_bert(seed=1), max_length=64, name="same"), task)["stsb"]["cosine_spearman"]
    assert a != b


def test_document_text_is_mtebs_join():
    from mteb._create_dataloaders import _corpus_to_dict   # what mteb 2.x itself does to a corpus row

    corpus = {"a": {"title": "T", "text": " body "}, "b": {"title": "", "text": " only body\n"},
              "c": {"title": " ", "text": "x"}}
    ds = RetrievalDataset("toy", "test", corpus, {"q": "query"}, {"q": {"a": 1}})
    assert mteb_document_texts(ds) == [_corpus_to_dict({"id": i, **v})["text"] for i, v in corpus.items()]
    assert mteb_document_texts(ds) != ds.doc_texts()


def test_clear_errors(small_model):
    with pytest.raises(TypeError, match="BiEncoder"):
        MTEBEncoder(small_model.transformer)
    with pytest.raises(ValueError, match="batch_size"):
        MTEBEncoder(small_model, batch_size=0)
    with pytest.raises(UnknownDatasetError, match="Did you mean 'stsb'"):
        local_sts_task("stsbb")
    with pytest.raises(ValueError, match="no retrieval data"):
        local_retrieval_task("stsb")
    with pytest.raises(ValueError, match="max_pairs"):
        local_sts_task("stsb", max_pairs=1)
    task = local_sts_task("stsb", max_pairs=10)
    with pytest.raises(TypeError, match="wrap the model"):
        run_mteb(small_model, task)
    with pytest.raises(ValueError, match="distinct"):
        run_mteb(MTEBEncoder(small_model), [task, local_sts_task("stsb", max_pairs=20)])
    with pytest.raises(ValueError, match="text only"):
        MTEBEncoder(small_model).encode(iter([{"image": [0]}]))


def test_bare_model_is_not_evaluated_by_mteb(small_model):
    """Why the wrapper carries a ModelMeta: mteb replaces an object without one by an empty ModelMeta and tries to
    load that, instead of encoding with the object it was given."""
    with pytest.raises(NotImplementedError, match="No model implementation"):
        mteb.evaluate(small_model, local_sts_task("stsb", max_pairs=10), cache=None, co2_tracker=False,
                      show_progress_bar=False)
