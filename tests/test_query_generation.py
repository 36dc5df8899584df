"""LLM query generation (embedlessons.query_generation) against a FAKE OpenAI-compatible server that this test
starts on loopback: it returns canned queries (not real model output) and can fail on purpose, so retries,
the cache, error messages and the round-trip filter are tested without any network."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from embedlessons.query_generation import (GenerationError, QueryGenerator, consistency_filter, generator_from_env,
                                           parse_queries)


class FakeLLM(BaseHTTPRequestHandler):
    """A fake chat-completions endpoint. ``server.fail`` lists status codes to answer first, in order."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append((self.path, self.headers.get("Authorization"), body))
        if self.server.fail:
            code = self.server.fail.pop(0)
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b"busy")
            return
        if self.server.reply is not None:
            payload = self.server.reply
        else:
            document = body["messages"][0]["content"].split("Document:\n", 1)[1]
            first = document.split()[0].lower()
            payload = {"choices": [{"message": {"role": "assistant",
                                                "content": f"1. what is {first}\n- {first} facts\n\n{first} facts"}}]}
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeLLM)
    httpd.seen, httpd.fail, httpd.reply = [], [], None
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def url(httpd):
    return f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def test_queries_come_back_parsed_and_cached(server, tmp_path):
    cache = tmp_path / "queries.jsonl"
    gen = QueryGenerator(url(server), "fake-model", api_key="sk-test", cache_path=cache, n_queries=3)
    assert gen.generate("d1", "Photosynthesis makes sugar.") == ["what is photosynthesis", "photosynthesis facts"]
    path, auth, body = server.seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test" and body["model"] == "fake-model"
    assert "Write 3 different search queries" in body["messages"][0]["content"]
    assert gen.generate("d1", "Photosynthesis makes sugar.") and gen.requests == 1      # cached in memory
    again = QueryGenerator(url(server), "fake-model", cache_path=cache, n_queries=3)
    assert again.generate("d1", "Photosynthesis makes sugar.") == ["what is photosynthesis", "photosynthesis facts"]
    assert again.requests == 0 and len(server.seen) == 1                                # and on disk
    other_model = QueryGenerator(url(server), "another", cache_path=cache)
    other_model.generate("d1", "Photosynthesis makes sugar.")
    assert other_model.requests == 1                                                     # keyed by model too
    pairs = gen.generate_all({"d2": "Mitochondria", "d3": "Ribosomes"}, progress=False)
    assert pairs == [("what is mitochondria", "d2"), ("mitochondria facts", "d2"), ("what is ribosomes", "d3"),
                     ("ribosomes facts", "d3")]


def test_rate_limits_and_server_errors_are_retried_with_backoff(server):
    waits = []
    server.fail = [429, 503]
    gen = QueryGenerator(url(server), "m", backoff=0.5, sleep=waits.append)
    assert gen.generate("d", "Enzymes speed reactions.")[0] == "what is enzymes"
    assert gen.requests == 3 and waits == [0.5, 1.0]
    server.fail = [500] * 5
    with pytest.raises(GenerationError, match=r"no answer after 3 attempts \(last: HTTP 500"):
        QueryGenerator(url(server), "m", max_retries=2, sleep=lambda s: None).generate("x", "Another text.")


def test_clear_errors_for_bad_answers_and_settings(server, tmp_path, monkeypatch):
    server.fail = [401]
    with pytest.raises(GenerationError, match=r"refused the request \(HTTP 401"):
        QueryGenerator(url(server), "m", sleep=lambda s: None).generate("d", "text")
    server.reply = b"<html>oops</html>"
    with pytest.raises(GenerationError, match="not JSON"):
        QueryGenerator(url(server), "m").generate("d", "text")
    server.reply = {"error": "no"}
    with pytest.raises(GenerationError, match=r"choices\[0\].message.content"):
        QueryGenerator(url(server), "m").generate("d", "text")
    with pytest.raises(GenerationError, match="no answer after 1 attempts"):              # nothing listens here
        QueryGenerator("http://127.0.0.1:9/v1", "m", max_retries=0, timeout=2).generate("d", "text")
    with pytest.raises(ValueError, match="http:// or https://"):
        QueryGenerator("localhost:8000", "m")
    with pytest.raises(ValueError, match="placeholders"):
        QueryGenerator(url(server), "m", prompt="no placeholders")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "a", "queries": []}\nnot json\n')
    with pytest.raises(GenerationError, match=r"bad.jsonl, line 2: not a cache entry"):
        QueryGenerator(url(server), "m", cache_path=bad)
    monkeypatch.delenv("EMBEDLESSONS_LLM_URL", raising=False)
    assert generator_from_env() is None                                                   # nothing configured
    monkeypatch.setenv("EMBEDLESSONS_LLM_URL", url(server))
    monkeypatch.delenv("EMBEDLESSONS_LLM_MODEL", raising=False)
    with pytest.raises(ValueError, match="EMBEDLESSONS_LLM_MODEL is not"):
        generator_from_env()
    monkeypatch.setenv("EMBEDLESSONS_LLM_MODEL", "m")
    assert generator_from_env().model == "m"


def test_parse_and_round_trip_filter():
    assert parse_queries('1. first one\n2) "second"\n- third\n\nfirst one\n10. tenth', 10) == [
        "first one", "second", "third", "tenth"]
    corpus = {"d1": "photosynthesis converts light into sugar in plants",
              "d2": "mitochondria produce energy for the cell",
              "d3": "ribosomes build proteins from amino acids"}
    pairs = [("how do plants make sugar from light", "d1"), ("cell energy mitochondria", "d2"),
             ("how do plants make sugar from light", "d3")]
    assert consistency_filter(pairs, corpus, k=1) == pairs[:2]
    with pytest.raises(ValueError, match="not in the corpus"):
        consistency_filter([("q", "d9")], corpus)
