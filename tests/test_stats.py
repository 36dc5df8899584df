"""Tests of embedlessons.stats against scipy and against simulated data with a known answer."""
import numpy as np
import pytest
from scipy import stats as scipy_stats

from embedlessons.stats import (NO_DIFFERENCE, Interval, paired_bootstrap_spearman, seed_paired_difference,
                                seed_summary, verdict)


def test_seed_summary_is_the_student_t_interval():
    x = [0.512, 0.488, 0.47, 0.503]
    s = seed_summary(x)
    low, high = scipy_stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=scipy_stats.sem(x))
    assert (s.mean, s.low, s.high) == pytest.approx((np.mean(x), low, high), abs=1e-12)
    assert s.sd == pytest.approx(np.std(x, ddof=1)) and s.n == 4
    assert seed_summary({0: 1.0, 1: 2.0, 2: 3.0}).mean == 2.0           # a mapping seed -> score
    assert seed_summary({0: 1.0, 1: 2.0, 2: 3.0}.values()).mean == 2.0  # any iterable of numbers
    wider = seed_summary(x, confidence=0.99)
    assert wider.low < s.low and wider.high > s.high


def test_t_interval_covers_the_true_mean_95_percent_of_the_time_with_three_seeds():
    # with n = 3 a normal (z) interval would cover only ~80 %; the t interval must give ~95 %
    rng = np.random.default_rng(0)
    samples = rng.normal(0.5, 0.02, size=(4000, 3))
    covered = np.mean([(lambda s: s.low <= 0.5 <= s.high)(seed_summary(row)) for row in samples])
    assert covered == pytest.approx(0.95, abs=0.015)


def test_seed_paired_difference_matches_the_paired_t_test():
    a = [0.494, 0.471, 0.502, 0.489]
    b = [0.465, 0.466, 0.480, 0.470]
    d = seed_paired_difference(a, b)
    assert d.differences == pytest.approx(tuple(np.subtract(a, b)))
    assert d.mean == pytest.approx(np.mean(np.subtract(a, b)))
    assert d.p == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue, rel=1e-9)
    assert d.excludes_zero == (d.p < 0.05)
    # pairing removes what the runs share: the same scores unpaired would not separate
    shared = np.array([0.0, 0.05, -0.04, 0.02])
    paired = seed_paired_difference(0.5 + shared + 0.01, 0.5 + shared)
    assert paired.excludes_zero and paired.sd == 0 and paired.p == 0.0
    assert not seed_summary(0.5 + shared + 0.01).low > seed_summary(0.5 + shared).high


def test_seed_paired_difference_pairs_mappings_by_seed():
    a = {0: 0.5, 1: 0.6, 2: 0.7}
    b = {2: 0.6, 0: 0.4, 1: 0.5}                                          # another order, same seeds
    assert seed_paired_difference(a, b).differences == pytest.approx((0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match="different seeds"):
        seed_paired_difference(a, {0: 0.4, 1: 0.5, 3: 0.6})
    with pytest.raises(ValueError, match="both as"):
        seed_paired_difference(a, [0.4, 0.5, 0.6])


def test_bad_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="at least 2"):
        seed_summary([0.5])
    with pytest.raises(ValueError, match="finite"):
        seed_summary([0.5, float("nan")])
    with pytest.raises(ValueError, match="flat"):
        seed_summary([[0.5, 0.4], [0.3, 0.2]])
    with pytest.raises(ValueError, match="one value per seed"):
        seed_paired_difference([0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(ValueError, match="confidence"):
        seed_summary([0.1, 0.2], confidence=95)
    with pytest.raises(ValueError, match="same shape"):
        paired_bootstrap_spearman(np.zeros(5), np.zeros(6), np.zeros(5))
    with pytest.raises(ValueError, match="one score per pair"):
        paired_bootstrap_spearman(np.zeros(5), np.zeros(5), np.zeros(4))


def test_paired_bootstrap_spearman_difference_and_interval():
    rng = np.random.default_rng(1)
    gold = rng.uniform(0, 5, 800)
    good = gold + rng.normal(0, 1.0, 800)                                 # Spearman ~0.8
    worse = gold + rng.normal(0, 2.5, 800)                                # Spearman ~0.5
    out = paired_bootstrap_spearman(good, worse, gold, n_resamples=1000)
    expected = scipy_stats.spearmanr(good, gold)[0] - scipy_stats.spearmanr(worse, gold)[0]
    assert out["diff"] == pytest.approx(expected, abs=1e-12)
    assert 0 < out["ci_low"] < out["diff"] < out["ci_high"] and out["p"] < 0.01
    assert paired_bootstrap_spearman(good, worse, gold, n_resamples=1000) == out          # seeded
    same = paired_bootstrap_spearman(good, good, gold, n_resamples=200)
    assert same["diff"] == same["ci_low"] == same["ci_high"] == 0.0 and same["p"] == 1.0
    # two equally good, independent predictors: the interval should include zero
    twin = gold + rng.normal(0, 1.0, 800)
    tie = paired_bootstrap_spearman(good, twin, gold, n_resamples=1000)
    assert tie["ci_low"] < 0 < tie["ci_high"] and tie["p"] > 0.05


def test_paired_bootstrap_spearman_averages_over_seeds():
    rng = np.random.default_rng(2)
    gold = rng.uniform(0, 5, 300)
    a = np.stack([gold + rng.normal(0, 1.0, 300) for _ in range(3)])     # [3 seeds, 300 pairs]
    b = np.stack([gold + rng.normal(0, 1.5, 300) for _ in range(3)])
    out = paired_bootstrap_spearman(a, b, gold, n_resamples=300)
    per_seed = [scipy_stats.spearmanr(a[s], gold)[0] - scipy_stats.spearmanr(b[s], gold)[0] for s in range(3)]
    assert out["diff"] == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert out["ci_low"] < out["diff"] < out["ci_high"]


def test_verdict_and_interval_words():
    assert verdict(0.01, 0.03, "better") == "better"
    assert verdict(-0.03, -0.01, "worse") == "worse"
    assert verdict(-0.01, 0.02) == NO_DIFFERENCE == "no difference measurable at this budget"
    with pytest.raises(ValueError, match="low <= high"):
        verdict(0.1, 0.0)
    assert str(Interval(0.5, 0.01, 0.48, 0.52, 3)) == "0.500 [0.480, 0.520]"
    assert not Interval(0.0, 0.01, -0.02, 0.02, 3).excludes_zero
