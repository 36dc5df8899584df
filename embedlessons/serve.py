"""An embedding service: ``POST /embed``, ``POST /search`` over a FAISS index, ``GET /health`` (section 5.5).
    python -m embedlessons.serve --model all-MiniLM-L6-v2 --corpus scifact --host 127.0.0.1 --port 8000

- ``POST /embed`` ``{"texts": ["...", ...], "normalize": true}`` -> ``{"embeddings": [[...], ...], "dim": d}``;
- ``POST /search`` ``{"query": "...", "k": 10}`` -> ``{"results": [{"id", "score", "title"}, ...]}``, exact
  inner-product search over the corpus encoded at start-up (``--corpus``: a dataset name or a BEIR folder);
- ``GET /health`` -> 200 ``{"status": "ok", ...}`` once the model and the index are ready (503 before), with
  counters of requests and forward passes.

Concurrent requests are **batched**: texts that arrive within ``--batch-window-ms`` of each other (up to
``--max-batch`` texts) go through the model in one forward pass, which is what makes a small model fast under
load (``--no-batching`` turns it off, for comparison). Either way one forward pass runs at a time (the
model's ``--threads`` do the parallel work), so the two modes use the same compute. Input limits: at most
``--max-texts`` texts per request, ``--max-chars`` characters per text, ``k`` at most ``--max-k``, and a
request body of at most ``--max-body-bytes``; bad input gets a JSON error with status 413 (too large) or 422
(wrong shape, type or unknown field) and never stops the server.

``--model`` may also be a folder written by :func:`embedlessons.onnx_export.export_onnx` (or an ``.onnx`` file in
one, e.g. its int8 copy): it is then served by ONNX Runtime (:class:`~embedlessons.onnx_export.OnnxEncoder`)
instead of PyTorch. ``--threads`` fixes the model's CPU threads (for a fair comparison of two settings).
"""


import argparse
import asyncio
import concurrent.futures
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ServiceLimits", "create_app", "main"]


@dataclass
class ServiceLimits:
    """Input limits of the service (requests beyond them get a 413 or 422 JSON error)."""

    max_texts: int = 64
    max_chars: int = 4000
    max_k: int = 100
    max_body_bytes: int = 1_000_000


@dataclass
class _Stats:
    requests: int = 0
    texts: int = 0
    forward_passes: int = 0
    started: float = field(default_factory=time.time)


class _Batcher:
    """Collects texts from concurrent requests and encodes them in one forward pass per window.

    Requests join a pass in arrival order while their texts fit in ``max_batch`` (a request is never split;
    one larger than ``max_batch`` goes alone), as in Exercise 8."""

    def __init__(self, encode, window_s: float, max_batch: int, stats: _Stats,
                 executor: concurrent.futures.Executor | None = None):
        self.encode, self.window_s, self.max_batch, self.stats = encode, window_s, max_batch, stats
        self.executor = executor
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None

    async def submit(self, texts: list[str]) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        pending = None                      # a request that did not fit in the last pass opens the next one
        while True:
            items = [pending if pending is not None else await self.queue.get()]
            pending = None
            n = len(items[0][0])
            deadline = loop.time() + self.window_s
            while n < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                if n + len(item[0]) > self.max_batch:     # never split a request, never exceed max_batch
                    pending = item
                    break
                items.append(item)
                n += len(item[0])
            texts = [t for batch, _ in items for t in batch]
            try:
                vectors = await loop.run_in_executor(self.executor, self.encode, texts)
                self.stats.forward_passes += 1
            except Exception as err:           # noqa: BLE001 - hand the error to every waiting request
                for _, future in items:
                    if not future.done():
                        future.set_exception(err)
                continue
            start = 0
            for batch, future in items:
                if not future.done():
                    future.set_result(vectors[start:start + len(batch)])
                start += len(batch)


