"""Unit view (/runs/<run_id>/neurons/<layer>/<unit>?epoch=E&compare=<run_id>): one hidden unit up close.

What it looks for (incoming weights), what excites it (top-k test images), how it
responds to each digit (distribution, mean per class, SI, NMI and a verdict), how it
formed (an epoch scrubber with play), its counterpart in another run, a name and a
note stored as MLflow tags, and a one-page HTML report to download.
"""
from datetime import datetime

import dash
import numpy as np
import plotly.graph_objects as go
from dash import ClientsideFunction, Input, Output, State, callback, clientside_callback, ctx, dcc, html, no_update

from dashboard import neuron_data as D
from dashboard import store
from dashboard.analytics import neurons as N
from dashboard.neuron_data import NEGATIVE, NEUTRAL, POSITIVE, layer_href, unit_href, verdict_color
from dashboard.store import StoreError

try:
    from dashboard.views.theme import DIVERGING, TEMPLATE
except ImportError:  # the shared theme is optional
    DIVERGING, TEMPLATE = "RdBu", "plotly_white"

dash.register_page(__name__, path_template="/runs/<run_id>/neurons/<layer>/<unit>", order=1,
                   title=lambda run_id=None, layer=None, unit=None, **_:
                   f"Unit {str(unit)[:6]} · layer {str(layer)[:6]} · {str(run_id)[:8]} · MNIST Lab")

GRAPH_CONFIG = {"displaylogo": False}
PLAY_MS = 1200
HIST_BINS = 40


# ---- figures and panels: pure functions of (target, unit) -------------------------------------

def _fig(title: str, x_title: str, y_title: str, height: int = 280) -> go.Figure:
    fig = go.Figure(layout=dict(template=TEMPLATE, height=height, title=title, showlegend=False,
                                margin=dict(l=56, r=16, t=40, b=48)))
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title=y_title)
    return fig


def weights_figure(t: D.Target, unit: int, title: str | None = None) -> go.Figure:
    """First layer: the unit's weights as an image (RdBu, centred on 0, the layer's scale).  Deeper: per input unit."""
    w = D.weights(t)
    if t.first:
        z = D.unit_heatmap(t, w, unit)
        vmax = D.heatmap_scale(t)
        what = "3×3 kernel" if t.kind == "conv" else "incoming weights"
        fig = _fig(title or f"Unit {unit}: {what}", "pixel column", "pixel row", height=320)
        fig.add_trace(go.Heatmap(z=z, zmin=-vmax, zmax=vmax, zmid=0, colorscale=DIVERGING,
                                 colorbar=dict(title="weight", thickness=12),
                                 hovertemplate="row %{y}, column %{x}: %{z:.3f}<extra></extra>"))
        fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain")
        fig.update_xaxes(constrain="domain")
        return fig
    if t.kind == "conv":
        z = w[unit].reshape(w.shape[1], -1)
        vmax = D.heatmap_scale(t)
        fig = _fig(title or f"Unit {unit}: 3×3 kernels over {t.prev_name}'s channels",
                   "kernel position (3×3, row by row)", f"input channel of {t.prev_name}", height=320)
        fig.add_trace(go.Heatmap(z=z, zmin=-vmax, zmax=vmax, zmid=0, colorscale=DIVERGING,
                                 colorbar=dict(title="weight", thickness=12),
                                 hovertemplate="channel %{y}, position %{x}: %{z:.3f}<extra></extra>"))
        return fig
    row = w[unit]
    fig = _fig(title or f"Unit {unit}: incoming weights from {t.prev_name}", f"unit of {t.prev_name}", "weight")
    fig.add_trace(go.Bar(x=np.arange(len(row)), y=row, marker_color=[POSITIVE if v >= 0 else NEGATIVE for v in row],
                         hovertemplate=f"{t.prev_name} unit %{{x}}: %{{y:.3f}}<extra></extra>"))
    return fig


def histogram_figure(stats: N.LayerStats, unit: int) -> go.Figure:
    a = stats.acts[:, unit]
    lo, hi = float(a.min()), float(a.max())
    span = (lo, hi) if hi - lo > 1e-6 else (lo - 0.5, lo + 0.5)  # a dead unit: one bar, a readable axis
    counts, edges = np.histogram(a, bins=HIST_BINS, range=span)
    fig = _fig("Activation over the 10,000 test images", "activation", "test images")
    fig.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges), marker_color=NEUTRAL,
                         hovertemplate="%{x:.3f}: %{y} images<extra></extra>"))
    return fig


