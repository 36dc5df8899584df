"""Fixtures shared by the unit tests."""
import pytest


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
