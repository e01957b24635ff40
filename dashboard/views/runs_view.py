"""What the runs page shows: a frame of runs and the grid-review figures (the table's rows: runs_table).

`load_runs`, `view` and `frame_of` read the store; the rest are pure functions of a frame, so they are
unit-tested without a server.  The figures stay readable at 100,000 runs: the parallel coordinates draw
a random PARALLEL_MAX of them and say so, and a heatmap cell lists at most CELL_RUNS_MAX of its runs.
"""
import math
from dataclasses import fields

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.read import run_index, store
from dashboard.views.theme import SEQUENTIAL, empty_figure, template
from training import contract as C
from training.config import RunConfig

# The table's param columns; each row also carries the architecture label (store.arch_label).
KEY_PARAMS = (C.PARAM_ACTIVATION, C.PARAM_LOSS, C.PARAM_OPTIMIZER, C.PARAM_LR, C.PARAM_BATCH_SIZE, C.PARAM_EPOCHS,
              C.PARAM_SEED)
# Sweep axes shown first, in this order (write-up C's grid is lr x batch size); the seed goes last.
PREFERRED_AXES = (C.PARAM_LR, C.PARAM_BATCH_SIZE, C.PARAM_EPOCHS, C.PARAM_ACTIVATION, C.PARAM_MOMENTUM)
# Params where numbers are expected: the config's numeric fields.  Any other value there ('abc', 'inf')
# is shown as text in the table and keeps its run off the figures' axes; "default" (PyTorch's init) is a value.
NUMERIC_PARAMS = tuple(f.name for f in fields(RunConfig) if f.type in (int, float, float | None))
SUMMARY_LABELS = {"class_selective": "class-selective units", "feature_selective": "feature-selective units",
                  "dead": "dead units", "mean_si": "mean selectivity index",
                  "critical": "critical units (ablation ≥ 1 point)"}
PARALLEL_MAX = 2_000  # lines; more are a solid band, and slow to draw and to brush
CELL_RUNS_MAX = 100  # run ids a heatmap cell carries for its click (the compare page shows at most 50 anyway)
METRICS = {  # column -> (label, higher is better)
    "final_test_acc": ("final test accuracy", True),
    C.BEST_TEST_ACC: ("best test accuracy", True),
    "final_test_loss": ("final test loss", False),
    "final_train_acc": ("final train accuracy", True),
}


def load_runs(experiment_id: str, filter_string: str = "") -> pd.DataFrame:
    """Runs of one experiment matching the filter, with final and best test_acc.  StoreError on a bad filter."""
    return frame_of(store.search_runs([experiment_id], filter_string or ""))


def view(experiment_id: str, filter_string: str = "", wait: bool = False, refresh: bool = False) -> run_index.View:
    """The runs page's view of one experiment and filter (dashboard.read.run_index): read in the background
    (wait: until read), and with `refresh` brought up to date with the runs that started or ended."""
    return run_index.get([experiment_id], filter_string or "", frame_of, wait=wait, update=refresh)


def frame_of(runs: list) -> pd.DataFrame:
    """Runs as the runs page's frame: store.runs_frame with final and best test_acc (add_summaries).

    A run logs its running best (contract BEST_TEST_ACC, BEST_EPOCH), which the search already returns; only
    runs from before that, or from other tools, have their test_acc history read, so 10,000 runs on a
    tracking server cost no request per run.
    """
    older = [r for r in runs if C.BEST_TEST_ACC not in r.data.metrics]
    return add_summaries(store.runs_frame(runs), store.metric_histories(older, [C.TEST_ACC]))


