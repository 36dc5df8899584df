"""The own-data pipeline command (embedlessons.pipeline) end to end on a small real collection written in the
BEIR layout (SciFact claims and abstracts), with a tiny random BERT so that it runs in seconds."""
import json

import pytest

from embedlessons.data import RetrievalDataset, load_retrieval
from embedlessons.models import load_model, small_bert
from embedlessons.own_data import save_beir_folder
from embedlessons.pipeline import main, run_pipeline

pytestmark = pytest.mark.usefixtures("one_thread", "private_cache")   # tests/conftest.py


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """A BEIR folder with 40 SciFact training claims, 20 test claims, their abstracts and 30 others."""
    root = tmp_path_factory.mktemp("mine")
    train, test = load_retrieval("scifact", "train"), load_retrieval("scifact", "test")
    tq = dict(list(train.qrels.items())[:40])
    eq = dict(list(test.qrels.items())[:20])
    keep = {d for rel in (*tq.values(), *eq.values()) for d in rel} | set(train.doc_ids[:30])
    corpus = {d: doc for d, doc in train.corpus.items() if d in keep}
    part = lambda ds, qrels: RetrievalDataset(ds.name, ds.split, corpus, {q: ds.queries[q] for q in qrels}, qrels)
    save_beir_folder(root, {"train": part(train, tq), "test": part(test, eq)})
    model = small_bert(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, seed=0).save(root / "tiny")
    return root, model


def test_the_pipeline_trains_evaluates_and_saves_a_loadable_model(collection, tmp_path, capsys):
    root, model = collection
    code = main(["--data", str(root), "--out", str(tmp_path / "run"), "--model", str(model), "--steps", "3",
                 "--batch-size", "8", "--doc-max-length", "32", "--hard-negatives", "bm25", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "BM25" in printed and "fine-tuned - start, NDCG@10" in printed and "model saved to" in printed
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["scores"]) == {"BM25", f"{model} (start)", "fine-tuned"}
    assert summary["training_rows"] >= 40 and len(summary["per_query_ndcg@10"]["BM25"]) == 20
    assert 0 <= summary["scores"]["BM25"]["ndcg@10"] <= 1
    stages = summary["stage_seconds"]
    assert list(stages)[0].startswith("data") and "fine-tune" in stages and all(v >= 0 for v in stages.values())
    assert sum(stages.values()) <= summary["seconds"] + 0.1
    reloaded = load_model(tmp_path / "run" / "model")
    assert reloaded.encode(["a claim"], progress=False).shape == (1, 32)


def test_bad_settings_say_what_is_expected(collection, tmp_path):
    root, model = collection
    with pytest.raises(ValueError, match=r"need at least batch_size=512"):
        run_pipeline(str(root), tmp_path, model=str(model), batch_size=512, progress=False)
    with pytest.raises(ValueError, match=r"hard_negatives must be 'none' or 'bm25'"):
        run_pipeline(str(root), tmp_path, model=str(model), hard_negatives="dense", progress=False)
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path)])                         # --data is required: argparse says so
