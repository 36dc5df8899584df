"""Recipes of section 5.5 (embedlessons.experiments.part5_deployment): texts of every length, the collection the
service indexes, the latency ratio's interval and the load-test table (the bad-request tour is tested against a
real server in test_serve.py)."""
import numpy as np
import pytest

from embedlessons.data import load_retrieval
from embedlessons.experiments.part5_deployment import (latency_ratio, load_test_rows, serving_collection,
                                                       texts_of_every_length)
from embedlessons.models import small_bert
from embedlessons.own_data import load_retrieval_folder


def test_texts_of_every_length_span_short_claims_to_truncated_abstracts():
    tokenizer = small_bert(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64).tokenizer
    texts = texts_of_every_length(tokenizer, n=20, max_length=256)
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    assert len(texts) == 20 and lengths == sorted(lengths)
    assert lengths[0] < 12 and lengths[-1] > 256                    # a few-word claim ... past the token limit
    ds = load_retrieval("scifact", "test")
    assert set(texts) <= set(ds.queries.values()) | set(ds.doc_texts())   # real texts, none made up
    with pytest.raises(ValueError, match="n >= 2"):
        texts_of_every_length(tokenizer, n=1)


def test_serving_collection_keeps_every_judged_abstract(tmp_path):
    folder = serving_collection(tmp_path / "c", n_queries=10, n_docs=60, seed=0)
    small = load_retrieval_folder(folder)
    full = load_retrieval("scifact", "test")
    assert list(small.queries) == list(full.queries)[:10] and len(small.corpus) == 60
    assert all(d in small.corpus for rel in small.qrels.values() for d in rel)
    assert serving_collection(tmp_path / "d", n_queries=10, n_docs=60, seed=0).joinpath("corpus.jsonl").read_text() \
        == folder.joinpath("corpus.jsonl").read_text()                   # seeded
    with pytest.raises(ValueError, match="expected n_docs >="):
        serving_collection(tmp_path / "e", n_queries=10, n_docs=3)


def test_latency_ratio_and_its_interval():
    rng = np.random.default_rng(0)
    fast = {f"{i:05d}": v for i, v in enumerate(rng.normal(10, 1, 400))}
    slow = list(rng.normal(20, 2, 400))
    r = latency_ratio(fast, slow)
    assert r["ratio"] == pytest.approx(np.mean(slow) / np.mean(list(fast.values())))
    assert 1.9 < r["ci_low"] < r["ratio"] < r["ci_high"] < 2.1
    same = latency_ratio(slow[:200], slow[200:])
    assert same["ci_low"] < 1 < same["ci_high"]                           # no difference: the interval holds 1
    with pytest.raises(ValueError, match="at least 2 latencies"):
        latency_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="confidence"):
        latency_ratio([1.0, 2.0], [1.0, 2.0], confidence=95)


def test_load_test_rows():
    rows = [{"mode": "batched", "concurrency": 4, "throughput_rps": 12.34, "p50_ms": 5.55, "p99_ms": 9.99,
             "texts_per_forward_pass": 3.21, "errors": 0},
            {"mode": "plain", "concurrency": 4, "throughput_rps": 10.0, "p50_ms": 6.0, "p99_ms": 11.0,
             "texts_per_forward_pass": None, "errors": 1}]
    table = load_test_rows(rows)
    assert table[0] == {"batching": "on", "clients": 4, "req/s": 12.3, "p50 ms": 5.5, "p99 ms": 10.0,
                        "texts/pass": 3.2, "errors": 0}
    assert table[1]["batching"] == "off" and table[1]["texts/pass"] is None and table[1]["errors"] == 1
