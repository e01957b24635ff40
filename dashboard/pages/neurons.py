"""Layer view (/runs/<run_id>/neurons?layer=L&epoch=E): every unit of one hidden layer as a tile.

First layer: each tile is the unit's incoming weights as a 28x28 image (a CNN's first
layer: its 3x3 kernel), blue positive and red negative on one symmetric scale for the
whole layer.  Deeper layers: the mean of the unit's top-k test images.  Each tile shows
the unit's index, name, verdict and selectivity index, and links to the unit view.
"""
import dash
from dash import ClientsideFunction, Input, Output, State, callback, clientside_callback, dcc, html

from common import neurons as N
from dashboard.analytics.emergence import emergence_order
from dashboard.loaders import deep_neurons as D
from dashboard.loaders import neuron_stats as S
from dashboard.loaders import unit_ablation as A
from dashboard.loaders.neuron_target import Target, layer_href, resolve, unit_href
from dashboard.loaders.unit_circuits import why_no_circuits
from dashboard.loaders.unit_panels import feature_vis_tiles
from dashboard.read.store import StoreError
from dashboard.views import theme, widgets
from dashboard.views.neurons.ablation_view import ablation_href
from dashboard.views.neurons.circuit_view import digit_map_link
from dashboard.views.neurons.neuron_figures import verdict_counts_figure
from dashboard.views.neurons.neuron_images import sort_units, tile_uris
from dashboard.views.neurons.similarity_view import similarity_href

# Registered with an order so Dash matches this template before the run page's greedy "/runs/<run_id>".
dash.register_page(__name__, path_template="/runs/<run_id>/neurons", order=2,
                   title=lambda run_id=None, **_: f"Neurons {str(run_id)[:8]} · MNIST Lab")

SORTS = {"index": "unit index", "si": "selectivity (highest first)", "dead": "dead units first",
         "emergence": "emergence epoch (earliest first)", "ablation": "ablation drop (largest first)"}
SHOWS = {"weights": "weights or top images", "fv": "what each unit wants (feature visualisation)"}
TILE_PX = 96
TILE_IMG_STYLE = {"width": TILE_PX, "height": TILE_PX, "imageRendering": "pixelated",
                  "border": "1px solid var(--border)", "display": "block", "margin": "0 auto 4px"}
TILE_STYLE = {"display": "block", "padding": "8px", "border": "1px solid var(--border)", "borderRadius": "8px",
              "background": "var(--surface)", "color": "var(--text)", "textDecoration": "none", "textAlign": "center"}


def tiles(t: Target, sort: str = "index", show: str = "weights") -> tuple[list, str]:
    """The layer's tiles in the chosen order, and the legend line."""
    stats = S.layer_stats(t)
    labels = S.neuron_labels(t)
    uris, legend = feature_vis_tiles(t) if show == "fv" else tile_uris(t, stats, S.weights(t))
    emerged = D.emergence(t).emergence if sort == "emergence" else None
    drop = None
    if sort == "ablation":
        try:
            drop = A.ablation(t).overall_drop
        except StoreError as e:  # a run from its own loop: no network to rerun; the tiles stay in index order
            legend = f"{legend} {e}"
    out = []
    for u in sort_units(stats, sort, drop) if emerged is None else emergence_order(emerged):
        verdict = stats.verdicts[u]
        out.append(dcc.Link([
            html.Img(src=uris[u], alt=f"unit {u}", className="neurons-tile-img", style=TILE_IMG_STYLE),
            html.Div([html.B(f"#{u}"), " ", html.Span(labels.get(u, {}).get("name", ""), className="neurons-tile-name")],
                     style={"overflow": "hidden", "textOverflow": "ellipsis", "whiteSpace": "nowrap"}),
            html.Div(verdict, className=f"neurons-tile-verdict small {theme.verdict_class(verdict)}",
                     style={"fontWeight": 600}),
            html.Div(f"SI {stats.si[u]:.2f}", className="neurons-tile-si small muted"),
            html.Div("never class-selective" if emerged[u] is None else f"first class-selective at epoch {emerged[u]}",
                     className="neurons-tile-emerged small muted") if emerged is not None else None,
            html.Div(f"switched off: −{drop[u]:.2f} points", className="neurons-tile-drop small muted")
            if drop is not None else None,
        ], href=unit_href(t.run_id, t.layer, u, t.epoch), className="neurons-tile", title=f"unit {u}: {verdict}",
            style=TILE_STYLE))
    return out, legend


