"""Compare (/compare?runs=<id>,<id>,...): curves, differing params and final/best metrics, side by side.

The page is a function of its URL: `runs`, `smooth` (EMA weight), `params=all`, `group=off` (single
runs instead of one curve per config when seeds replicate a config), `band=ci` (95 % CI instead of
± 1 sd) and `epoch` (the snapshot the two-run review compares).  The controls only rewrite the URL and
the page re-renders from it, so a shared link, a reload and back/forward all show exactly the same view.
"""
import math
from urllib.parse import parse_qs, urlencode

import dash
from dash import ClientsideFunction, Input, Output, State, callback, clientside_callback, ctx, dcc, html, no_update

from dashboard.analytics import replicates as R
from dashboard.read import mlflow_links, store
from dashboard.views import compare_view as V
from dashboard.views import widgets
from dashboard.views.reviews import add_control
from dashboard.views.sweep import sweep_groups as G
from dashboard.views.sweep.sweep_sections import review_section
from dashboard.views.theme import run_colors
from training import contract as C

dash.register_page(__name__, path="/compare", title="Compare · MNIST Lab")


def _smoothing(value) -> float:
    try:
        s = float(value)
    except (TypeError, ValueError):
        return 0.0
    return min(max(s, 0.0), 0.95) if math.isfinite(s) else 0.0


def layout(runs=None, smooth=None, params=None, group=None, band=None, epoch=None, **_query):
    smoothing, show_all = _smoothing(smooth), params == "all"
    band = band if band in R.BANDS else "sd"
    header = html.Div([
        html.H2("Compare runs", className="grow"),
        html.Label("This view's address", htmlFor="compare-link", className="visually-hidden"),
        dcc.Input(id="compare-link", type="text", readOnly=True, className="text-input small", style={"width": "320px"},
                  value=""),  # this view's address: share it to show the same comparison
        dcc.Clipboard(id="compare-copy", title="Copy link", className="button", content="",
                      children=html.Span("Copy link")),
    ], className="row")
    if not runs:
        return html.Div([header, widgets.message("No runs given: tick runs on the Runs page, then press Compare "
                                                 "(or open /compare?runs=<id>,<id>).", "warn")])
    try:
        comp = V.load(runs)
    except store.StoreError as e:
        return html.Div([header, widgets.message(str(e), "error")])
    notes = comp.problems + [m for r in comp.runs if (m := V.missing_message(r))]
    if not comp.runs:
        return html.Div([header, *[widgets.message(n, "error") for n in notes],
                         widgets.message("Nothing to compare.", "warn")])
    colors = run_colors([r.info.run_id for r in comp.runs])
    groups = G.groups_of(comp)
    grouped = R.has_replicates(groups) and group != "off"
    return html.Div([
        header,
        add_control.control("compare"),
        *[widgets.message(n, "warn") for n in notes],
        html.Div(_group_legend(groups, comp.runs) if grouped else _legend(comp.runs, colors), className="card legend"),
        html.Div(html.A("Open these runs in MLflow ↗", href=ui, target="_blank", rel="noopener", id="compare-mlflow-link"),
                 style={"margin": "0 0 12px"}) if (ui := mlflow_links.compare_url(comp.runs)) else None,
        html.Div(dcc.Link("How similar are their representations? (CKA) →", id="compare-similarity-link",
                          href="/similarity?runs=" + ",".join(r.info.run_id for r in comp.runs) + "&layer=1"),
                 style={"margin": "0 0 12px"}),
        _controls(smoothing, R.has_replicates(groups), grouped, band),
        html.Div([html.Div([html.Div(widgets.graph(
            G.grouped_curve(comp, groups, key, band) if grouped else V.curve_figure(comp, key, smoothing, colors),
            f"compare-curve-{key}")), widgets.message(note, "warn") if (note := V.curve_note(comp, key)) else None],
            className="card") for key in V.CURVES], className="grid-2"),
        html.H3("Final metrics per config (mean ± sd over seeds)" if grouped else "Final and best metrics"),
        html.Div(_grouped_table(comp, groups) if grouped else _metrics_table(comp, colors), className="card table-scroll"),
        review_section(comp, groups, epoch),
        html.Div([html.H3("Params", className="grow"),
                  dcc.Checklist(id="compare-all-params", options=[{"label": " show all params", "value": "all"}],
                                value=["all"] if show_all else [])], className="row"),
        html.Div(_params_table(comp.runs, show_all, colors), className="card table-scroll"),
    ])


def _controls(smoothing, has_replicates, grouped, band):
    smooth = html.Div([
        html.Label("Smoothing (EMA)", htmlFor="compare-smooth", className="muted"),
        html.Div(dcc.Slider(id="compare-smooth", min=0, max=0.95, step=0.05, value=smoothing,
                            marks={0: "off", 0.5: "0.5", 0.9: "0.9"}, updatemode="mouseup", allow_direct_input=False,
                            tooltip={"placement": "bottom"}), style={"width": "320px"}),
    ], className="row", style={"display": "none"} if grouped else {})  # a mean over seeds needs no smoothing
    grouping = html.Div([
        dcc.RadioItems(id="compare-group", options=[{"label": " one curve per config", "value": "on"},
                                                    {"label": " single runs", "value": "off"}],
                       value="off" if has_replicates and not grouped else "on", inline=True,
                       inputStyle={"marginLeft": "12px"}),
        html.Label("band:", htmlFor="compare-band", className="muted", style={"marginLeft": "16px"}),
        dcc.RadioItems(id="compare-band", options=[{"label": f" {G.BAND_LABELS[b]}", "value": b} for b in R.BANDS],
                       value=band, inline=True, inputStyle={"marginLeft": "12px"}),
    ], className="row small", style={} if has_replicates else {"display": "none"})
    return html.Div([grouping, smooth])


