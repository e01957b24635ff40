"""The image page's pieces: one test image, its class outputs, its hidden units and its attribution maps.

Pure builders over dashboard.loaders.deep_neurons.OneImage (no store, no callbacks).
"""
import numpy as np
import plotly.graph_objects as go
from dash import dcc, html

from dashboard.loaders.deep_neurons import OneImage
from dashboard.loaders.neuron_target import Target, unit_href
from dashboard.views import widgets
from dashboard.views.neurons.neuron_images import NEUTRAL, POSITIVE, diverging_rgb, ink, png_uri

IMAGE_PX, ATTR_PX = 196, 196
GOOD, BAD = "#009E73", "#D55E00"


def image_href(run_id: str, index: int, epoch: int | None = None) -> str:
    return f"/runs/{run_id}/images/{index}" + (f"?epoch={epoch}" if epoch is not None else "")


def picture(src: str, alt: str, px: int, element_id: str | None = None) -> html.Img:
    kw = {"id": element_id} if element_id else {}
    return html.Img(src=src, alt=alt, style={"width": px, "height": px, "imageRendering": "pixelated",
                                             "border": "1px solid var(--border)"}, **kw)


def probs_figure(d: OneImage, output: str) -> go.Figure:
    """The network's output per class, the prediction and the true digit marked."""
    pred = int(np.argmax(d.probs))
    colors = [GOOD if c == d.label == pred else BAD if c == pred else POSITIVE if c == d.label else NEUTRAL
              for c in range(len(d.probs))]
    fig = widgets.figure(260, f"Output per class ({output})", "digit", "output", showlegend=False)
    fig.add_trace(go.Bar(x=np.arange(len(d.probs)), y=d.probs, marker_color=colors,
                         text=[f"{p:.2f}" for p in d.probs], textposition="outside",
                         hovertemplate="digit %{x}: %{y:.4f}<extra></extra>"))
    fig.update_xaxes(tickmode="linear", dtick=1)
    fig.update_yaxes(range=[0, max(1.0, float(d.probs.max())) * 1.15])
    return fig


def attribution_card(attrs: dict, cls: int, role: str) -> html.Div:
    """Integrated gradients for one class: blue pixels raise its logit, red lower it (one scale per map)."""
    attr, diff, gap = attrs[cls]
    vmax = float(np.abs(attr).max()) or 1.0
    return html.Figure([
        picture(png_uri(diverging_rgb(attr, vmax), scale=4), f"attribution for digit {cls}", ATTR_PX,
                f"image-attr-{role.split()[0]}"),
        html.Figcaption([html.B(f"{role}: digit {cls}"), html.Br(),
                         f"sum {attr.sum():+.3f}, logit change from a black image {diff:+.3f} (completeness gap "
                         f"{abs(gap) / max(abs(diff), 1e-12):.1%}) · scale ±{vmax:.3g}"],
                        className="small"),
    ], style={"margin": 0, "maxWidth": ATTR_PX + 40})


def attributions(d: OneImage, attrs: dict) -> html.Div:
    """The maps for the predicted class and, if it differs, the true one (`attrs`: deep_neurons.attributions)."""
    pred = int(np.argmax(d.probs))
    cards = [attribution_card(attrs, pred, "predicted" if pred != d.label else "predicted and true")]
    if pred != d.label:
        cards.append(attribution_card(attrs, d.label, "true"))
    return html.Div(cards, className="row")


def _chip_shade(strength: float) -> str:
    """Blue, stronger as the unit fires harder, and never so dark that the page's text on it falls under 4.5:1
    (WCAG 1.4.3): at most 60 % of #084594, where dark text still reads 4.8:1 on white and light text 9.7:1 on
    the dark theme's cards.  Text switched to white on the strongest chips needs 80 % and over: no one text colour
    reads on both sides of that gap."""
    return f"rgba(8, 69, 148, {0.08 + 0.52 * strength:.2f})"


def unit_chips(t: Target, acts: np.ndarray, epoch: int) -> html.Div:
    """Every unit of a layer with its activation, shaded by how strongly it fires, each a link to its page."""
    lo, hi = float(acts.min()), float(acts.max())
    span = hi - lo if hi > lo else 1.0
    chips = []
    for u in np.argsort(-acts, kind="stable"):
        strength = (float(acts[u]) - lo) / span
        chips.append(dcc.Link(f"#{u} {acts[u]:.2f}", href=unit_href(t.run_id, t.layer, int(u), epoch),
                              className="image-unit small", title=f"unit {u}: activation {acts[u]:.4f}",
                              style={"padding": "2px 6px", "borderRadius": 6, "textDecoration": "none",
                                     "color": "var(--text)", "background": _chip_shade(strength)}))
    return html.Div(chips, style={"display": "flex", "flexWrap": "wrap", "gap": 4})


def header_line(d: OneImage) -> html.Span:
    pred = int(np.argmax(d.probs))
    return html.Span([f"true digit {d.label} · predicted ",
                      html.B(str(pred), style={"color": GOOD if pred == d.label else BAD}),
                      f" ({d.probs[pred]:.1%})"], id="image-verdict")


def image_picture(d: OneImage) -> html.Img:
    return picture(png_uri(ink(d.image), scale=4), f"test image {d.index}", IMAGE_PX, "image-digit")


def image_links(run_id: str, indices, labels, preds, epoch: int) -> html.Div:
    """A line of links to the image pages of the given test images (under the run page's gallery)."""
    return html.Div([html.Span("Open one:", className="muted")] + [
        dcc.Link(f"#{i} ({labels[i]}→{preds[i]})", href=image_href(run_id, int(i), epoch), className="run-gallery-link")
        for i in indices], className="row small", style={"flexWrap": "wrap", "gap": "4px 10px"})
