"""Unit view (/runs/<run_id>/neurons/<layer>/<unit>?epoch=E&compare=<run_id>): one hidden unit up close.

What it looks for (incoming weights), what excites it (top-k test images), how it
responds to each digit (distribution, mean per class, SI, NMI and a verdict), how it
formed (an epoch scrubber with play), its counterpart in another run, a name and a
note stored as MLflow tags, and a one-page HTML report to download.

As the compare page does, the layout and each callback resolve the run once (neuron_target.resolve) and
hand that Target to the loaders (unit_panels, neuron_stats), which never look the run up again.
"""
from datetime import datetime

import dash
from dash import ClientsideFunction, Input, Output, State, callback, clientside_callback, ctx, dcc, html, no_update

from dashboard.analytics.feature_vis import HOW as FV_HOW
from dashboard.loaders import neuron_stats as S
from dashboard.loaders import unit_panels as P
from dashboard.loaders.neuron_target import Target, counterpart, layer_href, resolve, unit_href
from dashboard.loaders.unit_circuits import why_no_circuits
from dashboard.read import store
from dashboard.read.store import StoreError
from dashboard.views import widgets
from dashboard.views.reviews import add_control
from dashboard.views.neurons.circuit_view import unit_links
from training import contract as C

dash.register_page(__name__, path_template="/runs/<run_id>/neurons/<layer>/<unit>", order=1,
                   title=lambda run_id=None, layer=None, unit=None, **_:
                   f"Unit {str(unit)[:6]} · layer {str(layer)[:6]} · {str(run_id)[:8]} · MNIST Lab")

PLAY_MS = 1200
TOP_MEAN_PX = 220


def label_card(t: Target, u: int, label: dict):
    """Name and note: saved as MLflow tags, shown back as plain text (Dash escapes it)."""
    return widgets.card(
        "Name and note",
        html.Div([dcc.Input(id="unit-name", value=label.get("name", ""), maxLength=200, style={"width": 280},
                            placeholder="a short name, e.g. 'left loop'"),
                  html.Button("Save", id="unit-save", n_clicks=0, className="button-primary")], className="row"),
        dcc.Textarea(id="unit-note", value=label.get("note", ""), placeholder="a note for the team", maxLength=5000,
                     className="text-input", style={"width": "100%", "height": 70, "marginTop": 8}),
        html.Div(id="unit-save-status", className="small muted"),
        html.P(f"Stored as MLflow tags on the run ({C.neuron_name_tag(t.layer, u)} and "
               f"{C.neuron_note_tag(t.layer, u)}): the MLflow UI shows them too.", className="small muted"))


def compare_card(t: Target, u: int, compare) -> html.Div:
    """The run picker and, for ?compare=<run id> (a shared link, possibly to another experiment), the match."""
    try:
        options = S.comparable_runs(t)
    except StoreError:  # the sweep cannot be searched: the picker is empty, the rest of the page stands
        options = []
    compared = None
    if compare:
        compare = str(compare)
        try:
            other = counterpart(t, compare)
            compared = P.compare_panel(t, u, other)
            if compare not in {o["value"] for o in options}:
                options = [{"label": f"{other.run_name} · {compare[:8]}", "value": compare}, *options]
        except StoreError as e:
            compared, compare = widgets.message(f"Cannot compare: {e}", "error"), None
    return widgets.card(
        "Compare with another run",
        dcc.Dropdown(id="unit-compare-run", options=options, value=compare,
                     placeholder="a run with the same layers up to this one…" if options
                     else "no other run has this layer"),
        dcc.Loading(html.Div(compared, id="unit-compare")))


def _links(t: Target, u: int) -> html.Div:
    return html.Div([
        dcc.Link(f"← all units of layer {t.layer}", href=layer_href(t.run_id, t.layer, t.epoch), id="unit-layer-link"),
        dcc.Link("run page", href=f"/runs/{t.run_id}"),
        dcc.Link(f"← unit {u - 1}", href=unit_href(t.run_id, t.layer, u - 1, t.epoch)) if u > 0 else None,
        dcc.Link(f"unit {u + 1} →", href=unit_href(t.run_id, t.layer, u + 1, t.epoch)) if u + 1 < t.units else None,
    ], className="row")


def _fv_style(p: dict) -> dict:
    # No picture (e.g. a run logged from a user's loop has no model code to ascend): the line below says why,
    # and the browser's broken-image icon would only distract from it.
    return {"width": TOP_MEAN_PX, "height": TOP_MEAN_PX, "imageRendering": "pixelated",
            "border": "1px solid var(--border)", "display": "block" if p["fv"] else "none"}


