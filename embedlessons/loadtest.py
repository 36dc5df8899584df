"""Load testing the embedding service (:mod:`embedlessons.serve`, section 5.5): throughput and tail latency.

A **closed-loop** load test keeps a fixed number of clients busy: each of ``concurrency`` workers sends a
request, waits for the reply, and sends the next one at once, until the planned number of requests has
been sent (or a time limit is hit). The offered load therefore adapts to the server: a slow server gets
fewer requests per second, never a growing queue. That is what a fixed pool of application threads calling
the service looks like, and it makes "concurrency" the variable of the experiment. (An *open-loop* test
instead sends requests at a fixed rate whatever the replies do; it shows what happens past saturation,
which a closed loop cannot.)

What is measured, per concurrency level:

- **throughput**: successful requests (and texts) per second of wall time, from the first request sent to
  the last reply received;
- **latency** of each successful request, from just before it is sent to its reply being read, summarised
  by percentiles: **p50** (the median: half of the requests were faster) and **p90** / **p99** (90% / 99%
  of the requests were at least this fast: the *tail* that the slowest users see). Percentiles are
  ``numpy.percentile`` with its default linear interpolation between the two nearest ranks, so p99 of 100
  requests lies between the 99th and 100th fastest;
- **errors**: replies other than HTTP 200, malformed replies, and transport errors (refused connection,
  timeout), with the first few messages;
- the server's own counters from ``GET /health`` before and after: how many forward passes the model made,
  so **texts per forward pass** shows request batching at work (1.0 without it).

The client runs in one process with ``asyncio`` and ``httpx.AsyncClient``; on a small machine it competes
with the server for the CPU, so the numbers are for "client and server on one box" (give the server a
fixed number of threads with ``server_threads``). :func:`start_service` starts the real service as a
subprocess; :func:`load_test` measures one concurrency level; :func:`load_test_table` compares levels with
and without batching; :func:`recorded_load_test` is the same comparison in the shape of a recorded
experiment (:mod:`embedlessons.recorded`). ``bench/load_test.py`` prints the table from the command line.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .models import model_folder

__all__ = ["ENDPOINTS", "Service", "free_port", "start_service", "load_test", "load_test_async", "load_test_table",
           "recorded_load_test"]

#: Endpoints :func:`load_test` knows how to call.
ENDPOINTS = ("/embed", "/search")
#: How many error messages a result keeps (the count covers all of them).
MAX_MESSAGES = 5
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


class Service(str):
    """The base URL of a started service (it *is* the URL string), with the server's ``process`` attached."""

    process: subprocess.Popen

    def __new__(cls, url: str, process: subprocess.Popen):
        self = super().__new__(cls, url)
        self.process = process
        return self


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _tail(log, limit: int = 4000) -> str:
    log.flush()
    log.seek(0)
    text = log.read().decode("utf-8", "replace")
    return text[-limit:] if text.strip() else "(no output)"


def _stop(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)


@contextmanager
def start_service(model: str | os.PathLike, corpus: str | os.PathLike | None = None, port: int | None = None,
                  extra_args: Sequence[str] = (), timeout_s: float = 120.0,
                  env: Mapping[str, str] | None = None) -> Iterator[Service]:
    """Run ``python -m embedlessons.serve`` on 127.0.0.1 as a subprocess while the ``with`` block runs.

    Args:
        model, corpus: the service's ``--model`` and ``--corpus`` (None: ``/embed`` only).
        port: the port; default a free one.
        extra_args: further command-line options, e.g. ``["--no-batching"]`` or ``["--batch-window-ms", "10"]``.
        timeout_s: how long to wait for ``GET /health`` to answer 200 (the model and index loaded).
        env: environment variables to set for the server (e.g. ``{"OMP_NUM_THREADS": "1"}``).

    Yields the base URL (a :class:`Service`: a ``str`` with ``.process``). Raises ``RuntimeError`` with the
    server's output if it exits before it is ready, ``TimeoutError`` (also with its output) if it is not
    ready in time. The server is terminated (killed if it does not stop within 10 s) on leaving the block.
    """
    import httpx

    port = free_port() if port is None else int(port)
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "embedlessons.serve", "--model", str(model), "--host", "127.0.0.1",
               "--port", str(port), *(["--corpus", str(corpus)] if corpus is not None else []),
               *(str(a) for a in extra_args)]
    environment = {**os.environ, **(env or {})}
    # the server imports the same embedlessons as this process, installed or not
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), environment.get("PYTHONPATH")) if p)
    with tempfile.TemporaryFile() as log:          # a file, not a pipe: a chatty server can never block on it
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment,
                                   stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    if httpx.get(url + "/health", timeout=2.0, trust_env=False).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if process.poll() is not None:
                    raise RuntimeError(f"the service exited with status {process.returncode} before it was ready\n"
                                       f"command: {' '.join(command)}\noutput:\n{_tail(log)}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the service did not answer GET /health with 200 within {timeout_s} s\n"
                                       f"command: {' '.join(command)}\noutput:\n{_tail(log)}")
                time.sleep(0.1)
            yield Service(url, process)
        finally:
            _stop(process)


