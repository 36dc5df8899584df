"""Tests for embedlessons.data: real counts (from each SOURCE.md), lookup order, errors, hub path."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from embedlessons import data as D


@pytest.fixture
def real_data(monkeypatch):
    """The course data folder from $EMBEDLESSONS_DATA (CI sets it); skip when unset."""
    root = os.environ.get("EMBEDLESSONS_DATA")
    if not root or not Path(root, "stsb").is_dir():
        pytest.skip("EMBEDLESSONS_DATA is unset or has no stsb/ (e.g. /work/shared/data)")
    monkeypatch.setenv("EMBEDLESSONS_OFFLINE", "1")
    return Path(root)


@pytest.fixture
def empty_env(tmp_path, monkeypatch):
    """No data anywhere: EMBEDLESSONS_DATA -> empty dir, cache -> empty dir, offline."""
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("EMBEDLESSONS_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("EMBEDLESSONS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EMBEDLESSONS_OFFLINE", "1")
    return tmp_path


def write_tsv(path: Path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def write_jsonl(path: Path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


# ----------------------------------------------------------------------------- real counts


@pytest.mark.parametrize("name,sizes", [
    ("stsb", {"train": 5749, "dev": 1500, "test": 1379}),
    ("sick", {"train": 4439, "dev": 495, "test": 4906}),
    ("stsb_zh", {"train": 5231, "dev": 1458, "test": 1361}),
])
def test_sts_counts(real_data, name, sizes):
    for split, n in sizes.items():
        sts = D.load_sts(name, split)
        assert len(sts) == len(sts.sentences1) == len(sts.sentences2) == n
        assert sts.scores.dtype == np.float32 and sts.scores.shape == (n,)
    lo = 1.0 if name == "sick" else 0.0
    assert sts.scores.min() == lo and sts.scores.max() == 5.0


def test_stsb_first_rows(real_data):
    train = D.load_sts("stsb", "train")
    assert train.sentences1[0] == "A plane is taking off."
    assert train.sentences2[0] == "An air plane is taking off."
    assert train.scores[0] == 5.0 and train.scores[1] == pytest.approx(3.8)
    assert D.load_sts("stsb_zh", "train").sentences1[0] == "一架飞机要起飞了。"
    assert set(np.unique(D.load_sts("stsb_zh", "train").scores)) == {0, 1, 2, 3, 4, 5}


def test_scifact(real_data):
    test = D.load_retrieval("scifact", "test")
    assert len(test.corpus) == 5183 and len(test.doc_ids) == 5183
    assert len(test) == len(test.queries) == 300
    assert sum(len(r) for r in test.qrels.values()) == 339
    assert set(test.queries) == set(test.qrels)
    assert test.qrels["1"] == {"31715818": 1}
    assert test.doc_ids[0] == "4983"
    texts = test.doc_texts()
    doc = test.corpus["4983"]
    assert texts[0] == doc["title"] + " " + doc["text"]
    assert test.doc_texts(sep="\n")[0] == doc["title"] + "\n" + doc["text"]
    train = D.load_retrieval("scifact", "train")
    assert len(train.queries) == 809 and sum(len(r) for r in train.qrels.values()) == 919
    assert not set(train.queries) & set(test.queries)


def test_cmrc(real_data):
    test = D.load_retrieval("cmrc2018", "test")
    assert len(test.corpus) == 1104 and len(test.queries) == 3219
    assert test.qrels["DEV_0_QUERY_0"] == {"DEV_0": 1}
    assert test.queries["DEV_0_QUERY_0"] == "《战国无双3》是由哪两个公司合作开发的？"
    assert all(len(r) == 1 for r in test.qrels.values())
    assert len(D.load_retrieval("cmrc2018", "dev").queries) == 1002


def test_nli_and_triplets(real_data):
    snli = D.load_nli_pairs("snli")
    assert len(snli) == 19666
    dev = D.load_nli_pairs("snli", "snli_dev")
    assert len(dev) == 9842 and len(D.load_nli_pairs("snli", "snli_test")) == 9824
    assert (dev.labels.count("entailment"), dev.labels.count("neutral"),
            dev.labels.count("contradiction")) == (3329, 3235, 3278)
    assert len(D.load_triplets("snli")) == 5864
    assert len(D.load_triplets("snli", "snli_dev")) == 2943
    assert len(D.load_triplets("snli", "snli_test")) == 2921
    t = D.load_triplets("snli", "snli_dev")
    assert (t.anchors[0], t.positives[0], t.negatives[0]) == (
        "Two women are embracing while holding to go packages.",
        "Two woman are holding packages.", "The men are fighting outside a deli.")

    sick = D.load_nli_pairs("sick", "train")
    assert len(sick) == 4439
    assert (sick.labels.count("neutral"), sick.labels.count("entailment"),
            sick.labels.count("contradiction")) == (2524, 1274, 641)
    ocnli = D.load_nli_pairs("ocnli", "train")
    assert len(ocnli) == 9985 and len(D.load_nli_pairs("ocnli", "dev")) == 2950
    assert ocnli.labels.count("entailment") == 3309
    assert len(D.load_triplets("ocnli")) == 7784


def test_classification(real_data):
    test = D.load_classification("ag_news", "test")
    assert len(test) == 7600 and test.labels.dtype == np.int64
    assert np.bincount(test.labels).tolist() == [1900] * 4
    assert test.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    train = D.load_classification("ag_news", "train")
    assert np.bincount(train.labels).tolist() == [1259, 1257, 1281, 1203]
    sizes = {s: len(D.load_classification("toutiao", s)) for s in ("train", "dev", "test")}
    assert sizes == {"train": 4848, "dev": 936, "test": 957}
    tt = D.load_classification("toutiao", "train")
    assert len(tt.label_names) == 15 and tt.label_names == sorted(tt.label_names)
    assert tt.label_names[tt.labels[0]] == "news_car"
    counts = [int((D.load_classification("toutiao", s).labels == 14).sum())
              for s in ("train", "dev", "test")]
    assert tt.label_names[14] == "stock" and counts == [1, 2, 1]


def test_generic_load_and_registry(real_data):
    assert D.list_datasets() == sorted(["stsb", "sick", "scifact", "snli", "ag_news",
                                        "stsb_zh", "ocnli", "cmrc2018", "toutiao"])
    for name, info in D.DATASETS.items():
        assert (real_data / info.folder).is_dir(), name
        assert info.licence and info.source
    assert isinstance(D.load("sick"), D.ScoredPairs)
    assert isinstance(D.load("sick", kind="nli"), D.NLIPairs)
    assert len(D.load("scifact")) == 300
    assert len(D.load("ocnli", "dev", kind="nli")) == 2950
    assert "n=1379" in repr(D.load("stsb")) and "docs=5183" in repr(D.load("scifact"))


def test_results_are_copies(real_data):
    a = D.load_retrieval("scifact", "test")
    a.corpus["4983"]["text"] = "changed"
    a.queries.clear()
    s = D.load_sts("stsb", "test")
    s.scores[:] = -1
    s.sentences1[0] = "changed"
    b = D.load_retrieval("scifact", "test")
    assert b.corpus["4983"]["text"] != "changed" and len(b.queries) == 300
    s2 = D.load_sts("stsb", "test")
    assert s2.scores.min() >= 0 and s2.sentences1[0] == "A girl is styling her hair."


# ----------------------------------------------------------------------------- subset


def test_subset_keeps_relevant_and_is_deterministic(real_data):
    full = D.load_retrieval("scifact", "test")
    relevant = {d for r in full.qrels.values() for d in r}
    sub = full.subset(500, seed=0)
    assert len(sub.corpus) == len(relevant) + 500
    assert relevant <= set(sub.corpus)
    assert sub.queries == full.queries and sub.qrels == full.qrels
    order = {d: i for i, d in enumerate(full.doc_ids)}
    assert [order[d] for d in sub.doc_ids] == sorted(order[d] for d in sub.doc_ids)
    assert sub.doc_ids == full.subset(500, seed=0).doc_ids
    assert sub.doc_ids != full.subset(500, seed=1).doc_ids
    assert set(full.subset(0).corpus) == relevant
    with pytest.raises(ValueError, match="n_distractors"):
        full.subset(10**6)


# ----------------------------------------------------------------------------- lookup order


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("EMBEDLESSONS_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert D.cache_dir() == tmp_path / ".cache" / "embedlessons"
    monkeypatch.setenv("EMBEDLESSONS_CACHE", str(tmp_path / "c"))
    assert D.cache_dir() == tmp_path / "c"


def test_env_dir_wins_over_cache(empty_env):
    header = ["sentence1", "sentence2", "score"]
    write_tsv(empty_env / "data" / "stsb" / "test.tsv", header, [["a", "b", "1.0"]])
    write_tsv(empty_env / "cache" / "data" / "stsb" / "test.tsv", header, [["c", "d", "2.0"]])
    assert D.load_sts("stsb", "test").sentences1 == ["a"]
    os.environ.pop("EMBEDLESSONS_DATA")  # monkeypatch restores it
    assert D.load_sts("stsb", "test").sentences1 == ["c"]


# ----------------------------------------------------------------------------- bad input


def test_unknown_name():
    with pytest.raises(D.UnknownDatasetError) as e:
        D.load_sts("stsbb")
    msg = str(e.value)
    assert "Did you mean 'stsb'" in msg and "scifact" in msg and "toutiao" in msg
    assert isinstance(e.value, KeyError) and isinstance(e.value, ValueError)


def test_unknown_split():
    with pytest.raises(ValueError, match=r"available: train, dev, test.*'dev'"):
        D.load_sts("stsb", "validation")
    with pytest.raises(ValueError, match="snli_dev, snli_test"):
        D.load_nli_pairs("snli", "train")


def test_wrong_kind():
    with pytest.raises(ValueError, match="'scifact' has no sts data; it offers retrieval"):
        D.load_sts("scifact")
    with pytest.raises(ValueError, match="has no retrieval data"):
        D.load_retrieval("stsb")
    with pytest.raises(ValueError, match="Unknown kind"):
        D.load("stsb", kind="nope")


def test_missing_data_message(empty_env):
    with pytest.raises(D.DatasetNotFoundError) as e:
        D.load_sts("stsb", "test")
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    assert "'stsb'" in msg and "EMBEDLESSONS_DATA" in msg
    assert str(empty_env / "data" / "stsb") in msg
    assert str(empty_env / "cache" / "data" / "stsb") in msg
    assert "EMBEDLESSONS_OFFLINE=1" in msg and "sentence-transformers/stsb" in msg


def test_missing_data_env_unset(empty_env, monkeypatch):
    monkeypatch.delenv("EMBEDLESSONS_DATA")
    monkeypatch.delenv("EMBEDLESSONS_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(D.DatasetNotFoundError, match=r"(?s)EMBEDLESSONS_DATA is not set.*HF_HUB_OFFLINE=1"):
        D.load_retrieval("scifact")


def test_chinese_set_has_no_hub_copy(empty_env, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.delenv("EMBEDLESSONS_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("hub was called"))
    with pytest.raises(D.DatasetNotFoundError, match=r"(?s)no hub copy.*ymcui/cmrc2018"):
        D.load_retrieval("cmrc2018")


def test_malformed_tsv(empty_env):
    path = empty_env / "data" / "stsb" / "test.tsv"
    write_tsv(path, ["sentence1", "sentence2"], [["a", "b"]])
    with pytest.raises(D.DataFormatError, match=r"test.tsv, line 1: missing column\(s\) \['score'\]"):
        D.load_sts("stsb", "test")
    write_tsv(path, ["sentence1", "sentence2", "score"], [["a", "b", "1"], ["c", "d", "high"]])
    with pytest.raises(D.DataFormatError, match=r"test.tsv, line 3: score 'high' is not a number"):
        D.load_sts("stsb", "test")
    write_tsv(path, ["sentence1", "sentence2", "score"], [["a", "b", "4.0"], ["c", "d", "0.5"]])
    assert D.load_sts("stsb", "test").scores.tolist() == [4.0, 0.5]  # file change seen
    write_tsv(path, ["sentence1", "sentence2", "score"], [["a", "b", "7"]])
    with pytest.raises(D.DataFormatError, match=r"line 2: score 7.0 is outside \[0, 5\]"):
        D.load_sts("stsb", "test")
    write_tsv(path, ["sentence1", "sentence2", "score"], [["a", "b"]])
    with pytest.raises(D.DataFormatError, match="line 2: expected 3"):
        D.load_sts("stsb", "test")
    write_tsv(path, ["sentence1", "sentence2", "score"], [])
    with pytest.raises(D.DataFormatError, match="no data rows"):
        D.load_sts("stsb", "test")
    path.write_text("")
    with pytest.raises(D.DataFormatError, match="empty file"):
        D.load_sts("stsb", "test")


def test_malformed_labels(empty_env):
    write_tsv(empty_env / "data" / "sick" / "train.tsv", ["sentence1", "sentence2", "label"],
              [["a", "b", "entailment"], ["c", "d", "maybe"]])
    with pytest.raises(D.DataFormatError, match="line 3: label 'maybe'"):
        D.load_nli_pairs("sick", "train")
    write_tsv(empty_env / "data" / "ag_news" / "test.tsv", ["text", "label", "label_name"],
              [["x", "1", "World"]])
    with pytest.raises(D.DataFormatError, match="line 2"):
        D.load_classification("ag_news", "test")


def _tiny_beir(folder: Path, qrels_rows):
    write_jsonl(folder / "corpus.jsonl", [{"_id": "d1", "title": "T", "text": "x", "metadata": {}},
                                          {"_id": "d2", "title": "", "text": "y", "metadata": {}}])
    write_jsonl(folder / "queries.jsonl", [{"_id": "q1", "text": "q?", "metadata": {}},
                                           {"_id": "q2", "text": "unjudged", "metadata": {}}])
    write_tsv(folder / "qrels" / "test.tsv", ["query-id", "corpus-id", "score"], qrels_rows)


def test_malformed_qrels(empty_env):
    folder = empty_env / "data" / "scifact"
    _tiny_beir(folder, [["q1", "d1", "1"], ["q1", "d9", "1"]])
    with pytest.raises(D.DataFormatError, match=r"qrels/test.tsv, line 3: corpus-id 'd9' is not in corpus"):
        D.load_retrieval("scifact", "test")
    _tiny_beir(folder, [["q1", "d1", "1"]])
    ds = D.load_retrieval("scifact", "test")
    assert ds.queries == {"q1": "q?"} and ds.doc_texts() == ["T x", "y"]
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n{"_id": "d1", "text": "z"}\n')
    with pytest.raises(D.DataFormatError, match="corpus.jsonl, line 2: duplicate _id"):
        D.load_retrieval("scifact", "test")


# ----------------------------------------------------------------------------- hub path (faked)


def _fake_hub(datasets):
    """A stand-in for datasets.load_dataset returning tiny in-memory copies shaped like the hub."""
    Dataset, DatasetDict = datasets.Dataset, datasets.DatasetDict
    sts = {"sentence1": ["A plane.", 'He said "hi".'], "sentence2": ["A jet.", "Hello."],
           "score": [0.8, 0.2]}
    snli = {"premise": ["P1", "P1", "P1", "P2"], "hypothesis": ["E1", "N1", "C1", "X"],
            "label": [0, 1, 2, -1]}
    sick_features = datasets.Features({
        "id": datasets.Value("string"), "sentence_A": datasets.Value("string"),
        "sentence_B": datasets.Value("string"), "relatedness_score": datasets.Value("float32"),
        "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"])})
    sick = {"id": ["1"], "sentence_A": ["a"], "sentence_B": ["b"], "relatedness_score": [4.5],
            "label": [2]}
    copies = {
        ("sentence-transformers/stsb", None): {s: sts for s in ("train", "validation", "test")},
        ("stanfordnlp/snli", None): {s: snli for s in ("train", "validation", "test")},
        ("fancyzhx/ag_news", None): {"train": {"text": ["t0", "t1", "t2"], "label": [0, 1, 3]},
                                     "test": {"text": ["world news", "tech news"], "label": [0, 3]}},
        ("BeIR/scifact", "corpus"): {"corpus": {"_id": ["4983", "5"], "title": ["Title", ""],
                                                "text": ["Abstract.", "Other."]}},
        ("BeIR/scifact", "queries"): {"queries": {"_id": ["1", "3"], "title": ["", ""],
                                                  "text": ["claim one", "claim three"]}},
        ("BeIR/scifact-qrels", None): {"train": {"query-id": [3], "corpus-id": [5], "score": [1]},
                                       "test": {"query-id": [1], "corpus-id": [4983], "score": [1]}},
    }
    calls = []

    def load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        if path == "RobZamp/sick":
            return DatasetDict({s: Dataset.from_dict(sick, features=sick_features)
                                for s in ("train", "validation", "test")})
        return DatasetDict({s: Dataset.from_dict(d) for s, d in copies[(path, name)].items()})

    return load_dataset, calls


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    for var in ("EMBEDLESSONS_DATA", "EMBEDLESSONS_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("EMBEDLESSONS_CACHE", str(tmp_path))
    fake, calls = _fake_hub(datasets)
    monkeypatch.setattr(datasets, "load_dataset", fake)
    return tmp_path, calls


def test_hub_stsb(hub_env):
    cache, calls = hub_env
    sts = D.load_sts("stsb", "test")
    assert sts.scores.tolist() == [4.0, 1.0]  # 0.8 on the hub -> 4.0 here
    assert sts.sentences1 == ["A plane.", 'He said "hi".']
    folder = cache / "data" / "stsb"
    assert {p.name for p in folder.iterdir()} == {"train.tsv", "dev.tsv", "test.tsv", "SOURCE.md"}
    assert (folder / "dev.tsv").read_text().splitlines()[:2] == [
        "sentence1\tsentence2\tscore\tgenre\tsource\tyear", "A plane.\tA jet.\t4.000\t\t\t"]
    assert len(D.load_sts("stsb", "dev")) == 2
    assert calls == [("sentence-transformers/stsb", None)]  # second load read the cache


def test_hub_scifact(hub_env):
    cache, _ = hub_env
    ds = D.load_retrieval("scifact", "test")
    assert ds.qrels == {"1": {"4983": 1}} and ds.queries == {"1": "claim one"}
    assert ds.doc_texts() == ["Title Abstract.", "Other."]
    folder = cache / "data" / "scifact"
    assert json.loads((folder / "corpus.jsonl").read_text().splitlines()[0]) == {
        "_id": "4983", "title": "Title", "text": "Abstract.", "metadata": {}}
    assert (folder / "qrels" / "train.tsv").read_text() == "query-id\tcorpus-id\tscore\n3\t5\t1\n"
    assert D.load_retrieval("scifact", "train").queries == {"3": "claim three"}


def test_hub_snli_sick_ag_news(hub_env):
    cache, _ = hub_env
    pairs = D.load_nli_pairs("snli")
    assert pairs.labels == ["entailment", "neutral", "contradiction"] * 2  # -1 dropped
    assert len(D.load_nli_pairs("snli", "snli_test")) == 3
    t = D.load_triplets("snli", "snli_dev")
    assert (t.anchors, t.positives, t.negatives) == (["P1"], ["E1"], ["C1"])
    sick = D.load_sts("sick", "dev")
    assert sick.scores.tolist() == [4.5]
    assert D.load_nli_pairs("sick", "test").labels == ["contradiction"]
    ag = D.load_classification("ag_news", "test")
    assert ag.texts == ["world news", "tech news"] and ag.labels.tolist() == [0, 3]
    assert len(D.load_classification("ag_news", "train")) == 3
    assert (cache / "data" / "snli_nli" / "triplets.tsv").is_file()


def test_hub_failure_is_reported(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    for var in ("EMBEDLESSONS_DATA", "EMBEDLESSONS_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("EMBEDLESSONS_CACHE", str(tmp_path))

    def offline(*args, **kwargs):
        raise ConnectionError("no route to host huggingface.co")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(D.DatasetNotFoundError) as e:
        D.load_classification("ag_news")
    msg = str(e.value)
    assert "ConnectionError: no route to host huggingface.co" in msg
    assert "fancyzhx/ag_news" in msg and "EMBEDLESSONS_DATA is not set" in msg
    assert not (tmp_path / "data" / "ag_news" / "test.tsv").exists()
    assert not [p for p in (tmp_path / "data").iterdir() if "partial" in p.name]
