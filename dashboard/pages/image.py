"""Image page (/runs/<run_id>/images/<index>?epoch=E): one test image through the network.

The image, its label and prediction with the output per class, each hidden layer's units as it
fires them (each a link to its unit page) and integrated-gradients maps for the predicted and the
true class.  The epoch slider rewrites the address, so the page is always a function of it.
"""
from urllib.parse import urlencode

import dash
from dash import Input, Output, callback, dcc, html, no_update

from dashboard.loaders import deep_neurons as D
from dashboard.loaders.neuron_target import resolve, select
from dashboard.read.store import StoreError
from dashboard.views import widgets
from dashboard.views.neurons import image_view as V

dash.register_page(__name__, path_template="/runs/<run_id>/images/<index>", order=3,
                   title=lambda run_id=None, index=None, **_:
                   f"Image {str(index)[:6]} · {str(run_id)[:8]} · MNIST Lab")

IG_NOTE = ("Integrated gradients (Sundararajan et al. 2017, Captum): each pixel's share of the class's logit, "
           "from a black image to this one along a straight line; blue raises the class, red lowers it, and "
           "the shares add up to the logit's change.")


def _layers(t0, d, epoch: int) -> list:
    out = []
    for layer, acts in enumerate(d.acts, start=1):
        t = select(t0, layer, epoch)
        what = "channel (max over its feature map)" if t.kind == "conv" else "unit"
        out.append(html.Div([html.H4(f"Layer {layer} ({t.layer_name}): {len(acts)} units, strongest first",
                                     style={"margin": "8px 0 4px"}),
                             html.P(f"Each chip: a {what} and its activation; darker fires more.",
                                    className="small muted", style={"margin": 0}),
                             V.unit_chips(t, acts, epoch)], className="image-layer"))
    return out


def layout(run_id=None, index=None, epoch=None, **_query):
    try:
        t = resolve(run_id, 1, epoch)
        i = D.image_index(index)
        d = D.one_image_data(t, i)
        layers = _layers(t, d, t.epoch)
    except StoreError as e:
        return widgets.error_page("Image", str(e))
    nav = [dcc.Link("← run page", href=f"/runs/{t.run_id}"),
           dcc.Link(f"← image {i - 1}", href=V.image_href(t.run_id, i - 1, t.epoch)) if i > 0 else None,
           dcc.Link(f"image {i + 1} →", href=V.image_href(t.run_id, i + 1, t.epoch))
           if i + 1 < D.TEST_IMAGES else None,
           dcc.Link("layer map", href=f"/runs/{t.run_id}/neurons/map?" + urlencode({"layer": 1, "epoch": t.epoch}))]
    return html.Div([
        dcc.Location(id="image-url", refresh="callback-nav"),
        html.H2(f"Test image #{i} · {t.run_name}"),
        html.Div(nav, className="row"),
        widgets.epoch_field("image-epoch", t.epochs, t.epoch, className="card"),
        html.Div([
            widgets.card("The image", V.image_picture(d), html.P(V.header_line(d))),
            widgets.card("What the network says", widgets.graph(V.probs_figure(d, d.output), "image-probs")),
        ], className="grid-2"),
        dcc.Store(id="image-target", data={"run_id": t.run_id, "epoch": t.epoch, "index": i}),
        widgets.card("Why: integrated gradients", dcc.Loading(html.Div(id="image-attributions")),
                     html.P(IG_NOTE, className="small muted")),
        widgets.card("Hidden layers", *layers),
    ])


@callback(Output("image-attributions", "children"), Input("image-target", "data"))
def show_attributions(target):
    """After the first paint: integrated gradients cost about a second on a CNN."""
    try:
        t = resolve(target["run_id"], 1, target["epoch"])
        return V.attributions(D.one_image_data(t, target["index"]), D.attributions(t, target["index"]))
    except StoreError as e:
        return widgets.message(str(e), "error")


@callback(Output("image-url", "search"), Input("image-epoch", "value"), prevent_initial_call=True)
def go_to_epoch(epoch):
    return no_update if epoch is None else "?" + urlencode({"epoch": epoch})