def _panels(p: dict) -> list:
    k = p["k"]
    return [
        html.Div(p["summary"], id="unit-summary", className="card"),
        html.Div([
            widgets.card("What it looks for", widgets.graph(p["weights"], "unit-weights")),
            widgets.card("What it wants",
                         html.Img(id="unit-fv", src=p["fv"], alt="the input that maximises the unit",
                                  style=_fv_style(p)),
                         html.P(p["fv_value"], id="unit-fv-value", className="small"),
                         html.P(FV_HOW, className="small muted")),
            widgets.card(f"Mean of its top {k} images",
                         html.Img(id="unit-top-mean", src=p["top_mean"], alt="mean of the top images",
                                  style={"width": TOP_MEAN_PX, "height": TOP_MEAN_PX, "imageRendering": "pixelated",
                                         "border": "1px solid var(--border)"}),
                         html.P("What the images that excite it most have in common (dark = ink).",
                                className="small muted")),
        ], style={"display": "grid", "gap": 12, "gridTemplateColumns": "repeat(auto-fit, minmax(300px, 1fr))"}),
        widgets.card(f"Top {k} activating test images (digit · activation)",
                     html.Div(p["top"], id="unit-top", className="row"),
                     dcc.Checklist(id="unit-show-bottom", options=[{"label": f" show the bottom {k} too",
                                                                    "value": "on"}], value=[], className="small"),
                     html.Div(p["bottom"], id="unit-bottom", className="row", style={"display": "none"})),
        html.Div([widgets.graph(p["hist"], "unit-hist"), widgets.graph(p["per_class"], "unit-per-class"),
                  widgets.graph(p["means"], "unit-means")],
                 style={"display": "grid", "gap": 12, "gridTemplateColumns": "repeat(auto-fit, minmax(340px, 1fr))"}),
    ]


def layout(run_id=None, layer=None, unit=None, epoch=None, compare=None, **_query):
    try:
        t = resolve(run_id, layer, epoch, "" if unit is None else unit)
        if t.unit is None:
            raise StoreError("the address names no unit: use /runs/<run id>/neurons/<layer>/<unit>")
        u = t.unit
        p = P.panels(t, u)
        label = S.neuron_labels(t).get(u, {})
        compared = compare_card(t, u, compare)
        emergence = P.emergence_panel(t, u)
    except StoreError as e:
        return widgets.error_page("Unit", str(e))
    return html.Div([
        dcc.Store(id="unit-target", data={"run_id": t.run_id, "layer": t.layer, "unit": u,
                                          "snapshot_epochs": list(t.epochs)}),
        dcc.Interval(id="unit-timer", interval=PLAY_MS, disabled=True),
        html.H2([f"Unit {u} · layer {t.layer} ({t.layer_name}) · {t.run_name} ",
                 html.Span(label.get("name", ""), id="unit-name-shown", className="muted")]),
        _links(t, u),
        add_control.control("unit"),
        unit_links(t.run_id, t.layer, u, t.epoch) if why_no_circuits(t) is None else None,
        html.Div([
            html.Button("▶ Play", id="unit-play", n_clicks=0,
                        title="Animate the unit from the first snapshot to the last"),
            widgets.epoch_field("unit-epoch", t.epochs, t.epoch, className="grow"),
        ], className="row card"),
        *_panels(p),
        widgets.card("When it appeared", emergence),
        widgets.card("If it is switched off", dcc.Loading(html.Div(id="unit-ablation"))),
        html.Div([label_card(t, u, label), compared], className="grid-2"),
        html.Div([html.Button("Download report (HTML)", id="unit-report-button", n_clicks=0),
                  dcc.Download(id="unit-report")], className="row"),
    ])


@callback(Output("unit-weights", "figure"), Output("unit-top-mean", "src"), Output("unit-top", "children"),
          Output("unit-bottom", "children"), Output("unit-hist", "figure"), Output("unit-per-class", "figure"),
          Output("unit-means", "figure"), Output("unit-summary", "children"), Output("unit-layer-link", "href"),
          Output("unit-fv", "src"), Output("unit-fv-value", "children"), Output("unit-fv", "style"),
          Input("unit-epoch", "value"), State("unit-target", "data"), prevent_initial_call=True)