def add_summaries(frame: pd.DataFrame, hist: pd.DataFrame) -> pd.DataFrame:
    """Columns for the table and figures: final_* (latest step), best test_acc and the epoch it was reached.

    The best is the run's logged running best where it has one, else the maximum of its history in `hist`."""
    out = frame.copy()
    if out.empty:
        return out
    for key in (C.TEST_ACC, C.TEST_LOSS, C.TRAIN_ACC):
        out[f"final_{key}"] = pd.to_numeric(out.get(f"metrics.{key}"), errors="coerce")
    for key in (C.BEST_TEST_ACC, C.BEST_EPOCH):
        out[key] = pd.to_numeric(out.get(f"metrics.{key}"), errors="coerce") if f"metrics.{key}" in out else np.nan
    acc = hist[(hist["key"] == C.TEST_ACC) & np.isfinite(hist["value"])]
    if not acc.empty:
        best = acc.loc[acc.groupby("run_id")["value"].idxmax(), ["run_id", "value", "step"]].set_index("run_id")
        from_history = out["run_id"].isin(best.index) & out[C.BEST_TEST_ACC].isna()
        rows = out.loc[from_history, "run_id"]
        out.loc[from_history, C.BEST_TEST_ACC] = best.loc[rows, "value"].to_numpy()
        out.loc[from_history, C.BEST_EPOCH] = best.loc[rows, "step"].to_numpy().astype(float)
    return out


def any_running(frame: pd.DataFrame) -> bool:
    return bool(not frame.empty and (frame["status"] == C.STATUS_RUNNING).any())


def has_search_trials(frame: pd.DataFrame) -> bool:
    return "search_state" in frame and bool(frame["search_state"].isin(C.SEARCH_STATES).any())


def varying_params(frame: pd.DataFrame) -> list[str]:
    """Hyperparameters (bare names) that take more than one value among runs with a test accuracy."""
    runs = _scored(frame)
    out = []
    for col in sorted(c for c in runs.columns if c.startswith("params.")):
        name = col[len("params."):]
        # arch follows from sizes (the CNN's is "cnn"), and older runs hold the whole label in it: as an
        # axis it would only repeat sizes and activation.
        if not C.is_hyperparameter(name) or name == C.PARAM_ARCH:
            continue
        if runs[col].dropna().nunique() > 1:
            out.append(name)
    return out


def parallel_figure(frame: pd.DataFrame, params: list[str], metric: str = "final_test_acc") -> go.Figure:
    """Parallel coordinates: one line per run through its params, ending at the metric, coloured by it."""
    if _scored(frame, metric).empty:
        return empty_figure("No run in this view has logged test_acc yet.", height=340)
    if not params:
        return empty_figure("All runs share the same params: nothing to compare across.", height=340)
    runs, _ = usable_runs(frame, params, metric)
    if runs.empty:
        return empty_figure("No run in this view can be drawn: see the note below.", height=340)
    drawn = f"{len(runs)} runs"
    if len(runs) > PARALLEL_MAX:
        drawn = f"a random {PARALLEL_MAX:,} of {len(runs):,} runs"
        runs = runs.sample(PARALLEL_MAX, random_state=0)
    dims = [dimension(runs[f"params.{p}"], p) for p in params]
    dims += [dict(label=lab, values=runs[col].astype(float)) for col, lab in summary_axes(runs)]
    label = metric_info(metric)[0]
    values = runs[metric].astype(float)
    dims.append(dict(label=label, values=values, tickformat=".1%"))
    fig = go.Figure(go.Parcoords(
        line=dict(color=values, colorscale=SEQUENTIAL, showscale=True,
                  colorbar=dict(title=dict(text=label), tickformat=".0%")),
        dimensions=dims, labelangle=0, labelside="top"))
    fig.update_layout(template=template(), height=360, margin=dict(l=70, r=40, t=90, b=28),
                      title=dict(text=f"Params → {label} ({drawn}); drag along an axis to filter", y=0.97))
    return fig


