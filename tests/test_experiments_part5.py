"""Part 5 recipes (embedlessons.experiments.part5): the pair sources and the paired comparison of sources,
checked on a synthetic result with a known answer. The training and scoring code runs in
tests/test_recorded.py at the recorded experiment's tiny setting."""
import numpy as np
import pytest

from embedlessons.experiments.part5 import PAIR_SOURCES, compare_sources, pair_tasks, source_means


def synthetic_result(gain=0.05, seeds=(0, 1, 2), n=300, seed=0):
    """Source "b" beats source "a" by ``gain`` NDCG@10 on every claim (plus small noise)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.8, n)
    out = {"summary": {}, "per_query": {}}
    for source, shift in (("a", 0.0), ("b", gain)):
        for s in seeds:
            items = {f"q{i}": float(v + shift + 0.01 * rng.normal()) for i, v in enumerate(base)}
            out["per_query"][f"{source}/seed{s}"] = items
            out["summary"].setdefault(source, {})[str(s)] = {"ndcg@10": float(np.mean(list(items.values())))}
    return out


def test_compare_sources_finds_a_planted_gain_and_none_where_there_is_none():
    c = compare_sources(synthetic_result(), "b", "a", n_resamples=500)
    assert c["diff"] == pytest.approx(0.05, abs=0.003) and c["ci_low"] > 0 and c["p"] < 0.05
    assert compare_sources(synthetic_result(), "a", "b", n_resamples=500)["diff"] == pytest.approx(-c["diff"])
    same = compare_sources(synthetic_result(gain=0.0), "b", "a", n_resamples=500)
    assert same["ci_low"] < 0 < same["ci_high"]
    with pytest.raises(ValueError, match="source 'c' is not in this result"):
        compare_sources(synthetic_result(), "c", "a")


def test_source_means_give_the_spread_over_seeds():
    means = source_means(synthetic_result())
    assert means["b"][0] - means["a"][0] == pytest.approx(0.05, abs=0.003)
    assert 0 < means["a"][1] < 0.01
    assert source_means(synthetic_result(seeds=(0,)))["a"][1] == 0.0


def test_unlabelled_sources_use_the_corpus_only_and_labelled_the_training_claims():
    from embedlessons.data import load_retrieval

    test = load_retrieval("scifact", "test")
    test_claims = set(test.queries.values())
    labelled, = pair_tasks("labelled")
    assert not test_claims & set(labelled.dataset.anchors)          # no test claim is a training query
    title, cloze = pair_tasks("title_abstract+inverse_cloze")
    titles = {d["title"] for d in test.corpus.values()}
    assert set(title.dataset.anchors) <= titles and len(title.dataset.anchors) > 5000
    assert not test_claims & set(cloze.dataset.anchors)
    kept = np.mean([a in p for a, p in zip(cloze.dataset.anchors, cloze.dataset.positives)])
    assert 0.05 < kept < 0.15                   # the sentence stays in its passage one time in ten
    assert [t.name for t in pair_tasks("base")] == [] and set(PAIR_SOURCES) >= {"labelled", "inverse_cloze"}
    capped, = pair_tasks("inverse_cloze", max_rows=40)
    assert len(capped.dataset.anchors) == 40
    with pytest.raises(ValueError, match="unknown pair source 'titles'"):
        pair_tasks("titles")


def test_the_three_stages_train_on_what_section_5_3_says():
    from embedlessons.experiments.part5 import STAGES, stage_tasks

    assert [t.name for t in stage_tasks("warm-up", max_rows=40)] == ["title_abstract", "inverse_cloze"]
    assert [t.name for t in stage_tasks("multi-task", dim=128, max_rows=40)] == ["retrieval", "sts", "nli", "news"]
    hard, = stage_tasks("hard negatives", max_rows=40)
    rows = list(zip(hard.dataset.anchors, hard.dataset.positives, hard.dataset.negatives))
    assert len(rows) == 40 and all(p != n for _, p, n in rows)
    assert list(STAGES) == ["warm-up", "multi-task", "hard negatives"]
    with pytest.raises(ValueError, match="unknown stage 'pretraining'"):
        stage_tasks("pretraining")


def test_three_stage_parts_merge_and_refuse_to_merge_a_start_twice():
    from embedlessons.experiments.part5 import merge_three_stage_results

    def part(start, steps):
        return {"settings": {"starts": [start], "start_settings": {start: {"steps": steps}}, "seeds": [0]},
                "summary": {f"{start}:0": {"0": {"retrieval": 0.5}}}, "per_query": {f"{start}:0/seed0/retrieval": {}},
                "sts_gold": [1.0, 2.0], "runs": [{"command": start}]}

    merged = merge_three_stage_results([part("a", 60), part("b", 300)])
    assert merged["settings"]["starts"] == ["a", "b"] and merged["settings"]["start_settings"]["b"]["steps"] == 300
    assert set(merged["summary"]) == {"a:0", "b:0"} and len(merged["runs"]) == 2
    with pytest.raises(ValueError, match=r"a:0 seeds \['0'\] occur in more than one run"):
        merge_three_stage_results([part("a", 60), part("a", 60)])
    other = part("b", 300)
    other["sts_gold"] = [3.0]
    with pytest.raises(ValueError, match="different settings"):
        merge_three_stage_results([part("a", 60), other])
