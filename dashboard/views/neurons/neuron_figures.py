"""The unit page's figures: its weights, its activation's distribution, per digit and its class means.

Pure functions of a target, a layer's weights and its statistics (no store), in the shared figure frame.
"""
import numpy as np
import plotly.graph_objects as go

from common import neurons as N
from dashboard.analytics.emergence import CLASS, DEAD, FEATURE, verdict_kind
from dashboard.loaders.neuron_target import Target
from dashboard.views import widgets
from dashboard.views.neurons.neuron_images import (NEGATIVE, NEUTRAL, POSITIVE, VERDICT_COLORS, heatmap_scale,
                                           unit_heatmap)
from dashboard.views.theme import DIVERGING

HIST_BINS = 40
HEIGHT, HEATMAP_HEIGHT = 280, 320
ACTIVATION_AXIS = "activation value"


def _frame(title: str, x_title: str, y_title: str, height: int = HEIGHT) -> go.Figure:
    return widgets.figure(height, title, x_title, y_title, showlegend=False)


def _weight_heatmap(z: np.ndarray, vmax: float, hover: str) -> go.Heatmap:
    return go.Heatmap(z=z, zmin=-vmax, zmax=vmax, zmid=0, colorscale=DIVERGING,
                      colorbar=dict(title="weight", thickness=12), hovertemplate=hover)


def weights_figure(t: Target, w: np.ndarray, unit: int, title: str | None = None) -> go.Figure:
    """First layer: the unit's weights as an image (RdBu, centred on 0, the layer's scale).  Deeper: per input unit."""
    if t.first:
        what = "3×3 kernel" if t.kind == "conv" else "incoming weights"
        fig = _frame(title or f"Unit {unit}: {what}", "pixel column", "pixel row", height=HEATMAP_HEIGHT)
        fig.add_trace(_weight_heatmap(unit_heatmap(t, w, unit), heatmap_scale(w),
                                      "row %{y}, column %{x}: %{z:.3f}<extra></extra>"))
        fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain")
        fig.update_xaxes(constrain="domain")
        return fig
    if t.kind == "conv":
        fig = _frame(title or f"Unit {unit}: 3×3 kernels over {t.prev_name}'s channels",
                     "kernel position (3×3, row by row)", f"input channel of {t.prev_name}", height=HEATMAP_HEIGHT)
        fig.add_trace(_weight_heatmap(w[unit].reshape(w.shape[1], -1), heatmap_scale(w),
                                      "channel %{y}, position %{x}: %{z:.3f}<extra></extra>"))
        return fig
    row = w[unit]
    prev = t.specs[t.layer - 2] if 2 <= t.layer <= len(t.specs) else None  # the weight layer feeding this one
    if prev is not None and prev.kind == "conv" and (mosaic := channel_mosaic(row, prev.units)) is not None:
        return _channels_figure(t, mosaic, heatmap_scale(w), unit, title)
    fig = _frame(title or f"Unit {unit}: incoming weights from {t.prev_name}", f"unit of {t.prev_name}", "weight")
    fig.add_trace(go.Bar(x=np.arange(len(row)), y=row, marker_color=[POSITIVE if v >= 0 else NEGATIVE for v in row],
                         hovertemplate=f"{t.prev_name} unit %{{x}}: %{{y:.3f}}<extra></extra>"))
    return fig


