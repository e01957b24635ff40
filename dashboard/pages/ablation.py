"""Ablation (/runs/<run_id>/neurons/ablation?layer=L&epoch=E&mode=zero|mean): which units the network needs.

Each unit of one hidden layer switched off alone (its activation set to 0, or to its test-set mean), and the
accuracy lost on each digit's test images; then units removed one after another, by selectivity, by that
drop and at random (Morcos et al. 2018), which answers whether selective units are the important ones.
The numbers come from training.nets.ablation through dashboard.loaders.unit_ablation; the run is resolved
once per layout or callback (neuron_target.resolve).
"""
import dash
from dash import Input, Output, State, callback, dcc, html, no_update

from dashboard.loaders import unit_ablation as U
from dashboard.loaders.neuron_target import layer_href, resolve
from dashboard.read.store import StoreError
from dashboard.views import widgets
from dashboard.views.neurons.ablation_view import (SORTS, ablation_href, cumulative_figure, drop_heatmap, selectivity_answer,
                                                   unit_order)

dash.register_page(__name__, path_template="/runs/<run_id>/neurons/ablation", order=0,
                   title=lambda run_id=None, **_: f"Ablation {str(run_id)[:8]} · MNIST Lab")


def heatmap(t, mode: str, sort: str):
    a = U.ablation(t, mode)
    return drop_heatmap(a.drop, unit_order(a.overall_drop, sort), U.MODES[mode])


def _links(t, mode: str) -> html.Div:
    layers = [dcc.Link(f"Layer {i} ({name})", href=ablation_href(t.run_id, i, t.epoch, mode),
                       style={"fontWeight": 700 if i == t.layer else 400}) for i, name in enumerate(t.hidden, start=1)]
    modes = [dcc.Link(f"units {label}", href=ablation_href(t.run_id, t.layer, t.epoch, m),
                      style={"fontWeight": 700 if m == mode else 400}) for m, label in U.MODES.items()]
    return html.Div([dcc.Link("← run page", href=f"/runs/{t.run_id}"),
                     dcc.Link(f"layer {t.layer}'s units", href=layer_href(t.run_id, t.layer, t.epoch)),
                     *layers, *modes], className="row")


def layout(run_id=None, layer=None, epoch=None, mode=None, sort=None, **_query):
    try:
        mode = U.check_mode(mode)
        t = resolve(run_id, layer, epoch)
        sort = sort if isinstance(sort, str) and sort in SORTS else "drop"
        a = U.ablation(t, mode)
        fig = heatmap(t, mode, sort)
    except StoreError as e:
        return widgets.error_page("Ablation", str(e))
    critical = a.critical
    return html.Div([
        dcc.Location(id="ablation-url", refresh="callback-nav"),
        dcc.Store(id="ablation-target", data={"run_id": t.run_id, "layer": t.layer, "epoch": t.epoch, "mode": mode}),
        html.H2(f"Ablation · layer {t.layer} ({t.layer_name}) · {t.run_name}"),
        _links(t, mode),
        html.Div([
            widgets.epoch_field("ablation-epoch", t.epochs, t.epoch, className="grow"),
            widgets.labelled("Units sorted by", widgets.choices("ablation-sort", SORTS, sort, 240)),
        ], className="row card"),
        html.P([f"Intact, the network gets {100 * a.base.sum() / a.images.sum():.2f} % of the 10,000 test images "
                f"right at epoch {t.epoch}. ", html.B(f"{critical} of {t.units} units", id="ablation-critical"),
                " cost at least 1 point of accuracy when switched off alone."], className="card"),
        widgets.card("What each unit costs, per digit", widgets.graph(fig, "ablation-heatmap"),
                     html.P("Each cell: the accuracy lost on that digit's test images when the unit alone is "
                            f"{U.MODES[mode]} (a conv unit is a channel: its whole feature map); red a loss, "
                            "blue a gain.", className="small muted")),
        widgets.card("Does selectivity predict importance?",
                     dcc.Loading(html.Div(id="ablation-cumulative")),
                     html.P("Units are removed one after another, keeping the earlier ones removed: most selective "
                            "first (the layer page's selectivity index), largest single-unit drop first, and in 10 "
                            "random orders (fixed seed). After Morcos et al. (2018), On the importance of single "
                            "directions for generalization.", className="small muted")),
    ])


@callback(Output("ablation-heatmap", "figure"), Input("ablation-sort", "value"), State("ablation-target", "data"),
          prevent_initial_call=True)
def resort(sort, target):
    try:
        t = resolve(target["run_id"], target["layer"], target["epoch"])
        return heatmap(t, U.check_mode(target["mode"]), sort if sort in SORTS else "drop")
    except StoreError:
        return no_update


@callback(Output("ablation-cumulative", "children"), Input("ablation-target", "data"))
def draw_cumulative(target):
    """After the heatmap: removing units cumulatively costs one pass per order (12 of them)."""
    try:
        t = resolve(target["run_id"], target["layer"], target["epoch"])
        c = U.cumulative(t, U.check_mode(target["mode"]))
    except StoreError as e:
        return widgets.message(str(e), "error")
    return [html.P(html.B(selectivity_answer(c.by_selectivity, c.random)), id="ablation-answer"),
            widgets.graph(cumulative_figure(c.by_selectivity, c.by_drop, c.random), "ablation-curves")]


@callback(Output("ablation-url", "href"), Input("ablation-epoch", "value"), State("ablation-target", "data"),
          prevent_initial_call=True)
def follow_epoch(epoch, target):
    if epoch == target["epoch"]:
        return no_update
    return ablation_href(target["run_id"], target["layer"], epoch, target["mode"])
