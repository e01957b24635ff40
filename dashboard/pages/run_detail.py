"""Run detail (/runs/<run_id>?epoch=N): one run's full story, from training curves to its loss landscape.

`?epoch=N` picks the snapshot the per-epoch views show (default: the last).  The epoch slider
writes the URL with history.pushState, so back, forward and reload restore the view.
Runs that lack parts of the tracking contract show what exists and say what is missing.
The data comes from dashboard.loaders.run_data, the figures from views/run_detail_view.py.
"""
import urllib.parse

import dash
from dash import Input, Output, State, callback, ctx, dcc, html, no_update

from dashboard.analytics import health
from dashboard.analytics import replicates as R
from dashboard.loaders import run_data
from dashboard.read import mlflow_links, store
from dashboard.views import gaps
from dashboard.views import run_detail_view as V
from dashboard.views import widgets
from dashboard.views.neurons.circuit_view import digits_href
from dashboard.views.reviews import add_control
from dashboard.views.neurons.image_view import image_links
from training import contract as C
from training.errors import UserError

dash.register_page(__name__, path_template="/runs/<run_id>",
                   title=lambda run_id=None, **_: f"Run {str(run_id)[:8]} · MNIST Lab")

N_MISCLASSIFIED = 24
PARAMS_LINE = (C.PARAM_ACTIVATION, C.PARAM_LOSS, C.PARAM_OPTIMIZER, C.PARAM_LR, C.PARAM_BATCH_SIZE, C.PARAM_EPOCHS,
               C.PARAM_TRAIN_SIZE, C.PARAM_N_PARAMS)


# ---- layout ----------------------------------------------------------------------------------

def _section(title, body_id, note=None):
    return html.Section([
        html.H3(title, style={"margin": "0 0 4px"}),
        html.P(note, className="run-note") if note else None,
        dcc.Loading(html.Div(id=body_id, style={"minHeight": "60px"}), type="dot", delay_show=300),
    ], className="card run-section", id=f"{body_id}-section")


def _params_line(params: dict) -> str:
    label = store.arch_label(params)
    return " · ".join(([f"{C.PARAM_ARCH} {label}"] if label else []) + [f"{k} {params[k]}" for k in PARAMS_LINE
                                                                      if k in params])


def _header(run, run_id: str) -> list:
    return [
        html.H2(run.info.run_name or run_id, style={"marginBottom": "2px"}),
        html.Div([html.Span(f"{run.info.status.lower()} · ", className="run-status"),
                  html.Span(_params_line(run.data.params))], style={"opacity": 0.8, "fontSize": "13px"}),
        html.Div([
            dcc.Link("Neuron explorer →", href=f"/runs/{run_id}/neurons?layer=1", id="run-neurons-link"),
            dcc.Link("Compare with other runs →", href=f"/compare?runs={run_id}", id="run-compare-link"),
            html.A("Open in MLflow ↗", href=ui, target="_blank", rel="noopener", id="run-mlflow-link")
            if (ui := mlflow_links.run_url(run.info.experiment_id, run_id)) else None,
            html.Code(run_id, className="muted", style={"fontSize": "12px"}),
        ], style={"display": "flex", "gap": "18px", "alignItems": "center", "margin": "8px 0"}),
    ]


def _overview_sections() -> list:
    return [
        _section("Health warnings", "run-health", "Checks over the logged data (write-up A's warning signs)."),
        html.Div([_section("Training progress", "run-progress"), _section("Architecture", "run-architecture")],
                 className="run-grid"),
        html.Div([_section("Gradient flow", "run-gradients",
                           "Mean norm of each layer's weight gradient over the epoch's mini-batches."),
                  _section("Dead / saturated units", "run-dead",
                           "Share of a layer's units that are dead (ReLU) or saturated (sigmoid, tanh) "
                           "on every test image.")], className="run-grid"),
        _section("Weights over epochs", "run-weights",
                 "Each layer's weight distribution: bands from min to max through the "
                 "7/16/31/50/69/84/93th percentiles, as in TensorBoard's distributions view."),
    ]


