"""Similarity (/similarity?runs=<id>,<id>,...&layer=L&run=<id>): how alike the runs' representations are.

Linear CKA (Kornblith et al. 2019) between one hidden layer's activations over the 10,000 test
images: runs × runs (each at its last snapshot) and, for one run (?run=, default the first), epochs ×
epochs.  The page is a function of its address: the layer and run choices are links.
"""
import dash
from dash import dcc, html

from dashboard.loaders import deep_neurons as D
from dashboard.loaders.neuron_target import layer_href
from dashboard.read.store import StoreError
from dashboard.views import widgets
from dashboard.views.neurons.similarity_view import cka_figure, run_label, run_names, similarity_href, targets

dash.register_page(__name__, path="/similarity", title="Similarity · MNIST Lab")

ABOUT = ("Linear CKA (Kornblith et al. 2019) between two sets of activations of the same 10,000 test images: "
         "1 when one is a rotation or rescaling of the other, near 0 when unrelated; it compares layers of "
         "different widths.")
NO_RUNS = ("No runs given: follow “How similar are their representations?” on the Compare page or “similarity "
           "across epochs” on a layer page, or open /similarity?runs=<id>,<id>&layer=1.")


def _depth(ts) -> int:
    """The number of hidden layers every run has."""
    return min(len(t.hidden) for t in ts)


def _layer_links(ids: list[str], layer: int, depth: int) -> html.Div:
    return html.Div([html.Span("Layer:", className="muted")] + [
        dcc.Link(f"{i}", href=similarity_href(ids, i), id=f"similarity-layer-{i}",
                 style={"fontWeight": 700 if i == layer else 400}) for i in range(1, depth + 1)], className="row")


def _epochs_card(ts, focus):
    t = next((t for t in ts if t.run_id == focus), ts[0])
    ids = [x.run_id for x in ts]
    switch = [dcc.Link(x.run_id[:8], href=similarity_href(ids, t.layer, x.run_id),
                       style={"fontWeight": 700 if x is t else 400}) for x in ts] if len(ts) > 1 else []
    if len(t.epochs) < 2:
        body = widgets.message(f"{t.run_name} has one snapshot only: nothing to compare across epochs.", "warn")
    else:
        m = D.epochs_similarity(t)
        body = widgets.graph(cka_figure(m, [f"epoch {e}" for e in t.epochs],
                                        f"{t.run_name}: layer {t.layer} ({t.layer_name}) across epochs", "snapshot"),
                             "similarity-epochs")
    return widgets.card("Across epochs of one run", html.Div([html.Span("Run:", className="muted"), *switch],
                                                             className="row") if switch else None, body,
                        dcc.Link("this layer's units at the last epoch →", href=layer_href(t.run_id, t.layer)))


def _runs_card(ts) -> html.Div:
    if len(ts) < 2:
        return widgets.message("One run given: add more ids to ?runs= to compare runs.", "info")
    m = D.runs_similarity(tuple(ts))
    fig = cka_figure(m, [run_label(t) for t in ts], f"Layer {ts[0].layer} across runs (each at its last snapshot)",
                     "run")
    return widgets.card("Across runs", widgets.graph(fig, "similarity-runs"),
                        html.P(run_names(ts), className="small muted"))


def layout(runs=None, layer=None, run=None, **_query):
    try:
        ts, problems = targets(runs, layer) if runs else ([], [NO_RUNS])
        if not ts:
            raise StoreError("; ".join(problems) if runs else NO_RUNS)
        parts = [*[widgets.message(p, "warn") for p in problems],
                 _layer_links([t.run_id for t in ts], ts[0].layer, _depth(ts)), _runs_card(ts), _epochs_card(ts, run)]
    except StoreError as e:
        parts = [widgets.message(str(e), "error")]
    return html.Div([html.H2("Representation similarity"), html.P(ABOUT, className="small muted"), *parts])
