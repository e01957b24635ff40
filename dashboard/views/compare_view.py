"""What the compare page shows: runs side by side, as curves and tables.

`load` is the only function that reads the store; the rest are pure functions of
what it returns, unit-tested without a server.
"""
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.read import store
from dashboard.views import gaps
from dashboard.views.theme import empty_figure, run_colors, template
from training import contract as C

MAX_RUNS = 300  # a 30-config x 10-seed sweep fits; grouped by config it is 30 curves (benchmarks/sweep_latency.py)
EPOCHS_TRAINED = "epochs trained"  # the metrics table's last column: the last step any curve reached
CURVES = {  # metric key -> (chart title, y-axis title, is an accuracy)
    C.TRAIN_LOSS: ("Train loss", "loss (mean per example)", False),
    C.TEST_LOSS: ("Test loss", "loss (mean per example)", False),
    C.TRAIN_ACC: ("Train accuracy", "accuracy (%)", True),
    C.TEST_ACC: ("Test accuracy", "accuracy (%)", True),
}


@dataclass
class Comparison:
    runs: list                      # MLflow Run objects, in URL order
    history: pd.DataFrame           # long: run_id, key, step, value
    problems: list[str] = field(default_factory=list)  # one line per id we could not show


def parse_run_ids(value) -> tuple[list[str], list[str]]:
    """Ids from `?runs=a,b,c` (duplicates dropped, order kept), and a message for each one that is malformed.

    More than MAX_RUNS ids keeps the first MAX_RUNS and says so.
    """
    if isinstance(value, list):  # ?runs=a&runs=b arrives as a list
        value = ",".join(value)
    parts = [p.strip() for p in (value or "").split(",") if p.strip()]
    ids, problems = [], []
    for p in dict.fromkeys(parts):
        try:
            ids.append(store.check_run_id(p))
        except store.StoreError as e:
            problems.append(str(e))
    if len(ids) > MAX_RUNS:
        problems.append(f"{len(ids)} runs asked for; comparing the first {MAX_RUNS} (the most this page shows at once)")
        ids = ids[:MAX_RUNS]
    return ids, problems


def load(value) -> Comparison:
    ids, problems = parse_run_ids(value)
    runs, missing = fetch_runs(ids)
    return Comparison(runs, store.metric_histories(runs, CURVES), problems + missing)


def fetch_runs(ids: list[str]) -> tuple[list, list[str]]:
    """store.get_runs, in one search instead of one query per run (30 runs: ~1 s less); the search of
    finished runs is reused by store.search_runs.  Ids it does not find (deleted, unknown) go through
    get_runs, which says why."""
    if len(ids) < 3:
        return store.get_runs(ids)
    try:  # ids are checked hex strings (parse_run_ids), safe inside the filter
        found = store.search_runs([e["id"] for e in store.experiments()],
                                  "attributes.run_id IN (" + ",".join(f"'{i}'" for i in ids) + ")")
    except store.StoreError:
        return store.get_runs(ids)
    by_id = {r.info.run_id: r for r in found}
    rest, missing = store.get_runs([i for i in ids if i not in by_id])
    by_id.update({r.info.run_id: r for r in rest})
    return [by_id[i] for i in ids if i in by_id], missing


def run_label(run) -> str:
    return run.info.run_name or run.info.run_id[:8]


