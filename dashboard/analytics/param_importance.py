"""Which hyperparameters matter: a random forest's importances and rank correlations (no Dash, no MLflow).

As W&B's parameter-importance panel: a scikit-learn RandomForestRegressor (fixed seed) fitted from the
varying hyperparameters to one metric over the finished runs; each parameter's impurity-based importance
(they sum to 1), its Spearman rank correlation with the metric (numeric params only: the order of a
category means nothing), and the number of runs behind both.  Below MIN_RUNS runs a forest fits noise,
so nothing is shown, with the reason.
"""
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


@dataclass(frozen=True)
class Importance:
    table: pd.DataFrame  # param, importance, spearman, spearman_p, numeric; most important first
    n_runs: int


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
    cols = [encode(runs[f"params.{p}"].fillna("—")) for p in params]
    x = np.column_stack([c for c, _ in cols])
    y = runs[metric].astype(float).to_numpy()
    from sklearn.ensemble import RandomForestRegressor  # here: scikit-learn is slow to import
    forest = RandomForestRegressor(n_estimators=N_TREES, random_state=SEED,
                                   max_samples=min(len(y), MAX_TREE_SAMPLES)).fit(x, y)
    rows = []
    for j, (p, (col, numeric)) in enumerate(zip(params, cols)):
        rho, pval = stats.spearmanr(col, y) if numeric and np.ptp(col) > 0 and np.ptp(y) > 0 else (np.nan, np.nan)
        rows.append({"param": p, "importance": float(forest.feature_importances_[j]), "spearman": float(rho),
                     "spearman_p": float(pval), "numeric": numeric})
    table = pd.DataFrame(rows).sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)
    return Importance(table, len(runs))
