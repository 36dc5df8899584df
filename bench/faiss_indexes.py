"""FAISS index types compared: recall@10 against exact search, query latency, memory, build time.

    python bench/faiss_indexes.py                 # SciFact + the ~105k-text set (static MiniLM vectors)
    python bench/faiss_indexes.py --large minilm  # the large set with full MiniLM (slow the first time)
    python bench/faiss_indexes.py --skip-large    # SciFact only

Two vector sets:

1. **SciFact** (Wadden et al. 2020, BEIR): the 5,183 abstracts (title + abstract, 128 tokens, the CPU
   profile's length) and the 1,109 claims (64 tokens) as queries, encoded with all-MiniLM-L6-v2
   (``model.encode``, so the on-disk embedding cache makes reruns free; the first run encodes for a
   few minutes on 2 cores).
2. **Large**: every distinct English text staged in the course data: SciFact abstracts split into
   sentences, AG News (train + test), SNLI (premises + hypotheses), STS-B and SICK (all splits): about
   105k texts, of which 1,000 random ones (seed 0) are held out as queries and the rest indexed.
   Encoding 105k texts with the full MiniLM takes over an hour on 2 busy cores, so by default this set
   uses *static* MiniLM vectors: the mean of MiniLM's input word-piece embeddings (no transformer
   layers; ``[CLS]``/``[SEP]`` excluded), L2-normalised, 384-d, computed in seconds. They are real
   vectors of real text with a realistic, clustered geometry, but not MiniLM's sentence embeddings;
   ``--large minilm`` uses those instead (32 tokens, cached).

Recall@10 is |approximate top-10 ∩ exact top-10| / 10 against ``IndexFlatIP``'s results (inner
product = cosine: the vectors are normalised). Latency: one query at a time, one thread, median of 3
passes over 100 queries. Memory: ``faiss.serialize_index`` size. FAISS runs single-threaded here
(``faiss_threads(1)``): on 2 shared cores, OpenMP's default is several times slower. Built indexes
are cached under ``cache_dir()/faiss/`` (their build time with them), so a rerun takes seconds.
Not run in CI.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from embedlessons.book import show_table  # noqa: E402
from embedlessons.data import cache_dir, load_classification, load_nli_pairs, load_retrieval, load_sts  # noqa: E402
from embedlessons.indexing import (build_index, describe_index, exact_search, faiss_threads,  # noqa: E402
                                   index_memory_bytes, recall_at_k, search, search_latency)

K = 10
N_LATENCY_QUERIES = 100


def configs(n: int) -> list[tuple[str, str, dict, dict]]:
    """(label, kind, build params, search params) for a collection of n vectors.

    IVF uses nlist ~ 4 sqrt(n) (a common rule of thumb), trained on at most 50k vectors."""
    nlist = 64 if n < 20_000 else 1024
    train = {"max_train": 50_000}
    out = [("Flat (exact)", "flat", {}, {})]
    for nprobe in (1, 8, 32):
        out.append((f"IVF nlist={nlist} nprobe={nprobe}", "ivf", {"nlist": nlist, **train}, {"nprobe": nprobe}))
    for ef in (16, 64, 128):
        out.append((f"HNSW M=32 efC=40 efS={ef}", "hnsw", {"M": 32, "ef_construction": 40}, {"ef_search": ef}))
    for m in (48, 96):
        out.append((f"PQ m={m} nbits=8", "pq", {"m": m, "nbits": 8, **train}, {}))
    for nprobe in (8, 32):
        out.append((f"IVF-PQ nlist={nlist} m=48 nprobe={nprobe}", "ivfpq",
                    {"nlist": nlist, "m": 48, "nbits": 8, **train}, {"nprobe": nprobe}))
    return out


def _hash(*parts) -> str:
    h = hashlib.blake2b(digest_size=12)
    for p in parts:
        h.update(p.tobytes() if isinstance(p, np.ndarray) else json.dumps(p, sort_keys=True).encode())
    return h.hexdigest()


def cached_index(kind: str, vectors: np.ndarray, params: dict):
    """Build (or load from the cache) an index; returns (index, build seconds when it was built)."""
    import faiss

    folder = cache_dir() / "faiss"
    folder.mkdir(parents=True, exist_ok=True)
    key = _hash(vectors, kind, params)
    path, meta = folder / f"{kind}-{key}.index", folder / f"{kind}-{key}.json"
    if path.exists() and meta.exists():
        return faiss.read_index(str(path)), json.loads(meta.read_text())["build_s"]
    start = time.perf_counter()
    index = build_index(kind, vectors, **params)
    seconds = time.perf_counter() - start
    faiss.write_index(index, str(path))
    meta.write_text(json.dumps({"build_s": seconds, "describe": describe_index(index)}))
    return index, seconds


def apply_search_params(index, params: dict) -> None:
    import faiss

    if "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = params["nprobe"]
    if "ef_search" in params:
        index.hnsw.efSearch = params["ef_search"]


def run(name: str, docs: np.ndarray, queries: np.ndarray) -> list[dict]:
    print(f"\n{name}: {len(docs):,} vectors of dim {docs.shape[1]}, {len(queries):,} queries", flush=True)
    _, exact = exact_search(queries, docs, K)
    rows = []
    built: dict[str, tuple] = {}
    for label, kind, build, params in configs(len(docs)):
        key = json.dumps([kind, build], sort_keys=True)
        if key not in built:
            built[key] = cached_index(kind, docs, build)
        index, build_s = built[key]
        apply_search_params(index, params)
        _, ids = search(index, queries, K)
        rows.append({"index": label,
                     "recall@10": recall_at_k(ids, exact),
                     "ms/query": 1000 * search_latency(index, queries[:N_LATENCY_QUERIES], K, repeats=3),
                     "memory MB": index_memory_bytes(index) / 2**20,
                     "build s": round(build_s, 1)})
        print(f"  {label}: recall@10 {rows[-1]['recall@10']:.3f}", flush=True)
    flat = rows[0]
    for r in rows:
        r["x faster than Flat"] = flat["ms/query"] / r["ms/query"]
        r["memory vs Flat"] = r["memory MB"] / flat["memory MB"]
    return rows


# ----------------------------------------------------------------------------- the two vector sets

def scifact_vectors(model) -> tuple[np.ndarray, np.ndarray]:
    train, test = load_retrieval("scifact", "train"), load_retrieval("scifact", "test")
    queries = list(dict.fromkeys(list(test.queries.values()) + list(train.queries.values())))
    docs = model.encode(test.doc_texts(), max_length=128, batch_size=32, desc="SciFact corpus")
    return docs, model.encode(queries, max_length=64, batch_size=64, desc="SciFact claims")


def large_texts() -> list[str]:
    """Every distinct English text of the staged course data (about 105k), in a fixed order."""
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
    """Mean of MiniLM's input word-piece embeddings per text ([CLS]/[SEP]/padding excluded), L2-normalised."""
    import torch

    path = cache_dir() / "faiss" / f"static-{_hash(texts, model.fingerprint(), max_length)}.npy"
    if path.exists():
        return np.load(path)
    table = model.transformer.embeddings.word_embeddings.weight.detach()
    special = torch.tensor(sorted(set(model.tokenizer.all_special_ids)))
    out = np.empty((len(texts), table.shape[1]), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            batch = model.tokenizer(texts[s:s + batch_size], padding=True, truncation=True,
                                    max_length=max_length, return_tensors="pt")
            ids = batch["input_ids"]
            mask = (batch["attention_mask"].bool() & ~torch.isin(ids, special)).unsqueeze(-1).float()
            mean = (table[ids] * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[s:s + len(ids)] = torch.nn.functional.normalize(mean, dim=-1).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def large_vectors(model, mode: str) -> tuple[np.ndarray, np.ndarray, str]:
    texts = large_texts()
    if mode == "static":
        vectors, how = static_minilm(model, texts), "static MiniLM word-piece means"
    else:
        vectors, how = model.encode(texts, max_length=32, batch_size=64, desc="large set"), "MiniLM, 32 tokens"
    held_out = np.zeros(len(texts), dtype=bool)
    held_out[np.random.default_rng(0).choice(len(texts), 1000, replace=False)] = True
    return vectors[~held_out], vectors[held_out], f"{len(texts):,} staged English texts ({how})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--large", choices=("static", "minilm"), default="static")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-scifact", action="store_true")
    args = parser.parse_args()

    from embedlessons.models import load_model

    model = load_model()
    tables = []
    start = time.perf_counter()
    with faiss_threads(1):
        if not args.skip_scifact:
            docs, queries = scifact_vectors(model)
            tables.append(("SciFact corpus, MiniLM (128 tokens)", run("SciFact", docs, queries)))
        if not args.skip_large:
            docs, queries, how = large_vectors(model, args.large)
            tables.append((how, run("Large", docs, queries)))
    for title, rows in tables:
        print(f"\n== {title}: recall@10 vs exact search, latency one query at a time on one thread ==")
        print(show_table(rows, floatfmt=".3f"))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
