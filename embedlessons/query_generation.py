"""Synthetic queries from an LLM (InPars, Bonifacio et al. 2022; Promptagator, Dai et al. 2022), for a corpus
without labelled queries (section 5.2).

For every document, an OpenAI-compatible chat-completions endpoint writes a few queries the document answers;
the pairs (query, document) then train a bi-encoder like labelled pairs. Three parts:

- :class:`QueryGenerator`: calls ``POST {base_url}/chat/completions`` with ``urllib`` (no extra dependency),
  retries on rate limits, server errors and broken connections with exponential back-off, and caches every
  answer in a JSONL file keyed by model, prompt and document, so a rerun costs nothing and an interrupted run
  resumes;
- :func:`generator_from_env`: the endpoint from ``EMBEDLESSONS_LLM_URL``, ``EMBEDLESSONS_LLM_MODEL`` and the key
  from ``EMBEDLESSONS_LLM_KEY`` (or ``OPENAI_API_KEY``); nothing is called unless you configure one;
- :func:`consistency_filter`: Promptagator's round-trip filter, keeping a query only if its own document ranks
  in the top ``k`` for it under a retriever (BM25 here), which drops vague or off-topic generations.

The book never presents generated queries as real data: they are a training signal, evaluated on real,
human-judged queries.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["QueryGenerator", "GenerationError", "generator_from_env", "parse_queries", "consistency_filter",
           "DEFAULT_PROMPT"]

DEFAULT_PROMPT = ("Write {n} different search queries that the following document answers. One query per "
                  "line, no numbering, no other text.\n\nDocument:\n{document}")
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s*")


class GenerationError(RuntimeError):
    """The endpoint failed, or answered something that is not a chat completion."""


def parse_queries(content: str, n: int) -> list[str]:
    """Queries from a completion's text: one per line, list markers ("1.", "-", "*") and quotes stripped,
    empty and repeated lines dropped, at most ``n``."""
    out: list[str] = []
    for line in content.splitlines():
        q = _MARKER.sub("", line).strip().strip('"').strip()
        if q and q not in out:
            out.append(q)
    return out[:n]


class QueryGenerator:
    """Synthetic queries per document from an OpenAI-compatible chat-completions endpoint, cached.

    Args:
        base_url: e.g. ``"https://api.openai.com/v1"`` or a local server's ``"http://127.0.0.1:8000/v1"``.
        model: the model name the endpoint expects.
        api_key: sent as ``Authorization: Bearer <key>`` (None: no header, for local servers).
        cache_path: a JSONL file of earlier answers (created when missing); None: no cache.
        n_queries: queries asked for per document. prompt: a template with ``{n}`` and ``{document}``.
        max_retries: retries after the first attempt on HTTP 408/409/429/5xx and connection errors.
        backoff: seconds before the first retry, doubled each time. timeout: seconds per request.
        temperature, max_tokens: sampling settings sent with every request.
        sleep: the function that waits (tests pass a recorder instead of ``time.sleep``).
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, cache_path: str | os.PathLike | None = None,
                 n_queries: int = 3, prompt: str = DEFAULT_PROMPT, max_retries: int = 4, backoff: float = 1.0,
                 timeout: float = 60.0, temperature: float = 0.7, max_tokens: int = 200,
                 sleep: Callable[[float], None] = time.sleep):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if "{document}" not in prompt or "{n}" not in prompt:
            raise ValueError("prompt must contain the placeholders {n} and {document}")
        if n_queries < 1 or max_retries < 0:
            raise ValueError(f"need n_queries >= 1 and max_retries >= 0, got {n_queries}, {max_retries}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.n_queries, self.prompt = model, api_key, n_queries, prompt
        self.max_retries, self.backoff, self.timeout, self.sleep = max_retries, backoff, timeout, sleep
        self.temperature, self.max_tokens = temperature, max_tokens
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self._cache: dict[str, list[str]] = {}
        self.requests = 0                                   # HTTP requests sent (retries included)
        if self.cache_path is not None and self.cache_path.exists():
            for i, line in enumerate(self.cache_path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        entry = json.loads(line)
                        self._cache[entry["key"]] = list(entry["queries"])
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise GenerationError(f"{self.cache_path}, line {i}: not a cache entry "
                                              f"({{'key': ..., 'queries': [...]}}); delete the line or the file") from None

    def _key(self, doc_id: str, text: str) -> str:
        payload = json.dumps([self.model, self.prompt, self.n_queries, self.temperature, doc_id, text])
        return hashlib.blake2b(payload.encode("utf-8"), digest_size=16).hexdigest()

    def _post(self, body: dict) -> dict:
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.sleep(self.backoff * 2 ** (attempt - 1))
            self.requests += 1
            try:
                with urllib.request.urlopen(urllib.request.Request(self.url, data, headers), timeout=self.timeout) as r:
                    raw = r.read().decode("utf-8")
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}: {err.read()[:200].decode('utf-8', 'replace')}"
                if err.code in _RETRY_STATUS:
                    continue
                raise GenerationError(f"{self.url} refused the request ({last})") from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
                last = f"{type(err).__name__}: {err}"
                continue
            try:
                return json.loads(raw)
            except json.JSONDecodeError:
                raise GenerationError(f"{self.url} answered with something that is not JSON: {raw[:200]!r}") from None
        raise GenerationError(f"{self.url}: no answer after {self.max_retries + 1} attempts (last: {last})")

    def generate(self, doc_id: str, text: str) -> list[str]:
        """Queries for one document (from the cache when this model and prompt have answered it before)."""
        key = self._key(doc_id, text)
        if key in self._cache:
            return list(self._cache[key])
        reply = self._post({"model": self.model, "temperature": self.temperature, "max_tokens": self.max_tokens,
                            "messages": [{"role": "user",
                                          "content": self.prompt.format(n=self.n_queries, document=text)}]})
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise GenerationError(f"{self.url}: expected a chat completion with choices[0].message.content, got "
                                  f"{json.dumps(reply)[:200]}") from None
        queries = parse_queries(str(content), self.n_queries)
        self._cache[key] = queries
        if self.cache_path is not None:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.cache_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "doc_id": doc_id, "queries": queries}) + "\n")
        return queries

    def generate_all(self, corpus: Mapping[str, str], progress: bool = True) -> list[tuple[str, str]]:
        """(query, doc_id) for every document of ``corpus`` (doc id -> text), in corpus order."""
        from .progress import progress_bar

        out = []
        for doc_id, text in progress_bar(list(corpus.items()), desc="generating queries", enabled=progress):
            out.extend((q, doc_id) for q in self.generate(doc_id, text))
        return out