def channel_mosaic(row: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A Linear's incoming weights from a conv's flattened (channels, side, side) output, as one picture: each
    channel's side × side weights a tile, tiles in rows, one blank pixel between.  Returns (z, customdata of
    [channel, row, column] per pixel), or None when the row is not channels × a square (another flattening)."""
    side = int(round((len(row) / channels) ** 0.5)) if channels else 0
    if side == 0 or channels * side * side != len(row):
        return None
    cols = int(np.ceil(np.sqrt(channels)))
    rows = -(-channels // cols)
    z = np.full((rows * (side + 1) - 1, cols * (side + 1) - 1), np.nan)
    where = np.full(z.shape + (3,), -1)
    r, c = np.mgrid[0:side, 0:side]
    for ch, tile in enumerate(np.asarray(row).reshape(channels, side, side)):  # PyTorch flattens channel-major
        top, left = (ch // cols) * (side + 1), (ch % cols) * (side + 1)
        z[top:top + side, left:left + side] = tile
        where[top:top + side, left:left + side] = np.stack([np.full_like(r, ch), r, c], axis=-1)
    return z, where


def _channels_figure(t: Target, mosaic: tuple, vmax: float, unit: int, title: str | None) -> go.Figure:
    z, where = mosaic
    fig = _frame(title or f"Unit {unit}: incoming weights from {t.prev_name}, per channel", "", "", height=HEATMAP_HEIGHT)
    fig.add_trace(go.Heatmap(z=z, customdata=where, zmin=-vmax, zmax=vmax, zmid=0, colorscale=DIVERGING,
                             colorbar=dict(title="weight", thickness=12), hoverongaps=False,
                             hovertemplate="channel %{customdata[0]}, row %{customdata[1]}, column %{customdata[2]}: "
                                           "%{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", showticklabels=False)
    fig.update_xaxes(constrain="domain", showticklabels=False)
    return fig


def histogram_figure(stats: N.LayerStats, unit: int) -> go.Figure:
    a = stats.acts[:, unit]
    lo, hi = float(a.min()), float(a.max())
    span = (lo, hi) if hi - lo > 1e-6 else (lo - 0.5, lo + 0.5)  # a dead unit: one bar, a readable axis
    counts, edges = np.histogram(a, bins=HIST_BINS, range=span)
    fig = _frame("Activation over the 10,000 test images", ACTIVATION_AXIS, "test images")
    fig.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges), marker_color=NEUTRAL,
                         hovertemplate="%{x:.3f}: %{y} images<extra></extra>"))
    return fig


def per_class_figure(stats: N.LayerStats, unit: int, labels: np.ndarray) -> go.Figure:
    """Box per digit from precomputed quartiles: 10 boxes, not 10,000 points, go to the browser."""
    a = stats.acts[:, unit]
    fig = _frame("Activation per digit", "true digit", ACTIVATION_AXIS)
    q = np.array([np.percentile(a[labels == d], [0, 25, 50, 75, 100]) for d in range(N.N_CLASSES)])
    colors = [POSITIVE if d == stats.preferred[unit] else NEUTRAL for d in range(N.N_CLASSES)]
    for d in range(N.N_CLASSES):
        fig.add_trace(go.Box(x=[d], lowerfence=[q[d, 0]], q1=[q[d, 1]], median=[q[d, 2]], q3=[q[d, 3]],
                             upperfence=[q[d, 4]], mean=[stats.means[unit, d]], name=str(d),
                             marker_color=colors[d], line_color=colors[d]))
    fig.update_xaxes(tickmode="linear", dtick=1)
    return fig


def class_means_figure(stats: N.LayerStats, unit: int) -> go.Figure:
    m = stats.means[unit]
    pref = int(stats.preferred[unit])
    fig = _frame("Mean activation per digit", "digit", "mean activation")
    fig.add_trace(go.Bar(x=np.arange(N.N_CLASSES), y=m,
                         marker_color=[POSITIVE if d == pref else NEUTRAL for d in range(N.N_CLASSES)],
                         hovertemplate="digit %{x}: %{y:.3f}<extra></extra>"))
    rest = float(np.delete(m, pref).mean())
    fig.add_hline(y=rest, line_dash="dot", line_color=NEGATIVE, annotation_text="mean of the other digits",
                  annotation_position="top left")
    fig.update_xaxes(tickmode="linear", dtick=1)
    return fig


def emergence_figure(epochs, si: np.ndarray, verdicts: list[str], emerged: int | None) -> go.Figure:
    """One unit's SI at every snapshot epoch, each point coloured by that epoch's verdict, its emergence marked."""
    fig = _frame("SI and verdict at every snapshot", "epoch", "selectivity index (SI)", height=HEIGHT)
    kinds = [verdict_kind(v) for v in verdicts]
    fig.add_trace(go.Scatter(x=list(epochs), y=si, mode="lines+markers", line=dict(color=NEUTRAL),
                             marker=dict(size=10, color=[VERDICT_COLORS[k] for k in kinds]),
                             text=verdicts, hovertemplate="epoch %{x}: SI %{y:.2f}, %{text}<extra></extra>"))
    fig.add_hline(y=N.SI_THRESHOLD, line_dash="dot", line_color=NEGATIVE, annotation_text="SI threshold",
                  annotation_position="top left")
    if emerged is not None:
        fig.add_vline(x=emerged, line_dash="dash", line_color=VERDICT_COLORS["class"],
                      annotation_text=f"class-selective from epoch {emerged}", annotation_position="bottom right")
    fig.update_yaxes(range=[-0.02, 1.02])
    fig.update_xaxes(tickmode="array", tickvals=list(epochs)[::max(1, len(epochs) // 12)])
    return fig


def verdict_counts_figure(epochs, counts: dict) -> go.Figure:
    """How many of the layer's units are class-selective, feature-selective or dead at every snapshot."""
    fig = widgets.figure(HEIGHT, "Units by verdict over training", "epoch", "units",
                         legend=dict(orientation="h", y=-0.25))
    for kind, label in ((CLASS, "class-selective"), (FEATURE, "feature-selective"), (DEAD, "dead")):
        fig.add_trace(go.Scatter(x=list(epochs), y=counts[kind], mode="lines+markers", name=label,
                                 line=dict(color=VERDICT_COLORS[kind]),
                                 hovertemplate=f"epoch %{{x}}: %{{y}} {label}<extra></extra>"))
    fig.update_yaxes(rangemode="tozero")
    fig.update_xaxes(tickmode="array", tickvals=list(epochs)[::max(1, len(epochs) // 12)])
    return fig
