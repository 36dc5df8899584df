"""Fixtures shared by the unit tests."""
import pytest


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models train fastest on one thread (and do not spin-wait on a busy machine).
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread", "private_cache")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """Every test writes runs and embeddings into its own folder, never into the user's cache."""
    monkeypatch.setenv("EMBEDLESSONS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EMBEDLESSONS_NO_CACHE", raising=False)


@pytest.fixture(scope="session")
def tiny_recorded_result(tmp_path_factory):
    """``tiny_recorded_result(name)``: recorded experiment ``name`` run once per session at its tiny setting
    (``embedlessons.recorded``), written to a temporary results folder. Returns ``(result, results_dir)``."""
    import os

    from embedlessons.recorded import result_path, run_experiment

    done = {}
    results_dir = tmp_path_factory.mktemp("results")
    cache = str(tmp_path_factory.mktemp("cache"))      # tiny runs do not fill the user's run cache

    def run(name):
        if name not in done:
            before = os.environ.get("EMBEDLESSONS_CACHE")
            os.environ["EMBEDLESSONS_CACHE"] = cache
            try:
                done[name] = run_experiment(name, tiny=True, out=result_path(name, results_dir))
            finally:
                if before is None:
                    del os.environ["EMBEDLESSONS_CACHE"]
                else:
                    os.environ["EMBEDLESSONS_CACHE"] = before
        return done[name], results_dir

    return run
