"""How sure is a comparison? Spread over seeds, seed-paired differences, and a paired bootstrap over STS pairs.

A small model trained from random weights gives a different score for every seed (initial weights, batch
order, dropout), so one run per setting cannot tell a real difference from luck. The helpers here answer
the two questions the book asks of every cheap comparison:

- **How much does a score move between seeds?** :func:`seed_summary` gives the mean, the standard
  deviation and a Student-t interval of the mean over n seeds.
- **Is setting A better than setting B?** When both are trained from the same seeds, the per-seed
  differences A - B remove what the two runs share (the same initial weights, often the same batches).
  :func:`seed_paired_difference` gives their mean, a t interval and the paired t-test p-value
  (Student 1908). :func:`paired_bootstrap_spearman` measures the other source of noise, the finite test
  set: it resamples STS pairs (the same pairs for both models) and recomputes the Spearman difference
  (Efron & Tibshirani 1993, the percentile bootstrap).

The book calls a difference a difference only when its interval excludes zero (:attr:`Interval.excludes_zero`,
equivalently p < 0.05 for the t-test); otherwise "no difference measurable at this budget".

Example::

    >>> from embedlessons.stats import seed_paired_difference
    >>> d = seed_paired_difference([0.51, 0.49, 0.50], [0.47, 0.46, 0.48])   # setting A, B on seeds 0, 1, 2
    >>> round(d.mean, 3), d.excludes_zero
    (0.03, True)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats

__all__ = ["Interval", "PairedDifference", "seed_summary", "seed_paired_difference", "paired_bootstrap_spearman",
           "verdict", "NO_DIFFERENCE"]

#: What the book says when an interval includes zero.
NO_DIFFERENCE = "no difference measurable at this budget"


@dataclass(frozen=True)
class Interval:
    """A mean with its spread over n values and a ``confidence`` interval ``[low, high]`` for it."""

    mean: float
    sd: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of zero (for a difference: a measurable one)."""
        return bool(self.low > 0 or self.high < 0)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class PairedDifference(Interval):
    """:class:`Interval` of the mean of per-seed differences, with the differences and a two-sided p-value."""

    differences: tuple[float, ...] = ()
    p: float = 1.0


def _values(values, name: str = "values") -> np.ndarray:
    if isinstance(values, Mapping):
        values = values.values()
    x = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be a flat sequence of numbers (one per seed), got shape {x.shape}")
    if len(x) < 2:
        raise ValueError(f"need at least 2 {name} (seeds) for a spread, got {len(x)}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite numbers, got {x.tolist()}")
    return x


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence}")


def seed_summary(values: Sequence[float] | Mapping[object, float], confidence: float = 0.95) -> Interval:
    """Mean, standard deviation (n - 1 in the denominator) and Student-t interval of the mean.

    Args:
        values: one score per seed (a sequence, or a mapping seed -> score), n >= 2.
        confidence: coverage of the interval (0.95: mean +- t_{0.975, n-1} * sd / sqrt(n)).

    Returns:
        :class:`Interval`. With 3 seeds t_{0.975, 2} = 4.30, so the interval is wide: it is honest about
        how little three runs say.
    """
    _check_confidence(confidence)
    x = _values(values)
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    half = float(_scipy_stats.t.ppf(0.5 + confidence / 2, len(x) - 1)) * sd / np.sqrt(len(x))
    return Interval(mean, sd, mean - half, mean + half, len(x), confidence)


def seed_paired_difference(a: Sequence[float] | Mapping[object, float], b: Sequence[float] | Mapping[object, float],
                           confidence: float = 0.95) -> PairedDifference:
    """Mean of the per-seed differences a_s - b_s, its t interval and the paired t-test p-value.

    Args:
        a, b: scores of two settings trained from the same seeds: sequences in the same seed order, or
            mappings seed -> score with the same seeds (then paired by key).
        confidence: coverage of the interval.

    Returns:
        :class:`PairedDifference`; ``excludes_zero`` is True exactly when the two-sided paired t-test gives
        p < 1 - confidence. When every difference is the same, sd is 0 and the interval is that value.
    """
    if isinstance(a, Mapping) != isinstance(b, Mapping):
        raise ValueError("pass both settings as mappings seed -> score, or both as sequences")
    if isinstance(a, Mapping):
        if set(a) != set(b):
            raise ValueError(f"the two settings were run on different seeds: {sorted(a)} vs {sorted(b)}")
        keys = list(a)
        a, b = [a[k] for k in keys], [b[k] for k in keys]
    xa, xb = _values(a, "scores of a"), _values(b, "scores of b")
    if len(xa) != len(xb):
        raise ValueError(f"paired scores need one value per seed for both settings, got {len(xa)} and {len(xb)}")
    d = xa - xb
    s = seed_summary(d, confidence)
    if s.sd == 0:
        p = 0.0 if s.mean != 0 else 1.0
    else:
        p = float(_scipy_stats.ttest_1samp(d, 0.0).pvalue)
    return PairedDifference(s.mean, s.sd, s.low, s.high, s.n, confidence, tuple(float(v) for v in d), p)


