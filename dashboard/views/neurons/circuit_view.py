"""The circuit and digit-map pages' pieces: addresses, contribution bars and tiles that link onward.

Pure builders over training/nets/circuits.py's results and the layer page's tiles (neuron_images.tile_uris):
no store, no callbacks.  `unit_links` and `digit_map_link` are what the unit and layer pages add to point here.
"""
from urllib.parse import urlencode

import plotly.graph_objects as go
from dash import dcc, html

from dashboard.views import theme, widgets
from dashboard.views.neurons.neuron_images import NEGATIVE, POSITIVE
from training.nets.circuits import Circuit, DigitMap, Link

TILE_PX = 56
BAR_ROW_PX = 22


def circuit_href(run_id: str, layer: int, unit: int, epoch: int | None = None) -> str:
    query = {"layer": layer, "unit": unit} | ({"epoch": epoch} if epoch is not None else {})
    return f"/runs/{run_id}/neurons/circuit?{urlencode(query)}"


def digits_href(run_id: str, digit: int = 0, epoch: int | None = None) -> str:
    query = {"digit": digit} | ({"epoch": epoch} if epoch is not None else {})
    return f"/runs/{run_id}/neurons/digits?{urlencode(query)}"


def unit_links(run_id: str, layer: int, unit: int, epoch: int | None = None) -> html.Div:
    """For the unit page: links to this unit's circuit and to the digit map."""
    return html.Div([dcc.Link("Circuit: what feeds it, what it feeds →",
                              href=circuit_href(run_id, layer, unit, epoch), id="unit-circuit-link"),
                     dcc.Link("Digit map →", href=digits_href(run_id, 0, epoch), id="unit-digits-link")],
                    className="row")


def digit_map_link(run_id: str, epoch: int | None = None) -> dcc.Link:
    """For the layer page: the digit map (which of the last hidden layer's units push each digit)."""
    return dcc.Link("Digit map: which units push each digit →", href=digits_href(run_id, 0, epoch),
                    id="neurons-digits-link")


def _sign(value: float) -> str:
    return f"{value:+.3g}"


def contribution_figure(links: tuple[Link, ...], names: list[str], title: str) -> go.Figure:
    """Horizontal bars of signed contributions, strongest at the top; customdata holds each bar's unit."""
    fig = widgets.figure(height=80 + BAR_ROW_PX * max(len(links), 1), title=title,
                         x_title="weight × mean activation", margin=dict(l=90, r=20, t=40, b=40))
    fig.add_trace(go.Bar(x=[l.contribution for l in links][::-1], y=names[::-1], orientation="h",
                         customdata=[l.unit for l in links][::-1],
                         marker_color=[POSITIVE if l.contribution >= 0 else NEGATIVE for l in links][::-1],
                         hovertemplate="%{y}: %{x:.4g}<extra></extra>"))
    return fig


def contribution_graph(links: tuple[Link, ...], names: list[str], title: str, graph_id: str) -> html.Div:
    """The bars in a plain div: a responsive graph's 100 % height then follows its figure, not a grid cell's
    stretched height (which left the tiles under it overflowing their card)."""
    return html.Div(widgets.graph(contribution_figure(links, names, title), graph_id))


def link_tiles(links: tuple[Link, ...], uris: list[str] | None, hrefs: list[str], names: list[str],
               id_prefix: str) -> html.Div:
    """Each link as its tile (or a digit), its signed contribution and weight, a link to walk on."""
    cards = []
    for link, href, name in zip(links, hrefs, names):
        picture = html.Img(src=uris[link.unit], alt=name, style={"width": TILE_PX, "height": TILE_PX,
                                                                   "imageRendering": "pixelated"}) \
            if uris else html.Div(str(link.unit), className="circuit-digit",
                                  style={"fontSize": 36, "width": TILE_PX, "textAlign": "center"})
        cards.append(dcc.Link([picture, html.Div(name, className="small"),
                               html.Div(_sign(link.contribution), style={"fontWeight": 600},
                                        className="circuit-contribution " + theme.sign_class(link.contribution),
                                        **{"data-value": repr(link.contribution)}),
                               html.Div(f"w {link.weight:.3g} · a {link.source_mean:.3g}", className="small muted")],
                              href=href, id=f"{id_prefix}-{link.unit}", className="card",
                              style={"display": "flex", "flexDirection": "column", "alignItems": "center",
                                     "padding": 6, "margin": 0, "textDecoration": "none", "width": 112}))
    return html.Div(cards, className="row", id=id_prefix, style={"alignItems": "stretch"})


def digit_selector(run_id: str, digit: int, epoch: int) -> html.Div:
    return html.Div([html.Span("Digit", className="small muted")] + [
        dcc.Link(str(d), href=digits_href(run_id, d, epoch), id=f"digits-pick-{d}",
                 style={"fontWeight": 700 if d == digit else 400, "fontSize": 18, "padding": "0 4px"})
        for d in range(10)], className="row")


def incoming_line(c: Circuit, prev_name: str | None) -> str:
    if c.incoming is None:
        return "No incoming hidden units: this is the first hidden layer, which sees the image's pixels " \
               "(its tile is its incoming weights)."
    return f"The {len(c.incoming)} units of layer {c.layer - 1} ({prev_name}) whose weight × mean activation " \
           "adds most to this unit's mean input, in size order; blue raises it, red lowers it."


def outgoing_line(c: Circuit, next_name: str) -> str:
    where = "each digit's output" if c.to_output else f"the units of layer {c.layer + 1} ({next_name})"
    return f"What this unit (mean activation {c.mean:.3g} over the 10,000 test images) adds to {where}: " \
           "weight × its mean activation, strongest first."


def digit_line(m: DigitMap, strongest: list[float]) -> str:
    """What the map says in one line; `strongest` is every digit's largest push up, so a digit the net has all
    but given up on stands out against the others."""
    others = [s for d, s in enumerate(strongest) if d != m.digit]
    up = f"{m.pushing_up} units push it up, the strongest by {m.up[0].contribution:+.3g}" if m.up \
        else "no unit pushes it up"
    return f"Digit {m.digit}: {up} (the other digits' strongest: {min(others):+.3g} to {max(others):+.3g}); bias " \
           f"{m.bias:+.3g}; bias + every unit's contribution = {m.total:+.3g}, the mean output before its " \
           "activation over the test set."
