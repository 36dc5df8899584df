"""Load test of the embedding service: throughput and p50 / p99 latency by concurrency, with and without batching.

    python bench/load_test.py                                       # MiniLM, concurrency 1 4 16 64, both modes
    python bench/load_test.py --concurrency 1 4 16 --requests 200 --server-threads 1
    python bench/load_test.py --url http://127.0.0.1:8000           # a server that is already running

Without ``--url`` it starts ``python -m embedlessons.serve`` on loopback once per mode (batched, then
``--no-batching``), warms it up, and runs a closed-loop load test at each concurrency level; with ``--url``
it loads that server as it is (its mode is read from ``/health``). The texts are SciFact's real test claims.
The code and what the columns mean are in :mod:`embedlessons.loadtest`. The client runs on the same machine
as the server, so on a small CPU they compete for cores. Exits with status 1 if any request failed.
Not run in CI.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from embedlessons.data import load_retrieval  # noqa: E402
from embedlessons.loadtest import ENDPOINTS, load_test, load_test_table  # noqa: E402

COLUMNS = ("mode", "concurrency", "completed", "req/s", "texts/s", "p50 ms", "p99 ms", "errors", "texts/pass")


def format_rows(rows: list[dict]) -> str:
    """The table as aligned text."""
    def cell(value, digits=1):
        return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    table = [COLUMNS] + [(r["mode"], cell(r["concurrency"]), f"{r['completed']}/{r['requests']}",
                          cell(r["throughput_rps"]), cell(r["texts_per_s"]), cell(r["p50_ms"]), cell(r["p99_ms"]),
                          cell(r["errors"]), cell(r["texts_per_forward_pass"], 2)) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))) for row in table]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Closed-loop load test of embedlessons.serve.")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="--model of the server (default: MiniLM)")
    parser.add_argument("--corpus", default=None, help="--corpus of the server (needed for --endpoint /search)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64], help="levels (default: 1 4 16 64)")
    parser.add_argument("--requests", type=int, default=400, help="requests per level (default: 400)")
    parser.add_argument("--texts-per-request", type=int, default=1, help="texts per /embed request (default: 1)")
    parser.add_argument("--endpoint", choices=ENDPOINTS, default="/embed", help="endpoint to load (default: /embed)")
    parser.add_argument("--k", type=int, default=10, help="k of /search requests (default: 10)")
    parser.add_argument("--batch-window-ms", type=float, default=5.0, help="server batch window (default: 5 ms)")
    parser.add_argument("--max-length", type=int, default=None, help="server token limit (default: the server's)")
    parser.add_argument("--modes", nargs="+", choices=("batched", "plain"), default=["batched", "plain"],
                        help="server modes to compare (default: both)")
    parser.add_argument("--server-threads", type=int, default=None,
                        help="OMP/MKL threads of the server (default: inherited)")
    parser.add_argument("--warmup", type=int, default=16, help="unmeasured warm-up requests per server (default: 16)")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per level at most (default: 60)")
    parser.add_argument("--url", default=None, help="load this running server instead of starting one")
    args = parser.parse_args(argv)

    texts = list(load_retrieval("scifact", "test").queries.values())
    print(f"{len(texts)} SciFact test claims; endpoint {args.endpoint}, {args.requests} requests per level, "
          f"{args.texts_per_request} text(s) per request", flush=True)
    try:
        if args.url:
            rows = []
            for c in args.concurrency:
                row = load_test(args.url, texts, c, args.requests, args.endpoint, args.texts_per_request, args.k,
                                args.time_limit)
                mode = {True: "batched", False: "plain"}.get(row["batching"], "?")
                rows.append({"mode": mode, **row})
        else:
            rows = load_test_table(args.model, texts, args.concurrency, args.requests,
                                   [m == "batched" for m in args.modes], args.endpoint, args.texts_per_request,
                                   args.k, args.corpus, args.batch_window_ms, max_length=args.max_length,
                                   warmup_requests=args.warmup, time_limit_s=args.time_limit,
                                   server_threads=args.server_threads)
    except (ValueError, RuntimeError, TimeoutError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_rows(rows))
    failed = [r for r in rows if r["errors"]]
    for r in failed:
        print(f"{r['mode']} at concurrency {r['concurrency']}: {r['errors']} failed, e.g. {r['error_messages'][0]}",
              file=sys.stderr)
    limited = [r for r in rows if r["time_limited"]]
    if limited:
        print("time limit hit at concurrency " + ", ".join(str(r["concurrency"]) for r in limited), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
