"""Your own data (embedlessons.own_data): a BEIR-layout folder and column files load with the staged sets'
checks, and every malformed input is refused with the file, the line and what was expected."""
import json
from pathlib import Path

import numpy as np
import pytest

from embedlessons.data import DataFormatError, DatasetNotFoundError, UnknownDatasetError, load_retrieval
from embedlessons.own_data import load_pairs_file, load_retrieval_folder, load_scored_pairs_file, load_triplets_file
from embedlessons.training import PairDataset, TripletDataset


def write_collection(root: Path, corpus=None, queries=None, qrels=None, split="test") -> Path:
    corpus = corpus if corpus is not None else [{"_id": "d1", "title": "Cats", "text": "Cats purr."},
                                                {"_id": "d2", "title": "", "text": "Dogs bark."}]
    queries = queries if queries is not None else [{"_id": "q1", "text": "why do cats purr"},
                                                   {"_id": "q2", "text": "unjudged query"}]
    qrels = qrels if qrels is not None else "query-id\tcorpus-id\tscore\nq1\td1\t1\n"
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus) if isinstance(corpus, list) else corpus)
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / f"{split}.tsv").write_text(qrels)
    return root


def test_a_beir_folder_loads_like_a_staged_set(tmp_path):
    root = write_collection(tmp_path / "mine")
    ds = load_retrieval(str(root))
    assert ds.name == "mine" and ds.split == "test"
    assert ds.queries == {"q1": "why do cats purr"} and ds.qrels == {"q1": {"d1": 1}}     # judged queries only
    assert ds.doc_texts() == ["Cats Cats purr.", "Dogs bark."]
    assert load_retrieval(root).corpus == ds.corpus                                          # a Path works too
    assert load_retrieval_folder(root, name="other").name == "other"


def test_known_names_still_mean_the_staged_sets(tmp_path, monkeypatch):
    write_collection(tmp_path / "scifact")            # a folder named like a staged set does not shadow it
    monkeypatch.chdir(tmp_path)
    assert len(load_retrieval("scifact").corpus) > 1000                  # the staged SciFact, not ./scifact
    with pytest.raises(UnknownDatasetError):
        load_retrieval("not_a_dataset_or_folder")


