"""Part 4 recipes (embedlessons.experiments.part4): the training tasks, and the paired comparison of recipes
on the four families, checked on a synthetic result with a known answer. The training and scoring code runs
in tests/test_recorded.py at the recorded experiment's tiny setting."""
import numpy as np
import pytest

from embedlessons.experiments.part4 import (FAMILIES, RECIPES, compare_recipes, merge_recipe_results, recipe_means,
                                            train_recipe, training_tasks)
from embedlessons.training import PairDataset, ScoredPairDataset, TripletDataset


def synthetic_result(gain=0.05, seeds=(0, 1, 2), n=300, seed=0):
    """Recipe "b" is better than "a" by ``gain`` on retrieval and classification items and sits closer to
    the gold STS scores; clustering is the same."""
    rng = np.random.default_rng(seed)
    gold = rng.uniform(0, 5, n)
    base_items = rng.uniform(0.2, 0.8, n)
    out = {"settings": {"recipes": ["a", "b"], "seeds": list(seeds), "steps": 1}, "summary": {}, "per_query": {},
           "task_mix": {}, "weights": {}, "sts_gold": gold.tolist()}
    for recipe, shift, noise in (("a", 0.0, 2.0), ("b", gain, 1.0)):
        for s in seeds:
            items = {
                "retrieval": {f"q{i}": float(v + shift + 0.01 * rng.normal()) for i, v in enumerate(base_items)},
                "classification": {str(i): float(v + shift + 0.01 * rng.normal()) for i, v in enumerate(base_items)},
                "sts": {str(i): float(g + noise * rng.normal()) for i, g in enumerate(gold)},
                "clustering": {f"kmeans{r}": float(0.4 + 0.01 * rng.normal()) for r in range(5)}}
            for f, v in items.items():
                out["per_query"][f"{recipe}/seed{s}/{f}"] = v
            out["summary"].setdefault(recipe, {})[str(s)] = {f: float(np.mean(list(v.values())))
                                                             for f, v in items.items()}
    return out


def test_compare_recipes_finds_the_planted_gains_and_no_difference_where_there_is_none():
    result = synthetic_result()
    c = compare_recipes(result, "b", "a", n_resamples=500)
    assert set(c) == set(FAMILIES)
    for family in ("retrieval", "classification"):
        assert c[family]["diff"] == pytest.approx(0.05, abs=0.005) and c[family]["ci_low"] > 0
    assert c["sts"]["ci_low"] > 0 and c["sts"]["p"] < 0.05
    assert c["clustering"]["ci_low"] < 0 < c["clustering"]["ci_high"]
    flipped = compare_recipes(result, "a", "b", n_resamples=500)
    assert flipped["retrieval"]["diff"] == pytest.approx(-c["retrieval"]["diff"])
    same = compare_recipes(synthetic_result(gain=0.0), "b", "a", n_resamples=500)
    assert same["retrieval"]["ci_low"] < 0 < same["retrieval"]["ci_high"]


def test_a_one_seed_recipe_pairs_with_every_seed_of_the_other():
    result = synthetic_result()
    one = synthetic_result(seeds=(0,))
    for key in [k for k in one["per_query"] if k.startswith("a/")]:
        result["per_query"][key] = one["per_query"][key]
    result["summary"]["a"] = one["summary"]["a"]
    c = compare_recipes(result, "b", "a", n_resamples=300)
    assert c["retrieval"]["ci_low"] > 0 and np.isfinite(c["sts"]["diff"])
    assert recipe_means(result)["a"]["retrieval"][1] == 0.0            # one seed: no spread
    assert recipe_means(result)["b"]["retrieval"][1] > 0
    with pytest.raises(ValueError, match="recipe 'c' is not in this result"):
        compare_recipes(result, "c", "a")


def test_merge_joins_recipes_and_refuses_other_settings():
    a, b = synthetic_result(), synthetic_result(seed=0)
    b["settings"] = {**b["settings"], "recipes": ["c"]}
    b["summary"] = {"c": b["summary"]["b"]}
    merged = merge_recipe_results([{**a, "runs": [{"x": 1}]}, {**b, "runs": [{"x": 2}]}])
    assert merged["settings"]["recipes"] == ["a", "b", "c"] and merged["runs"] == [{"x": 1}, {"x": 2}]
    with pytest.raises(ValueError, match="different settings"):
        merge_recipe_results([a, {**b, "settings": {**b["settings"], "steps": 2}}])


def test_training_tasks_have_one_data_shape_each():
    tasks = {t.name: t for t in training_tasks(rows_per_task=50)}
    assert list(tasks) == ["retrieval", "sts", "nli", "news"]
    assert isinstance(tasks["retrieval"].dataset, PairDataset) and len(tasks["retrieval"].dataset) == 50
    assert isinstance(tasks["sts"].dataset, ScoredPairDataset)
    assert isinstance(tasks["nli"].dataset, TripletDataset)
    assert tasks["news"].dataset.n_classes == 4 and tasks["news"].no_duplicates is False
    with pytest.raises(ValueError, match=r"unknown task names \['vision'\]"):
        training_tasks(["vision"])
    variants = {t.name: t.loss for t in training_tasks(["sts", "news"], rows_per_task=50,
                                                       losses={"sts": "mse", "news": "center"})}
    assert variants["sts"].__name__ == "mse_cosine_loss" and type(variants["news"]).__name__ == "CenterLoss"
    with pytest.raises(ValueError, match=r"unknown loss 'triplet' for task 'sts'"):
        training_tasks(["sts"], losses={"sts": "triplet"})
    with pytest.raises(ValueError, match=r"unknown recipe 'bert'; choose one of"):
        train_recipe("bert")
    assert set(RECIPES) >= {"base", "retrieval", "multitask", "uniform", "proportional", "round_robin",
                            "loss_ratio", "dwa", "uncertainty"}
