"""One look for every figure: a Plotly template and a stable colour per run.

Every page imports this, so the runs table, the compare page, the run detail and
the neuron pages all draw run X in the same colour and in the same style.
"""
import hashlib

import plotly.graph_objects as go
import plotly.io as pio
from flask import has_request_context, request

# Okabe-Ito's palette first (readable on white and on the dark theme), then twelve more hues for big sweeps, each
# pair of the twenty at least 16 CIELAB units apart in normal vision (tests/test_palette.py): Plotly's D3 extras
# put #1F77B4 beside Okabe-Ito's #0072B2, the same blue to the eye, so run 13 looked like run 1.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D31", "#F0E442",
           "#7F7F7F", "#17BECF", "#9467BD", "#BCBD22", "#E377C2", "#C2B280", "#BE0032", "#BB5566",
           "#AA3377", "#A1CAF1", "#999933", "#8DB600"]
# The colour-blind-safe option: ten colours that stay at least 14 CIELAB units apart, every pair, in normal vision
# and under simulated protanopia, deuteranopia and tritanopia (Machado et al. 2009, full severity; recomputed by
# tests/test_palette.py).  Okabe-Ito's first seven, then Tol's purple, a brown and a mid grey, none too dark for
# the dark theme or too light for the light one.  The default keeps twenty hues for big sweeps; past ten runs this
# one repeats its colours.
SAFE_PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#AA3377", "#8C6D31",
                "#BBBBBB"]
PALETTE_COOKIE = "mnistlab-palette"  # set by the palette button (assets/clientside.js); "safe" or absent
DIVERGING = "RdBu"  # write-up C: blue positive, red negative (RdBu runs red -> blue, low -> high)
SEQUENTIAL = "Viridis"
FONT = "Inter, system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"

# Transparent backgrounds: the page's CSS (light or dark) shows through, so one template serves both.
TEMPLATE = go.layout.Template(pio.templates["plotly_white"])
TEMPLATE.layout.update(
    font=dict(family=FONT, size=12, color="#7a8494"),
    paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
    colorway=PALETTE,
    margin=dict(l=56, r=16, t=40, b=48),
    title=dict(font=dict(size=14), x=0.01, xanchor="left"),
    legend=dict(bgcolor="rgba(0,0,0,0)", font=dict(size=11)),
    hoverlabel=dict(font=dict(family=FONT)),
)
for axis in ("xaxis", "yaxis"):
    TEMPLATE.layout[axis].update(gridcolor="rgba(128,128,128,0.18)", zerolinecolor="rgba(128,128,128,0.35)",
                                 linecolor="rgba(128,128,128,0.5)", title=dict(standoff=8))
pio.templates["mnistlab"] = TEMPLATE
SAFE_TEMPLATE = go.layout.Template(TEMPLATE)
SAFE_TEMPLATE.layout.colorway = SAFE_PALETTE


def safe_colours() -> bool:
    """Whether the person this figure is drawn for chose the colour-blind-safe palette.  A cookie, not the URL:
    colours are a person's need, and a link they share should open in the colours of whoever opens it."""
    return has_request_context() and request.cookies.get(PALETTE_COOKIE) == "safe"


def palette() -> list[str]:
    """The categorical colours to draw with now (see safe_colours)."""
    return SAFE_PALETTE if safe_colours() else PALETTE


def template() -> go.layout.Template:
    """The figure template to draw with now: the same look, with palette()'s colours as its colorway."""
    return SAFE_TEMPLATE if safe_colours() else TEMPLATE


def verdict_class(verdict: str) -> str:
    """The CSS class that colours a unit's verdict as text ("class-selective (digit 6)" -> "verdict-class").

    Text, not figures: the figures' VERDICT_COLORS fall under 4.5:1 on one theme or the other, so
    assets/style.css gives each verdict a text shade per theme."""
    return "verdict-" + verdict.split("-")[0].split(" ")[0]


def sign_class(value: float) -> str:
    """The CSS class that colours a signed number as text: blue positive, red negative, as the figures do."""
    return "sign-positive" if value >= 0 else "sign-negative"


def run_colors(run_ids: list[str]) -> dict[str, str]:
    """A colour per run: distinct within this list (in its order), the same run first gets the same colour.

    Colours follow list position so as many runs as palette() has colours never clash; pages that show one run use
    `run_color`, which hashes the id so a run keeps one colour everywhere it appears alone.
    """
    colours = palette()
    return {rid: colours[i % len(colours)] for i, rid in enumerate(dict.fromkeys(run_ids))}


def run_color(run_id: str) -> str:
    """One run's own colour, stable across pages and sessions."""
    colours = palette()
    return colours[int(hashlib.sha1(run_id.encode()).hexdigest(), 16) % len(colours)]


def empty_figure(message: str, height: int = 260) -> go.Figure:
    """A blank figure carrying a one-line message, for 'nothing to show' instead of an error."""
    fig = go.Figure(layout=dict(template=template(), height=height))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font=dict(size=13))
    return fig