def generator_from_env(cache_path: str | os.PathLike | None = None, **kwargs) -> QueryGenerator | None:
    """A :class:`QueryGenerator` for the endpoint configured in the environment, or None when there is none:
    ``EMBEDLESSONS_LLM_URL`` (e.g. ``https://api.openai.com/v1``), ``EMBEDLESSONS_LLM_MODEL``, and the key in
    ``EMBEDLESSONS_LLM_KEY`` or ``OPENAI_API_KEY`` (optional for local servers)."""
    url, model = os.environ.get("EMBEDLESSONS_LLM_URL"), os.environ.get("EMBEDLESSONS_LLM_MODEL")
    if not url:
        return None
    if not model:
        raise ValueError("EMBEDLESSONS_LLM_URL is set but EMBEDLESSONS_LLM_MODEL is not: name the model to call")
    key = os.environ.get("EMBEDLESSONS_LLM_KEY") or os.environ.get("OPENAI_API_KEY")
    return QueryGenerator(url, model, key, cache_path=cache_path, **kwargs)


def consistency_filter(pairs: Sequence[tuple[str, str]], corpus: Mapping[str, str], k: int = 10) -> list[tuple[str, str]]:
    """Keep the (query, doc_id) pairs whose document BM25 ranks in the top ``k`` for the query over ``corpus``
    (Promptagator's round-trip filter, with BM25 as the retriever)."""
    from .lexical import bm25_run

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    unknown = sorted({d for _, d in pairs} - set(corpus))
    if unknown:
        raise ValueError(f"pairs name documents that are not in the corpus: {unknown[:5]}")
    queries = {str(i): q for i, (q, _) in enumerate(pairs)}
    run = bm25_run(list(corpus.values()), list(corpus), queries, top_k=k)
    return [(q, d) for i, (q, d) in enumerate(pairs) if d in run.get(str(i), {})]
