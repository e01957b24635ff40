"""Pieces every page shares: the figure frame, the graph wrapper, the epoch slider, cards and messages.

One message style for the whole dashboard: `message(text, kind)` with kind info, warn or error,
styled by the .message classes in assets/style.css.
"""
import plotly.graph_objects as go
from dash import dcc, html

from dashboard.views import theme

GRAPH_CONFIG = {"displaylogo": False, "responsive": True}
MAX_SLIDER_MARKS = 40  # more marks than this overlap: label every n-th epoch instead
MESSAGE_KINDS = ("info", "warn", "error")


def figure(height: int = 320, title: str | None = None, x_title: str | None = None, y_title: str | None = None,
           **layout) -> go.Figure:
    """An empty figure in the shared template, with optional title and axis titles."""
    if title is not None:
        layout["title"] = title
    fig = go.Figure(layout=dict(template=theme.template(), height=height, **layout))
    if x_title is not None:
        fig.update_xaxes(title=x_title)
    if y_title is not None:
        fig.update_yaxes(title=y_title)
    return fig


def graph(fig: go.Figure, graph_id: str | None = None, responsive: bool = True) -> dcc.Graph:
    kw = {"id": graph_id} if graph_id else {}
    return dcc.Graph(figure=fig, config={**GRAPH_CONFIG, "responsive": responsive},
                     style={} if responsive else {"overflowX": "auto"}, **kw)


def epoch_marks(epochs) -> dict:
    epochs = list(epochs)
    shown = epochs if len(epochs) <= MAX_SLIDER_MARKS else epochs[::max(1, len(epochs) // 20)]
    return {e: str(e) for e in shown}


def epoch_slider(component_id: str, epochs, value, **kw) -> dcc.Slider:
    """A slider over snapshot epochs only (step=None); disabled when there are none."""
    epochs = list(epochs)
    return dcc.Slider(id=component_id, min=epochs[0] if epochs else 0, max=epochs[-1] if epochs else 0, step=None,
                      value=value if value is not None else 0, marks=epoch_marks(epochs), disabled=not epochs,
                      **kw)


def labelled(label: str, control, **kw) -> html.Div:
    """A control under its small label.  The label sits just before the control, which is what names a slider
    or a checklist for screen readers (assets/accessible_names.js)."""
    return html.Div([html.Label(label, className="small muted"), control], **kw)


def epoch_field(component_id: str, epochs, value, **kw) -> html.Div:
    """The neuron pages' "Epoch" slider over snapshot epochs, under its label."""
    return labelled("Epoch", epoch_slider(component_id, epochs, value, allow_direct_input=False), **kw)


def choices(component_id: str, options: dict, value, width: int) -> dcc.Dropdown:
    """A dropdown of value -> label, one always chosen."""
    return dcc.Dropdown(id=component_id, options=[{"label": v, "value": k} for k, v in options.items()],
                        value=value, clearable=False, style={"width": width})


def message(text, kind: str = "info", **kw) -> html.Div:
    """One line (or a few) for the user: what is missing or wrong, in the dashboard's one message style."""
    assert kind in MESSAGE_KINDS, kind
    return html.Div(text, className=f"message message-{kind}", **kw)


def card(title, *children, **kw) -> html.Div:
    return html.Div([html.H3(title, style={"marginTop": 0}), *children], className="card", **kw)


def error_page(title: str, text: str) -> html.Div:
    """A page that could not be shown: its title, why, and the way back."""
    return html.Div([html.H2(title), message(text, "error"), dcc.Link("← all runs", href="/")])
