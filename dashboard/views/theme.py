"""One look for every figure: a Plotly template and a stable colour per run.

Every page imports this, so the runs table, the compare page, the run detail and
the neuron pages all draw run X in the same colour and in the same style.
"""
import hashlib

import plotly.graph_objects as go
import plotly.io as pio

# Okabe-Ito-like qualitative palette, readable on white and on the dark theme, then Plotly's D3 extras.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D31", "#F0E442",
           "#7F7F7F", "#17BECF", "#9467BD", "#BCBD22", "#1F77B4", "#FF7F0E", "#2CA02C", "#D62728",
           "#8C564B", "#E377C2", "#393B79", "#637939"]
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

    Colours follow list position so up to 20 runs never clash; pages that show one run use
    `run_color`, which hashes the id so a run keeps one colour everywhere it appears alone.
    """
    return {rid: PALETTE[i % len(PALETTE)] for i, rid in enumerate(dict.fromkeys(run_ids))}


def run_color(run_id: str) -> str:
    """One run's own colour, stable across pages and sessions."""
    return PALETTE[int(hashlib.sha1(run_id.encode()).hexdigest(), 16) % len(PALETTE)]


def empty_figure(message: str, height: int = 260) -> go.Figure:
    """A blank figure carrying a one-line message, for 'nothing to show' instead of an error."""
    fig = go.Figure(layout=dict(template=TEMPLATE, height=height))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font=dict(size=13))
    return fig
