"""Section 5.6 (embedlessons.experiments.part5_library): our losses and trainer against sentence-transformers'.
Tiny inputs (a few pairs, 16-token texts, 2 steps); the full comparison runs in tests/test_recorded.py at the
recorded experiment's tiny setting."""
import numpy as np
import pytest
import torch

from embedlessons.experiments.part5_library import (ARMS, compare_arms, library_comparison, loss_parity,
                                                     train_ours, train_with_library, trainer_parity)
from embedlessons.models import load_model

BOUND = 1e-5          # float32 rounding; the gaps measured are 1e-8 to a few 1e-6


def _gaps(result):
    return {f"{name}.{k}": v for name, part in result.items() if name != "settings"
            for k, v in part.items() if k.endswith("gap")}


def test_losses_match_sentence_transformers_and_a_wrong_scale_is_caught():
    result = loss_parity(batch_size=4, max_length=16)
    assert result["settings"]["mini_batch_size"] < result["settings"]["batch_size"]     # GradCache really chunks
    gaps = _gaps(result)
    assert len(gaps) == 8 and all(v < BOUND for v in gaps.values()), gaps
    assert all(part["grad_max"] > 0.1 for name, part in result.items() if name.endswith("_st_matryoshka"))
    wrong = _gaps(loss_parity(batch_size=4, max_length=16, scale=10.0))           # 1/t is 20
    for name in ("info_nce_vs_mnrl", "matryoshka_vs_st_matryoshka", "ours_vs_mnrl"):
        assert wrong[f"{name}.loss_gap"] > 1e-3, name
    assert wrong["cached_mnrl_vs_mnrl.param_grad_gap"] < BOUND     # both theirs, both at scale 10: still equal


def test_library_trainer_trains_only_the_top_layers():
    base = load_model("all-MiniLM-L6-v2").transformer.state_dict()
    model, log = train_with_library("cached_mnrl", steps=2, batch_size=4, max_rows=16, max_length=16,
                                    mini_batch_size=2, top_layers=3)
    trained = model.transformer.state_dict()
    assert set(trained) == set(base) and len(log["steps"]) == 2
    top = [k for k in base if any(k.startswith(f"encoder.layer.{i}.") for i in (3, 4, 5))]
    frozen = [k for k in base if k not in top]
    assert any(k.startswith("embeddings.") for k in frozen) and any(k.startswith("pooler.") for k in frozen)
    assert [k for k in frozen if not torch.equal(trained[k], base[k])] == []
    assert [k for k in top if torch.equal(trained[k], base[k])] == []


def test_both_trainers_reach_the_same_weights_on_the_same_batches_and_dropout_masks():
    settings = dict(steps=2, batch_size=4, max_length=16, max_rows=16)
    result = trainer_parity(**settings)
    assert result["loss_gap"] < BOUND and result["grad_norm_gap"] < 1e-4
    assert result["weight_change"] > 1e-5                 # the weights moved ...
    assert result["update_gap"] < 0.01                    # ... and by the same update, to rounding
    # without the DataLoader's one draw from torch's generator, ours gets other dropout masks: another loss
    _, history = train_ours("info_nce", **settings)
    assert abs(history.losses[0] - result["losses"]["theirs"][0]) > 1e-3


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"unknown sentence-transformers loss 'gist'.*'mnrl', 'cached_mnrl'"):
        train_with_library("gist")
    with pytest.raises(ValueError, match=r"unknown loss of ours 'mnrl'.*'info_nce', 'matryoshka_info_nce'"):
        train_ours("mnrl")
    with pytest.raises(ValueError, match=r"unknown arm 'st_gist'.*" + list(ARMS)[0]):
        library_comparison(arms=("ours_info_nce", "st_gist"))


def synthetic_result(gain_at_64=0.1, seeds=(0, 1), n=200, seed=0):
    """Arm "b" equals arm "a" at full width and beats it by ``gain_at_64`` at 64 dims (plus small noise)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.8, n)
    out = {"summary": {}, "per_query": {}}
    for arm in ("a", "b"):
        for s in seeds:
            for key, shift in (("", 0.0), ("/dim64", gain_at_64 if arm == "b" else 0.0)):
                out["per_query"][f"{arm}/seed{s}{key}"] = {f"q{i}": float(v - 0.2 * bool(key) + shift
                                                                          + 0.01 * rng.normal())
                                                           for i, v in enumerate(base)}
            out["summary"].setdefault(arm, {})[str(s)] = {"ndcg@10": float(base.mean())}
    return out


def test_compare_arms_finds_a_planted_difference_at_one_dim_only():
    result = synthetic_result()
    at_64 = compare_arms(result, "b", "a", dim=64, n_resamples=500)
    assert at_64["diff"] == pytest.approx(0.1, abs=0.005) and at_64["ci_low"] > 0 and at_64["p"] < 0.01
    full = compare_arms(result, "b", "a", n_resamples=500)
    assert abs(full["diff"]) < 0.005 and full["ci_low"] < 0 < full["ci_high"]
    with pytest.raises(ValueError, match="arm 'c' is not in this result"):
        compare_arms(result, "c", "a")
    with pytest.raises(ValueError, match="no scores at dim 32"):
        compare_arms(result, "b", "a", dim=32)
