"""Is the difference real?  Library tests over per-image predictions and per-seed accuracies (no Dash).

- Two runs: an exact McNemar test (statsmodels) on the test images one run gets right and the other wrong.
- Two configs with at least MIN_SEEDS seeds each: Welch's t-test (scipy, unequal variances) and a
  percentile bootstrap 95 % CI (scipy.stats.bootstrap, seeded) of the difference in mean accuracy.
"""
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
MIN_SEEDS = 2
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0  # a shared link must show the same interval every time


@dataclass(frozen=True)
class PairTest:
    """Two runs on the same images: both right, fixed (A wrong, B right), broken (A right, B wrong), both wrong."""
    both_right: int
    fixed: int
    broken: int
    both_wrong: int
    p_value: float
    acc_a: float
    acc_b: float


def contingency(pred_a: np.ndarray, pred_b: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The 2x2 table [[both right, A right B wrong], [A wrong B right, both wrong]]."""
    a, b = np.asarray(pred_a) == labels, np.asarray(pred_b) == labels
    return np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]], dtype=np.int64)


def mcnemar_pair(pred_a: np.ndarray, pred_b: np.ndarray, labels: np.ndarray) -> PairTest:
    table = contingency(pred_a, pred_b, labels)
    from statsmodels.stats.contingency_tables import mcnemar  # here: statsmodels is slow to import
    p = float(mcnemar(table, exact=True).pvalue)
    n = table.sum()
    return PairTest(int(table[0, 0]), int(table[1, 0]), int(table[0, 1]), int(table[1, 1]), p,
                    float(table[0].sum() / n), float((table[0, 0] + table[1, 0]) / n))


@dataclass(frozen=True)
class ConfigTest:
    mean_a: float
    mean_b: float
    diff: float  # mean B - mean A
    ci_low: float
    ci_high: float
    p_value: float
    n_a: int
    n_b: int


def _mean_diff(b, a, axis=-1):
    return np.mean(b, axis=axis) - np.mean(a, axis=axis)


def config_test(acc_a, acc_b) -> ConfigTest:
    """Welch's t-test and a seeded percentile bootstrap CI of mean(B) - mean(A), from per-seed accuracies."""
    a, b = np.asarray(acc_a, dtype=float), np.asarray(acc_b, dtype=float)
    p = float(stats.ttest_ind(b, a, equal_var=False).pvalue)
    boot = stats.bootstrap((b, a), _mean_diff, n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                           rng=np.random.default_rng(BOOTSTRAP_SEED), vectorized=True)
    return ConfigTest(float(a.mean()), float(b.mean()), float(b.mean() - a.mean()),
                      float(boot.confidence_interval.low), float(boot.confidence_interval.high),
                      p if np.isfinite(p) else 1.0, len(a), len(b))


def _pct(v: float) -> str:
    return f"{v * 100:.2f}"


def _p(p: float) -> str:
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.4f}" if p < 0.01 else f"p = {p:.3f}"


def config_verdict(t: ConfigTest, name_a: str, name_b: str) -> str:
    """One sentence: which config is better, by how much, with the interval and p; or 'within seed noise'."""
    ci = f"95 % CI {_pct(t.ci_low)} to {_pct(t.ci_high)} points"
    seeds = f"n = {t.n_a} and {t.n_b} seeds"
    if t.p_value < ALPHA and (t.ci_low > 0 or t.ci_high < 0):
        better, worse = (name_b, name_a) if t.diff > 0 else (name_a, name_b)
        return (f"{better} is better than {worse} by {_pct(abs(t.diff))} points of mean final test accuracy "
                f"({ci}, Welch {_p(t.p_value)}, {seeds}).")
    return (f"The difference between {name_a} and {name_b} ({_pct(t.diff)} points, {ci}, Welch {_p(t.p_value)}, "
            f"{seeds}) is within seed noise.")


def pair_verdict(t: PairTest, name_a: str, name_b: str) -> str:
    """One sentence for two runs, from the exact McNemar test on the images where they disagree."""
    counts = f"{t.fixed} images fixed, {t.broken} broken; exact McNemar {_p(t.p_value)}"
    if t.p_value < ALPHA:
        better, worse = (name_b, name_a) if t.fixed > t.broken else (name_a, name_b)
        return (f"{better} is better than {worse} on these test images by {_pct(abs(t.acc_b - t.acc_a))} points "
                f"({counts}).")
    return f"{name_a} and {name_b} do not differ beyond chance on these test images ({counts})."


NEED_REPLICATES = ("One seed per config: this says whether these two runs differ, not whether the configs do; "
                   "replicates (at least 2 seeds each) are needed for the config-level claim.")