def _epoch_sections(epochs: list[int], chosen) -> list:
    slider = widgets.epoch_slider("run-epoch", epochs, chosen, updatemode="mouseup", included=False)
    return [
        html.Div([html.Label("Epoch for the views below", htmlFor="run-epoch", style={"fontWeight": 600, "whiteSpace": "nowrap"}),
                  html.Div(slider, style={"flex": 1})], className="run-epoch-bar"),
        _section("Activation distributions", "run-activations",
                 "Activations of every layer on the 10,000 test images at the chosen epoch; "
                 "the outline is the untrained network (conv channels: spatial max)."),
        html.Div([_section("Confidence: correct vs incorrect", "run-confidence"),
                  _section("Confusion matrix", "run-confusion")], className="run-grid"),
        _section("Misclassified test images", "run-gallery",
                 "The most confident mistakes at the chosen epoch: true label, prediction (red) and confidence."),
        _section("Sample test images", "run-samples", "The first test images and the prediction at the chosen "
                                                      "epoch: green is right, red is wrong."),
    ]


def _landscape_section(epochs: list[int]) -> html.Section:
    return html.Section([
        html.H3("Loss landscape", style={"margin": "0 0 4px"}),
        html.P("Li et al. 2018: PCA of the weight snapshots gives the plane the training path moved in most; "
               "the loss is evaluated on a grid in that plane on a fixed subset of the training set.",
               className="run-note"),
        html.Button("Compute loss landscape", id="run-landscape-button", n_clicks=0, disabled=len(epochs) < 2),
        dcc.Loading(html.Div(id="run-landscape", style={"minHeight": "60px"}), type="circle",
                    overlay_style={"visibility": "visible", "opacity": 0.4}),
    ], className="card run-section", id="run-landscape-section")


def layout(run_id=None, epoch=None, **_query):
    try:
        run = store.get_run(run_id)
        epochs = store.snapshot_epochs(run_id)
    except store.StoreError as e:
        return widgets.error_page("Run not found", f"{e}.")
    chosen, epoch_note = V.parse_epoch(epoch, epochs)
    arch = store.layers(run)
    missing = V.missing_parts(run.data.params, run.data.metrics, list(arch.names), epochs, arch.problem)
    return html.Div([
        dcc.Store(id="run-id", data=run_id),
        dcc.Location(id="run-url", refresh=False),
        *_header(run, run_id),
        add_control.control("run"),
        widgets.message(["This run lacks parts of the tracking contract, so some views are empty:",
                         html.Ul([html.Li(m) for m in missing], style={"margin": "4px 0 0"})], "warn")
        if missing else None,
        widgets.message(epoch_note, "warn") if epoch_note else None,
        *_overview_sections(),
        *_epoch_sections(epochs, chosen),
        _landscape_section(epochs),
    ], className="run-detail")


# ---- callbacks -------------------------------------------------------------------------------

@callback(Output("run-url", "search"), Output("run-epoch", "value"),
          Input("run-url", "search"), Input("run-epoch", "value"), State("run-id", "data"),
          prevent_initial_call=True)
def sync_epoch_and_url(search, epoch, run_id):
    """Slider -> URL (a new history entry); URL (back/forward) -> slider."""
    query = dict(urllib.parse.parse_qsl((search or "").lstrip("?")))
    if ctx.triggered_id == "run-epoch":
        if query.get("epoch") == str(epoch):
            return no_update, no_update
        query["epoch"] = str(epoch)
        return "?" + urllib.parse.urlencode(query), no_update
    try:
        epochs = store.snapshot_epochs(run_id)
    except store.StoreError:
        return no_update, no_update
    chosen, _ = V.parse_epoch(query.get("epoch"), epochs)
    return no_update, chosen if chosen is not None and chosen != epoch else no_update


@callback(Output("run-health", "children"), Output("run-progress", "children"),
          Output("run-architecture", "children"), Output("run-gradients", "children"),
          Output("run-dead", "children"), Input("run-id", "data"))
def show_run_overview(run_id):
    try:
        o = run_data.overview(run_id)
    except store.StoreError as e:
        return (widgets.message(f"{e}.", "error"),) * 5
    return health_list(o, run_id), _progress(o), _architecture(o), _gradients(o), _dead(o)


def with_note(graph, note: str):
    """A figure and, under it, the note on what it could not draw (logged NaN or ±inf values)."""
    return html.Div([graph, widgets.message(note, "warn")]) if note else graph


