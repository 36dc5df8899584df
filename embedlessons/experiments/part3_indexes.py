"""Section 3.4's FAISS index comparison at a size where latency and memory mean something.

For each index type of :mod:`embedlessons.indexing` (Flat, IVF, HNSW, PQ, IVF-PQ) and a few search
settings: recall@10 against exact search (per query), query latency (one query at a time, one thread,
median of 3 passes), memory (``faiss.serialize_index`` size) and build time.

Two vector sets (:func:`index_vectors`):

- ``"scifact"``: the 5,183 SciFact abstracts (Wadden et al. 2020) encoded with all-MiniLM-L6-v2 at 128
  tokens, and the 1,109 distinct claims (train + test) as queries;
- ``"large"``: every distinct English text staged in the course data (SciFact abstract sentences, AG News,
  SNLI, STS-B, SICK: about 105k), 1,000 of them (seed 0) held out as queries. ``vectors="minilm"`` encodes
  them with MiniLM (32 tokens: over an hour on a 2-core CPU, minutes on a GPU); ``vectors="static"`` uses the
  mean of MiniLM's input word-piece embeddings (no transformer layers), computed in seconds: real vectors of
  real text with a clustered geometry, but not MiniLM's sentence embeddings.

:func:`index_comparison` is a recorded experiment (:mod:`embedlessons.recorded`); ``bench/faiss_indexes.py``
prints the same tables.
"""
from __future__ import annotations

import platform
import re
import time

import numpy as np

from ..indexing import (build_index, describe_index, exact_search, faiss_threads, index_memory_bytes, recall_at_k,
                        search, search_latency, set_search_params)

__all__ = ["index_configs", "large_texts", "static_minilm", "index_vectors", "compare_indexes", "index_comparison"]

K = 10


def index_configs(n: int) -> list[tuple[str, str, dict, dict]]:
    """(label, kind, build params, search params) for a collection of ``n`` vectors.

    IVF uses 64 lists below 20k vectors and 1,024 above (about 4 sqrt(n), a common rule of thumb), trained on
    at most 50k vectors."""
    nlist = 64 if n < 20_000 else 1024
    train = {"max_train": 50_000}
    out = [("Flat (exact)", "flat", {}, {})]
    out += [(f"IVF nlist={nlist} nprobe={p}", "ivf", {"nlist": nlist, **train}, {"nprobe": p}) for p in (1, 8, 32)]
    out += [(f"HNSW M=32 efS={ef}", "hnsw", {"M": 32, "ef_construction": 40}, {"ef_search": ef})
            for ef in (16, 64, 128)]
    out += [(f"PQ m={m}", "pq", {"m": m, "nbits": 8, **train}, {}) for m in (48, 96)]
    out += [(f"IVF-PQ nlist={nlist} m=48 nprobe={p}", "ivfpq", {"nlist": nlist, "m": 48, "nbits": 8, **train},
             {"nprobe": p}) for p in (8, 32)]
    return out


def large_texts() -> list[str]:
    """Every distinct English text of the staged course data (about 105k), in a fixed order."""
    from ..data import load_classification, load_nli_pairs, load_retrieval, load_sts

    seen: dict[str, None] = {}

    def add(texts):
        for t in texts:
            t = t.strip()
            if t:
                seen.setdefault(t, None)

    corpus = load_retrieval("scifact", "test").corpus
    add(s for d in corpus.values() for s in re.split(r"(?<=[.!?])\s+", d["text"]))
    for split in ("train", "test"):
        add(load_classification("ag_news", split).texts)
    nli = load_nli_pairs("snli")
    add(nli.premises + nli.hypotheses)
    for name in ("stsb", "sick"):
        for split in ("train", "dev", "test"):
            pairs = load_sts(name, split)
            add(pairs.sentences1 + pairs.sentences2)
    return list(seen)