@pytest.mark.parametrize("change, error, message", [
    (lambda r: (r / "corpus.jsonl").unlink(), DatasetNotFoundError, r"lacks corpus.jsonl; a retrieval collection"),
    (lambda r: (r / "qrels" / "test.tsv").rename(r / "qrels" / "dev.tsv"), DatasetNotFoundError,
     r"lacks qrels/test.tsv \(qrels/ has the splits \['dev'\]\)"),
    (lambda r: (r / "corpus.jsonl").write_text('{"_id": "d1", "text": "a"}\n{"_id": "d2", text}\n'), DataFormatError,
     r"corpus.jsonl, line 2: invalid JSON"),
    (lambda r: (r / "corpus.jsonl").write_text('{"_id": "d1", "text": "a"}\n{"_id": "d2"}\n'), DataFormatError,
     r"corpus.jsonl, line 2: missing key\(s\) \['text'\]"),
    (lambda r: (r / "corpus.jsonl").write_text('{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}\n'),
     DataFormatError, r"line 2: duplicate _id 'd1'"),
    (lambda r: (r / "corpus.jsonl").write_text(""), DataFormatError, r"corpus.jsonl: empty file"),
    (lambda r: (r / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td9\t1\n"), DataFormatError,
     r"test.tsv, line 2: corpus-id 'd9' is not in corpus.jsonl"),
    (lambda r: (r / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq7\td1\t1\n"), DataFormatError,
     r"test.tsv, line 2: query-id 'q7' is not in queries.jsonl"),
    (lambda r: (r / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\thigh\n"), DataFormatError,
     r"line 2: score 'high' is not an integer"),
    (lambda r: (r / "qrels" / "test.tsv").write_text("query-id\tdoc\tscore\nq1\td1\t1\n"), DataFormatError,
     r"line 1: missing column\(s\) \['corpus-id'\]"),
    (lambda r: (r / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t0\n"), DataFormatError,
     r"no judgement with a score > 0"),
])
def test_malformed_collections_are_refused_with_file_and_line(tmp_path, change, error, message):
    root = write_collection(tmp_path / "bad")
    change(root)
    with pytest.raises(error, match=message):
        load_retrieval(str(root))


def test_a_missing_folder_says_what_a_collection_is(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"is not a folder; a retrieval collection is a folder with corpus"):
        load_retrieval(str(tmp_path / "nowhere"))


def test_column_files_load_from_tsv_and_jsonl(tmp_path):
    tsv = tmp_path / "sts.tsv"
    tsv.write_text("sentence1\tsentence2\tscore\textra\nA cat.\tA kitten.\t4.5\tx\nA car.\tA tree.\t0.5\ty\n")
    pairs = load_scored_pairs_file(tsv, low=0, high=5)
    assert pairs.sentences1 == ["A cat.", "A car."] and np.allclose(pairs.scores, [4.5, 0.5])
    jl = tmp_path / "train.jsonl"
    jl.write_text('{"q": "cats", "doc": "Cats purr.", "neg": "Dogs bark."}\n\n{"q": "dogs", "doc": "Dogs bark.", '
                  '"neg": "Cats purr."}\n')
    triplets = load_triplets_file(jl, columns=("q", "doc", "neg"))
    assert triplets.anchors == ["cats", "dogs"] and triplets.negatives == ["Dogs bark.", "Cats purr."]
    assert len(TripletDataset(triplets.anchors, triplets.positives, triplets.negatives)) == 2
    p = load_pairs_file(jl, columns=("q", "doc"))
    assert len(PairDataset(p.anchors, p.positives)) == 2 and repr(p) == "Pairs('train', n=2)"


@pytest.mark.parametrize("name, content, kwargs, message", [
    ("s.tsv", "sentence1\tsentence2\tscore\na\tb\t9\n", dict(low=0, high=5), r"s.tsv, line 2: score 9.0 is outside"),
    ("s.tsv", "sentence1\tsentence2\tscore\na\tb\tlots\n", {}, r"line 2: score 'lots' is not a number"),
    ("s.tsv", "sentence1\tsentence2\tscore\na\tb\n", {}, r"line 2: expected 3 tab-separated fields"),
    ("s.jsonl", '{"sentence1": "a", "sentence2": "b", "score": 1}\n[1, 2]\n', {}, r"line 2: expected a JSON object"),
    ("s.jsonl", '{"sentence1": "a", "score": 1}\n', {}, r"line 1: missing key\(s\) \['sentence2'\]"),
    ("s.jsonl", '{"sentence1": "", "sentence2": "b", "score": 1}\n', {}, r"line 1: sentence1 must be a non-empty"),
    ("s.csv", "sentence1,sentence2,score\n", {}, r"unknown file type '.csv'"),
])
def test_malformed_column_files_are_refused(tmp_path, name, content, kwargs, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataFormatError, match=message):
        load_scored_pairs_file(path, **kwargs)


def test_a_missing_file_names_the_expected_columns(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"header row: anchor, positive, negative"):
        load_triplets_file(tmp_path / "none.tsv")


def test_save_beir_folder_round_trips_and_refuses_judgements_without_documents(tmp_path):
    from embedlessons.data import RetrievalDataset, load_retrieval
    from embedlessons.own_data import save_beir_folder

    test = load_retrieval("scifact", "test").subset(20)
    folder = save_beir_folder(tmp_path / "copy", {"test": test})
    back = load_retrieval(str(folder), "test")
    assert back.corpus == test.corpus and back.queries == test.queries and back.qrels == test.qrels
    broken = RetrievalDataset("x", "test", {"d1": {"title": "", "text": "t"}}, {"q1": "q"}, {"q1": {"d2": 1}})
    with pytest.raises(ValueError, match=r"judges documents that are not in the corpus: \['d2'\]"):
        save_beir_folder(tmp_path / "bad", {"test": broken})
    with pytest.raises(ValueError, match="splits is empty"):
        save_beir_folder(tmp_path / "none", {})


def _fake_hub(layout: str):
    """A stand-in for datasets.load_dataset serving a small SciFact subset in the BeIR or the MTEB layout (no
    network here: this checks our conversion, not the hub)."""
    from datasets import Dataset, DatasetDict

    from embedlessons.data import load_retrieval

    train, test = load_retrieval("scifact", "train"), load_retrieval("scifact", "test").subset(30)
    docs = {**{d: train.corpus[d] for rel in list(train.qrels.values())[:10] for d in rel}, **test.corpus}
    corpus = Dataset.from_dict({"_id": list(docs), "title": [v["title"] for v in docs.values()],
                                "text": [v["text"] for v in docs.values()]})
    qids = {**{q: train.queries[q] for q in list(train.qrels)[:10]}, **test.queries}
    queries = Dataset.from_dict({"_id": list(qids), "text": list(qids.values())})
    qrels = DatasetDict({split: Dataset.from_dict({
        "query-id": [q for q, rel in rels for _ in rel], "corpus-id": [d for _, rel in rels for d in rel],
        "score": [g for _, rel in rels for g in rel.values()]})
        for split, rels in (("train", list(train.qrels.items())[:10]), ("test", list(test.qrels.items())))})
    calls = []

    def load_dataset(repo, config=None):
        calls.append((repo, config))
        if layout == "beir" and repo.endswith("-qrels"):
            return qrels
        if layout == "beir" and config in ("corpus", "queries"):
            return DatasetDict({config: corpus if config == "corpus" else queries})
        if layout == "mteb" and config in ("corpus", "queries", "default"):
            return {"corpus": DatasetDict({"test": corpus}), "queries": DatasetDict({"test": queries}),
                    "default": qrels}[config]
        raise FileNotFoundError(f"{repo} {config}")

    return load_dataset, calls, test


@pytest.mark.parametrize("layout", ["beir", "mteb"])
def test_a_hub_collection_is_written_as_a_beir_folder_and_read_with_the_same_checks(layout, tmp_path, monkeypatch):
    from embedlessons.own_data import load_retrieval_hub

    monkeypatch.setenv("EMBEDLESSONS_CACHE", str(tmp_path))
    for var in ("EMBEDLESSONS_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    load_dataset, calls, test = _fake_hub(layout)
    ds = load_retrieval_hub("hf:someone/scifact", "test", load_dataset=load_dataset)
    assert ds.queries == test.queries and ds.qrels == test.qrels and set(test.corpus) <= set(ds.corpus)
    assert len(load_retrieval_hub("hf:someone/scifact", "train", load_dataset=load_dataset).queries) == 10
    assert len(calls) in (3, 4)                                   # downloaded once; the second split is cached
    assert (tmp_path / "hub" / "someone__scifact" / "qrels" / "train.tsv").is_file()


def test_a_hub_name_offline_or_malformed_says_what_to_do(tmp_path, monkeypatch):
    from embedlessons.data import DatasetNotFoundError, load_retrieval

    monkeypatch.setenv("EMBEDLESSONS_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetNotFoundError, match="run once with a network, or download the BEIR folder"):
        load_retrieval("hf:BeIR/nfcorpus", "test")
    with pytest.raises(ValueError, match=r"hf:<owner>/<name>"):
        load_retrieval("hf:nfcorpus", "test")
