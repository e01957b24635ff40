"""Layer map (/runs/<run_id>/neurons/map?layer=L&epoch=E&method=pca): what a layer knows.

The 10,000 test images placed by their activations in one hidden layer (PCA, or UMAP when umap-learn
is installed), coloured by digit.  Hovering shows the image; clicking opens its image page.
"""
from urllib.parse import urlencode

import dash
from dash import Input, Output, State, callback, dcc, html, no_update

from dashboard.analytics.layer_map import umap_available
from dashboard.loaders import deep_neurons as D
from dashboard.loaders import neuron_stats as S
from dashboard.loaders.neuron_target import layer_href, resolve
from dashboard.read.store import StoreError
from dashboard.views import widgets
from dashboard.views.neurons.image_view import image_href
from dashboard.views.neurons.neuron_map_view import hover_panel, map_figure, point_index

dash.register_page(__name__, path_template="/runs/<run_id>/neurons/map", order=0,
                   title=lambda run_id=None, **_: f"Layer map {str(run_id)[:8]} · MNIST Lab")


MAP_PX = 620


def _href(run_id: str, layer: int, epoch: int, method: str) -> str:
    return f"/runs/{run_id}/neurons/map?" + urlencode({"layer": layer, "epoch": epoch, "method": method})


def layout(run_id=None, layer=None, epoch=None, method=None, **_query):
    method = "umap" if method == "umap" and umap_available() else "pca"
    try:
        t = resolve(run_id, layer, epoch)
        xy, how = D.layer_map(t, method)
        _, labels = S.test_images()
    except StoreError as e:
        return widgets.error_page("Layer map", str(e))
    methods = [dcc.Link(m.upper(), href=_href(t.run_id, t.layer, t.epoch, m), style={"fontWeight": 700 if m == method
                                                                                      else 400})
               for m in ("pca", "umap") if m == "pca" or umap_available()]
    return html.Div([
        dcc.Location(id="map-url", refresh="callback-nav"),
        dcc.Store(id="map-target", data={"run_id": t.run_id, "layer": t.layer, "epoch": t.epoch, "method": method}),
        html.H2(f"Layer map · layer {t.layer} ({t.layer_name}) · {t.run_name}"),
        html.Div([dcc.Link("← run page", href=f"/runs/{t.run_id}"),
                  dcc.Link(f"layer {t.layer}'s units", href=layer_href(t.run_id, t.layer, t.epoch)),
                  *methods], className="row"),
        widgets.epoch_field("map-epoch", t.epochs, t.epoch, className="card"),
        html.Div([
            html.Div([dcc.Graph(id="map-graph", figure=map_figure(xy, labels, f"{t.units} activations → 2-D, "
                                                                                 f"epoch {t.epoch}"),
                                config=widgets.GRAPH_CONFIG, style={"height": MAP_PX}),
                         html.P(f"{how}. Each point: a test image, coloured by its digit; hover to see it, click to "
                                "open its image page.", className="small muted", id="map-how")], className="card"),
            widgets.card("Under the pointer", html.Div(widgets.message("Hover over a point to see its image."),
                                                       id="map-hover")),
        ], style={"display": "grid", "gap": 12, "gridTemplateColumns": "minmax(0, 1fr) 220px"}),
    ])


@callback(Output("map-hover", "children"), Input("map-graph", "hoverData"), State("map-target", "data"),
          prevent_initial_call=True)
def show_hovered(event, target):
    index = point_index(event)
    if index is None:
        return no_update
    images, labels = S.test_images()
    return hover_panel(target["run_id"], target["epoch"], index, images[index], int(labels[index]))


@callback(Output("map-url", "href"), Input("map-graph", "clickData"), Input("map-epoch", "value"),
          State("map-target", "data"), prevent_initial_call=True)
def navigate(event, epoch, target):
    if dash.ctx.triggered_id == "map-epoch":
        return _href(target["run_id"], target["layer"], epoch, target["method"]) if epoch != target["epoch"] \
            else no_update
    index = point_index(event)
    return no_update if index is None else image_href(target["run_id"], index, target["epoch"])