def _progress(o: run_data.Overview):
    if o.progress():
        return with_note(widgets.graph(V.progress_figure(o.progress(), o.params.get(C.PARAM_LOSS)), "run-progress-graph"),
                         gaps.histories_note(o.progress()))
    if not o.other_metrics:
        return widgets.message("This run logged no metrics.")
    return html.Div([widgets.message("No train/test loss or accuracy logged; showing the metrics this run has."),
                     with_note(widgets.graph(V.metrics_figure(o.other_metrics), "run-progress-graph"),
                               gaps.histories_note(o.other_metrics))])


def _architecture(o: run_data.Overview):
    if o.model is None:
        return widgets.message(f"Cannot draw the architecture: {o.model_problem}.")
    rows = V.architecture_rows(o.model, o.params.get(C.PARAM_ACTIVATION), o.params.get(C.PARAM_LOSS))
    return widgets.graph(V.architecture_figure(rows), "run-architecture-graph")


def _gradients(o: run_data.Overview):
    if not o.grad_norms():
        return widgets.message(f"No {C.grad_norm_key('<layer>')} metrics logged.")
    return with_note(widgets.graph(V.gradient_figure(o.grad_norms()), "run-gradients-graph"),
                     gaps.histories_note(o.grad_norms(), log_scale=True))


def _dead(o: run_data.Overview):
    if not o.dead():
        return widgets.message(f"No {C.dead_fraction_key('<layer>')} metrics logged.")
    return with_note(widgets.graph(V.dead_figure(o.dead(), o.params.get(C.PARAM_ACTIVATION), health.DEAD_LIMIT),
                                   "run-dead-graph"), gaps.histories_note(o.dead()))


def digit_warnings(run_id: str, o: run_data.Overview) -> list[health.HealthWarning]:
    """The checks that need the test labels and the run's replicates: a digit (almost) never predicted at the last
    snapshot, and accuracy stuck far below the finished runs of its experiment with its config and another seed."""
    epochs = store.snapshot_epochs(run_id)
    last = store.load_snapshot(run_id, epochs[-1]) if epochs else {}
    if C.PRED_CLASS not in last:
        return []
    _, labels = store.test_set()
    pred = last[C.PRED_CLASS]
    out = health.rare_digit_warnings(pred, labels)
    if C.TEST_ACC in o.histories and C.PARAM_SEED in o.params:
        run = store.get_run(run_id)
        key = R.config_key(o.params)
        finals = [r.data.metrics[C.TEST_ACC] for r in store.search_runs([run.info.experiment_id])
                  if r.info.run_id != run_id and r.info.status == C.STATUS_FINISHED and C.TEST_ACC in r.data.metrics
                  and R.config_key(r.data.params) == key]
        out += health.replicate_warnings(o.histories[C.TEST_ACC]["value"].to_numpy(), finals,
                                         health.weakest_digit(pred, labels))
    return out


def health_list(o: run_data.Overview, run_id: str):
    if o.health_problem:
        return widgets.message(f"Cannot check this run's health: {o.health_problem}.", "error")
    if not o.histories:
        return widgets.message("Not enough logged data to check this run's health.")
    try:
        warnings = o.warnings + digit_warnings(run_id, o)
    except store.StoreError as e:  # the test set or a replicate cannot be read: the other checks stand
        warnings = o.warnings + [health.HealthWarning(health.DIGITS, "Predicted digits not checked", f"{e}.", "")]
    if not warnings:
        return html.Div("✓ No warning signs: loss, dead units, gradients, confidence, activations, predicted digits "
                        "and replicates look healthy.", id="run-health-ok", className="text-good", style={"fontWeight": 600})
    return html.Ul([
        html.Li([html.B(w.title), html.Span(f" — {w.explanation} "), html.Span(f"Try: {w.fix}", className="muted")
                 if w.fix else None,
                 dcc.Link(f" Digit map of {w.digit} →", href=digits_href(run_id, w.digit),
                          className="run-health-link")
                 if w.digit is not None else None],
                className=f"run-health-item run-health-{w.severity}")
        for w in warnings], style={"paddingLeft": 0, "margin": 0})


@callback(Output("run-weights", "children"), Input("run-id", "data"))
def show_weights(run_id):
    try:
        snaps, layers = run_data.snapshots(run_id)
    except store.StoreError as e:
        return widgets.message(f"{e}.", "error")
    if not snaps:
        return widgets.message("No weight snapshots logged.")
    pct = {l: V.weight_percentiles(snaps, l) for l in layers}
    bad = {l: int(df["not_finite"].sum()) for l, df in pct.items() if not df.empty}
    return with_note(widgets.graph(V.weight_distribution_figure(pct), "run-weights-graph"),
                     gaps.note(bad).replace("drawn as gaps", "left out of the bands"))