def _controls(t: Target, sort: str, show: str) -> html.Div:
    return html.Div([
        widgets.epoch_field("neurons-epoch", t.epochs, t.epoch, className="grow"),
        widgets.labelled("Sort by", widgets.choices("neurons-sort", SORTS, sort, 240)),
        widgets.labelled("Tiles show", widgets.choices("neurons-show", SHOWS, show, 300)),
    ], className="row card")


def layout(run_id=None, layer=None, epoch=None, sort=None, show=None, **_query):
    try:
        t = resolve(run_id, layer, epoch)
        sort = sort if isinstance(sort, str) and sort in SORTS else "index"
        show = show if isinstance(show, str) and show in SHOWS else "weights"
        tile_list, legend = tiles(t, sort, show)
    except StoreError as e:
        return widgets.error_page("Neurons", str(e))
    layer_links = [dcc.Link(f"Layer {i} ({name})", href=layer_href(t.run_id, i, t.epoch),
                            style={"fontWeight": 700 if i == t.layer else 400})
                   for i, name in enumerate(t.hidden, start=1)]
    return html.Div([
        dcc.Store(id="neurons-target", data={"run_id": t.run_id, "layer": t.layer}),
        html.H2(f"Neurons · {t.run_name}"),
        html.Div([dcc.Link("← run page", href=f"/runs/{t.run_id}"), *layer_links,
                  dcc.Link("layer map", href=f"/runs/{t.run_id}/neurons/map?layer={t.layer}&epoch={t.epoch}",
                           id="neurons-map-link"),
                  dcc.Link("similarity across epochs", href=similarity_href([t.run_id], t.layer),
                           id="neurons-similarity-link"),
                  dcc.Link("ablation", href=ablation_href(t.run_id, t.layer, t.epoch), id="neurons-ablation-link"),
                  digit_map_link(t.run_id, t.epoch) if why_no_circuits(t) is None else None],
                 className="row"),
        _controls(t, sort, show),
        html.P(legend, id="neurons-legend", className="small muted"),
        html.Div(tile_list, id="neurons-tiles",
                 style={"display": "grid", "gap": "10px",
                        "gridTemplateColumns": f"repeat(auto-fill, minmax({TILE_PX + 40}px, 1fr))"}),
        html.P(f"Verdicts: class-selective (digit d) when SI ≥ {N.SI_THRESHOLD} and at least "
               f"{N.TOPK_MAJORITY:.0%} of the top {N.DEFAULT_K} images are digit d; dead when the activation "
               f"varies by less than {N.DEAD_RANGE:g} over the 10,000 test images; otherwise feature-selective.",
               className="small muted", style={"marginTop": 12}),
        widgets.card("Over training", dcc.Loading(html.Div(id="neurons-counts"))),
    ])


@callback(Output("neurons-tiles", "children"), Output("neurons-legend", "children"),
          Input("neurons-epoch", "value"), Input("neurons-sort", "value"), Input("neurons-show", "value"),
          State("neurons-target", "data"), prevent_initial_call=True)
def update_tiles(epoch, sort, show, target):
    try:
        return tiles(resolve(target["run_id"], target["layer"], epoch), sort, show)
    except StoreError as e:
        return widgets.message(str(e), "error"), ""


@callback(Output("neurons-counts", "children"), Input("neurons-target", "data"))
def draw_counts(target):
    """After the tiles: every snapshot's statistics, computed once per run and layer."""
    try:
        t = resolve(target["run_id"], target["layer"])
        e = D.emergence(t)
    except StoreError as err:
        return widgets.message(str(err), "error")
    return widgets.graph(verdict_counts_figure(e.epochs, e.counts), "neurons-counts-graph")


clientside_callback("function (show) { const u = new URL(window.location.href); "
                    "if (show === 'fv') u.searchParams.set('show', 'fv'); else u.searchParams.delete('show'); "
                    "window.history.replaceState(window.history.state, '', u.href); }",
                    Input("neurons-show", "value"), prevent_initial_call=True)


# The epoch and the sort order go into the address as they change (see clientside.js for why replaceState).
clientside_callback(ClientsideFunction(namespace="mnistlab", function_name="layerQuery"),
                    Input("neurons-epoch", "value"), Input("neurons-sort", "value"), prevent_initial_call=True)
