"""Replicates: runs whose hyperparameters differ only in the seed are one config, measured n times.

Plain functions over params dicts and long metric frames (no Dash, no MLflow).  A config's curve is
the mean over its seeds at each epoch, with a band of one standard deviation (ddof=1) or a 95 %
confidence interval of the mean (Student's t, n - 1 degrees of freedom).
"""
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from training import contract as C

BANDS = ("sd", "ci")  # one standard deviation, or the 95 % confidence interval of the mean
CI_LEVEL = 0.95


def config_key(params: dict) -> tuple:
    """What makes two runs the same config: every hyperparameter except the seed (names and bookkeeping never count)."""
    return tuple(sorted((k, str(v)) for k, v in params.items()
                        if C.is_hyperparameter(k) and k not in C.NAMING_PARAMS and k != C.PARAM_SEED))


@dataclass(frozen=True)
class Group:
    key: tuple
    label: str  # the params that differ between the groups, e.g. "lr=0.5"
    run_ids: tuple  # in the order given


def group_runs(params_by_run: dict[str, dict]) -> list[Group]:
    """Runs grouped by config_key, groups in order of first appearance, each named by the params that differ."""
    keys = {rid: config_key(p) for rid, p in params_by_run.items()}
    order = list(dict.fromkeys(keys.values()))
    as_dicts = [dict(k) for k in order]
    names = sorted({n for d in as_dicts for n in d})
    differing = [n for n in names if len({d.get(n, "—") for d in as_dicts}) > 1]
    groups = []
    for key, d in zip(order, as_dicts):
        label = ", ".join(f"{n}={d.get(n, '—')}" for n in differing) or "all runs (one config)"
        groups.append(Group(key, label, tuple(rid for rid, k in keys.items() if k == key)))
    return groups


def has_replicates(groups: list[Group]) -> bool:
    return any(len(g.run_ids) > 1 for g in groups)


def half_width(sd: np.ndarray, n: np.ndarray, band: str) -> np.ndarray:
    """The band's half width around the mean: sd, or t(0.975, n-1) * sd / sqrt(n); NaN where n < 2."""
    sd, n = np.asarray(sd, dtype=float), np.asarray(n, dtype=float)
    if band == "sd":
        return np.where(n > 1, sd, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = stats.t.ppf(0.5 + CI_LEVEL / 2, np.where(n > 1, n - 1, np.nan))
        return t * sd / np.sqrt(n)


def aggregate_curve(history: pd.DataFrame, run_ids, key: str) -> pd.DataFrame:
    """(step, mean, sd, n) of one metric over the given runs; non-finite values are left out of a step."""
    d = history[(history["key"] == key) & history["run_id"].isin(list(run_ids)) & np.isfinite(history["value"])]
    if d.empty:
        return pd.DataFrame(columns=["step", "mean", "sd", "n"])
    out = d.groupby("step")["value"].agg(mean="mean", sd=lambda v: v.std(ddof=1), n="count").reset_index()
    return out.sort_values("step").reset_index(drop=True)


def final_values(history: pd.DataFrame, key: str) -> dict[str, float]:
    """Each run's value of `key` at its last logged step."""
    d = history[history["key"] == key].sort_values("step")
    return d.groupby("run_id")["value"].last().to_dict()


def summary(values) -> tuple[float, float, int]:
    """(mean, sd with ddof=1 (NaN for one value), n) of the finite values."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), len(v)
