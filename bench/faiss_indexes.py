"""FAISS index types compared: recall@10 against exact search, query latency, memory, build time.

    python bench/faiss_indexes.py                 # SciFact (MiniLM) + the ~105k-text set (static MiniLM vectors)
    python bench/faiss_indexes.py --large minilm  # the large set with full MiniLM (over an hour on 2 CPU cores)
    python bench/faiss_indexes.py --skip-large    # SciFact only

The code is :mod:`embedlessons.experiments.part3_indexes` (its docstring describes both vector sets and
what is measured). The numbers section 3.4 shows are recorded experiments, stored with their provenance:

    python -m embedlessons.experiments run faiss_indexes_scifact faiss_indexes_large

Speeds are single-threaded FAISS (``faiss_threads(1)``), one query at a time; "x faster than Flat" is the
ratio to exact search in the same run. Not run in CI.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from embedlessons.book import show_table  # noqa: E402
from embedlessons.experiments.part3_indexes import index_comparison  # noqa: E402

COLUMNS = ("index", "recall@10", "ms/query", "x faster than Flat", "memory MB", "memory vs Flat", "build s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--large", choices=("static", "minilm"), default="static")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-scifact", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    runs = ([] if args.skip_scifact else [("scifact", "minilm")]) + ([] if args.skip_large else [("large", args.large)])
    for collection, vectors in runs:
        result = index_comparison(collection, vectors)
        print(f"\n== {result['settings']['description']}: {result['settings']['queries']:,} queries ==")
        print(show_table([{c: row[c] for c in COLUMNS} for row in result["indexes"]], floatfmt=".3f"))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
