"""Run detail (/runs/<run_id>?epoch=N): one run's full story, from training curves to its loss landscape.

`?epoch=N` picks the snapshot the per-epoch views show (default: the last).  The epoch slider
writes the URL with history.pushState, so back, forward and reload restore the view.
Runs that lack parts of the tracking contract show what exists and say what is missing.
"""
import functools
import threading
import urllib.parse

import dash
import numpy as np
from dash import Input, Output, State, callback, ctx, dcc, html, no_update

from dashboard import store
from dashboard.analytics import health, landscape
from dashboard.views import run_detail_view as V
from training import contract as C
from training.config import ConfigError
from training.models import layers_of

dash.register_page(__name__, path_template="/runs/<run_id>",
                   title=lambda run_id=None, **_: f"Run {str(run_id)[:8]} · MNIST Lab")

GRAPH_CONFIG = {"displaylogo": False, "responsive": True}
LANDSCAPE_IMAGES = {"mlp": 1000, "cnn": 300}  # fixed prefix of the training set the loss is evaluated on
LANDSCAPE_RESOLUTION = {"mlp": 21, "cnn": 11}
N_MISCLASSIFIED, N_SAMPLES = 24, 16

_landscapes: dict[tuple, object] = {}  # (run id, snapshot epochs) -> Landscape; a finished run's never changes
_landscape_lock = threading.Lock()


# ---- reading one run -------------------------------------------------------------------------

def run_config(run):
    """The run's model config from its params, or None for runs not logged by our trainer."""
    try:
        return landscape.config_from_params(run.data.params)
    except (ConfigError, KeyError):
        return None


def hidden_and_all_layers(run) -> tuple[list[str], list[str]]:
    layers = store.layer_names(run)
    return layers[:-1], layers


def histories(run_id: str, keys: list[str]) -> dict:
    return {k: df for k in keys if not (df := store.metric_history(run_id, k)).empty}


# ---- layout ----------------------------------------------------------------------------------

def _message(text, kind="info"):
    return html.Div(text, className=f"run-message run-message-{kind}",
                    style={"padding": "10px 14px", "borderRadius": "6px", "margin": "8px 0",
                           "border": f"1px solid {V.BAD if kind == 'error' else '#e0a800' if kind == 'warn' else 'var(--border)'}"})


def _section(title, body_id, note=None):
    return html.Section([
        html.H3(title, style={"margin": "0 0 4px"}),
        html.P(note, style={"margin": "0 0 6px", "opacity": 0.75, "fontSize": "13px"}) if note else None,
        dcc.Loading(html.Div(id=body_id, style={"minHeight": "60px"}), type="dot", delay_show=300),
    ], className="card run-section", id=f"{body_id}-section")


def _params_line(params: dict) -> str:
    keys = ["arch", "activation", "loss", "optimizer", "lr", "batch_size", "epochs", "train_size", "n_params"]
    return " · ".join(f"{k} {params[k]}" for k in keys if k in params)