# ----------------------------------------------------------------------------- one load test


def _check_arguments(texts: Sequence[str], concurrency: int, requests: int, endpoint: str, texts_per_request: int,
                     k: int, time_limit_s: float) -> list[str]:
    if isinstance(texts, str):
        raise ValueError("texts must be a list of texts, not one string")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: the load test needs at least one text to send")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t]
    if bad:
        raise ValueError(f"texts {bad[:5]} are not non-empty strings")
    for name, value in (("concurrency", concurrency), ("requests", requests), ("texts_per_request", texts_per_request),
                        ("k", k)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if requests < concurrency:
        raise ValueError(f"requests ({requests}) is smaller than concurrency ({concurrency}): "
                         f"{concurrency - requests} workers would never send a request, so the server would never "
                         f"see {concurrency} concurrent requests; send at least as many requests as workers")
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; known: {list(ENDPOINTS)}")
    if endpoint == "/search" and texts_per_request != 1:
        raise ValueError("/search takes one query per request: texts_per_request must be 1")
    if not (isinstance(time_limit_s, (int, float)) and time_limit_s > 0):
        raise ValueError(f"time_limit_s must be a positive number of seconds, got {time_limit_s!r}")
    return texts


def _payload(texts: list[str], i: int, endpoint: str, texts_per_request: int, k: int) -> dict:
    """Request ``i``'s body: texts taken in order from ``texts``, cycling (deterministic)."""
    if endpoint == "/search":
        return {"query": texts[i % len(texts)], "k": k}
    start = i * texts_per_request
    return {"texts": [texts[(start + j) % len(texts)] for j in range(texts_per_request)]}


def _reply_problem(reply, endpoint: str, texts_per_request: int) -> str | None:
    """Why a 200 reply is not the answer asked for, or None."""
    try:
        body = reply.json()
    except ValueError:
        return "HTTP 200 but the body is not JSON"
    if endpoint == "/embed":
        if not isinstance(body, dict) or len(body.get("embeddings") or []) != texts_per_request:
            return f"HTTP 200 but not {texts_per_request} embeddings"
    elif not isinstance(body, dict) or not isinstance(body.get("results"), list):
        return "HTTP 200 but no results list"
    return None


async def _health(client) -> dict | None:
    import httpx

    try:
        reply = await client.get("/health")
        return reply.json() if reply.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _delta(before: dict | None, after: dict | None, key: str) -> int | None:
    if not before or not after or key not in before or key not in after:
        return None
    return int(after[key]) - int(before[key])


async def load_test_async(url: str, texts: Sequence[str], concurrency: int, requests: int, endpoint: str = "/embed",
                          texts_per_request: int = 1, k: int = 10, time_limit_s: float = 60.0,
                          request_timeout_s: float = 30.0, keep_latencies: bool = False) -> dict[str, Any]:
    """:func:`load_test` as a coroutine (for code that already runs an event loop)."""
    import httpx

    texts = _check_arguments(texts, concurrency, requests, endpoint, texts_per_request, k, time_limit_s)
    latencies: dict[int, float] = {}           # request id -> ms, successful requests only
    statuses: dict[str, int] = {}
    messages: list[str] = []
    state = {"next": 0, "errors": 0}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url.rstrip("/"), timeout=request_timeout_s, limits=limits,
                                 trust_env=False) as client:
        before = await _health(client)
        started = time.perf_counter()
        stop_at = started + time_limit_s

        async def worker() -> None:
            while state["next"] < requests and time.perf_counter() < stop_at:
                i = state["next"]
                state["next"] += 1
                body = _payload(texts, i, endpoint, texts_per_request, k)
                sent = time.perf_counter()
                try:
                    reply = await client.post(endpoint, json=body)
                    status = str(reply.status_code)
                    if reply.status_code != 200:
                        problem = f"HTTP {reply.status_code}: {reply.text[:300]}"
                    else:
                        problem = _reply_problem(reply, endpoint, texts_per_request)
                except httpx.HTTPError as err:
                    status, problem = type(err).__name__, f"{type(err).__name__}: {err}"
                elapsed_ms = (time.perf_counter() - sent) * 1000
                statuses[status] = statuses.get(status, 0) + 1
                if problem is None:
                    latencies[i] = elapsed_ms
                else:
                    state["errors"] += 1
                    if len(messages) < MAX_MESSAGES:
                        messages.append(f"request {i} ({endpoint}): {problem}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
        after = await _health(client)

    ms = np.array(list(latencies.values()), dtype=float)
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99])) if len(ms) else (None, None, None)
    passes, served_texts = _delta(before, after, "forward_passes"), _delta(before, after, "texts")
    result = {
        "url": url, "endpoint": endpoint, "concurrency": int(concurrency), "texts_per_request": int(texts_per_request),
        "requests": int(requests), "sent": state["next"], "completed": len(latencies), "errors": state["errors"],
        "error_messages": messages, "status_counts": dict(sorted(statuses.items())),
        "time_limited": state["next"] < requests, "wall_s": wall,
        "throughput_rps": len(latencies) / wall if wall > 0 else 0.0,
        "texts_per_s": len(latencies) * texts_per_request / wall if wall > 0 else 0.0,
        "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "mean_ms": float(ms.mean()) if len(ms) else None,
        "max_ms": float(ms.max()) if len(ms) else None,
        "batching": (after or before or {}).get("batching"),
        "server_requests": _delta(before, after, "requests"), "server_texts": served_texts, "forward_passes": passes,
        "texts_per_forward_pass": served_texts / passes if passes and served_texts is not None else None,
    }
    if keep_latencies:
        result["latencies_ms"] = {f"{i:05d}": round(v, 3) for i, v in sorted(latencies.items())}
    return result