def per_class_figure(stats: N.LayerStats, unit: int, labels: np.ndarray) -> go.Figure:
    """Box per digit from precomputed quartiles: 10 boxes, not 10,000 points, go to the browser."""
    a = stats.acts[:, unit]
    fig = _fig("Activation per digit", "true digit", "activation")
    q = np.array([np.percentile(a[labels == d], [0, 25, 50, 75, 100]) for d in range(N.N_CLASSES)])
    colors = [POSITIVE if d == stats.preferred[unit] else NEUTRAL for d in range(N.N_CLASSES)]
    for d in range(N.N_CLASSES):
        fig.add_trace(go.Box(x=[d], lowerfence=[q[d, 0]], q1=[q[d, 1]], median=[q[d, 2]], q3=[q[d, 3]],
                             upperfence=[q[d, 4]], mean=[stats.means[unit, d]], name=str(d),
                             marker_color=colors[d], line_color=colors[d]))
    fig.update_xaxes(tickmode="linear", dtick=1)
    return fig


def class_means_figure(stats: N.LayerStats, unit: int) -> go.Figure:
    m = stats.means[unit]
    pref = int(stats.preferred[unit])
    fig = _fig("Mean activation per digit", "digit", "mean activation")
    fig.add_trace(go.Bar(x=np.arange(N.N_CLASSES), y=m,
                         marker_color=[POSITIVE if d == pref else NEUTRAL for d in range(N.N_CLASSES)],
                         hovertemplate="digit %{x}: %{y:.3f}<extra></extra>"))
    rest = float(np.delete(m, pref).mean())
    fig.add_hline(y=rest, line_dash="dot", line_color=NEGATIVE, annotation_text="mean of the other digits",
                  annotation_position="top left")
    fig.update_xaxes(tickmode="linear", dtick=1)
    return fig


def image_strip(indices: np.ndarray, acts: np.ndarray, labels: np.ndarray, images: np.ndarray, id_prefix: str):
    return [html.Figure([
        html.Img(src=D.png_uri(D.ink(images[i])), alt=f"test image {i}",
                 style={"width": 56, "height": 56, "imageRendering": "pixelated", "border": "1px solid var(--border)"}),
        html.Figcaption([html.B(str(labels[i])), f" · {acts[i]:.3f}"], className="small"),
    ], className=f"{id_prefix}-img", title=f"test image #{i}: digit {labels[i]}, activation {acts[i]:.4f}",
        style={"margin": 0, "textAlign": "center"}) for i in indices]


def unit_panels(t: D.Target, unit: int) -> dict:
    """Everything the scrubber updates, for one unit at t.epoch."""
    stats = D.layer_stats(t)
    images, labels = D.test_images()
    a = stats.acts[:, unit]
    k = stats.top.shape[1]
    return {
        "weights": weights_figure(t, unit),
        "top_mean": D.top_mean_uri(stats, unit),
        "top": image_strip(stats.top[unit], a, labels, images, "unit-top") + (
            [html.Span("The unit is dead: all 10,000 images tie, so these are simply the first ones.",
                       className="small muted")] if stats.dead[unit] else []),
        "bottom": image_strip(stats.bottom[unit], a, labels, images, "unit-bottom"),
        "hist": histogram_figure(stats, unit),
        "per_class": per_class_figure(stats, unit, labels),
        "means": class_means_figure(stats, unit),
        "summary": D.summary_sentence(t, stats, unit, labels),
        "verdict": stats.verdicts[unit],
        "k": k,
    }


