"""The search review's figures and table, from a loaded search (dashboard.loaders.search_trials).

Every figure is optuna.visualization's own, over the study the loader rebuilt, in the dashboard's theme.
What this module adds to them: each point a trial can be clicked on carries its run id as customdata
(sweep_select.cell_href turns a click into the run's page), the epochs where pruned trials stopped are
marked, and each importance panel says how much of the metric's variance its model explains.
"""
import math
import re

import optuna.visualization as ov
import pandas as pd
import plotly.graph_objects as go
from dash import dcc, html
from optuna.trial import TrialState

from dashboard.analytics import param_importance as P
from dashboard.analytics import search_study as S
from dashboard.views import widgets
from dashboard.views.sweep import sweep_importance as I
from dashboard.views.theme import empty_figure, palette, template

TRIAL_TRACE = re.compile(r"^Trial(\d+)$")  # how plot_intermediate_values names each trial's line
MAX_TABLE_ROWS = 300
PRUNED_TRACE = "pruned here"


def _run_ids(search) -> dict[int, str]:
    return {t.number: t.run_id for t in search.trials}


def _themed(fig: go.Figure, height: int = 360) -> go.Figure:
    fig.update_layout(template=template(), height=height)
    return fig


def _complete(search) -> int:
    return sum(t.state == "complete" for t in search.trials)


def history_figure(search) -> go.Figure:
    """Each complete trial's final metric by trial number, and the best so far (Optuna's history plot)."""
    if not _complete(search):
        return empty_figure("No trial has completed yet.")
    fig = ov.plot_optimization_history(search.study, target_name=search.metric)
    ids = _run_ids(search)
    for trace in fig.data:
        if trace.x is not None and trace.mode == "markers":
            trace.customdata = [ids.get(int(n), "") for n in trace.x]
    return _themed(fig)


def intermediate_figure(search) -> go.Figure:
    """Each trial's metric per epoch (Optuna's intermediate values), with an x where each pruned trial stopped."""
    if not any(len(t.steps) for t in search.trials):
        return empty_figure("No trial has logged its metric yet.")
    fig = ov.plot_intermediate_values(search.study)
    ids = _run_ids(search)
    for trace in fig.data:
        if m := TRIAL_TRACE.match(trace.name or ""):
            trace.customdata = [ids.get(int(m.group(1)), "")] * len(trace.x)
    pruned = [t for t in search.study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if t.intermediate_values]
    if pruned:
        last = [max(t.intermediate_values) for t in pruned]
        fig.add_trace(go.Scatter(
            x=last, y=[t.intermediate_values[e] for t, e in zip(pruned, last)], mode="markers", name=PRUNED_TRACE,
            customdata=[t.user_attrs.get("run_id", "") for t in pruned], showlegend=True,
            marker=dict(symbol="x", size=10, color=palette()[3]),
            text=[f"Trial{t.number} pruned after epoch {e}" for t, e in zip(pruned, last)],
            hovertemplate="%{text}: %{y:.4f}<extra></extra>"))
    fig.update_layout(yaxis_title=search.metric, xaxis_title="epoch")
    return _themed(fig, 400)


def slice_figure(search) -> go.Figure:
    """The final metric against each searched param (Optuna's slice plot), points coloured by trial number."""
    if not _complete(search):
        return empty_figure("No trial has completed yet.")
    fig = ov.plot_slice(search.study, target_name=search.metric)
    ids = _run_ids(search)
    for trace in fig.data:
        numbers = trace.marker.color if trace.marker is not None else None
        if trace.mode == "markers" and isinstance(numbers, (list, tuple)):
            trace.customdata = [ids.get(int(n), "") for n in numbers]
    return _themed(fig)


def contour_figure(search) -> go.Figure:
    """The final metric over each pair of searched params (Optuna's contour plot)."""
    if len(search.space) < 2:
        return empty_figure("A contour needs two searched params; this search has one.")
    if _complete(search) < 2:
        return empty_figure("A contour needs two complete trials.")
    return _themed(ov.plot_contour(search.study, target_name=search.metric), 300 * max(1, len(search.space) - 1))


def forest_frame(search) -> tuple[pd.DataFrame, list[str]]:
    """The complete trials as the runs page's forest reads runs (params.<name>, the metric), and the params
    that vary among them."""
    done = [t for t in search.trials if t.state == "complete"]
    frame = pd.DataFrame({"run_id": [t.run_id for t in done], "value": [t.value for t in done],
                          **{f"params.{p}": [str(t.params[p]) for t in done] for p in search.space}})
    return frame, [p for p in search.space if len(done) and frame[f"params.{p}"].nunique() > 1]


def importance_panels(search) -> html.Div:
    """Optuna's fANOVA beside our forest, each saying how much of the metric's variance its model explains."""
    n = _complete(search)
    if n < P.MIN_RUNS:
        return widgets.message(f"Parameter importance needs at least {P.MIN_RUNS} complete trials; this search has "
                               f"{n}.", "info", id="search-importance-hidden")
    fanova = ov.plot_param_importances(search.study, evaluator=S.fanova_evaluator(), target_name=search.metric)
    fanova.update_layout(title=f"fANOVA importance for {search.metric} (Optuna, {n} complete trials)")
    frame, params = forest_frame(search)
    forest = P.importance(frame, params, "value")
    right = widgets.message(forest, "info") if isinstance(forest, str) else html.Div([
        I.explained_message(forest.oob_r2, "random forest", "search-forest-r2"),
        widgets.graph(I.figure(forest, search.metric), "search-forest")])
    left = html.Div([I.explained_message(S.fanova_r2(search.study), "fANOVA's forest", "search-fanova-r2"),
                     widgets.graph(_themed(fanova, max(200, 60 * len(search.space) + 100)), "search-fanova")])
    return html.Div([html.Div(left, className="grow"), html.Div(right, className="grow")], className="row",
                    style={"alignItems": "flex-start"})


def _fmt(v) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4f}"


def _param(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def why(trial) -> str:
    """What a pruned or failed trial's description says of its end: the paragraph after the config's
    (training.tracking.run_description writes the outcome second), without its markdown stars."""
    if trial.state not in ("pruned", "failed"):
        return ""
    paragraphs = [p.strip() for p in trial.note.split("\n\n") if p.strip()]
    return paragraphs[1].replace("**", "")[:300] if len(paragraphs) > 1 else ""


def trial_table(search) -> html.Div:
    """One row per trial: its state, where it was pruned and why, its final metric, params, and its run."""
    head = html.Tr([html.Th("trial", className="num"), html.Th("state"), html.Th(search.metric, className="num"),
                    *[html.Th(p) for p in search.space], html.Th("run"), html.Th("note")])
    rows = [html.Tr([html.Td(str(t.number), className="num"),
                     html.Td(t.state + (f" at epoch {t.pruned_at}" if t.pruned_at is not None else ""),
                             className=f"search-state-{t.state}"),
                     html.Td(_fmt(t.value), className="num"), *[html.Td(_param(t.params[p])) for p in search.space],
                     html.Td(dcc.Link(t.name, href=f"/runs/{t.run_id}", className="run-link")),
                     html.Td(why(t), className="small muted", style={"whiteSpace": "normal", "minWidth": "320px"})])
            for t in search.trials[:MAX_TABLE_ROWS]]
    more = len(search.trials) - MAX_TABLE_ROWS
    return html.Div([html.Table([html.Thead(head), html.Tbody(rows)], className="data-table", id="search-trials",
                                style={"width": "100%"}),
                     html.Div(f"and {more} more trials", className="muted small") if more > 0 else None])
