"""The layer map's figure and its hover panel: test images as points of a 2-D embedding, coloured by digit.

Pure builders (no store, no callbacks).  Each point carries its test-image index as customdata, which the
page's hover and click callbacks read.
"""
import numpy as np
import plotly.graph_objects as go
from dash import dcc, html

from dashboard.views import widgets
from dashboard.views.neurons.image_view import image_href, picture
from dashboard.views.neurons.neuron_images import ink, png_uri
from dashboard.views.theme import SAFE_PALETTE

# Ten digits, ten colours: the colour-blind-safe ten for everyone (black, as before, vanished on the dark theme).
DIGIT_COLORS = SAFE_PALETTE
HOVER_PX = 140


def map_figure(xy: np.ndarray, labels: np.ndarray, title: str) -> go.Figure:
    """One WebGL trace per digit (a legend that toggles digits), each point's customdata its image index.

    customdata goes as a plain list: Dash reads a hovered point's customdata from the figure as sent, and a
    numpy array would be sent base64-encoded, which it cannot index.
    """
    fig = widgets.figure(620, title, "component 1", "component 2", legend=dict(title="digit", itemsizing="constant"),
                         hovermode="closest")
    xy = np.round(np.asarray(xy, dtype=np.float64), 3)
    for d in range(10):
        idx = np.flatnonzero(labels == d)
        fig.add_trace(go.Scattergl(x=xy[idx, 0], y=xy[idx, 1], mode="markers", name=str(d), customdata=idx.tolist(),
                                   marker=dict(size=4, opacity=0.65, color=DIGIT_COLORS[d]),
                                   hovertemplate=f"test image #%{{customdata}} · digit {d}<extra></extra>"))
    return fig


def hover_panel(run_id: str, epoch: int, index: int, image: np.ndarray, label: int) -> html.Div:
    """The image under the pointer, its digit and a link to its page."""
    return html.Div([
        picture(png_uri(ink(image), scale=4), f"test image {index}", HOVER_PX, "map-hover-img"),
        html.P([html.B(f"#{index}"), f" · digit {label}"], className="small", style={"margin": "4px 0"}),
        dcc.Link("open its image page →", href=image_href(run_id, index, epoch), className="small"),
    ])


def point_index(event) -> int | None:
    """The test-image index of a hovered or clicked point (Plotly's hoverData/clickData), if any."""
    try:
        return int(event["points"][0]["customdata"])
    except (TypeError, KeyError, IndexError, ValueError):
        return None