def compare_panel(t: D.Target, unit: int, other_run_id: str):
    """This unit and its best match in another run, side by side, with the correlation and both verdicts."""
    m = D.best_match(t, unit, other_run_id)
    mine, theirs = D.layer_stats(t), D.layer_stats(m.other)

    def side(target, u, stats, who):
        pic = (dcc.Graph(figure=weights_figure(target, u, f"{who}: unit {u}, epoch {target.epoch}"),
                         config=GRAPH_CONFIG) if target.first else
               html.Img(src=D.top_mean_uri(stats, u), style={"width": 140, "imageRendering": "pixelated"}))
        return html.Div([pic, html.Div([html.B(f"{who}: "), dcc.Link(f"unit {u}", href=unit_href(target.run_id,
                        target.layer, u, target.epoch)), " · ",
                        html.Span(stats.verdicts[u], style={"color": verdict_color(stats.verdicts[u])}),
                        f" · SI {stats.si[u]:.2f}"])])

    return html.Div([
        html.P([f"Best match in {m.other.run_name} ({other_run_id[:8]}): unit {m.unit}, correlation ",
                html.B(f"r = {m.corr:.2f}", id="unit-compare-corr"),
                f" over the 10,000 test images ({m.method} across the layer's units)."]),
        html.Div([side(t, unit, mine, "This run"), side(m.other, m.unit, theirs, "Other run")], className="grid-2"),
    ])


# ---- layout and callbacks ---------------------------------------------------------------------

def epoch_slider(component_id: str, t: D.Target) -> dcc.Slider:
    return dcc.Slider(id=component_id, min=t.epochs[0], max=t.epochs[-1], step=None, value=t.epoch,
                      marks={e: str(e) for e in t.epochs}, allow_direct_input=False)


def label_card(t: D.Target, u: int, label: dict):
    """Name and note: saved as MLflow tags, shown back as plain text (Dash escapes it)."""
    return _card(
        "Name and note",
        html.Div([dcc.Input(id="unit-name", value=label.get("name", ""), maxLength=200, style={"width": 280},
                            placeholder="a short name, e.g. 'left loop'"),
                  html.Button("Save", id="unit-save", n_clicks=0, className="button-primary")], className="row"),
        dcc.Textarea(id="unit-note", value=label.get("note", ""), placeholder="a note for the team", maxLength=5000,
                     className="text-input", style={"width": "100%", "height": 70, "marginTop": 8}),
        html.Div(id="unit-save-status", className="small muted"),
        html.P(f"Stored as MLflow tags on the run (neuron.{t.layer}.{u}.name / .note): the MLflow UI shows them too.",
               className="small muted"))


def _card(title, *children, **kw):
    return html.Div([html.H3(title, style={"marginTop": 0}), *children], className="card", **kw)


