"""Speed of our vectorised BM25 vs rank-bm25 on SciFact (300 test queries, 5,183 docs).

    python bench/bm25_speed.py

Data: $EMBEDLESSONS_DATA/scifact, else ../shared/data/scifact next to the repository.
Both indexes get the same tokens (lowercase word tokens of title + " " + abstract).
rank-bm25 scores one query at a time with ``get_scores``; ours scores all queries with
one sparse product (``get_scores_batch``). The script checks that the scores agree and
that the top-10 documents of every query are identical, then prints the timings.
Not run in CI.
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from rank_bm25 import BM25Okapi

from embedlessons.lexical import BM25, tokenize


def data_dir() -> Path:
    root = os.environ.get("EMBEDLESSONS_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
    return Path(root) / "scifact"


def load_scifact(path: Path):
    docs = [json.loads(line) for line in open(path / "corpus.jsonl", encoding="utf-8")]
    queries = {(q := json.loads(line))["_id"]: q["text"] for line in open(path / "queries.jsonl", encoding="utf-8")}
    test_qids = []
    for line in list(open(path / "qrels" / "test.tsv", encoding="utf-8"))[1:]:
        q = line.split("\t")[0]
        if q not in test_qids:
            test_qids.append(q)
    return [d["title"] + " " + d["text"] for d in docs], [queries[q] for q in test_qids]


def timed(fn, repeat: int = 1):
    """(result of the last call, best wall time in seconds over `repeat` calls)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def main() -> int:
    path = data_dir()
    if not (path / "corpus.jsonl").exists():
        print(f"SciFact not found under {path}; set EMBEDLESSONS_DATA", file=sys.stderr)
        return 1
    texts, queries = load_scifact(path)
    corpus, _ = timed(lambda: [tokenize(t) for t in texts])
    query_tokens = [tokenize(q) for q in queries]
    print(f"SciFact: {len(corpus)} docs, {sum(map(len, corpus))} tokens, {len(query_tokens)} test queries")

    ref, t_build_ref = timed(lambda: BM25Okapi(corpus))
    ours, t_build_ours = timed(lambda: BM25(corpus), repeat=3)
    ref_scores, t_ref = timed(lambda: np.array([ref.get_scores(q) for q in query_tokens]))
    our_scores, t_ours = timed(lambda: ours.get_scores_batch(query_tokens), repeat=5)
    (top_idx, _), t_search = timed(lambda: ours.search(query_tokens, top_k=10), repeat=5)

    # correctness: scores and top-10 (rank-bm25 order made deterministic: score desc, then index asc)
    rel_err = np.max(np.abs(our_scores - ref_scores) / np.maximum(np.abs(ref_scores), 1e-300))
    ref_top = np.argsort(-ref_scores, axis=1, kind="stable")[:, :10]
    same_top10 = int(np.sum(np.all(ref_top == top_idx, axis=1)))

    rows = [
        ("index build", t_build_ref, t_build_ours),
        (f"score {len(query_tokens)} queries", t_ref, t_ours),
        ("per query (ms)", 1e3 * t_ref / len(query_tokens), 1e3 * t_ours / len(query_tokens)),
    ]
    print(f"\n{'':24s} {'rank-bm25':>12s} {'ours':>12s} {'ratio':>10s}")
    for name, a, b in rows:
        unit = "" if "ms" in name else " s"
        print(f"{name:24s} {a:10.4f}{unit:2s} {b:10.4f}{unit:2s} {a / b:9.1f}x")
    print(f"{'search top-10 (ours)':24s} {'':12s} {t_search:10.4f} s")
    print(f"\nmax relative score difference: {rel_err:.2e}")
    print(f"queries with identical top-10: {same_top10} / {len(query_tokens)}")
    print(f"speed-up of scoring: {t_ref / t_ours:.0f}x (goal >= 100x)")
    ok = rel_err < 1e-9 and same_top10 == len(query_tokens)
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
