"""The embedding service (embedlessons.serve), started as a real server by its documented command on loopback
with a tiny random BERT and a small real SciFact folder: every endpoint, every kind of bad input, and the
batching of concurrent requests into fewer forward passes."""
import asyncio
import json
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from embedlessons.data import load_retrieval
from embedlessons.models import small_bert


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("svc")
    test = load_retrieval("scifact", "test")
    keep = test.doc_ids[:40]
    (root / "docs" / "qrels").mkdir(parents=True)
    (root / "docs" / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, **test.corpus[d]}) + "\n" for d in keep))
    (root / "docs" / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "a claim"}) + "\n")
    (root / "docs" / "qrels" / "test.tsv").write_text(f"query-id\tcorpus-id\tscore\nq\t{keep[0]}\t1\n")
    model = small_bert(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, seed=0).save(root / "tiny")
    servers = {}
    for name, extra in (("batched", ["--batch-window-ms", "50"]), ("plain", ["--no-batching"])):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "embedlessons.serve", "--model", str(model), "--corpus",
                                 str(root / "docs"), "--port", str(port), "--max-texts", "8", "--max-chars", "300",
                                 "--max-k", "20", "--max-body-bytes", "20000", "--max-length", "32", *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        servers[name] = (proc, f"http://127.0.0.1:{port}")
    for name, (proc, url) in servers.items():
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.1)
    yield {k: v[1] for k, v in servers.items()}, keep
    for proc, _ in servers.values():
        proc.terminate()
        proc.wait(timeout=10)


def test_health_embed_and_search(service):
    urls, keep = service
    url = urls["batched"]
    health = httpx.get(url + "/health").json()
    assert health["status"] == "ok" and health["docs"] == 40 and health["dim"] == 32
    r = httpx.post(url + "/embed", json={"texts": ["a cell divides", "a star explodes"]})
    assert r.status_code == 200
    vectors = np.array(r.json()["embeddings"])
    assert vectors.shape == (2, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    raw = np.array(httpx.post(url + "/embed", json={"texts": ["a cell divides"], "normalize": False}).json()["embeddings"])
    assert np.allclose(raw[0] / np.linalg.norm(raw[0]), vectors[0], atol=1e-5)
    results = httpx.post(url + "/search", json={"query": "a cell divides", "k": 5}).json()["results"]
    assert len(results) == 5 and all(r["id"] in keep for r in results)
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)


@pytest.mark.parametrize("path, body, status, words", [
    ("/embed", {"texts": []}, 422, "texts"),
    ("/embed", {"texts": "just a string"}, 422, "texts"),
    ("/embed", {"texts": [1, 2]}, 422, "texts"),
    ("/embed", {"texts": ["a"], "colour": "red"}, 422, "colour"),
    ("/embed", {"texts": ["a"] * 9}, 413, "texts"),
    ("/embed", {"texts": ["x" * 301]}, 413, "longer than 300 characters"),
    ("/search", {"query": "a", "k": 0}, 422, "k"),
    ("/search", {"query": "a", "k": 21}, 413, "k"),
    ("/search", {"k": 3}, 422, "query"),
    ("/embed", {"texts": ["y" * 250] * 8 * 12}, 413, "larger than the limit of 20000"),
])
def test_bad_input_gets_a_json_error_and_the_server_lives_on(service, path, body, status, words):
    urls, _ = service
    r = httpx.post(urls["batched"] + path, json=body)
    assert r.status_code == status, r.text
    assert words in json.dumps(r.json())
    assert httpx.get(urls["batched"] + "/health").status_code == 200


def test_the_bad_request_tour_of_section_5_5(service):
    from embedlessons.experiments.part5_deployment import BAD_REQUESTS, bad_request_tour
    from embedlessons.serve import ServiceLimits

    urls, _ = service
    rows = bad_request_tour(urls["plain"], ServiceLimits(max_texts=8, max_chars=300, max_k=20, max_body_bytes=20000))
    assert len(rows) == len(BAD_REQUESTS) and all(r["ok"] for r in rows), [r for r in rows if not r["ok"]]
    assert {r["status"] for r in rows} == {413, 422} and all(r["error"] for r in rows)
    wrong = bad_request_tour(urls["plain"], requests=[("fine request", "/embed", {"texts": ["a"]}, 422, "texts")])
    assert not wrong[0]["ok"] and wrong[0]["status"] == 200          # the tour can fail
    assert httpx.get(urls["plain"] + "/health").status_code == 200


def test_not_json_at_all_is_a_422(service):
    urls, _ = service
    r = httpx.post(urls["batched"] + "/embed", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()


def test_concurrent_requests_share_forward_passes(service):
    urls, _ = service

    async def burst(url, n=16):
        async with httpx.AsyncClient() as client:
            before = (await client.get(url + "/health")).json()
            replies = await asyncio.gather(*[client.post(url + "/embed", json={"texts": [f"text number {i}"]})
                                             for i in range(n)])
            after = (await client.get(url + "/health")).json()
        assert all(r.status_code == 200 for r in replies)
        return after["forward_passes"] - before["forward_passes"], after["requests"] - before["requests"]

    passes, requests = asyncio.run(burst(urls["batched"]))
    assert requests == 16 and passes < 8                      # batched: several requests per forward pass
    passes, requests = asyncio.run(burst(urls["plain"]))
    assert requests == 16 and passes == 16                    # without batching: one pass per request


def test_batcher_never_exceeds_max_batch_nor_splits_a_request():
    from embedlessons.serve import _Batcher, _Stats

    calls = []

    def encode(texts):
        calls.append(list(texts))
        return np.arange(len(texts), dtype=np.float32)[:, None] + 0.0

    sizes = [3, 1, 5, 2, 2, 7, 12, 1]

    async def scenario():
        batcher = _Batcher(encode, window_s=0.05, max_batch=8, stats=_Stats())
        batcher.task = asyncio.create_task(batcher.run())
        requests = [[f"r{r} t{i}" for i in range(n)] for r, n in enumerate(sizes)]
        out = await asyncio.gather(*(batcher.submit(r) for r in requests))   # all arrive within one window
        batcher.task.cancel()
        return requests, out

    requests, out = asyncio.run(scenario())
    assert [len(o) for o in out] == sizes                                   # each request gets its own rows
    owner = {t: r for r, texts in enumerate(requests) for t in texts}
    for call in calls:
        ids = [owner[t] for t in call]
        assert len(call) <= 8 or len(set(ids)) == 1                        # over the limit only when alone
        assert all(ids.count(r) == sizes[r] for r in set(ids))             # no request split
    assert [owner[t] for c in calls for t in c] == sorted(owner[t] for c in calls for t in c)   # arrival order
    assert len(calls) < len(sizes)                                          # and it still batches