def layout(run_id=None, layer=None, unit=None, epoch=None, compare=None, **_query):
    try:
        t = D.resolve(run_id, layer, epoch, "" if unit is None else unit)
        if t.unit is None:
            raise StoreError("the address names no unit: use /runs/<run id>/neurons/<layer>/<unit>")
        u = t.unit
        p = unit_panels(t, u)
        label = D.neuron_labels(t.run_id, t.layer).get(u, {})
        options = D.comparable_runs(t)
    except StoreError as e:
        return html.Div([html.H2("Unit"), html.Div(str(e), className="message message-error"),
                         dcc.Link("← all runs", href="/")])
    compared = None
    if compare:  # ?compare=<run id>: a shared link, possibly to a run of another experiment
        compare = str(compare)
        try:
            compared = compare_panel(t, u, compare)
            if compare not in {o["value"] for o in options}:
                options = [{"label": f"{store.get_run(compare).info.run_name} · {compare[:8]}", "value": compare},
                           *options]
        except StoreError as e:
            compared, compare = html.Div(f"Cannot compare: {e}", className="message message-error"), None
    graph = lambda gid, fig: dcc.Graph(id=gid, figure=fig, config=GRAPH_CONFIG)  # noqa: E731
    return html.Div([
        dcc.Store(id="unit-target", data={"run_id": t.run_id, "layer": t.layer, "unit": u, "epochs": list(t.epochs)}),
        dcc.Interval(id="unit-timer", interval=PLAY_MS, disabled=True),
        html.H2([f"Unit {u} · layer {t.layer} ({t.layer_name}) · {t.run_name} ",
                 html.Span(label.get("name", ""), id="unit-name-shown", className="muted")]),
        html.Div([dcc.Link(f"← all units of layer {t.layer}", href=layer_href(t.run_id, t.layer, t.epoch),
                           id="unit-layer-link"),
                  dcc.Link("run page", href=f"/runs/{t.run_id}"),
                  dcc.Link(f"← unit {u - 1}", href=unit_href(t.run_id, t.layer, u - 1, t.epoch)) if u > 0 else None,
                  dcc.Link(f"unit {u + 1} →", href=unit_href(t.run_id, t.layer, u + 1, t.epoch))
                  if u + 1 < t.units else None], className="row"),
        html.Div([
            html.Button("▶ Play", id="unit-play", n_clicks=0,
                        title="Animate the unit from the first snapshot to the last"),
            html.Div([html.Label("Epoch", className="small muted"), epoch_slider("unit-epoch", t)], className="grow"),
        ], className="row card"),
        html.P(p["summary"], id="unit-summary", className="card"),
        html.Div([
            _card("What it looks for", graph("unit-weights", p["weights"])),
            _card(f"Mean of its top {p['k']} images",
                  html.Img(id="unit-top-mean", src=p["top_mean"], alt="mean of the top images",
                           style={"width": 220, "height": 220, "imageRendering": "pixelated",
                                  "border": "1px solid var(--border)"}),
                  html.P("What the images that excite it most have in common (dark = ink).",
                         className="small muted")),
        ], className="grid-2"),
        _card(f"Top {p['k']} activating test images (digit · activation)",
              html.Div(p["top"], id="unit-top", className="row"),
              dcc.Checklist(id="unit-show-bottom", options=[{"label": f" show the bottom {p['k']} too",
                                                             "value": "on"}], value=[], className="small"),
              html.Div(p["bottom"], id="unit-bottom", className="row", style={"display": "none"})),
        html.Div([graph("unit-hist", p["hist"]), graph("unit-per-class", p["per_class"]),
                  graph("unit-means", p["means"])],
                 style={"display": "grid", "gap": 12,
                        "gridTemplateColumns": "repeat(auto-fit, minmax(340px, 1fr))"}),
        html.Div([
            label_card(t, u, label),
            _card("Compare with another run",
                  dcc.Dropdown(id="unit-compare-run", options=options, value=compare,
                               placeholder="a run with the same layers up to this one…" if options
                               else "no other run has this layer"),
                  dcc.Loading(html.Div(compared, id="unit-compare"))),
        ], className="grid-2"),
        html.Div([html.Button("Download report (HTML)", id="unit-report-button", n_clicks=0),
                  dcc.Download(id="unit-report")], className="row"),
    ])


@callback(Output("unit-weights", "figure"), Output("unit-top-mean", "src"), Output("unit-top", "children"),
          Output("unit-bottom", "children"), Output("unit-hist", "figure"), Output("unit-per-class", "figure"),
          Output("unit-means", "figure"), Output("unit-summary", "children"), Output("unit-layer-link", "href"),
          Input("unit-epoch", "value"), State("unit-target", "data"), prevent_initial_call=True)
def follow_epoch(epoch, target):
    try:
        t = D.resolve(target["run_id"], target["layer"], epoch, target["unit"])
    except StoreError as e:
        return (no_update,) * 7 + (str(e), no_update)
    p = unit_panels(t, target["unit"])
    return (p["weights"], p["top_mean"], p["top"], p["bottom"], p["hist"], p["per_class"], p["means"], p["summary"],
            layer_href(t.run_id, t.layer, t.epoch))


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
    epochs = target["epochs"]
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
        t = D.resolve(target["run_id"], target["layer"], epoch, target["unit"])
        return compare_panel(t, target["unit"], other)
    except StoreError as e:
        return html.Div(str(e), className="message message-error")


@callback(Output("unit-report", "data"), Input("unit-report-button", "n_clicks"), State("unit-epoch", "value"),
          State("unit-target", "data"), prevent_initial_call=True)
def download_report(_clicks, epoch, target):
    t = D.resolve(target["run_id"], target["layer"], epoch, target["unit"])
    name = f"unit-{t.run_id[:8]}-layer{t.layer}-unit{target['unit']}-epoch{t.epoch}.html"
    return dcc.send_string(D.report_html(t, target["unit"]), name)


# The epoch and the compared run go into the address as they change (see clientside.js for why replaceState).
clientside_callback(ClientsideFunction(namespace="mnistlab", function_name="unitQuery"),
                    Input("unit-epoch", "value"), Input("unit-compare-run", "value"), prevent_initial_call=True)