def create_app(model, corpus=None, limits: ServiceLimits | None = None, batching: bool = True,
               batch_window_ms: float = 5.0, max_batch: int = 64, max_length: int = 256):
    """The FastAPI application (``model``: a :class:`~embedlessons.models.BiEncoder`; ``corpus``: a
    :class:`~embedlessons.data.RetrievalDataset` to search, or None for ``/embed`` only)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field

    limits = limits or ServiceLimits()
    stats = _Stats()
    # one forward pass at a time, with or without batching: the model's own threads (--threads) do the parallel
    # work, so both modes use the same compute and requests wait their turn instead of competing for the cores
    model_worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
    state: dict = {"ready": False}

    def encode(texts: list[str]) -> np.ndarray:
        return model.encode(texts, max_length=max_length, progress=False, cache=False).astype(np.float32)

    class EmbedRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        texts: list[str] = Field(min_length=1, max_length=limits.max_texts)
        normalize: bool = True

    class SearchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        query: str = Field(min_length=1, max_length=limits.max_chars)
        k: int = Field(default=10, ge=1, le=limits.max_k)

    @asynccontextmanager
    async def lifespan(app):
        if batching:
            state["batcher"] = _Batcher(encode, batch_window_ms / 1000, max_batch, stats, model_worker)
            state["batcher"].task = asyncio.create_task(state["batcher"].run())
        if corpus is not None:
            from .indexing import build_flat

            docs = await asyncio.get_running_loop().run_in_executor(model_worker, encode, corpus.doc_texts())
            docs /= np.linalg.norm(docs, axis=1, keepdims=True).clip(1e-12)
            state["index"], state["doc_ids"] = build_flat(docs), corpus.doc_ids
        state["ready"] = True
        yield
        if batching:
            state["batcher"].task.cancel()
        model_worker.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="embedlessons embedding service", lifespan=lifespan)

    def error(status: int, message: str, detail=None) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": message, **({"detail": detail} if detail else {})})

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > limits.max_body_bytes:
            return error(413, f"request body of {size} bytes is larger than the limit of {limits.max_body_bytes}")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = [{"field": ".".join(str(p) for p in e["loc"][1:]) or "body", "problem": e["msg"]} for e in exc.errors()]
        too_many = any(e["type"] in ("too_long", "less_than_equal") for e in exc.errors())
        return error(413 if too_many else 422, "the request does not match the expected JSON; see detail",
                     problems)

    async def vectors_for(texts: list[str]) -> np.ndarray:
        long = [i for i, t in enumerate(texts) if len(t) > limits.max_chars]
        if long:
            raise ValueError(f"texts {long[:5]} are longer than {limits.max_chars} characters")
        stats.requests += 1
        stats.texts += len(texts)
        if batching:
            return await state["batcher"].submit(texts)
        out = await asyncio.get_running_loop().run_in_executor(model_worker, encode, texts)
        stats.forward_passes += 1
        return out

    @app.get("/health")
    async def health():
        body = {"status": "ok" if state["ready"] else "starting", "dim": model.dim,
                "docs": len(state.get("doc_ids", [])), "batching": batching, "requests": stats.requests,
                "texts": stats.texts, "forward_passes": stats.forward_passes}
        return JSONResponse(status_code=200 if state["ready"] else 503, content=body)

    @app.post("/embed")
    async def embed(req: EmbedRequest):
        try:
            vectors = await vectors_for(req.texts)
        except ValueError as err:
            return error(413, str(err))
        if req.normalize:
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
        # a JSONResponse skips FastAPI's generic encoder, which walks every float of the reply in Python
        return JSONResponse(content={"embeddings": vectors.tolist(), "dim": int(vectors.shape[1])})

    @app.post("/search")
    async def search(req: SearchRequest):
        if "index" not in state:
            return error(404, "this service was started without --corpus: there is nothing to search")
        vector = await vectors_for([req.query])
        vector = vector / np.linalg.norm(vector, axis=1, keepdims=True).clip(1e-12)
        scores, ids = state["index"].search(vector.astype(np.float32), min(req.k, len(state["doc_ids"])))
        return {"results": [{"id": state["doc_ids"][j], "score": float(s),
                             "title": corpus.corpus[state["doc_ids"][j]]["title"]}
                            for s, j in zip(scores[0], ids[0]) if j >= 0]}

    return app


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedlessons.serve",
                                     description="Serve a bi-encoder over HTTP: /embed, /search (FAISS), /health.")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="model name or saved folder")
    parser.add_argument("--corpus", default=None, help="dataset name or BEIR folder to search (optional)")
    parser.add_argument("--split", default="test", help="qrels split whose corpus is loaded (default: test)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--max-texts", type=int, default=64, help="texts per /embed request (default: 64)")
    parser.add_argument("--max-chars", type=int, default=4000, help="characters per text (default: 4000)")
    parser.add_argument("--max-k", type=int, default=100, help="largest k for /search (default: 100)")
    parser.add_argument("--max-body-bytes", type=int, default=1_000_000, help="request body limit (default: 1 MB)")
    parser.add_argument("--batch-window-ms", type=float, default=5.0,
                        help="how long a forward pass waits for more concurrent texts (default: 5 ms)")
    parser.add_argument("--max-batch", type=int, default=64, help="texts per forward pass at most (default: 64)")
    parser.add_argument("--no-batching", action="store_true", help="one forward pass per request")
    parser.add_argument("--max-length", type=int, default=256, help="token limit of the model (default: 256)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for the model (PyTorch or ONNX Runtime; default: the runtime's own)")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")

    from pathlib import Path

    import uvicorn

    from .data import load_retrieval
    from .models import load_model

    source = Path(args.model)
    onnx_config = (source.parent if source.suffix == ".onnx" else source) / "embedlessons_onnx.json"
    if onnx_config.is_file():          # an export folder of embedlessons.onnx_export, or an .onnx file in one
        from .onnx_export import OnnxEncoder

        model = OnnxEncoder(args.model, threads=args.threads)
    else:
        if args.threads is not None:
            import torch

            torch.set_num_threads(args.threads)
        model = load_model(args.model)
    corpus = load_retrieval(args.corpus, args.split) if args.corpus else None
    limits = ServiceLimits(args.max_texts, args.max_chars, args.max_k, args.max_body_bytes)
    app = create_app(model, corpus, limits, batching=not args.no_batching, batch_window_ms=args.batch_window_ms,
                     max_batch=args.max_batch, max_length=args.max_length)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
