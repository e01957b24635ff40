"""Which hyperparameters matter: a random forest's importances and rank correlations (no Dash, no MLflow).

As W&B's parameter-importance panel: a scikit-learn RandomForestRegressor (fixed seed) fitted from the
varying hyperparameters to one metric over the finished runs; each parameter's impurity-based importance
(they sum to 1), its Spearman rank correlation with the metric (numeric params only: the order of a
category means nothing), and the number of runs behind both.  Below MIN_RUNS runs a forest fits noise,
so nothing is shown, with the reason.

Importances split what the forest explains, however little that is: a forest that predicts the metric
no better than its mean still ranks its params.  So each result carries the forest's out-of-bag R² (each
run predicted by the trees that never saw it), and `explained` says when it is too low to rank anything.
"""
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

MIN_RUNS = 8
SEED = 0
N_TREES = 300
# Each tree's bootstrap sample holds at most this many runs (sklearn's max_samples): the forest still
# draws on every run, and 10,000 runs fit in 1.2 s instead of 2.8 s (dev VM, under load, side by side).
MAX_TREE_SAMPLES = 1000
# Below this out-of-bag R² the params predict under a third of the metric's variance on runs the trees did not
# see, and the ranking is mostly the forest fitting noise.  Why a third, not zero: on synthetic grids of 8 and
# 16 runs (lr x seed x batch size, 100 draws each) whose metric is pure noise, the forest still reached R² >= 0
# in 15 % of draws but >= 1/3 in only 5 % and 2 % (95th percentile 0.29), while a real lr effect gave 0.5-0.8.
MIN_R2 = 1 / 3
# Above this many runs the forest and the correlations use a seeded random sample of them (and say so): its
# out-of-bag scoring grows with every run, so 100,000 runs took seconds, while the ranking of a handful of
# params from 5,000 runs already has a standard error far below the differences it is read for.
MAX_RUNS = 5000


@dataclass(frozen=True)
class Importance:
    table: pd.DataFrame  # param, importance, spearman, spearman_p, numeric; most important first
    n_runs: int  # the runs behind the numbers: all of them, or a sample of MAX_RUNS
    oob_r2: float = float("nan")  # the forest's out-of-bag R²: the share of the metric's variance it predicts
    of_runs: int | None = None  # how many runs there were, when n_runs is a sample of them

    @property
    def runs_said(self) -> str:
        """'12 runs', or 'a sample of 5,000 of 90,000 runs'."""
        return f"{self.n_runs:,} runs" if self.of_runs is None else \
            f"a sample of {self.n_runs:,} of {self.of_runs:,} runs"


def explained(model: str, r2: float | None) -> tuple[str, bool]:
    """One sentence on how much of the metric's variance `model` explains, and whether its ranking stands."""
    if r2 is None or np.isnan(r2):
        return f"The {model} could not be scored (too few runs, or the metric does not vary).", False
    said = f"The {model} explains {max(r2, 0.0):.0%} of the metric's variance (out-of-bag R² {r2:.2f})"
    if r2 < MIN_R2:
        return (said + ": too little to rank anything (below a third); the ranking below is likely noise, "
                       "not a finding."), False
    return said + ".", True


def encode(values: pd.Series) -> tuple[np.ndarray, bool]:
    """A param's column for the forest: its numbers, or category codes in sorted order; and whether numeric."""
    nums = pd.to_numeric(values, errors="coerce")
    if nums.notna().all():
        return nums.to_numpy(dtype=float), True
    cats = sorted({str(v) for v in values})
    return np.array([cats.index(str(v)) for v in values], dtype=float), False


def importance(runs: pd.DataFrame, params: list[str], metric: str) -> Importance | str:
    """The forest's importances of `params` (columns params.<name>) for `metric` over `runs`, or why not."""
    runs = runs[np.isfinite(pd.to_numeric(runs[metric], errors="coerce"))] if metric in runs else runs.iloc[0:0]
    if len(runs) < MIN_RUNS:
        return (f"Parameter importance needs at least {MIN_RUNS} finished runs with this metric; "
                f"this view has {len(runs)}.")
    if not params:
        return "Every run shares the same params: there is nothing to rank."
    of_runs = None
    if len(runs) > MAX_RUNS:
        of_runs, runs = len(runs), runs.sample(MAX_RUNS, random_state=SEED)
    cols = [encode(runs[f"params.{p}"].fillna("—")) for p in params]
    x = np.column_stack([c for c, _ in cols])
    y = runs[metric].astype(float).to_numpy()
    from sklearn.ensemble import RandomForestRegressor  # here: scikit-learn is slow to import
    forest = RandomForestRegressor(n_estimators=N_TREES, random_state=SEED,
                                   max_samples=min(len(y), MAX_TREE_SAMPLES), oob_score=True)
    with warnings.catch_warnings():  # a small grid leaves a run in every bootstrap: sklearn warns, R² stands
        warnings.simplefilter("ignore", UserWarning)
        forest.fit(x, y)
    rows = []
    for j, (p, (col, numeric)) in enumerate(zip(params, cols)):
        rho, pval = stats.spearmanr(col, y) if numeric and np.ptp(col) > 0 and np.ptp(y) > 0 else (np.nan, np.nan)
        rows.append({"param": p, "importance": float(forest.feature_importances_[j]), "spearman": float(rho),
                     "spearman_p": float(pval), "numeric": numeric})
    table = pd.DataFrame(rows).sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)
    return Importance(table, len(runs), float(forest.oob_score_), of_runs)