def static_minilm(model, texts: list[str], max_length: int = 64, batch_size: int = 4096) -> np.ndarray:
    """[N, 384] mean of MiniLM's input word-piece embeddings per text ([CLS]/[SEP]/padding excluded),
    L2-normalised: a stand-in for sentence embeddings that costs seconds instead of an hour."""
    import torch

    table = model.transformer.embeddings.word_embeddings.weight.detach()
    special = torch.tensor(sorted(set(model.tokenizer.all_special_ids)))
    out = np.empty((len(texts), table.shape[1]), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            batch = model.tokenizer(texts[s:s + batch_size], padding=True, truncation=True, max_length=max_length,
                                    return_tensors="pt")
            ids = batch["input_ids"]
            mask = (batch["attention_mask"].bool() & ~torch.isin(ids, special)).unsqueeze(-1).float()
            mean = (table[ids] * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[s:s + len(ids)] = torch.nn.functional.normalize(mean, dim=-1).numpy()
    return out


def index_vectors(collection: str, vectors: str = "minilm", *, model=None, limit: int | None = None,
                  device: str | None = None, progress: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
    """(documents [N, d], queries [Q, d], description) for ``collection`` ``"scifact"`` or ``"large"``.

    ``limit`` keeps the first ``limit`` documents and at most ``limit`` queries (for quick checks)."""
    from ..data import load_retrieval
    from ..models import load_model

    if collection not in ("scifact", "large"):
        raise ValueError(f"unknown collection {collection!r}; choose 'scifact' or 'large'")
    if vectors not in ("minilm", "static"):
        raise ValueError(f"unknown vectors {vectors!r}; choose 'minilm' or 'static'")
    model = model or load_model("all-MiniLM-L6-v2", device=device)
    if collection == "scifact":
        train, test = load_retrieval("scifact", "train"), load_retrieval("scifact", "test")
        docs = test.doc_texts()[:limit]
        queries = list(dict.fromkeys(list(test.queries.values()) + list(train.queries.values())))[:limit]
        if vectors == "static":
            return static_minilm(model, docs, 128), static_minilm(model, queries, 64), \
                f"SciFact: {len(docs):,} abstracts, static MiniLM word-piece means"
        return (model.encode(docs, max_length=128, batch_size=32, progress=progress),
                model.encode(queries, max_length=64, batch_size=64, progress=progress),
                f"SciFact: {len(docs):,} abstracts, MiniLM at 128 tokens")
    texts = large_texts()
    held_out = np.zeros(len(texts), dtype=bool)
    held_out[np.random.default_rng(0).choice(len(texts), 1000, replace=False)] = True
    chosen = [t for t, h in zip(texts, held_out) if not h][:limit] + [t for t, h in zip(texts, held_out) if h][:limit]
    n_docs = len(chosen) - min(1000, limit or 1000)
    if vectors == "static":
        all_vectors, how = static_minilm(model, chosen), "static MiniLM word-piece means"
    else:
        all_vectors, how = model.encode(chosen, max_length=32, batch_size=64, progress=progress), "MiniLM at 32 tokens"
    return all_vectors[:n_docs], all_vectors[n_docs:], f"{n_docs:,} staged English texts ({how})"


def compare_indexes(docs: np.ndarray, queries: np.ndarray, configs=None, latency_queries: int = 100,
                    progress: bool = True) -> tuple[list[dict], dict[str, dict[str, float]]]:
    """Every index of ``configs`` (default :func:`index_configs`) on one vector set.

    Returns (rows, per_query): one row per setting (recall@10, ms/query, memory MB, build s, speed and memory
    relative to Flat), and each setting's recall@10 per query (query number as a string -> recall)."""
    configs = configs or index_configs(len(docs))
    _, exact = exact_search(queries, docs, K)
    rows, per_query, built = [], {}, {}
    with faiss_threads(1):
        for label, kind, build, params in configs:
            key = repr((kind, sorted(build.items())))
            if key not in built:
                start = time.perf_counter()
                built[key] = (build_index(kind, docs, **build), time.perf_counter() - start)
            index, build_s = built[key]
            set_search_params(index, **params)
            _, ids = search(index, queries, K)
            recalls = recall_at_k(ids, exact, per_query=True)
            per_query[label] = {str(i): float(r) for i, r in enumerate(recalls)}
            rows.append({"index": label, "recall@10": float(recalls.mean()),
                         "ms/query": 1000 * search_latency(index, queries[:latency_queries], K, repeats=3),
                         "memory MB": index_memory_bytes(index) / 2**20, "build s": round(build_s, 2),
                         "describe": describe_index(index)})
            if progress:
                print(f"  {label}: recall@10 {rows[-1]['recall@10']:.3f}, {rows[-1]['ms/query']:.3f} ms", flush=True)
    flat = rows[0]
    for r in rows:
        r["x faster than Flat"] = flat["ms/query"] / r["ms/query"]
        r["memory vs Flat"] = r["memory MB"] / flat["memory MB"]
    return rows, per_query


def index_comparison(collection: str = "scifact", vectors: str = "minilm", limit: int | None = None,
                     device: str | None = None, progress: bool = True) -> dict:
    """The recorded experiment: :func:`compare_indexes` on :func:`index_vectors` ``(collection, vectors)``.

    Returns a JSON-ready dict with ``settings``, ``indexes`` (the rows) and ``per_query`` (recall@10 per query
    per index setting)."""
    import torch

    docs, queries, how = index_vectors(collection, vectors, limit=limit, device=device, progress=progress)
    configs = index_configs(len(docs))
    if limit is not None:      # quick checks: indexes that need fewer training points
        configs = [(label, kind, {**b, **({"nlist": 32} if "nlist" in b else {}), **({"m": 8} if "m" in b else {})},
                    p) for label, kind, b, p in configs]
    rows, per_query = compare_indexes(docs, queries, configs, progress=progress)
    return {"settings": {"collection": collection, "vectors": vectors, "limit": limit, "documents": len(docs),
                         "queries": len(queries), "dim": int(docs.shape[1]), "k": K, "faiss_threads": 1,
                         "torch_threads": torch.get_num_threads(), "description": how,
                         "machine": platform.processor() or platform.machine()},
            "indexes": rows, "per_query": per_query}