def layout(run_id=None, epoch=None, **_query):
    try:
        run = store.get_run(run_id)
        epochs = store.snapshot_epochs(run_id)
    except store.StoreError as e:
        return html.Div([html.H2("Run not found"), _message(f"{e}.", "error"),
                         dcc.Link("← back to all runs", href="/")])
    chosen, epoch_note = V.parse_epoch(epoch, epochs)
    missing = V.missing_parts(run.data.params, run.data.metrics, store.layer_names(run), epochs)
    name = run.info.run_name or run_id
    grid = {"display": "grid", "gridTemplateColumns": "repeat(auto-fit, minmax(520px, 1fr))", "columnGap": "14px"}
    slider = dcc.Slider(id="run-epoch", min=epochs[0] if epochs else 0, max=epochs[-1] if epochs else 0,
                        step=None, value=chosen if chosen is not None else 0, disabled=not epochs,
                        marks={e: str(e) for e in epochs} if len(epochs) <= 40 else
                        {e: str(e) for e in epochs[::max(1, len(epochs) // 20)]},
                        updatemode="mouseup", included=False)
    return html.Div([
        dcc.Store(id="run-id", data=run_id),
        dcc.Location(id="run-url", refresh=False),
        html.H2(name, style={"marginBottom": "2px"}),
        html.Div([
            html.Span(f"{run.info.status.lower()} · ", className="run-status"),
            html.Span(_params_line(run.data.params)),
        ], style={"opacity": 0.8, "fontSize": "13px"}),
        html.Div([
            dcc.Link("Neuron explorer →", href=f"/runs/{run_id}/neurons?layer=1", id="run-neurons-link"),
            dcc.Link("Compare with other runs →", href=f"/compare?runs={run_id}", id="run-compare-link"),
            html.Code(run_id, style={"opacity": 0.6, "fontSize": "12px"}),
        ], style={"display": "flex", "gap": "18px", "alignItems": "center", "margin": "8px 0"}),
        _message(["This run lacks parts of the tracking contract, so some views are empty:",
                  html.Ul([html.Li(m) for m in missing], style={"margin": "4px 0 0"})], "warn")
        if missing else None,
        _message(epoch_note, "warn") if epoch_note else None,
        _section("Health warnings", "run-health", "Checks over the logged data (write-up A's warning signs)."),
        html.Div([_section("Training progress", "run-progress"),
                  _section("Architecture", "run-architecture")], style=grid),
        html.Div([_section("Gradient flow", "run-gradients",
                           "Mean norm of each layer's weight gradient over the epoch's mini-batches."),
                  _section("Dead / saturated units", "run-dead",
                           "Share of a layer's units that are dead (ReLU) or saturated (sigmoid, tanh) "
                           "on every test image.")], style=grid),
        _section("Weights over epochs", "run-weights",
                 "Each layer's weight distribution: bands from min to max through the "
                 "7/16/31/50/69/84/93th percentiles, as in TensorBoard's distributions view."),
        html.Div([
            html.Span("Epoch for the views below", style={"fontWeight": 600, "whiteSpace": "nowrap"}),
            html.Div(slider, style={"flex": 1}),
        ], className="run-epoch-bar", style={"display": "flex", "gap": "16px", "alignItems": "center",
                                              "position": "sticky", "top": "48px", "zIndex": 5, "padding": "8px 14px",
                                              "background": "var(--bg)", "borderBottom": "1px solid var(--border)",
                                              "margin": "0 0 14px"}),
        _section("Activation distributions", "run-activations",
                 "Activations of every layer on the 10,000 test images at the chosen epoch; "
                 "the outline is the untrained network (conv channels: spatial max)."),
        html.Div([_section("Confidence: correct vs incorrect", "run-confidence"),
                  _section("Confusion matrix", "run-confusion")], style=grid),
        _section("Misclassified test images", "run-gallery",
                 "The most confident mistakes at the chosen epoch: true label, prediction (red) and confidence."),
        _section("Sample test images", "run-samples", "The first test images and the prediction at the chosen "
                                                      "epoch: green is right, red is wrong."),
        html.Section([
            html.H3("Loss landscape", style={"margin": "0 0 4px"}),
            html.P("Li et al. 2018: PCA of the weight snapshots gives the plane the training path moved in most; "
                   "the loss is evaluated on a grid in that plane on a fixed subset of the training set.",
                   style={"margin": "0 0 6px", "opacity": 0.75, "fontSize": "13px"}),
            html.Button("Compute loss landscape", id="run-landscape-button", n_clicks=0, disabled=len(epochs) < 2),
            dcc.Loading(html.Div(id="run-landscape", style={"minHeight": "60px"}), type="circle",
                        overlay_style={"visibility": "visible", "opacity": 0.4}),
        ], className="card run-section", id="run-landscape-section"),
    ], className="run-detail")


def _graph(fig, gid, responsive=True):
    return dcc.Graph(id=gid, figure=fig, config={**GRAPH_CONFIG, "responsive": responsive},
                     style={} if responsive else {"overflowX": "auto"})


# ---- callbacks -------------------------------------------------------------------------------

@callback(Output("run-url", "search"), Output("run-epoch", "value"),
          Input("run-url", "search"), Input("run-epoch", "value"), State("run-id", "data"),
          prevent_initial_call=True)
def sync_epoch_and_url(search, epoch, run_id):
    """Slider -> URL (a new history entry); URL (back/forward) -> slider."""
    if ctx.triggered_id == "run-epoch":
        query = dict(urllib.parse.parse_qsl((search or "").lstrip("?")))
        if query.get("epoch") == str(epoch):
            return no_update, no_update
        query["epoch"] = str(epoch)
        return "?" + urllib.parse.urlencode(query), no_update
    try:
        epochs = store.snapshot_epochs(run_id)
    except store.StoreError:
        return no_update, no_update
    wanted = dict(urllib.parse.parse_qsl((search or "").lstrip("?"))).get("epoch")
    chosen, _ = V.parse_epoch(wanted, epochs)
    return no_update, chosen if chosen is not None and chosen != epoch else no_update


@callback(Output("run-health", "children"), Output("run-progress", "children"),
          Output("run-architecture", "children"), Output("run-gradients", "children"),
          Output("run-dead", "children"), Input("run-id", "data"))
def show_run_overview(run_id):
    return overview_sections(run_id)


def overview_sections(run_id: str) -> tuple:
    run = store.get_run(run_id)
    hidden, layers = hidden_and_all_layers(run)
    params = run.data.params
    keys = [C.TRAIN_LOSS, C.TEST_LOSS, C.TRAIN_ACC, C.TEST_ACC] + [C.grad_norm_key(l) for l in layers] \
        + [C.dead_fraction_key(l) for l in hidden]
    hist = histories(run_id, keys)
    epochs = store.snapshot_epochs(run_id)

    progress_keys = [k for k in (C.TRAIN_LOSS, C.TEST_LOSS, C.TRAIN_ACC, C.TEST_ACC) if k in hist]
    if progress_keys:
        progress = _graph(V.progress_figure(hist, params.get("loss")), "run-progress-graph")
    else:
        other = {k: store.metric_history(run_id, k) for k in sorted(run.data.metrics)}
        progress = html.Div([_message("No train/test loss or accuracy logged; showing the metrics this run has."),
                             _graph(V.metrics_figure(other), "run-progress-graph")]) if other \
            else _message("This run logged no metrics.")

    config = run_config(run)
    architecture = _graph(V.architecture_figure(V.architecture_rows(layers_of(config), params.get("activation"),
                                                                    params.get("loss"))),
                          "run-architecture-graph") if config else _message("No model params (arch, sizes) logged.")

    grads = {l: hist[C.grad_norm_key(l)] for l in layers if C.grad_norm_key(l) in hist}
    gradients = _graph(V.gradient_figure(grads), "run-gradients-graph") if grads \
        else _message("No grad_norm/<layer> metrics logged.")
    dead_h = {l: hist[C.dead_fraction_key(l)] for l in hidden if C.dead_fraction_key(l) in hist}
    dead = _graph(V.dead_figure(dead_h, params.get("activation"), health.DEAD_LIMIT), "run-dead-graph") if dead_h \
        else _message("No dead_fraction/<layer> metrics logged.")

    first = store.load_snapshot(run_id, epochs[0]) if epochs else None
    last = store.load_snapshot(run_id, epochs[-1]) if epochs else None
    warnings = health.run_health({k: df["value"].to_numpy() for k, df in hist.items()}, hidden, layers,
                                 params.get("activation", ""), first, last,
                                 (epochs[0], epochs[-1]) if epochs else None)
    return health_list(warnings, bool(hist)), progress, architecture, gradients, dead


def health_list(warnings, had_data: bool):
    if not had_data:
        return _message("Not enough logged data to check this run's health.")
    if not warnings:
        return html.Div("✓ No warning signs: loss, dead units, gradients, confidence and activations look healthy.",
                        id="run-health-ok", style={"color": V.GOOD, "fontWeight": 600})
    return html.Ul([
        html.Li([html.B(w.title), html.Span(f" — {w.explanation} "),
                 html.Span(f"Try: {w.fix}", style={"opacity": 0.8})],
                style={"borderLeft": f"4px solid {V.BAD if w.severity == 'error' else '#e0a800'}",
                       "padding": "4px 10px", "margin": "6px 0", "listStyle": "none"},
                className=f"run-health-item run-health-{w.severity}")
        for w in warnings], style={"paddingLeft": 0, "margin": 0})


@callback(Output("run-weights", "children"), Input("run-id", "data"))
def show_weights(run_id):
    run = store.get_run(run_id)
    epochs = store.snapshot_epochs(run_id)
    if not epochs:
        return _message("No weight snapshots logged.")
    snaps = {e: store.load_snapshot(run_id, e) for e in epochs}
    pct = {l: V.weight_percentiles(snaps, l) for l in store.layer_names(run)}
    return _graph(V.weight_distribution_figure(pct), "run-weights-graph")


@callback(Output("run-activations", "children"), Output("run-confidence", "children"),
          Output("run-confusion", "children"), Output("run-gallery", "children"),
          Output("run-samples", "children"), Input("run-epoch", "value"), State("run-id", "data"))
def show_epoch(epoch, run_id):
    return epoch_sections(run_id, epoch)


def epoch_sections(run_id: str, epoch) -> tuple:
    run = store.get_run(run_id)
    epochs = store.snapshot_epochs(run_id)
    epoch, note = V.parse_epoch(epoch, epochs)
    if epoch is None:
        msg = _message("No snapshots logged, so there is nothing to show per epoch.")
        return msg, msg, msg, msg, msg
    snap = store.load_snapshot(run_id, epoch)
    layers = store.layer_names(run)
    first = store.load_snapshot(run_id, epochs[0]) if epochs[0] != epoch else None
    activations = _graph(V.activation_figure(snap, layers, epoch, first, epochs[0]), "run-activations-graph") \
        if any(C.act_hist_key(l) in snap for l in layers) else _message("This snapshot has no activation histograms.")
    confidence = _graph(V.confidence_figure(snap, epoch), "run-confidence-graph") \
        if C.CONF_EDGES in snap else _message("This snapshot has no confidence histograms.")
    if C.PRED_CLASS not in snap:
        msg = _message("This snapshot has no test predictions.")
        return activations, confidence, msg, msg, msg
    images, labels = store.test_set()
    pred, conf = snap[C.PRED_CLASS], snap.get(C.PRED_CONFIDENCE, np.full(len(labels), np.nan))
    confusion = _graph(V.confusion_figure(V.confusion_matrix(pred, labels), epoch), "run-confusion-graph")
    wrong = V.misclassified(pred, conf, labels, N_MISCLASSIFIED)
    gallery = _graph(V.image_grid_figure(images[wrong], labels[wrong], pred[wrong], conf[wrong]),
                     "run-gallery-graph", responsive=False) if len(wrong) else _message("No misclassified test images.")
    idx = np.arange(N_SAMPLES)
    samples = _graph(V.image_grid_figure(images[idx], labels[idx], pred[idx], conf[idx]), "run-samples-graph",
                     responsive=False)
    return activations, confidence, confusion, gallery, samples


# ---- loss landscape --------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _train_data():
    from training.data import load
    return load()


def run_landscape(run_id: str):
    """The run's loss landscape, computed once per (run, snapshot epochs) and kept in memory."""
    run = store.get_run(run_id)
    epochs = store.snapshot_epochs(run_id)
    key = (run_id, tuple(epochs))
    with _landscape_lock:
        if key in _landscapes:
            return _landscapes[key]
    config = run_config(run)
    if config is None:
        raise store.StoreError("this run has no model params (arch, sizes), so its network cannot be rebuilt")
    if len(epochs) < 2:
        raise store.StoreError("the loss landscape needs at least two weight snapshots")
    n = LANDSCAPE_IMAGES[config.arch]
    x, y = _train_data().train_x[:n], _train_data().train_y[:n]
    result = landscape.loss_landscape(config, [store.load_snapshot(run_id, e) for e in epochs], epochs, x, y,
                                      resolution=LANDSCAPE_RESOLUTION[config.arch])
    with _landscape_lock:
        _landscapes[key] = result
    return result


@callback(Output("run-landscape", "children"), Output("run-landscape-button", "children"),
          Input("run-landscape-button", "n_clicks"), State("run-id", "data"))
def show_landscape(n_clicks, run_id):
    epochs = store.snapshot_epochs(run_id)
    cached = (run_id, tuple(epochs)) in _landscapes
    if not n_clicks and not cached:
        hint = "Needs at least two weight snapshots." if len(epochs) < 2 else \
            "Press the button to compute it (a few seconds to a minute; kept for later visits)."
        return _message(hint), no_update
    try:
        ls = run_landscape(run_id)
    except store.StoreError as e:
        return _message(f"Cannot compute the loss landscape: {e}.", "warn"), no_update
    info = html.P(f"Loss on the first {ls.n_images:,} training images, {len(ls.alphas)}×{len(ls.betas)} grid, "
                  f"snapshots of epochs {ls.epochs[0]}–{ls.epochs[-1]}; the path ends at (0, 0), the final weights.",
                  style={"fontSize": "13px", "opacity": 0.75})
    grid = {"display": "grid", "gridTemplateColumns": "repeat(auto-fit, minmax(520px, 1fr))", "gap": "12px"}
    return html.Div([info, html.Div([_graph(V.landscape_contour_figure(ls), "run-landscape-contour"),
                                     _graph(V.landscape_surface_figure(ls), "run-landscape-surface")],
                                    style=grid)]), "Computed ✓"
