"""The load tester (embedlessons.loadtest) against the real service (embedlessons.serve) on loopback, with a
tiny random BERT: start-up and clean-up, closed-loop runs without errors, batching visible in the server's
forward-pass counter, failed requests counted (not raised), and bad arguments refused."""
import asyncio

import httpx
import pytest

from embedlessons.loadtest import load_test, load_test_table, recorded_load_test, start_service
from embedlessons.models import small_bert
from embedlessons.recorded import check_result

TEXTS = ["a cell divides", "a star explodes", "proteins fold", "the heart pumps blood", "ice melts in the sun"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("loadtest")
    return small_bert(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, seed=0).save(root / "tiny")


@pytest.fixture(scope="module")
def servers(tiny_model):
    """A batching server (50 ms window, so concurrent requests surely share passes) and a --no-batching one."""
    with start_service(tiny_model, extra_args=["--batch-window-ms", "50", "--max-length", "32"]) as batched, \
            start_service(tiny_model, extra_args=["--no-batching", "--max-length", "32"]) as plain:
        yield {"batched": batched, "plain": plain}


def test_start_service_answers_and_cleans_up(tiny_model):
    with start_service(tiny_model, extra_args=["--max-length", "32"]) as url:
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + "/health", trust_env=False).json()["status"] == "ok"
        process = url.process
    assert process.poll() is not None                       # terminated on leaving the block
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=2, trust_env=False)


def test_start_service_reports_a_dying_or_slow_server(tiny_model):
    with pytest.raises(RuntimeError, match="unrecognized arguments: --no-such-option"):
        with start_service(tiny_model, extra_args=["--no-such-option"]):
            pass
    with pytest.raises(TimeoutError, match="did not answer GET /health"):
        with start_service(tiny_model, timeout_s=0.2):
            pass


@pytest.mark.parametrize("concurrency", [1, 8])
def test_closed_loop_runs_complete_without_errors(servers, concurrency):
    result = load_test(servers["batched"], TEXTS, concurrency=concurrency, requests=24, texts_per_request=2)
    assert result["errors"] == 0 and result["error_messages"] == []
    assert result["sent"] == result["completed"] == result["requests"] == 24 and not result["time_limited"]
    assert result["status_counts"] == {"200": 24} and result["concurrency"] == concurrency
    assert 0 < result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["throughput_rps"] > 0 and result["texts_per_s"] == pytest.approx(2 * result["throughput_rps"])
    assert result["server_requests"] == 24 and result["server_texts"] == 48


def test_batching_shares_forward_passes_and_plain_does_not(servers):
    batched = load_test(servers["batched"], TEXTS, concurrency=8, requests=32)
    plain = load_test(servers["plain"], TEXTS, concurrency=8, requests=32)
    assert batched["errors"] == plain["errors"] == 0
    assert batched["batching"] is True and plain["batching"] is False
    assert batched["forward_passes"] < 32 and batched["texts_per_forward_pass"] > 1
    assert plain["forward_passes"] == 32 and plain["texts_per_forward_pass"] == 1.0


def test_failed_requests_are_counted_not_raised(servers):
    result = load_test(servers["batched"], TEXTS, concurrency=2, requests=6, endpoint="/search")   # no corpus
    assert result["errors"] == 6 and result["completed"] == 0 and result["status_counts"] == {"404": 6}
    assert "HTTP 404" in result["error_messages"][0] and result["p50_ms"] is None
    too_long = load_test(servers["batched"], ["x" * 5000], concurrency=1, requests=2)             # over --max-chars
    assert too_long["errors"] == 2 and "413" in too_long["status_counts"]
    assert httpx.get(servers["batched"] + "/health", trust_env=False).status_code == 200      # the server lives on


def test_transport_errors_are_counted_and_work_inside_a_running_loop():
    from embedlessons.loadtest import free_port

    async def from_a_notebook():                           # a running event loop, as in Jupyter
        return load_test(f"http://127.0.0.1:{free_port()}", TEXTS, concurrency=2, requests=4)

    result = asyncio.run(from_a_notebook())
    assert result["errors"] == 4 and result["completed"] == 0 and result["forward_passes"] is None
    assert "ConnectError" in result["error_messages"][0]


@pytest.mark.parametrize("kwargs, message", [
    ({"concurrency": 0}, "concurrency must be an integer >= 1"),
    ({"concurrency": 2.5}, "concurrency must be an integer"),
    ({"requests": 3, "concurrency": 8}, "smaller than concurrency"),
    ({"texts": []}, "texts is empty"),
    ({"texts": "one string"}, "not one string"),
    ({"texts": ["ok", ""]}, "not non-empty strings"),
    ({"endpoint": "/nope"}, "unknown endpoint"),
    ({"endpoint": "/search", "texts_per_request": 2}, "one query per request"),
    ({"texts_per_request": 0}, "texts_per_request"),
    ({"time_limit_s": 0}, "time_limit_s"),
])
def test_bad_arguments_raise_value_error(kwargs, message):
    arguments = {"url": "http://127.0.0.1:1", "texts": TEXTS, "concurrency": 2, "requests": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        load_test(**arguments)
    with pytest.raises(ValueError):                        # the table refuses before starting any server
        load_test_table("unused", arguments["texts"], concurrencies=[arguments["concurrency"]],
                        requests=arguments["requests"], endpoint=arguments.get("endpoint", "/embed"),
                        texts_per_request=arguments.get("texts_per_request", 1),
                        time_limit_s=arguments.get("time_limit_s", 60.0))


def test_recorded_load_test_has_the_recorded_shape(tiny_model):
    result = recorded_load_test(model=str(tiny_model), concurrencies=[1, 3], requests=6, batching_modes=[False],
                                n_texts=20, warmup_requests=2, max_length=32)
    check_result({"experiment": "load_test", **result, "runs": [{k: "x" for k in
                                                                 ("command", "date", "seconds", "settings",
                                                                  "versions", "machine")}]})
    assert set(result["per_query"]) == {"plain_c1", "plain_c3"}
    assert all(len(latencies) == 6 for latencies in result["per_query"].values())
    assert [(r["mode"], r["concurrency"], r["completed"]) for r in result["rows"]] == [("plain", 1, 6), ("plain", 3, 6)]
    assert all("latencies_ms" not in r and r["forward_passes"] == 6 for r in result["rows"])
    assert result["settings"]["texts"] == 20 and result["settings"]["batching_modes"] == [False]
