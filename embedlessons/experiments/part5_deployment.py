"""Recipes of section 5.5 (deployment): real texts of every length, a small collection to serve, the service's
answers to bad requests, and the load test's comparison with its interval.

- :func:`texts_of_every_length`: SciFact claims and abstracts from the shortest to past the token limit, for
  checking an export against PyTorch on what it will really see.
- :func:`serving_collection`: a BEIR folder of a few test claims, their abstracts and distractors, small
  enough to index in seconds when the service starts.
- :data:`BAD_REQUESTS` and :func:`bad_request_tour`: malformed requests sent to a running service, each
  with the status code and the words the reply must have.
- :func:`latency_ratio`: how much faster one load-test run served its requests than another, as a ratio
  of mean latencies with a bootstrap interval (in a closed loop, throughput = clients / mean latency).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["texts_of_every_length", "serving_collection", "BAD_REQUESTS", "bad_request_tour", "latency_ratio",
           "load_test_rows"]


def texts_of_every_length(tokenizer, n: int = 48, max_length: int = 256, dataset: str = "scifact") -> list[str]:
    """``n`` real texts spread over token lengths: claims (short) and abstracts (long), sorted by length.

    The test claims and the test corpus's abstracts (title + text) are ranked by their length in tokens
    (untruncated); ``n`` texts are taken at evenly spaced ranks, so the shortest and the longest are in
    (the longest are cut at ``max_length`` by the encoder: truncation is part of what is checked).

    Returns the texts, shortest first.
    """
    from ..data import load_retrieval

    if not isinstance(n, int) or n < 2:
        raise ValueError(f"expected n >= 2 texts, got {n!r}")
    ds = load_retrieval(dataset, "test")
    pool = sorted(set(ds.queries.values()) | set(ds.doc_texts()))
    ids = tokenizer(pool, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    lengths = [len(row) for row in ids]
    order = np.argsort(lengths, kind="stable")
    picks = np.unique(np.linspace(0, len(pool) - 1, n).round().astype(int))
    return [pool[order[i]] for i in picks]


def serving_collection(folder: str | os.PathLike, n_queries: int = 50, n_docs: int = 300, seed: int = 0,
                       dataset: str = "scifact") -> Path:
    """Write a small BEIR folder: the first ``n_queries`` test claims, every abstract judged for them, and
    random other abstracts up to ``n_docs`` documents (seeded). Returns the folder (``--corpus`` of the service)."""
    from ..data import RetrievalDataset, load_retrieval
    from ..own_data import save_beir_folder

    ds = load_retrieval(dataset, "test")
    qids = list(ds.queries)[:n_queries]
    few = RetrievalDataset(ds.name, ds.split, ds.corpus, {q: ds.queries[q] for q in qids},
                           {q: {d: r for d, r in ds.qrels[q].items() if d in ds.corpus} for q in qids})
    judged = {d for rel in few.qrels.values() for d in rel}
    if len(judged) > n_docs:
        raise ValueError(f"the {n_queries} claims judge {len(judged)} documents: expected n_docs >= {len(judged)}")
    return save_beir_folder(folder, {"test": few.subset(n_docs - len(judged), seed)})


#: (what is wrong, endpoint, JSON body, expected status, words the reply must contain). ``{max_texts}``,
#: ``{max_chars}``, ``{max_k}`` and ``{max_body_bytes}`` in a body are the service's limits (filled in by
#: :func:`bad_request_tour`).
BAD_REQUESTS: tuple[tuple[str, str, object, int, str], ...] = (
    ("no texts", "/embed", {"texts": []}, 422, "texts"),
    ("a string, not a list", "/embed", {"texts": "one text"}, 422, "texts"),
    ("numbers, not strings", "/embed", {"texts": [1, 2]}, 422, "texts"),
    ("unknown field", "/embed", {"texts": ["a"], "colour": "red"}, 422, "colour"),
    ("too many texts", "/embed", "too_many_texts", 413, "texts"),
    ("a text too long", "/embed", "too_long_text", 413, "characters"),
    ("k = 0", "/search", {"query": "vitamin D", "k": 0}, 422, "k"),
    ("k too large", "/search", "too_large_k", 413, "k"),
    ("no query", "/search", {"k": 3}, 422, "query"),
    ("body too large", "/embed", "too_large_body", 413, "larger than the limit"),
)


def _body(spec, limits) -> object:
    if not isinstance(spec, str):
        return spec
    return {"too_many_texts": {"texts": ["a"] * (limits.max_texts + 1)},
            "too_long_text": {"texts": ["x" * (limits.max_chars + 1)]},
            "too_large_k": {"query": "vitamin D", "k": limits.max_k + 1},
            "too_large_body": {"texts": ["y" * 1000] * (limits.max_body_bytes // 1000 + 1)}}[spec]


def bad_request_tour(url: str, limits=None, requests: Sequence[tuple] = BAD_REQUESTS) -> list[dict]:
    """Send each bad request to the service at ``url``; one row per request with the status and the error.

    ``limits``: the service's :class:`~embedlessons.serve.ServiceLimits` (default: the command's defaults).
    Each row: ``{"request", "endpoint", "status", "expected", "ok", "error"}``; ``ok`` is True when the status
    is the expected one and the reply is JSON whose text holds the expected words.
    """
    import httpx

    from ..serve import ServiceLimits

    limits = limits or ServiceLimits()
    rows = []
    with httpx.Client(base_url=url.rstrip("/"), timeout=30.0, trust_env=False) as client:
        for what, endpoint, spec, expected, words in requests:
            reply = client.post(endpoint, json=_body(spec, limits))
            try:
                body = reply.json()
            except ValueError:
                body = {"error": f"not JSON: {reply.text[:80]}"}
            detail = body.get("detail")
            message = body.get("error", "")
            if isinstance(detail, list) and detail:
                message = f"{detail[0].get('field')}: {detail[0].get('problem')}"
            rows.append({"request": what, "endpoint": endpoint, "status": reply.status_code, "expected": expected,
                         "ok": reply.status_code == expected and words in reply.text, "error": message[:60]})
    return rows


def latency_ratio(latencies_a: Mapping[str, float] | Sequence[float], latencies_b: Mapping[str, float] |
                  Sequence[float], n_resamples: int = 10_000, seed: int = 0, confidence: float = 0.95) -> dict:
    """mean(latency of b) / mean(latency of a), with a percentile-bootstrap interval.

    In a closed-loop load test with the same number of clients, throughput is clients / mean latency, so this
    ratio is how many times more requests per second run ``a`` served than run ``b``. The two runs are
    independent samples (different requests were in flight together), so each is resampled on its own.

    Args:
        latencies_a, latencies_b: per-request latencies (a ``{request id: ms}`` mapping or a list).
        n_resamples, seed, confidence: of the bootstrap.

    Returns ``{"ratio", "ci_low", "ci_high"}``.
    """
    a = np.asarray(list(latencies_a.values()) if isinstance(latencies_a, Mapping) else list(latencies_a), float)
    b = np.asarray(list(latencies_b.values()) if isinstance(latencies_b, Mapping) else list(latencies_b), float)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"expected at least 2 latencies in each run, got {len(a)} and {len(b)}")
    if not 0 < confidence < 1:
        raise ValueError(f"expected 0 < confidence < 1, got {confidence}")
    rng = np.random.default_rng(seed)
    mean_a = a[rng.integers(0, len(a), (n_resamples, len(a)))].mean(1)
    mean_b = b[rng.integers(0, len(b), (n_resamples, len(b)))].mean(1)
    ratios = mean_b / mean_a
    tail = (1 - confidence) / 2
    return {"ratio": float(b.mean() / a.mean()), "ci_low": float(np.quantile(ratios, tail)),
            "ci_high": float(np.quantile(ratios, 1 - tail))}


def load_test_rows(rows: Sequence[Mapping]) -> list[dict]:
    """The load-test rows (:func:`~embedlessons.loadtest.load_test`) as a short table for printing."""
    return [{"batching": "on" if r["mode"] == "batched" else "off", "clients": r["concurrency"],
             "req/s": round(r["throughput_rps"], 1), "p50 ms": round(r["p50_ms"], 1), "p99 ms": round(r["p99_ms"], 1),
             "texts/pass": round(r["texts_per_forward_pass"], 1) if r.get("texts_per_forward_pass") else None,
             "errors": r["errors"]} for r in rows]
