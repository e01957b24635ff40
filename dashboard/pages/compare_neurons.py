"""Neurons across runs (/compare/neurons?runs=<id>,<id>,...&layer=L&epoch=E): one feature followed across
seeds and configs.

One row of unit tiles per run; each row's units are reordered by their match to the first run's units
(views/sweep_neurons.py), with the correlation under each tile.  The URL holds the view; the layer and
epoch pickers only rewrite it.
"""
from urllib.parse import parse_qs, urlencode

import dash
from dash import Input, Output, State, callback, dcc, html, no_update

from dashboard.loaders.neuron_target import unit_href
from dashboard.read import store
from dashboard.views import widgets
from dashboard.views.sweep import sweep_neurons as SN

dash.register_page(__name__, path="/compare/neurons", title="Neurons across runs · MNIST Lab")


def layout(runs=None, layer=None, epoch=None, **_query):
    head = html.H2("Neurons across runs")
    if not runs:
        return html.Div([head, widgets.message("No runs given: open it from the compare page, or "
                                               "/compare/neurons?runs=<id>,<id>&layer=1.", "warn")])
    try:
        across = SN.load(runs, layer, epoch)
    except store.StoreError as e:
        return html.Div([head, widgets.message(str(e), "error")])
    back = "/compare?runs=" + ",".join(r.target.run_id for r in across.rows)
    return html.Div([
        head,
        *[widgets.message(p, "warn") for p in across.problems],
        html.Div([
            dcc.Link("← compare these runs", href=back),
            html.Span("layer", className="muted"),
            dcc.Dropdown(id="xneurons-layer", value=across.layer, clearable=False, style={"width": "140px"},
                         options=[{"label": f"{n}: {name}", "value": n} for n, name in across.layers]),
            html.Span("epoch", className="muted"),
            dcc.Dropdown(id="xneurons-epoch", value=across.epoch, clearable=False, style={"width": "100px"},
                         options=[{"label": str(e), "value": e} for e in across.epochs or [across.epoch]]),
        ], className="row small"),
        html.P(f"{across.caption} Each later row: its units placed under the first run's units they match "
               f"({across.rows[-1].method or 'none yet'} on the Pearson r of their test-set activations), "
               "r under each tile.", className="muted small"),
        *[_row(row, across.epoch) for row in across.rows],
    ])


def _row(row, epoch) -> html.Div:
    t = row.target
    tiles = [html.A([html.Img(src=uri, width=44, height=44, className="xneurons-tile", alt=f"unit {u}"),
                     html.Div(f"#{u}" + ("" if c is None else f" r={c:.2f}"), className="small muted")],
                    href=unit_href(t.run_id, t.layer, u, t.epoch), title=f"unit {u}",
                    style={"textAlign": "center", "width": "56px", "textDecoration": "none"})
             for u, c, uri in zip(row.order, row.corr, row.tiles)]
    name = f"{t.run_name} · {t.run_id[:8]}" + (f" · epoch {t.epoch}" if t.epoch != epoch else "")
    return html.Div([html.Div(dcc.Link(name, href=f"/runs/{t.run_id}"), className="small"),
                     html.Div(tiles, className="row xneurons-row", style={"gap": "4px", "flexWrap": "wrap"})],
                    className="card")


@callback(Output("_pages_location", "search", allow_duplicate=True),
          Input("xneurons-layer", "value"), Input("xneurons-epoch", "value"), State("_pages_location", "search"),
          prevent_initial_call=True)
def put_view_in_url(layer, epoch, search):
    query = {k: v[-1] for k, v in parse_qs((search or "").lstrip("?")).items()}
    query.update({"layer": str(layer), "epoch": str(epoch)})
    new = "?" + urlencode(query, safe=",")
    return no_update if new == search else new