def _group_legend(groups, runs):
    colors, names = G.group_colors(groups), {r.info.run_id: V.run_label(r) for r in runs}
    return [html.Span([html.Span(className="swatch", style={"background": colors[g.label]}),
                       dcc.Link(g.label, href="/compare?runs=" + ",".join(g.run_ids), title=", ".join(
                           names[rid] for rid in g.run_ids)),
                       html.Span(f" n={len(g.run_ids)}", className="muted small")]) for g in groups]


def _grouped_table(comp, groups):
    df, keys, colors = G.grouped_table(comp, groups), list(V.CURVES), G.group_colors(groups)
    head = html.Tr([html.Th("config"), html.Th("n", className="num")]
                   + [html.Th(f"final {k}", className="num") for k in keys])
    body = [html.Tr([html.Td([html.Span(className="swatch", style={"background": colors[row["config"]]}),
                              row["config"]]), html.Td(str(row["n"]), className="num")]
                    + [html.Td(G.mean_sd_text(k, row[f"mean {k}"], row[f"sd {k}"]), className="num") for k in keys])
            for row in df.to_dict("records")]
    return html.Table([html.Thead(head), html.Tbody(body)], className="data-table", id="compare-grouped-table")


def _legend(runs, colors):
    return [html.Span([html.Span(className="swatch", style={"background": colors[r.info.run_id]}),
                       dcc.Link(V.run_label(r), href=f"/runs/{r.info.run_id}", title=r.info.run_id),
                       html.Span(f" {r.info.status.lower()}" if r.info.status != C.STATUS_FINISHED else "",
                                 className="muted small")])
            for r in runs]


def _fmt(key: str, v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if not math.isfinite(v):
        return str(v)
    if key.endswith("acc"):
        return f"{v:.2%}"
    if key == V.EPOCHS_TRAINED:
        return str(int(v))
    return f"{v:.4f}"


def _metrics_table(comp, colors):
    df = V.metrics_table(comp)
    keys = list(V.CURVES)
    head = [html.Tr([html.Th("run", rowSpan=2)] + [html.Th(k, colSpan=2, className="num") for k in keys]
                    + [html.Th(V.EPOCHS_TRAINED, rowSpan=2, className="num")]),
            html.Tr([html.Th(w, className="num muted small") for _ in keys for w in ("final", "best")])]
    body = [html.Tr([html.Td([html.Span(className="swatch", style={"background": colors[row["run_id"]]}), row["run"]])]
                    + [html.Td(_fmt(k, row[f"{w} {k}"]), className="num") for k in keys for w in ("final", "best")]
                    + [html.Td(_fmt(V.EPOCHS_TRAINED, row[V.EPOCHS_TRAINED]), className="num")])
            for row in df.to_dict("records")]
    return html.Table([html.Thead(head), html.Tbody(body)], className="data-table")


def _params_table(runs, show_all, colors):
    table = V.params_table(runs, show_all)
    if table.empty:
        return html.Div("These runs share every param." if len(runs) > 1 else "This run has no params.",
                        className="muted")
    head = html.Tr([html.Th("param")] + [
        html.Th([html.Span(className="swatch", style={"background": colors[r.info.run_id]}), V.run_label(r)])
        for r in runs])
    body = [html.Tr([html.Td(name)] + [html.Td(str(v)[:40], title=str(v)) for v in row])
            for name, row in zip(table.index, table.values)]
    return html.Table([html.Thead(head), html.Tbody(body)], className="data-table")


@callback(Output("_pages_location", "search", allow_duplicate=True),
          Input("compare-smooth", "value"), Input("compare-all-params", "value"), Input("compare-group", "value"),
          Input("compare-band", "value"), Input("compare-epoch", "value"), State("_pages_location", "search"),
          prevent_initial_call=True)
def put_view_in_url(smoothing, all_params, grouping, band, epoch, search):
    """Controls rewrite the URL; the page re-renders from it (so shared links and back/forward agree)."""
    query = {k: v[-1] for k, v in parse_qs((search or "").lstrip("?")).items()}
    shown_epoch = query.pop("epoch", None)  # the dropdown's default (the last epoch) stays out of the URL
    for key in ("smooth", "params", "group", "band"):
        query.pop(key, None)
    if smoothing:
        query["smooth"] = f"{float(smoothing):g}"
    if all_params:
        query["params"] = "all"
    if grouping == "off":
        query["group"] = "off"
    if band == "ci":
        query["band"] = "ci"
    if ctx.triggered_id == "compare-epoch" and epoch is not None:
        query["epoch"] = str(epoch)
    elif shown_epoch:
        query["epoch"] = shown_epoch
    new = "?" + urlencode(query, safe=",")
    return no_update if new == search else new


# The link to copy is the browser's own address, known only client-side.
clientside_callback(
    ClientsideFunction(namespace="mnistlab", function_name="currentUrl"),
    Output("compare-copy", "content"), Output("compare-link", "value"),
    Input("compare-copy", "n_clicks"), Input("compare-link", "id"))
