"""The runs page's "which hyperparameters matter" card: importances as bars, rank correlations and n."""
import math

import plotly.graph_objects as go
from dash import html

from dashboard.analytics import param_importance as P
from dashboard.views import runs_view as V
from dashboard.views import widgets
from dashboard.views.theme import palette, template
from training import contract as C


def compute(frame, metric: str) -> P.Importance | str:
    """Importances over the finished runs a grid-review figure can draw, for the varying hyperparameters."""
    params = V.varying_params(frame)
    runs, _ = V.usable_runs(frame, params, metric)
    runs = runs[runs["status"] == C.STATUS_FINISHED] if not runs.empty else runs
    return P.importance(runs, params, metric)


def figure(result: P.Importance, label: str) -> go.Figure:
    t = result.table.iloc[::-1]
    fig = go.Figure(go.Bar(x=t["importance"], y=t["param"], orientation="h", marker_color=palette()[0],
                           hovertemplate="%{y}: importance %{x:.3f}<extra></extra>"))
    fig.update_layout(template=template(), height=max(160, 40 * len(t) + 80),
                      title=f"Importance for {label} (random forest, {result.runs_said})")
    fig.update_xaxes(title="importance (sums to 1)", rangemode="tozero")
    return fig


def explained_message(r2: float | None, model: str, component_id: str) -> html.Div:
    """How much of the metric's variance the model explains, as a warning when too little to rank anything."""
    text, stands = P.explained(model, r2)
    return widgets.message(text, "info" if stands else "warn", id=component_id)


def _rho(v: float) -> str:
    return "—" if math.isnan(v) else f"{v:+.2f}"


def section(frame, metric: str) -> html.Div:
    """The card's contents: the reason it is hidden, or the bars and a table of importance, Spearman ρ and n."""
    label = V.metric_info(metric)[0] if metric in frame.columns or metric in V.METRICS else metric
    result = compute(frame, metric) if metric in frame.columns else "No run in this view has this metric."
    if isinstance(result, str):
        return widgets.message(result, "info", id="runs-importance-hidden")
    head = html.Tr([html.Th("param"), html.Th("importance", className="num"), html.Th("Spearman ρ", className="num"),
                    html.Th("p", className="num"), html.Th("runs", className="num")])
    body = [html.Tr([html.Td(r["param"]), html.Td(f"{r['importance']:.3f}", className="num"),
                     html.Td(_rho(r["spearman"]), className="num",
                             title="" if r["numeric"] else "a category: its order means nothing"),
                     html.Td("—" if math.isnan(r["spearman_p"]) else f"{r['spearman_p']:.3g}", className="num"),
                     html.Td(f"{result.n_runs:,}", className="num")]) for r in result.table.to_dict("records")]
    return html.Div([
        explained_message(result.oob_r2, "random forest", "runs-importance-r2"),
        html.Div([html.Div(widgets.graph(figure(result, label), "runs-importance-figure"), className="grow"),
                  html.Table([html.Thead(head), html.Tbody(body)], className="data-table",
                             id="runs-importance-table", style={"width": "auto"})],
                 className="row", style={"alignItems": "flex-start"})])
