"""Peak memory and time of one training step: the big batch vs GradCache vs sentence-transformers' cached MNRL.

    python bench/gradcache_memory.py                    # 128 SciFact pairs at 128 tokens, ~5 min on 1 thread
    python bench/gradcache_memory.py --batch-size 256 --max-length 256 --mini-batches 16 --st-mini-batches 16

Prints the table of :func:`embedlessons.experiments.part5_performance.gradcache_memory` (each configuration in
its own process; see :func:`~embedlessons.experiments.part5_performance.gradcache_step` for what is measured).
The book's numbers are the recorded run: ``python -m embedlessons.experiments run gradcache_memory``.
Times come from one step each on a shared machine: read the ratios as +-10%. Not run in CI.
"""
from __future__ import annotations

import argparse

from embedlessons.experiments.part5_performance import gradcache_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--mini-batches", type=int, nargs="*", default=[8, 16, 32])
    parser.add_argument("--st-mini-batches", type=int, nargs="*", default=None,
                        help="mini_batch_size of sentence-transformers' cached MNRL (default: --mini-batches)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    st_minis = args.mini_batches if args.st_mini_batches is None else args.st_mini_batches
    print(f"{args.batch_size} SciFact (claim, abstract) pairs, max_length {args.max_length}, {args.model} in train "
          f"mode, {args.threads} thread(s), one forward+backward step per configuration", flush=True)
    result = gradcache_memory(args.model, args.batch_size, args.max_length, args.mini_batches, st_minis,
                              args.threads, args.seed)
    mib = 1 << 20
    print(f"\n{'configuration':<16}{'peak RSS MiB':>14}{'x big':>8}{'saved MiB':>11}{'x big':>8}"
          f"{'step s':>9}{'x big':>8}{'loss':>9}")
    for name, r in result["rows"].items():
        print(f"{name:<16}{r['peak_rss'] / mib:>14.0f}{r['peak_rss_ratio']:>8.3f}{r['saved'] / mib:>11.0f}"
              f"{r['saved_ratio']:>8.3f}{r['seconds']:>9.1f}{r['time_ratio']:>8.2f}{r['loss']:>9.4f}")
    if not all(r["peak_reset"] for r in result["rows"].values()):
        print("note: the RSS high-water mark could not be reset here: peaks below the loading peak are hidden")
    ok = [n for n, r in result["rows"].items() if n.startswith("gradcache") and r["peak_rss_ratio"] <= 0.25]
    print(f"GradCache configurations with a peak RSS <= 1/4 of the big batch: {ok or 'none'}")


if __name__ == "__main__":
    main()