def follow_epoch(epoch, target):
    try:
        t = resolve(target["run_id"], target["layer"], epoch, target["unit"])
        p = P.panels(t, target["unit"])
    except StoreError as e:  # e.g. this epoch's snapshot is refused: the summary line says why
        return (no_update,) * 7 + (widgets.message(str(e), "error"),) + (no_update,) * 4
    return (p["weights"], p["top_mean"], p["top"], p["bottom"], p["hist"], p["per_class"], p["means"], p["summary"],
            layer_href(t.run_id, t.layer, t.epoch), p["fv"], p["fv_value"], _fv_style(p))


@callback(Output("unit-ablation", "children"), Input("unit-epoch", "value"), State("unit-target", "data"))
def show_ablation(epoch, target):
    try:
        return P.ablation_panel(resolve(target["run_id"], target["layer"], epoch, target["unit"]), target["unit"])
    except StoreError as e:
        return widgets.message(str(e), "error")


@callback(Output("unit-bottom", "style"), Input("unit-show-bottom", "value"), prevent_initial_call=True)
def show_bottom(value):
    return {"display": "flex" if value else "none"}


def next_epoch(epochs: list[int], current) -> int | None:
    """The snapshot after `current`, or None at the end."""
    later = [e for e in epochs if current is None or e > current]
    return later[0] if later else None


@callback(Output("unit-epoch", "value"), Output("unit-timer", "disabled"), Output("unit-play", "children"),
          Input("unit-play", "n_clicks"), Input("unit-timer", "n_intervals"),
          State("unit-timer", "disabled"), State("unit-epoch", "value"), State("unit-target", "data"),
          prevent_initial_call=True)
def play(_clicks, _ticks, stopped, epoch, target):
    epochs = target["snapshot_epochs"]
    if not epochs:
        return no_update, True, "▶ Play"
    if ctx.triggered_id == "unit-play":
        if not stopped:
            return no_update, True, "▶ Play"
        start = epochs[0] if epoch == epochs[-1] else epoch  # at the end, play from the untrained net
        return start, False, "❚❚ Pause"
    following = next_epoch(epochs, epoch)
    if following is None:
        return no_update, True, "▶ Play"
    return following, following == epochs[-1], "▶ Play" if following == epochs[-1] else "❚❚ Pause"


@callback(Output("unit-save-status", "children"), Output("unit-name-shown", "children"),
          Input("unit-save", "n_clicks"), State("unit-name", "value"), State("unit-note", "value"),
          State("unit-target", "data"), prevent_initial_call=True)
def save_label(_clicks, name, note, target):
    try:
        store.set_neuron_label(target["run_id"], target["layer"], target["unit"], name=(name or "").strip(),
                               note=note or "")
    except StoreError as e:
        return str(e), no_update
    except Exception as e:  # the store refused the write (read-only, unreachable): say so on the page
        return f"Could not save: {str(e).splitlines()[0][:200]}", no_update
    return f"Saved at {datetime.now().strftime('%H:%M:%S')}.", (name or "").strip()


@callback(Output("unit-compare", "children"), Input("unit-compare-run", "value"), Input("unit-epoch", "value"),
          State("unit-target", "data"), prevent_initial_call=True)
def show_match(other, epoch, target):
    if not other:
        return None
    try:
        t = resolve(target["run_id"], target["layer"], epoch, target["unit"])
        return P.compare_panel(t, target["unit"], counterpart(t, other))
    except StoreError as e:
        return widgets.message(str(e), "error")


@callback(Output("unit-report", "data"), Output("unit-save-status", "children", allow_duplicate=True),
          Input("unit-report-button", "n_clicks"), State("unit-epoch", "value"), State("unit-target", "data"),
          prevent_initial_call=True)
def download_report(_clicks, epoch, target):
    try:
        t = resolve(target["run_id"], target["layer"], epoch, target["unit"])
        report = P.report(t, target["unit"])
    except StoreError as e:
        return no_update, f"No report: {e}"
    name = f"unit-{t.run_id[:8]}-layer{t.layer}-unit{target['unit']}-epoch{t.epoch}.html"
    return dcc.send_string(report, name), no_update


# The epoch and the compared run go into the address as they change (see clientside.js for why replaceState).
clientside_callback(ClientsideFunction(namespace="mnistlab", function_name="unitQuery"),
                    Input("unit-epoch", "value"), Input("unit-compare-run", "value"), prevent_initial_call=True)
