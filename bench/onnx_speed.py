"""Encode throughput of a bi-encoder in sentence-transformers, our PyTorch BiEncoder and four ONNX variants.

    python bench/onnx_speed.py --n-docs 300 --threads 1

Every variant encodes the same first ``--n-docs`` SciFact abstracts (title + text) with the same batch size,
token limit and thread count (``torch.set_num_threads`` and ONNX Runtime intra-op threads); each throughput
is the best of ``--repeats`` passes after a one-batch warm-up, the variants alternating within a pass. The
table also gives each variant's ratio to sentence-transformers fp32 in the same run, SciFact NDCG@10 (all
test queries over the timed abstracts plus every relevant one), STS-B test Spearman, the cosine to the
PyTorch embeddings and the file size. It runs :func:`embedlessons.onnx_export.onnx_comparison`; ``--json``
writes its full output (with per-query NDCG). Not run in CI.
"""

import argparse
import json
import sys
import time

from embedlessons.onnx_export import onnx_comparison


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="model name or saved folder")
    parser.add_argument("--n-docs", type=int, default=300, help="SciFact abstracts timed (default: 300)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default: 32)")
    parser.add_argument("--max-length", type=int, default=256, help="document token limit (default: 256)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for every variant (default: 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes, best kept (default: 3)")
    parser.add_argument("--n-sts", type=int, default=None, help="STS-B test pairs (default: all 1,379)")
    parser.add_argument("--n-queries", type=int, default=None, help="SciFact test queries (default: all 300)")
    parser.add_argument("--json", default=None, help="also write the full result to this file")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    r = onnx_comparison(args.model, n_docs=args.n_docs, batch_size=args.batch_size, max_length=args.max_length,
                        threads=args.threads, repeats=args.repeats, n_sts=args.n_sts, n_queries=args.n_queries,
                        progress=True)
    s = r["settings"]
    print(f"\n{s['model']}: {s['n_docs']} SciFact abstracts, batch {s['batch_size']}, max_length {s['max_length']}, "
          f"{s['threads']} thread(s), best of {s['repeats']}; NDCG@{s['k']} on {s['n_queries']} queries x "
          f"{s['quality_docs']} docs; STS-B {s['n_sts']} pairs")
    print(f"{'variant':24s} {'texts/s':>9s} {'vs ST':>7s} {'NDCG@10':>8s} {'Spearman':>9s} {'min cos':>9s} "
          f"{'MB':>7s}")
    for v, speed in r["throughput"].items():
        print(f"{v:24s} {speed:9.1f} {r['speedup_vs_st'][v]:6.2f}x {r['ndcg'][v]:8.4f} {r['sts_spearman'][v]:9.4f} "
              f"{r['parity'][v]['min_cosine']:9.5f} {r['sizes_mb'][v]:7.1f}")
    print(f"({time.perf_counter() - start:.0f} s in all)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