def heatmap_figure(frame: pd.DataFrame, x: str | None, y: str | None, metric: str = "final_test_acc") -> go.Figure:
    """Two params against a metric, averaged over runs that share a cell (e.g. seeds): write-up C's table as a picture."""
    if _scored(frame, metric).empty:
        return empty_figure("No run in this view has logged test_acc yet.", height=340)
    if not x or not y or x == y:
        return empty_figure("Pick two different params for the heatmap axes.", height=340)
    for p in (x, y):
        if f"params.{p}" not in frame.columns:
            return empty_figure(f"No run in this view has the param '{p}'.", height=340)
    runs, _ = usable_runs(frame, [x, y], metric)
    if runs.empty:
        return empty_figure("No run in this view can be drawn: see the note below.", height=340)
    cells = (runs.assign(_x=runs[f"params.{x}"].fillna("—"), _y=runs[f"params.{y}"].fillna("—"))
             .groupby(["_y", "_x"])[metric].agg(["mean", "std", "count"]).reset_index())
    xs, ys = _ordered(cells["_x"]), _ordered(cells["_y"])
    z, sd, n = (cells.pivot(index="_y", columns="_x", values=v).reindex(index=ys, columns=xs)
                for v in ("mean", "std", "count"))
    label, higher, _ = metric_info(metric)
    is_acc = metric.endswith("acc")
    text = [[cell_text(v, s, c, is_acc) for v, s, c in zip(zr, sr, nr)] for zr, sr, nr in zip(z.values, sd.values, n.values)]
    fig = go.Figure(go.Heatmap(
        x=[str(v) for v in xs], y=[str(v) for v in ys], z=z.values, text=text, texttemplate="%{text}",
        customdata=cell_runs(runs, x, y, xs, ys),
        colorscale=SEQUENTIAL, reversescale=not higher,
        colorbar=dict(title=dict(text=label), tickformat=".0%" if is_acc else ".3f"),
        hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>{label}=%{{z:{'.2%' if is_acc else '.4f'}}} (mean)"
                      "<br>click to open its runs<extra></extra>"))
    fig.update_layout(template=template(), height=340,
                      title=f"{label}: {y} × {x} (mean ± sd over the runs in a cell, n; click a cell to open them)")
    fig.update_xaxes(title=x, type="category")
    fig.update_yaxes(title=y, type="category")
    return fig


def metric_info(metric: str) -> tuple[str, bool, str]:
    """(label, higher is better, the logged metric key) of a figure metric: a METRICS column, or a unit
    summary's metrics.* column (C.unit_summary_key), e.g. 'fc1 class-selective units'."""
    if metric in METRICS:
        return (*METRICS[metric], metric.split("_", 1)[1])
    key = metric[len("metrics."):]
    layer, field = C.unit_summary_parts(key) or ("?", "?")
    return f"{layer} {SUMMARY_LABELS.get(field, field)}", field != "dead", key


def summary_columns(frame: pd.DataFrame) -> list[str]:
    """The frame's unit-summary metric columns (metrics.units.<layer>.<field>), in layer then field order."""
    cols = [c for c in frame.columns if c.startswith("metrics.") and C.unit_summary_parts(c[len("metrics."):])]
    order = {f: i for i, f in enumerate(C.UNIT_SUMMARY_FIELDS)}
    return sorted(cols, key=lambda c: (C.unit_summary_parts(c[8:])[0], order[C.unit_summary_parts(c[8:])[1]]))


def summary_field(column: str) -> str:
    """A summary column's field in the table's rows: AG Grid reads dots in a field as nesting."""
    return column[len("metrics."):].replace(".", "__")


