"""The book's main job on your own data, as one command: fine-tune a bi-encoder on a retrieval collection,
evaluate it against BM25 and the starting model, and save a model that sentence-transformers loads.

    python -m embedlessons.pipeline --data path/to/collection --out runs/mine
    python -m embedlessons.pipeline --help

``--data`` is a BEIR-layout folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``, see
:mod:`embedlessons.own_data`) or one of the book's dataset names (``scifact``). Training uses the
``--train-split`` judgements (queries that also occur in the test split, by text, are left out), in-batch
InfoNCE (section 2.3) with optional BM25 hard negatives (section 3.2); evaluation is NDCG@10, MRR@10 and
Recall@100 on ``--test-split``, with a paired randomisation test and bootstrap interval of the fine-tune
against the starting model (section 3.3). ``--out`` receives ``model/`` (load it with ``SentenceTransformer``
or :func:`~embedlessons.models.load_model`), ``summary.json`` (settings, scores, per-query NDCG@10, the wall time
of each stage) and the trainer's ``history.json``.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["run_pipeline", "main"]


def _evaluate(qrels, run) -> dict[str, float]:
    from .evaluation import mrr_at_k, ndcg_at_k, recall_at_k

    return {"ndcg@10": ndcg_at_k(qrels, run, k=10), "mrr@10": mrr_at_k(qrels, run, k=10),
            "recall@100": recall_at_k(qrels, run, k=100)}


def _dense(model, ds, query_max_length: int, doc_max_length: int, progress: bool):
    from .retrieval import dense_run

    q = model.encode(list(ds.queries.values()), max_length=query_max_length, progress=progress, desc="queries")
    d = model.encode(ds.doc_texts(), max_length=doc_max_length, progress=progress, desc="documents")
    return dense_run(q, d, ds, top_k=100)


def run_pipeline(data: str, out: str | Path, model: str = "all-MiniLM-L6-v2", train_split: str = "train",
                 test_split: str = "test", steps: int = 100, batch_size: int = 32, lr: float = 2e-5,
                 temperature: float = 0.05, query_max_length: int = 64, doc_max_length: int = 256,
                 hard_negatives: str = "none", seed: int = 0, progress: bool = True) -> dict:
    """Fine-tune ``model`` on ``data``'s training judgements, evaluate, save; returns the summary dict."""
    from .data import load_retrieval
    from .experiments.part3 import paired_test
    from .lexical import bm25_run
    from .losses import in_batch_info_nce
    from .models import load_model
    from .training import PairDataset, TrainConfig, TripletDataset, train

    if hard_negatives not in ("none", "bm25"):
        raise ValueError(f"hard_negatives must be 'none' or 'bm25', got {hard_negatives!r}")
    out = Path(out)
    started = time.perf_counter()
    stage_seconds: dict[str, float] = {}
    clock = [started]

    def lap(stage: str) -> None:           # wall time since the previous stage ended
        now = time.perf_counter()
        stage_seconds[stage] = round(now - clock[0], 2)
        clock[0] = now

    train_ds, test_ds = load_retrieval(data, train_split), load_retrieval(data, test_split)
    test_texts = set(test_ds.queries.values())
    leaked = [q for q, text in train_ds.queries.items() if text in test_texts]
    anchors, positives, negatives = [], [], []
    bm25 = None
    if hard_negatives == "bm25":
        bm25 = bm25_run(train_ds.doc_texts(), train_ds.doc_ids,
                        {q: t for q, t in train_ds.queries.items() if q not in leaked}, top_k=30)
    texts = dict(zip(train_ds.doc_ids, train_ds.doc_texts()))
    for q, rel in train_ds.qrels.items():
        if q in leaked:
            continue
        for d, score in rel.items():
            if score > 0:
                anchors.append(train_ds.queries[q])
                positives.append(texts[d])
                if bm25 is not None:
                    ranked = [x for x in sorted(bm25[q], key=bm25[q].get, reverse=True) if rel.get(x, 0) <= 0]
                    negatives.append(texts[ranked[0]] if ranked else texts[train_ds.doc_ids[0]])
    if len(anchors) < batch_size:
        raise ValueError(f"{data}: {len(anchors)} training pairs in split {train_split!r} (after leaving out "
                         f"{len(leaked)} queries that repeat a test query); need at least batch_size={batch_size}")
    dataset = TripletDataset(anchors, positives, negatives) if negatives else PairDataset(anchors, positives)
    lap("data: load, leakage check, training rows")

    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if progress else (lambda *a: None)
    say(f"data: {train_ds} -> {len(dataset)} training rows ({len(leaked)} repeated test queries left out); "
        f"test: {test_ds}")
    runs = {"BM25": bm25_run(test_ds.doc_texts(), test_ds.doc_ids, test_ds.queries, top_k=100)}
    lap("BM25: index and search")
    base = load_model(model)
    runs[f"{model} (start)"] = _dense(base, test_ds, query_max_length, doc_max_length, progress)
    lap("starting model: load, encode, search")
    tuned = load_model(model)
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, max_length=(query_max_length, doc_max_length)
                         + ((doc_max_length,) if negatives else ()), seed=seed, output_dir=str(out / "training"))
    history = train(tuned, dataset, functools.partial(in_batch_info_nce, temperature=temperature), config,
                    progress=progress)
    lap("fine-tune")
    runs["fine-tuned"] = _dense(tuned, test_ds, query_max_length, doc_max_length, progress)
    lap("fine-tuned model: encode, search")
    tuned.save(out / "model")

    from .evaluation import ndcg_at_k

    scores = {name: _evaluate(test_ds.qrels, run) for name, run in runs.items()}
    per_query = {name: ndcg_at_k(test_ds.qrels, run, k=10, per_query=True) for name, run in runs.items()}
    gain = paired_test(per_query["fine-tuned"], per_query[f"{model} (start)"])
    lap("save the model, score, paired test")
    summary = {"data": str(data), "settings": dict(model=model, train_split=train_split, test_split=test_split,
                                                    steps=steps, batch_size=batch_size, lr=lr,
                                                    temperature=temperature, query_max_length=query_max_length,
                                                    doc_max_length=doc_max_length, hard_negatives=hard_negatives,
                                                    seed=seed),
               "training_rows": len(dataset), "left_out_queries": len(leaked), "scores": scores,
               "fine_tuned_minus_start": gain, "per_query_ndcg@10": per_query,
               "final_loss": history.losses[-1], "seconds": round(time.perf_counter() - started, 1),
               "stage_seconds": stage_seconds}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _table(summary: dict) -> str:
    from .book import show_table

    rows = [{"model": name, **{k: v for k, v in s.items()}} for name, s in summary["scores"].items()]
    g = summary["fine_tuned_minus_start"]
    return (show_table(rows) + f"\nfine-tuned - start, NDCG@10: {g['diff']:+.3f} (95% interval "
            f"[{g['ci_low']:+.3f}, {g['ci_high']:+.3f}], paired randomisation p = {g['p']:.4f})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m embedlessons.pipeline",
        description="Fine-tune a bi-encoder on a retrieval collection, evaluate it against BM25 and the starting "
                    "model (NDCG@10, MRR@10, Recall@100, paired test), and save it for sentence-transformers.")
    parser.add_argument("--data", required=True,
                        help="a BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) or a dataset "
                             "name of the book (e.g. scifact)")
    parser.add_argument("--out", required=True, help="output folder: model/, summary.json, training/history.json")
    parser.add_argument("--model", default="all-MiniLM-L6-v2",
                        help="starting model: all-MiniLM-L6-v2 (offline), a saved folder, or a hub name (network)")
    parser.add_argument("--train-split", default="train", help="qrels split to train on (default: train)")
    parser.add_argument("--test-split", default="test", help="qrels split to evaluate on (default: test)")
    parser.add_argument("--steps", type=int, default=100, help="optimiser steps (batches) (default: 100)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="pairs per batch; each query sees batch_size - 1 in-batch negatives (default: 32)")
    parser.add_argument("--lr", type=float, default=2e-5, help="peak learning rate of AdamW (default: 2e-5)")
    parser.add_argument("--temperature", type=float, default=0.05, help="InfoNCE temperature (default: 0.05)")
    parser.add_argument("--query-max-length", type=int, default=64, help="query token limit (default: 64)")
    parser.add_argument("--doc-max-length", type=int, default=256, help="document token limit (default: 256)")
    parser.add_argument("--hard-negatives", choices=("none", "bm25"), default="none",
                        help="add each query's best BM25 non-relevant document as a hard negative (default: none)")
    parser.add_argument("--seed", type=int, default=0, help="seeds batch order and dropout (default: 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    summary = run_pipeline(args.data, args.out, model=args.model, train_split=args.train_split,
                           test_split=args.test_split, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                           temperature=args.temperature, query_max_length=args.query_max_length,
                           doc_max_length=args.doc_max_length, hard_negatives=args.hard_negatives, seed=args.seed,
                           progress=not args.quiet)
    print(_table(summary))
    print(f"model saved to {Path(args.out) / 'model'}; summary in {Path(args.out) / 'summary.json'} "
          f"({summary['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