@callback(Output("run-activations", "children"), Output("run-confidence", "children"),
          Output("run-confusion", "children"), Output("run-gallery", "children"),
          Output("run-samples", "children"), Input("run-epoch", "value"), State("run-id", "data"))
def show_epoch(epoch, run_id):
    try:
        d = run_data.epoch_data(run_id, epoch)
    except store.StoreError as e:
        return (widgets.message(f"{e}.", "error"),) * 5
    if d is None:
        return (widgets.message("No snapshots logged, so there is nothing to show per epoch."),) * 5
    activations = with_note(widgets.graph(V.activation_figure(d.snapshot, d.layers, d.epoch, d.first, d.first_epoch),
                                          "run-activations-graph"),
                            _snapshot_note(d.snapshot, [k for l in d.layers
                                                        for k in (C.act_hist_key(l), C.act_edges_key(l))])) \
        if any(C.act_hist_key(l) in d.snapshot for l in d.layers) \
        else widgets.message("This snapshot has no activation histograms.")
    confidence = with_note(widgets.graph(V.confidence_figure(d.snapshot, d.epoch), "run-confidence-graph"),
                           _snapshot_note(d.snapshot, [C.CONF_EDGES, C.CONF_HIST_CORRECT, C.CONF_HIST_INCORRECT])) \
        if C.CONF_EDGES in d.snapshot else widgets.message("This snapshot has no confidence histograms.")
    if d.predictions is None:
        return (activations, confidence) + (widgets.message("This snapshot has no test predictions."),) * 3
    return (activations, confidence, *_prediction_views(d.predictions, d.epoch, run_id))


def _snapshot_note(snapshot: dict, keys: list[str]) -> str:
    return gaps.note({k: gaps.count(snapshot[k]) for k in keys if k in snapshot})


def _prediction_views(p: run_data.Predictions, epoch: int, run_id: str) -> tuple:
    confusion = widgets.graph(V.confusion_figure(V.confusion_matrix(p.pred, p.labels), epoch), "run-confusion-graph")
    wrong = V.misclassified(p.pred, p.confidence, p.labels, N_MISCLASSIFIED)
    gallery = html.Div([widgets.graph(V.image_grid_figure(p.images[wrong], p.labels[wrong], p.pred[wrong],
                                                          p.confidence[wrong]), "run-gallery-graph", responsive=False),
                        image_links(run_id, wrong, p.labels, p.pred, epoch)]) if len(wrong) \
        else widgets.message("No misclassified test images.")
    s = p.samples
    samples = widgets.graph(V.image_grid_figure(p.images[s], p.labels[s], p.pred[s], p.confidence[s]),
                            "run-samples-graph", responsive=False)
    return confusion, gallery, samples


@callback(Output("run-landscape", "children"), Output("run-landscape-button", "children"),
          Input("run-landscape-button", "n_clicks"), State("run-id", "data"))
def show_landscape(n_clicks, run_id):
    try:
        ls = run_data.ready_landscape(run_id)
        if not n_clicks and ls is None:
            hint = "Needs at least two weight snapshots." if len(store.snapshot_epochs(run_id)) < 2 else \
                "Press the button to compute it (a few seconds to a minute; kept for later visits)."
            return widgets.message(hint), no_update
        ls = ls or run_data.run_landscape(run_id)
    except (store.StoreError, UserError) as e:  # another tool's run, too few snapshots, no MNIST files
        return widgets.message(f"Cannot compute the loss landscape: {e}.", "warn"), no_update
    info = html.P(f"Loss on the first {ls.n_images:,} training images, {len(ls.alphas)}×{len(ls.betas)} grid, "
                  f"snapshots of epochs {ls.epochs[0]}–{ls.epochs[-1]}; the path ends at (0, 0), the final weights.",
                  className="run-note")
    figures = [widgets.graph(V.landscape_contour_figure(ls), "run-landscape-contour"),
               widgets.graph(V.landscape_surface_figure(ls), "run-landscape-surface")]
    return html.Div([info, html.Div(figures, className="run-landscape-grid")]), "Computed ✓"