def summary_axes(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """Parallel-coordinates axes from the unit summaries: class-selective units per layer, when every
    drawn run has them (older runs get them from training.backfill_summaries)."""
    cols = [c for c in summary_columns(runs) if C.unit_summary_parts(c[8:])[1] == "class_selective"]
    return [(c, metric_info(c)[0]) for c in cols if np.isfinite(runs[c].astype(float)).all()]


def metric_options(frame: pd.DataFrame) -> list[dict]:
    """The heatmap's metric choices: the METRICS columns, then every unit summary the runs carry."""
    return [{"label": metric_info(m)[0], "value": m} for m in (*METRICS, *summary_columns(frame))]


def cell_text(mean, sd, n, is_acc: bool) -> str:
    """A heatmap cell: the mean, and with replicates '± sd' (accuracy in points) and n."""
    if pd.isna(mean):
        return ""
    text = f"{mean:.2%}" if is_acc else f"{mean:.4g}"
    if n > 1:
        text += (f" ± {sd * 100:.2f}" if is_acc else f" ± {sd:.4g}") + f"<br>n={int(n)}"
    return text


def cell_runs(runs: pd.DataFrame, x: str, y: str, xs: list, ys: list) -> list[list[str]]:
    """Per heatmap cell, the comma-joined ids of its runs, at most CELL_RUNS_MAX (what a click on the cell opens)."""
    ids = runs.assign(_x=runs[f"params.{x}"].fillna("—"), _y=runs[f"params.{y}"].fillna("—")) \
        .groupby(["_y", "_x"])["run_id"].agg(lambda ids: ",".join(ids.iloc[:CELL_RUNS_MAX]))
    return [[ids.get((yv, xv), "") for xv in xs] for yv in ys]


def default_axes(params: list[str]) -> tuple[str | None, str | None]:
    """The two sweep axes to show first: lr and batch_size when they vary (write-up C's grid), else the first two."""
    preferred = [p for p in PREFERRED_AXES if p in params]
    rest = [p for p in params if p not in preferred and p != C.PARAM_SEED]
    picks = (preferred + rest + [p for p in params if p == C.PARAM_SEED])[:2]
    return (picks + [None, None])[0], (picks + [None, None])[1]


def _scored(frame: pd.DataFrame, metric: str = "final_test_acc") -> pd.DataFrame:
    """Runs that logged the metric behind `metric` (final_test_acc: test_acc), whatever its value."""
    if frame.empty or metric not in frame.columns:
        return frame.iloc[0:0]
    if "logged_metrics" in frame.columns:
        key = metric_info(metric)[2]
        return frame[frame["logged_metrics"].map(lambda keys: isinstance(keys, tuple) and key in keys)]
    return frame[frame[metric].notna()]


def _not_a_number(value) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == C.DEFAULT_VALUE:
        return False  # a param the run lacks ("—") or PyTorch's default init: a value, not an error
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


def usable_runs(frame: pd.DataFrame, params: list[str], metric: str = "final_test_acc") -> tuple[pd.DataFrame, list[str]]:
    """The runs a grid-review figure can draw, and one line per reason others were left out: a metric
    that is NaN or ±inf, or a numeric param (NUMERIC_PARAMS) whose value is not a number."""
    runs, notes = _scored(frame, metric), []
    bad = ~np.isfinite(runs[metric].astype(float)) if not runs.empty else pd.Series(dtype=bool)
    if bad.any():
        notes.append(f"{_runs(bad.sum())} left out: {metric_info(metric)[0]} is not finite (NaN or ±inf).")
        runs = runs[~bad]
    for p in params:
        col = f"params.{p}"
        if p not in NUMERIC_PARAMS or col not in runs.columns:
            continue
        junk = runs[col].map(_not_a_number).astype(bool)
        if junk.any():
            shown = ", ".join(f"'{str(v)[:20]}'" for v in dict.fromkeys(runs.loc[junk, col]))
            notes.append(f"{_runs(junk.sum())} left out: {p} should be a number, not {shown}.")
            runs = runs[~junk]
    return runs, notes


def _runs(n) -> str:
    return f"{int(n)} run" + ("s" if n != 1 else "")


def dimension(values: pd.Series, name: str) -> dict:
    """A parcoords axis: numeric params on a (log if they span decades) scale, others as labelled categories."""
    nums = pd.to_numeric(values, errors="coerce")
    if nums.notna().all() and np.isfinite(nums).all():
        if (nums > 0).all() and nums.max() / nums.min() >= 100:
            logs = np.log10(nums)
            ticks = [10.0 ** k for k in range(math.floor(logs.min()), math.ceil(logs.max()) + 1)]
            return dict(label=f"{name} (log)", values=logs, tickvals=np.log10(ticks), ticktext=[f"{t:g}" for t in ticks])
        return dict(label=name, values=nums)
    cats = _ordered(values.fillna("—"))
    codes = {c: i for i, c in enumerate(cats)}
    return dict(label=name, values=[codes[v] for v in values.fillna("—")], tickvals=list(range(len(cats))),
                ticktext=[str(c) for c in cats])


def _ordered(values) -> list:
    """Distinct values, numerically ordered when they are all numbers (so lr 0.3 < 1.0 < 3.0, not as strings)."""
    distinct = list(dict.fromkeys(values))
    try:
        return sorted(distinct, key=float)
    except (TypeError, ValueError):
        return sorted(distinct, key=str)
