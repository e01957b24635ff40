"""Circuits (/runs/<run_id>/neurons/circuit?layer=L&unit=U&epoch=E) and the digit map
(/runs/<run_id>/neurons/digits?digit=D&epoch=E): how a run's dense units connect.

The circuit page shows a unit's strongest incoming units (previous hidden layer) and outgoing units (next
layer, or the digits), each as its tile with its signed mean contribution (weight × mean activation on the
test set); a click walks to that unit's circuit.  The digit map shows, for one digit, the last hidden
layer's units that push its output up and down the most.  One module, two pages: both resolve the run
once (neuron_target.resolve) and hand it to dashboard.loaders.unit_circuits; order=0 puts them before the
unit page's /runs/<run_id>/neurons/<layer>/<unit>, as the layer map does.
"""
import dash
from dash import Input, Output, State, callback, dcc, html, no_update

from dashboard.loaders import unit_circuits as L
from dashboard.loaders.neuron_target import layer_href, resolve, select, unit_href
from dashboard.read.store import StoreError
from dashboard.views import widgets
from dashboard.views.neurons import circuit_view as V

dash.register_page(__name__, path_template="/runs/<run_id>/neurons/circuit", order=0,
                   title=lambda run_id=None, **_: f"Circuit {str(run_id)[:8]} · MNIST Lab")


def _epoch_bar(t, data: dict) -> list:
    return [dcc.Location(id="circuit-url", refresh="callback-nav"), dcc.Store(id="circuit-target", data=data),
            widgets.epoch_field("circuit-epoch", t.epochs, t.epoch, className="card")]


def _outgoing(t, c):
    if c.to_output:
        return ([f"digit {l.unit}" for l in c.outgoing], None,
                [V.digits_href(t.run_id, l.unit, t.epoch) for l in c.outgoing])
    nxt = select(t, t.layer + 1, t.epoch)
    return ([f"unit {l.unit}" for l in c.outgoing], L.tiles(nxt)[0],
            [V.circuit_href(t.run_id, t.layer + 1, l.unit, t.epoch) for l in c.outgoing])


def _incoming(t, c) -> list:
    prev = select(t, t.layer - 1, t.epoch) if c.incoming is not None else None
    if prev is None:
        return [html.P(V.incoming_line(c, None), id="circuit-in-none", className="muted")]
    names = [f"unit {l.unit}" for l in c.incoming]
    hrefs = [V.circuit_href(t.run_id, t.layer - 1, l.unit, t.epoch) for l in c.incoming]
    return [html.P(V.incoming_line(c, prev.layer_name), className="small muted"),
            V.contribution_graph(c.incoming, names, "incoming", "circuit-in-graph"),
            V.link_tiles(c.incoming, L.tiles(prev)[0], hrefs, names, "circuit-in")]


def layout(run_id=None, layer=None, unit=None, epoch=None, **_query):
    try:
        t = resolve(run_id, layer, epoch, "" if unit is None else unit)
        c = L.circuit(t)
        own = L.tiles(t)[0][t.unit]
        incoming, (out_names, out_uris, out_hrefs) = _incoming(t, c), _outgoing(t, c)
    except StoreError as e:
        return widgets.error_page("Circuit", str(e))
    nxt = "digits" if c.to_output else t.names[t.layer]
    return html.Div([
        html.H2([html.Img(src=own, alt=f"unit {t.unit}", style={"width": 40, "height": 40, "imageRendering": "pixelated",
                                          "verticalAlign": "middle", "marginRight": 8}),
                 f"Circuit · unit {t.unit} · layer {t.layer} ({t.layer_name}) · {t.run_name}"]),
        html.Div([dcc.Link("← run page", href=f"/runs/{t.run_id}"),
                  dcc.Link(f"unit {t.unit}'s page", href=unit_href(t.run_id, t.layer, t.unit, t.epoch)),
                  dcc.Link(f"layer {t.layer}'s units", href=layer_href(t.run_id, t.layer, t.epoch)),
                  dcc.Link("digit map", href=V.digits_href(t.run_id, 0, t.epoch))], className="row"),
        *_epoch_bar(t, {"view": "circuit", "run_id": t.run_id, "layer": t.layer, "unit": t.unit, "epoch": t.epoch}),
        widgets.card("Incoming: what feeds it", *incoming),
        widgets.card(f"Outgoing: what it feeds ({nxt})",
                     html.P(V.outgoing_line(c, nxt), className="small muted"),
                     V.contribution_graph(c.outgoing, out_names, "outgoing", "circuit-out-graph"),
                     V.link_tiles(c.outgoing, out_uris, out_hrefs, out_names, "circuit-out")),
    ])


def digits_layout(run_id=None, digit=None, epoch=None, **_query):
    try:
        d = L.parse_digit(digit)
        t = L.last_hidden(resolve(run_id, 1, epoch))
        m = L.digit_map(t, d)
        uris, strongest = L.tiles(t)[0], L.strongest_pushes(t)
    except StoreError as e:
        return widgets.error_page("Digit map", str(e))

    def side(links, word, key):
        names = [f"unit {l.unit}" for l in links]
        hrefs = [V.circuit_href(t.run_id, t.layer, l.unit, t.epoch) for l in links]
        if not links:
            return widgets.card(f"Units that push {d} {word}", widgets.message(f"No unit pushes {d} {word}.",
                                                                                 id=f"digits-{key}-none"))
        return widgets.card(f"Units that push {d} {word}",
                            V.contribution_graph(links, names, word, f"digits-{key}-graph"),
                            V.link_tiles(links, uris, hrefs, names, f"digits-{key}"))
    return html.Div([
        html.H2(f"Digit map · {d} · layer {t.layer} ({t.layer_name}) · {t.run_name}"),
        html.Div([dcc.Link("← run page", href=f"/runs/{t.run_id}"),
                  dcc.Link(f"layer {t.layer}'s units", href=layer_href(t.run_id, t.layer, t.epoch))], className="row"),
        *_epoch_bar(t, {"view": "digits", "run_id": t.run_id, "digit": d, "epoch": t.epoch}),
        html.Div([V.digit_selector(t.run_id, d, t.epoch), html.P(V.digit_line(m, strongest), id="digits-line")], className="card"),
        html.Div([side(m.up, "up", "up"), side(m.down, "down", "down")], className="grid-2"),
    ])


dash.register_page(f"{__name__}.digits", path_template="/runs/<run_id>/neurons/digits", order=0, layout=digits_layout,
                   title=lambda run_id=None, **_: f"Digit map {str(run_id)[:8]} · MNIST Lab")


@callback(Output("circuit-url", "href"), Input("circuit-epoch", "value"), State("circuit-target", "data"),
          prevent_initial_call=True)
def follow_epoch(epoch, target):
    if not target or epoch is None or epoch == target.get("epoch"):
        return no_update
    if target.get("view") == "digits":
        return V.digits_href(target["run_id"], target["digit"], epoch)
    return V.circuit_href(target["run_id"], target["layer"], target["unit"], epoch)