def _run(coroutine):
    """Run a coroutine to the end, also from inside a running event loop (a Jupyter notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def load_test(url: str, texts: Sequence[str], concurrency: int, requests: int, endpoint: str = "/embed",
              texts_per_request: int = 1, k: int = 10, time_limit_s: float = 60.0, request_timeout_s: float = 30.0,
              keep_latencies: bool = False) -> dict[str, Any]:
    """Closed-loop load test of one endpoint at one concurrency level.

    ``concurrency`` workers send requests back to back (each waits for its reply) until ``requests`` have
    been sent in all, or ``time_limit_s`` has passed (requests in flight then still finish). Request ``i``
    carries the next ``texts_per_request`` texts of ``texts``, cycling (``/search``: query ``texts[i % n]``
    with ``k``), so a run is repeatable.

    Returns a dict: ``concurrency``, ``requests`` (planned), ``sent``, ``completed`` (HTTP 200 with a
    well-formed body), ``errors`` (the rest: other statuses, malformed replies, transport errors),
    ``error_messages`` (the first few), ``status_counts``, ``time_limited``, ``wall_s``, ``throughput_rps``
    and ``texts_per_s`` (completed per wall second), ``p50_ms``, ``p90_ms``, ``p99_ms``, ``mean_ms``,
    ``max_ms`` over completed requests (``numpy.percentile``, linear interpolation; None when nothing
    completed), and from the server's ``/health`` before and after: ``batching``, ``server_requests``,
    ``server_texts``, ``forward_passes`` and ``texts_per_forward_pass`` (None if ``/health`` did not answer;
    they count every client of the server, so run nothing else against it meanwhile). With
    ``keep_latencies`` also ``latencies_ms``: ``{request id: ms}`` of the completed requests.

    Raises ``ValueError`` for arguments that cannot make a meaningful test (see the messages).
    """
    _check_arguments(texts, concurrency, requests, endpoint, texts_per_request, k, time_limit_s)
    return _run(load_test_async(url, texts, concurrency, requests, endpoint, texts_per_request, k, time_limit_s,
                                request_timeout_s, keep_latencies))


# ----------------------------------------------------------------------------- comparisons


def load_test_table(model: str | os.PathLike, texts: Sequence[str], concurrencies: Sequence[int] = (1, 4, 16),
                    requests: int = 200, batching_modes: Sequence[bool] = (True, False), endpoint: str = "/embed",
                    texts_per_request: int = 1, k: int = 10, corpus: str | os.PathLike | None = None,
                    batch_window_ms: float = 5.0, max_batch: int = 64, max_length: int | None = None,
                    warmup_requests: int = 8, time_limit_s: float = 60.0, server_threads: int | None = None,
                    extra_args: Sequence[str] = (), startup_timeout_s: float = 120.0,
                    keep_latencies: bool = False) -> list[dict[str, Any]]:
    """:func:`load_test` at each concurrency level, against a fresh server per batching mode.

    For each of ``batching_modes`` (True: ``--batch-window-ms batch_window_ms``; False: ``--no-batching``)
    one server is started (:func:`start_service`; ``model="small_bert"`` serves a random small BERT),
    warmed up with ``warmup_requests`` requests (not measured), then loaded at every level of
    ``concurrencies`` with ``requests`` requests each. ``server_threads`` sets the server's
    ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` (None: inherited). Servers run one after the other, never
    at the same time.

    Returns one row per (mode, concurrency): the :func:`load_test` dict plus ``mode`` (``"batched"`` or
    ``"plain"``) and ``batch_window_ms`` (None when not batching).
    """
    concurrencies = list(concurrencies)
    if not concurrencies or not batching_modes:
        raise ValueError("give at least one concurrency level and one batching mode")
    for c in concurrencies:           # fail before any server starts
        _check_arguments(texts, c, requests, endpoint, texts_per_request, k, time_limit_s)
    if endpoint == "/search" and corpus is None:
        raise ValueError("endpoint /search needs a corpus for the server to search")
    server_args = [*(["--max-length", str(max_length)] if max_length else []), "--max-batch", str(max_batch),
                   *(str(a) for a in extra_args)]
    env = {"OMP_NUM_THREADS": str(server_threads), "MKL_NUM_THREADS": str(server_threads)} if server_threads else None
    rows = []
    with ExitStack() as stack:
        folder = stack.enter_context(model_folder(model))
        for batching in batching_modes:
            mode_args = ["--batch-window-ms", str(batch_window_ms)] if batching else ["--no-batching"]
            with start_service(folder, corpus, extra_args=[*server_args, *mode_args], timeout_s=startup_timeout_s,
                               env=env) as url:
                if warmup_requests:
                    warm = min(max(concurrencies), warmup_requests)
                    load_test(url, texts, warm, warmup_requests, endpoint, texts_per_request, k, time_limit_s)
                for c in concurrencies:
                    row = load_test(url, texts, c, requests, endpoint, texts_per_request, k, time_limit_s,
                                    keep_latencies=keep_latencies)
                    rows.append({"mode": "batched" if batching else "plain",
                                 "batch_window_ms": batch_window_ms if batching else None, **row})
    return rows


def recorded_load_test(model: str = "all-MiniLM-L6-v2", concurrencies: Sequence[int] = (1, 4, 16, 64),
                       requests: int = 400, batching_modes: Sequence[bool] = (True, False),
                       batch_window_ms: float = 5.0, max_batch: int = 64, endpoint: str = "/embed",
                       texts_per_request: int = 1, k: int = 10, corpus: str | None = None,
                       dataset: str = "scifact", split: str = "test", n_texts: int | None = None,
                       max_length: int | None = None, warmup_requests: int = 16, time_limit_s: float = 120.0,
                       server_threads: int | None = 1) -> dict[str, Any]:
    """:func:`load_test_table` as a recorded experiment (:mod:`embedlessons.recorded`).

    The texts are the claims of ``dataset``'s ``split`` (SciFact test: 300 real queries), the first
    ``n_texts`` of them if given. Returns ``{"settings": ..., "per_query": ..., "rows": ...}``: ``per_query``
    maps each run (``"batched_c16"``, ``"plain_c1"``, ...) to ``{request id: latency in ms}`` of its
    requests, so any percentile can be recomputed; ``rows`` are the table rows without those lists.
    Raises ``RuntimeError`` if any request failed (a load test with errors is not a result to record).
    """
    from .data import load_retrieval

    if len(set(concurrencies)) != len(concurrencies) or len(set(batching_modes)) != len(batching_modes):
        raise ValueError("concurrencies and batching_modes must not repeat: each run is stored under its name")
    texts = list(load_retrieval(dataset, split).queries.values())[:n_texts]
    settings = {"model": str(model), "concurrencies": list(concurrencies), "requests": int(requests),
                "batching_modes": [bool(b) for b in batching_modes], "batch_window_ms": batch_window_ms,
                "max_batch": max_batch, "endpoint": endpoint, "texts_per_request": texts_per_request, "k": k,
                "corpus": corpus, "dataset": dataset, "split": split, "n_texts": n_texts, "texts": len(texts),
                "max_length": max_length, "warmup_requests": warmup_requests, "time_limit_s": time_limit_s,
                "server_threads": server_threads}
    rows = load_test_table(model, texts, concurrencies, requests, batching_modes, endpoint, texts_per_request, k,
                           corpus, batch_window_ms, max_batch, max_length, warmup_requests, time_limit_s,
                           server_threads, keep_latencies=True)
    failed = [r for r in rows if r["errors"]]
    if failed:
        raise RuntimeError("requests failed: " + "; ".join(f"{r['mode']} at concurrency {r['concurrency']}: "
                                                          f"{r['errors']} errors, e.g. {r['error_messages'][:1]}"
                                                          for r in failed))
    per_query = {f"{r['mode']}_c{r['concurrency']}": r.pop("latencies_ms") for r in rows}
    return {"settings": settings, "per_query": per_query, "rows": rows}
