"""The recorded-experiment mechanism (embedlessons.recorded): every recorded experiment's function runs at
its tiny setting here, so the code behind a stored number cannot rot; stored results are well formed."""
import json

import pytest

from embedlessons import recorded
from embedlessons.recorded import EXPERIMENTS, SPEED_FLAGS, check_result, load_result, result_path


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_recorded_experiment_runs_at_its_tiny_setting(name, tiny_recorded_result):
    result, results_dir = tiny_recorded_result(name)
    check_result(result)
    assert load_result(name, results_dir) == json.loads(json.dumps(result))   # written, and reads back equal
    run = result["runs"][0]
    assert run["settings"] == dict(EXPERIMENTS[name].tiny)
    assert run["command"].endswith(f"run {name} --tiny")
    assert run["versions"]["torch"] and run["machine"]["cpu_count"] >= 1 and len(run["date"]) == 10
    assert run["machine"]["cpu"] and set(run["machine"]["cpu_flags"]) <= set(SPEED_FLAGS)   # the kernels' CPU


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_stored_results_are_well_formed(name):
    path = result_path(name)
    if not path.exists():
        pytest.skip(f"{name} not recorded yet")
    result = load_result(name)
    assert result["experiment"] == name
    # the full-size settings of the entry are what the stored runs used (overrides only split the work)
    for run in result["runs"]:
        for key, value in EXPERIMENTS[name].settings.items():
            if key not in EXPERIMENTS[name].split_by:
                assert run["settings"].get(key) == value, (name, key)


def test_entries_name_real_functions_and_tiny_settings_are_accepted():
    import inspect

    for e in EXPERIMENTS.values():
        params = inspect.signature(e.resolve("function")).parameters
        assert set(e.tiny) <= set(params) and set(e.settings) <= set(params), e.name
        if e.merge:
            assert callable(e.resolve("merge"))


def test_bad_input_is_refused_with_the_way_out(tmp_path):
    with pytest.raises(KeyError, match="unknown recorded experiment 'nope'"):
        load_result("nope")
    name = sorted(EXPERIMENTS)[0]
    with pytest.raises(FileNotFoundError, match=f"python -m embedlessons.experiments run {name}"):
        load_result(name, tmp_path)
    result_path(name, tmp_path).write_text('{"experiment": 1,\n oops}')
    with pytest.raises(ValueError, match="line 2"):
        load_result(name, tmp_path)
    with pytest.raises(ValueError, match="missing keys \\['per_query', 'runs'\\]"):
        check_result({"experiment": name, "settings": {}})
    with pytest.raises(ValueError, match="runs\\[0\\] lacks"):
        check_result({"experiment": name, "settings": {}, "per_query": {"a": {"q": 1.0}}, "runs": [{"command": "x"}]})
    with pytest.raises(ValueError, match="per_query\\['a'\\]"):
        check_result({"experiment": name, "settings": {}, "per_query": {"a": {}}, "runs": [{}]})
    with pytest.raises(FileNotFoundError, match="--append needs"):
        recorded.run_experiment("scifact_hardneg_full_size", out=tmp_path / "absent.json", append=True)
    with pytest.raises(ValueError, match="no merge function"):
        recorded.run_experiment("faiss_indexes_scifact", out=tmp_path / "absent.json", append=True)


def test_command_line(capsys, tmp_path):
    assert recorded.main(["list"]) == 0
    assert "scifact_hardneg_full_size" in capsys.readouterr().out
    for argv, message in [(["run"], "name at least one"), (["run", "nope"], "unknown experiments"),
                          (["run", "scifact_hardneg_full_size", "--tiny"], "--tiny results are not the book's"),
                          (["run", "scifact_hardneg_full_size", "--set", "steps"], "key=value")]:
        with pytest.raises(SystemExit):
            recorded.main(argv)
        assert message in capsys.readouterr().err
    assert recorded._parse_set(["steps=3", "kinds=[\"bm25\"]", "device=cpu"]) == \
        {"steps": 3, "kinds": ["bm25"], "device": "cpu"}