def _rank_rows(x: np.ndarray) -> np.ndarray:
    return _scipy_stats.rankdata(x, axis=-1)


def _spearman_rows(pred: np.ndarray, gold_ranks: np.ndarray) -> np.ndarray:
    """Spearman of each row of ``pred`` [..., N] with the matching row of gold ranks [..., N]."""
    r = _rank_rows(pred)
    r = r - r.mean(-1, keepdims=True)
    g = gold_ranks - gold_ranks.mean(-1, keepdims=True)
    return (r * g).sum(-1) / np.sqrt((r * r).sum(-1) * (g * g).sum(-1))


def paired_bootstrap_spearman(pred_a, pred_b, gold, n_resamples: int = 2000, seed: int = 0,
                              confidence: float = 0.95) -> dict[str, float]:
    """Paired bootstrap over STS pairs of Spearman(pred_a, gold) - Spearman(pred_b, gold).

    Each resample draws N pairs with replacement, the same pairs for both models (and for every seed),
    and recomputes both correlations on them; ties get average ranks, as in ``scipy.stats.spearmanr``.

    Args:
        pred_a, pred_b: predicted similarities (cosines), shape [N] for one model each, or [S, N] for S
            seeds each (then the statistic is the mean over seeds of the per-seed Spearman difference).
        gold: the N gold similarity scores.
        n_resamples: bootstrap resamples.
        seed: seed of the resampling (the numbers are reproducible).
        confidence: coverage of the percentile interval.

    Returns:
        ``diff`` (on all pairs), ``ci_low``/``ci_high`` (percentile interval) and ``p`` (two-sided: twice the
        share of resampled differences on the far side of zero, with the +1 correction, capped at 1).
    """
    _check_confidence(confidence)
    a, b, g = np.asarray(pred_a, np.float64), np.asarray(pred_b, np.float64), np.asarray(gold, np.float64)
    if a.shape != b.shape or a.ndim not in (1, 2):
        raise ValueError(f"pred_a and pred_b must have the same shape [N] or [S, N], got {a.shape} and {b.shape}")
    if g.ndim != 1 or g.shape[0] != a.shape[-1]:
        raise ValueError(f"gold must have one score per pair ({a.shape[-1]}), got shape {g.shape}")
    if len(g) < 3:
        raise ValueError(f"need at least 3 scored pairs, got {len(g)}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.all(np.isfinite(g))):
        raise ValueError("predicted and gold scores must be finite")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    a, b = np.atleast_2d(a), np.atleast_2d(b)

    def statistic(idx: np.ndarray) -> np.ndarray:          # idx [R, N] -> [R] mean over seeds of the difference
        gr = _rank_rows(g[idx])                            # [R, N]
        diff = [_spearman_rows(a[s][idx], gr) - _spearman_rows(b[s][idx], gr) for s in range(len(a))]
        return np.mean(diff, axis=0)

    observed = float(statistic(np.arange(len(g))[None])[0])
    rng = np.random.default_rng(seed)
    boot = np.concatenate([statistic(rng.integers(0, len(g), size=(min(200, n_resamples - s), len(g))))
                           for s in range(0, n_resamples, 200)])
    boot = boot[np.isfinite(boot)]                          # a resample with constant scores has no correlation
    tail = (0.5 - confidence / 2, 0.5 + confidence / 2)
    far = min((boot <= 0).sum(), (boot >= 0).sum())
    return {"diff": observed, "ci_low": float(np.quantile(boot, tail[0])), "ci_high": float(np.quantile(boot, tail[1])),
            "p": float(min(1.0, 2 * (far + 1) / (len(boot) + 1)))}


def verdict(low: float, high: float, measurable: str = "a difference") -> str:
    """The words for the interval ``[low, high]`` of a difference: ``measurable`` (e.g. "better") when it
    excludes zero, else :data:`NO_DIFFERENCE`."""
    if low > high:
        raise ValueError(f"an interval needs low <= high, got [{low}, {high}]")
    return measurable if (low > 0 or high < 0) else NO_DIFFERENCE