def ema(values, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased so the first points are not pulled to 0.

    NaN and ±inf are skipped (they stay NaN in the output, a gap) so one bad value does not poison the rest.
    """
    values = np.asarray(values, dtype=float)
    if weight <= 0 or len(values) == 0:
        return values
    out, acc, n = np.full_like(values, np.nan), 0.0, 0
    for i, v in enumerate(values):
        if not np.isfinite(v):
            continue
        acc, n = weight * acc + (1 - weight) * v, n + 1
        out[i] = acc / (1 - weight ** n)
    return out


def curve_figure(comp: Comparison, key: str, smoothing: float = 0.0, colors: dict | None = None) -> go.Figure:
    """One metric against epoch, one line per run in that run's colour; raw values faint under the smoothed line."""
    title, ytitle, is_acc = CURVES[key]
    colors = colors or run_colors([r.info.run_id for r in comp.runs])
    data = comp.history[comp.history["key"] == key]
    if data.empty:
        return empty_figure(f"{title}: none of these runs logged '{key}'.")
    fig = go.Figure()
    for run in comp.runs:
        rid = run.info.run_id
        d = data[data["run_id"] == rid].sort_values("step")
        if d.empty:
            continue
        name, color = run_label(run), colors[rid]
        yfmt = ".2%" if is_acc else ".4f"
        if smoothing > 0:
            fig.add_trace(go.Scatter(x=d["step"], y=gaps.gaps(d["value"]), mode="lines", line=dict(color=color, width=1),
                                     opacity=0.25, hoverinfo="skip", showlegend=False, legendgroup=rid))
        fig.add_trace(go.Scatter(
            x=d["step"], y=gaps.gaps(ema(d["value"], smoothing)), mode="lines+markers" if len(d) <= 40 else "lines",
            name=name, legendgroup=rid, line=dict(color=color, width=2), marker=dict(size=5),
            hovertemplate=f"{name}<br>epoch %{{x}}<br>{key} %{{y:{yfmt}}}<extra></extra>"))
    fig.update_layout(template=template(), height=300, showlegend=False,
                      title=title + (f" (EMA smoothing {smoothing:.2f})" if smoothing > 0 else ""))
    fig.update_xaxes(title="epoch", rangemode="tozero", dtick=_epoch_tick(data["step"].max()))
    fig.update_yaxes(title=ytitle, tickformat=".0%" if is_acc else None)
    return fig


def curve_note(comp: Comparison, key: str) -> str:
    """How many of each run's logged values of `key` are NaN or ±inf (drawn as gaps); '' when none."""
    data = comp.history[comp.history["key"] == key]
    # Counted in one pass: a mask per run cost a 300-run page 0.6 s of its 1.1 s (cProfile, warm caches).
    bad = pd.Series(gaps.bad_mask(data["value"]), index=data["run_id"].to_numpy()).groupby(level=0).sum()
    return gaps.note({run_label(r): int(bad.get(r.info.run_id, 0)) for r in comp.runs})


def _epoch_tick(last_epoch) -> int | None:
    return 1 if last_epoch <= 12 else None


def params_table(runs: list, show_all: bool = False) -> pd.DataFrame:
    """Rows are params, columns are run ids; only hyperparameters whose values differ unless `show_all`.

    A param a run lacks shows as "—", which counts as a difference.  The params that name a run (its
    name, its experiment) are never rows: the columns already say which run is which.
    """
    cols = {r.info.run_id: r.data.params for r in runs}
    names = sorted({k for p in cols.values() for k in p
                    if k not in C.NAMING_PARAMS and (show_all or C.is_hyperparameter(k))})
    table = pd.DataFrame({rid: [p.get(k, "—") for k in names] for rid, p in cols.items()}, index=names)
    if not show_all and len(runs) > 1:
        table = table[table.nunique(axis=1) > 1]
    return table


def metrics_table(comp: Comparison) -> pd.DataFrame:
    """One row per run: final and best of each curve metric (best = max accuracy, min loss), and its epochs."""
    rows = []
    for run in comp.runs:
        rid = run.info.run_id
        row = {"run_id": rid, "run": run_label(run), "status": run.info.status}
        h = comp.history[comp.history["run_id"] == rid]
        for key, (_, _, is_acc) in CURVES.items():
            d = h[h["key"] == key].sort_values("step")
            row[f"final {key}"] = d["value"].iloc[-1] if len(d) else np.nan
            row[f"best {key}"] = (d["value"].max() if is_acc else d["value"].min()) if len(d) else np.nan
        row[EPOCHS_TRAINED] = int(h["step"].max()) if len(h) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def missing_parts(run) -> list[str]:
    """Curve metrics this run never logged (a run from another tool, or an older contract)."""
    return [k for k in CURVES if k not in run.data.metrics]


def missing_message(run) -> str:
    """One line for a run that lacks some of the contract's curves, naming what it does have; '' if complete."""
    missing = missing_parts(run)
    if not missing:
        return ""
    has = sorted(run.data.metrics)
    return (f"{run_label(run)}: no {', '.join(missing)} logged"
            + (f" (it has {', '.join(has[:6])}{'…' if len(has) > 6 else ''})" if has else " (it has no metrics)")
            + "; its curves are left out.")
