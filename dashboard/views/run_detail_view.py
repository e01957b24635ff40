"""Figures for one run's detail page.  Pure functions: arrays and DataFrames in, Plotly figures out.

The page (`dashboard/pages/run_detail.py`) gets plain data from `dashboard.loaders.run_data` and passes it
here, so every figure can be built and tested without a server.
"""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.views import theme, widgets
from dashboard.views.gaps import gaps
from dashboard.views.logged_architecture import logged_row
from training import contract as C

# Okabe-Ito's blue and orange: the first two colours of both palettes (theme.palette()), so fixed here.
TRAIN_COLOR, TEST_COLOR = theme.SAFE_PALETTE[0], theme.SAFE_PALETTE[1]
GOOD, BAD = "#1a9850", "#d73027"  # write-up D: green for right, red for wrong
# TensorBoard's distribution bands: percentiles 0, 6.68, 15.87, 30.85, 50, ... (normal-sigma points).
PERCENTILES = (0.0, 6.68, 15.87, 30.85, 50.0, 69.15, 84.13, 93.32, 100.0)


def loss_label(loss: str | None) -> str:
    return {"cross_entropy": "loss (cross-entropy, nats)", "mse": "loss (quadratic cost)"}.get(loss or "", "loss (mean per example)")


# ---- what a run has ------------------------------------------------------------------------------

def parse_epoch(value, epochs: list[int]) -> tuple[int | None, str | None]:
    """The snapshot epoch to show for a `?epoch=` value and, if that one is unusable, a message saying why."""
    if not epochs:
        return None, None
    if value in (None, ""):
        return epochs[-1], None
    try:
        epoch = int(str(value))
    except ValueError:
        return epochs[-1], f"'{str(value)[:20]}' is not an epoch number; showing epoch {epochs[-1]}."
    if epoch not in epochs:
        return epochs[-1], (f"Epoch {epoch} has no snapshot (this run has {_epoch_list(epochs)}); "
                            f"showing epoch {epochs[-1]}.")
    return epoch, None


def _epoch_list(epochs):
    if epochs == list(range(epochs[0], epochs[-1] + 1)):
        return f"epochs {epochs[0]}–{epochs[-1]}"
    return "epochs " + ", ".join(map(str, epochs))


def missing_parts(params: dict, metrics: dict, layers: list[str], epochs: list[int], config_problem: str = "") -> list[str]:
    """What the tracking contract expects that this run did not log, one line each, with what it costs."""
    missing = [f"a config MNIST Lab can rebuild ({config_problem}): no architecture, neuron or loss-landscape "
               "views, and snapshots are checked only by their layer names"] if config_problem else []
    absent = [k for k in (C.TRAIN_LOSS, C.TEST_LOSS, C.TRAIN_ACC, C.TEST_ACC) if k not in metrics]
    if absent:
        missing.append("metrics " + ", ".join(absent) + ": no training-progress curves")
    if not layers:
        missing.append(f"param '{C.PARAM_LAYERS}': no architecture, gradient-flow or dead-unit views")
    elif not any(C.grad_norm_key(l) in metrics for l in layers):
        missing.append(f"{C.grad_norm_key('<layer>')} metrics: no gradient flow")
    if not epochs:
        missing.append(f"snapshot artifacts ({C.SNAPSHOT_DIR}/epoch_XXXX.npz): no activation, weight, "
                       "confidence, prediction or loss-landscape views")
    return missing


# ---- training progress, gradients, dead units ----------------------------------------------------

def progress_figure(histories: dict[str, pd.DataFrame], loss: str | None = None) -> go.Figure:
    """Loss and accuracy against epoch, train (solid) vs test (dashed), side by side."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"), horizontal_spacing=0.1)
    fig.update_layout(template=theme.template(), height=330, legend=dict(orientation="h", y=-0.22))
    for col, keys in ((1, (C.TRAIN_LOSS, C.TEST_LOSS)), (2, (C.TRAIN_ACC, C.TEST_ACC))):
        for key in keys:
            df = histories.get(key)
            if df is None or df.empty:
                continue
            train = key.startswith("train")
            y = gaps(df["value"] * (100 if col == 2 else 1))
            fig.add_trace(go.Scatter(
                x=df["step"], y=y, mode="lines+markers", name="train" if train else "test",
                legendgroup="train" if train else "test", showlegend=col == 1,
                line=dict(color=TRAIN_COLOR if train else TEST_COLOR, dash="solid" if train else "dash"),
                hovertemplate=f"{key} epoch %{{x}}: %{{y:.4g}}{' %' if col == 2 else ''}<extra></extra>"), 1, col)
    fig.update_xaxes(title_text="epoch", dtick=_epoch_dtick(histories))
    fig.update_yaxes(title_text=loss_label(loss), row=1, col=1)
    fig.update_yaxes(title_text="accuracy (%)", row=1, col=2)
    return fig


def metrics_figure(histories: dict[str, pd.DataFrame]) -> go.Figure:
    """Whatever metrics a run logged (for runs outside the contract), one line each against step."""
    fig = widgets.figure(320, legend=dict(title_text="metric"))
    for key, df in histories.items():
        fig.add_trace(go.Scatter(x=df["step"], y=gaps(df["value"]), mode="lines+markers", name=key,
                                 hovertemplate=f"{key} step %{{x}}: %{{y:.4g}}<extra></extra>"))
    fig.update_xaxes(title_text="step (as logged)")
    fig.update_yaxes(title_text="value (as logged)")
    return fig


def _epoch_dtick(histories) -> int | None:
    steps = max((int(df["step"].max()) for df in histories.values() if df is not None and not df.empty), default=0)
    return 1 if steps <= 12 else None


def gradient_figure(grad_norms: dict[str, pd.DataFrame]) -> go.Figure:
    """Each layer's mean gradient norm per epoch, log scale: gradient flow from output back to input."""
    fig = widgets.figure(320, legend=dict(title_text="layer"))
    for i, (layer, df) in enumerate(grad_norms.items()):
        fig.add_trace(go.Scatter(x=df["step"], y=gaps(df["value"], log_scale=True), mode="lines+markers", name=layer,
                                 line=dict(color=theme.palette()[i % len(theme.palette())]),
                                 hovertemplate=f"{layer} epoch %{{x}}: %{{y:.3g}}<extra></extra>"))
    fig.update_xaxes(title_text="epoch (0 = untrained)", dtick=_epoch_dtick(grad_norms))
    fig.update_yaxes(title_text="mean gradient norm ‖∂L/∂W‖ (log)", type="log")
    return fig


def dead_figure(dead: dict[str, pd.DataFrame], activation: str | None, limit: float = 0.5) -> go.Figure:
    """Dead (ReLU) or saturated (sigmoid/tanh) fraction of each hidden layer's units per epoch, with the warning line."""
    word = "dead" if activation == "relu" else "saturated"
    fig = widgets.figure(300, legend=dict(title_text="layer"))
    for i, (layer, df) in enumerate(dead.items()):
        fig.add_trace(go.Scatter(x=df["step"], y=gaps(df["value"] * 100), mode="lines+markers", name=layer,
                                 line=dict(color=theme.palette()[i % len(theme.palette())]),
                                 hovertemplate=f"{layer} epoch %{{x}}: %{{y:.1f}} % {word}<extra></extra>"))
    fig.add_hline(y=limit * 100, line=dict(color=BAD, dash="dot", width=1),
                  annotation_text=f"{limit:.0%} warning", annotation_position="top left")
    fig.update_xaxes(title_text="epoch", dtick=_epoch_dtick(dead))
    fig.update_yaxes(title_text=f"{word} units (%)", range=[-3, 103])
    return fig


# ---- per-epoch distributions ---------------------------------------------------------------------

def activation_figure(snapshot: dict, layers: list[str], epoch: int, reference: dict | None = None,
                      reference_epoch: int | None = None) -> go.Figure:
    """Histogram of every layer's activations at `epoch` (bars), with `reference` (e.g. epoch 0) as an outline."""
    shown = [l for l in layers if C.act_hist_key(l) in snapshot and C.act_edges_key(l) in snapshot]
    fig = make_subplots(rows=1, cols=max(1, len(shown)), subplot_titles=[
        f"{l} (output)" if i == len(shown) - 1 else l for i, l in enumerate(shown)], horizontal_spacing=0.06)
    fig.update_layout(template=theme.template(), height=330, bargap=0,
                      legend=dict(orientation="h", x=1, xanchor="right", y=1.12, yanchor="bottom"))
    for i, layer in enumerate(shown, start=1):
        counts = np.asarray(snapshot[C.act_hist_key(layer)], dtype=float)
        edges = np.asarray(snapshot[C.act_edges_key(layer)], dtype=float)
        x, y, width = _bars(edges, counts / max(np.nansum(counts[np.isfinite(counts)]), 1) * 100)
        fig.add_trace(go.Bar(x=x, y=y, width=width, name=f"epoch {epoch}",
                             marker_color=TRAIN_COLOR, legendgroup="now", showlegend=i == 1,
                             hovertemplate="activation %{x:.3g}: %{y:.2f} %<extra></extra>"), 1, i)
        if reference is not None and C.act_hist_key(layer) in reference and C.act_edges_key(layer) in reference:
            rc = np.asarray(reference[C.act_hist_key(layer)], dtype=float)
            re = np.asarray(reference[C.act_edges_key(layer)], dtype=float)
            rc = rc / max(np.nansum(rc[np.isfinite(rc)]), 1) * 100
            fig.add_trace(go.Scatter(x=gaps(np.repeat(re, 2)[1:-1]), y=gaps(np.repeat(rc, 2)),
                                     mode="lines", name=f"epoch {reference_epoch}", legendgroup="ref",
                                     line=dict(color=TEST_COLOR, width=1.5), showlegend=i == 1,
                                     hoverinfo="skip"), 1, i)
        fig.update_xaxes(title_text="activation value", row=1, col=i)
    fig.update_yaxes(title_text="share of activations (%, log)", row=1, col=1)
    fig.update_yaxes(type="log", dtick=1, tickformat="~g")
    return fig


def _bars(edges: np.ndarray, heights: np.ndarray) -> tuple[list, list, list]:
    """A histogram's bars (centres, heights, widths), leaving out bins whose edges are NaN, ±inf or reversed:
    Plotly takes a gap in heights but not in widths."""
    mids, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    keep = np.isfinite(mids) & np.isfinite(width) & (width >= 0)
    return [float(m) for m in mids[keep]], gaps(heights[keep]), [float(w) for w in width[keep]]


def weight_percentiles(snapshots: dict[int, dict], layer: str) -> pd.DataFrame:
    """One row per snapshot epoch: the PERCENTILES of `layer`'s finite weights (columns p0 ... p100), and
    how many were NaN or infinite (column not_finite)."""
    rows = []
    for epoch in sorted(snapshots):
        snap = snapshots[epoch]
        if C.weight_key(layer) not in snap:
            continue
        w = np.asarray(snap[C.weight_key(layer)], dtype=float).ravel()
        finite = w[np.isfinite(w)]
        pct = np.percentile(finite, PERCENTILES) if len(finite) else np.full(len(PERCENTILES), np.nan)
        rows.append({"epoch": epoch, **{f"p{p:g}": v for p, v in zip(PERCENTILES, pct)},
                     "not_finite": len(w) - len(finite)})
    return pd.DataFrame(rows)


def weight_distribution_figure(percentiles: dict[str, pd.DataFrame]) -> go.Figure:
    """TensorBoard's distributions view: per layer, nested percentile bands of the weights over epochs."""
    layers = [l for l, df in percentiles.items() if not df.empty]
    fig = make_subplots(rows=1, cols=max(1, len(layers)), subplot_titles=layers, horizontal_spacing=0.07)
    fig.update_layout(template=theme.template(), height=320, showlegend=False)
    cols = [f"p{p:g}" for p in PERCENTILES]
    bands = [(cols[i], cols[-1 - i]) for i in range(len(cols) // 2)]  # outermost first
    for i, layer in enumerate(layers, start=1):
        df = percentiles[layer]
        for depth, (lo, hi) in enumerate(bands):
            opacity = 0.15 + 0.18 * depth
            fig.add_trace(go.Scatter(x=df["epoch"], y=gaps(df[hi]), mode="lines", line=dict(width=0),
                                     hoverinfo="skip"), 1, i)
            fig.add_trace(go.Scatter(x=df["epoch"], y=gaps(df[lo]), mode="lines", line=dict(width=0), fill="tonexty",
                                     fillcolor=_rgba(TRAIN_COLOR, opacity),
                                     hovertemplate=f"{layer} epoch %{{x}}: {lo}–{hi} from %{{y:.3g}}<extra></extra>"),
                          1, i)
        fig.add_trace(go.Scatter(x=df["epoch"], y=gaps(df["p50"]), mode="lines", line=dict(color=TRAIN_COLOR, width=1.5),
                                 hovertemplate=f"{layer} epoch %{{x}}: median %{{y:.3g}}<extra></extra>"), 1, i)
        fig.update_xaxes(title_text="epoch", row=1, col=i, dtick=1 if df["epoch"].max() <= 12 else None)
    fig.update_yaxes(title_text="weight value", row=1, col=1)
    return fig


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha:.2f})"


def confidence_figure(snapshot: dict, epoch: int) -> go.Figure:
    """Histograms of the predicted class's confidence for correct vs incorrect test predictions."""
    edges = np.asarray(snapshot[C.CONF_EDGES], dtype=float)
    fig = widgets.figure(320, barmode="overlay", bargap=0, legend=dict(orientation="h", y=-0.25))
    for key, name, color in ((C.CONF_HIST_CORRECT, "correct", GOOD), (C.CONF_HIST_INCORRECT, "incorrect", BAD)):
        if key not in snapshot:
            continue
        counts = np.asarray(snapshot[key], dtype=float)
        total = int(counts[np.isfinite(counts)].sum())
        mids, ys, width = _bars(edges, counts)
        fig.add_trace(go.Bar(x=mids, y=ys, width=width, name=f"{name} ({total:,})",
                             marker_color=color, opacity=0.65,
                             hovertemplate=f"{name}, confidence %{{x:.2f}}: %{{y:,}} images<extra></extra>"))
    fig.update_xaxes(title_text=f"confidence in the predicted class at epoch {epoch}", range=[0, 1])
    fig.update_yaxes(title_text="test images (log)", type="log", dtick=1)
    return fig


# ---- predictions ---------------------------------------------------------------------------------

def confusion_matrix(pred: np.ndarray, labels: np.ndarray, n_classes: int = 10) -> np.ndarray:
    """cm[t, p] = number of test images of true class t predicted as p."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return cm


def confusion_figure(cm: np.ndarray, epoch: int) -> go.Figure:
    """Counts per (true, predicted) digit; colour is the share of the true class, so errors stand out."""
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1) * 100
    digits = [str(d) for d in range(cm.shape[0])]
    fig = widgets.figure(420, margin=dict(l=56, r=16, t=40, b=48))
    fig.add_trace(go.Heatmap(z=share, x=digits, y=digits, text=cm, texttemplate="%{text}",
                             colorscale="Blues", zmin=0, zmax=100, colorbar=dict(title="% of true"),
                             hovertemplate="true %{y}, predicted %{x}: %{text} images (%{z:.1f} %)<extra></extra>"))
    fig.update_xaxes(title_text=f"predicted digit (epoch {epoch})", side="bottom", constrain="domain")
    fig.update_yaxes(title_text="true digit", autorange="reversed", scaleanchor="x")
    return fig


def misclassified(pred: np.ndarray, confidence: np.ndarray, labels: np.ndarray, n: int = 24) -> np.ndarray:
    """Indices of up to n wrong test predictions, most confident first (the most instructive mistakes)."""
    wrong = np.flatnonzero(np.asarray(pred) != np.asarray(labels))
    order = np.argsort(-np.asarray(confidence)[wrong], kind="stable")
    return wrong[order][:n]


def image_grid_figure(images: np.ndarray, labels, preds=None, confidences=None, cols: int = 8,
                      tile_px: int = 100) -> go.Figure:
    """Digits in a grid, each titled with its true label and, if given, the prediction in green (right) or red (wrong).

    The figure has a fixed pixel size (tiles of `tile_px`), so show it with responsive=False.
    """
    n = len(images)
    if n == 0:
        return theme.empty_figure("no images to show")
    cols = min(cols, n)
    rows = -(-n // cols)
    gap, head = 3, 11  # image pixels between tiles, and above each tile for its two-line label
    cell_w, cell_h = 28 + gap, 28 + head
    canvas = np.full((rows * cell_h, cols * cell_w - gap), np.nan)
    scale = tile_px / 28
    fig = widgets.figure(int(rows * cell_h * scale) + 8, width=int((cols * cell_w - gap) * scale) + 8,
               margin=dict(l=4, r=4, t=4, b=4))
    for i in range(n):
        r, c = divmod(i, cols)
        y0, x0 = r * cell_h + head, c * cell_w
        canvas[y0:y0 + 28, x0:x0 + 28] = images[i]
        text = f"true <b>{int(labels[i])}</b>"
        if preds is not None:
            ok = int(preds[i]) == int(labels[i])
            conf = f" · {confidences[i]:.0%}" if confidences is not None and np.isfinite(confidences[i]) else ""
            text += f"<br><span style='color:{GOOD if ok else BAD}'>pred <b>{int(preds[i])}</b>{conf}</span>"
        fig.add_annotation(x=x0 + 14, y=y0 - 0.5, text=text, showarrow=False, yanchor="bottom",
                           font=dict(size=12))
    fig.add_trace(go.Heatmap(z=canvas, colorscale="Greys", zmin=0, zmax=255, showscale=False, hoverinfo="skip"))
    fig.update_xaxes(visible=False, range=[-0.5, cols * cell_w - gap - 0.5])
    fig.update_yaxes(visible=False, range=[rows * cell_h - 0.5, -0.5])
    return fig


# ---- architecture ----------------------------------------------------------------------------

def architecture_rows(layers, activation: str | None, loss: str | None) -> list[dict]:
    """One row per stage (input, each weight layer) with its output shape and parameter count.

    `layers` are training.nets.models.Layer objects (name, kind, weight_shape).
    """
    rows = [{"name": "input", "shape": "1×28×28" if layers and layers[0].kind == "conv" else "784",
             "units": 784, "params": 0, "detail": "28×28 pixels<br>in [0, 1]"}]
    side = 28
    for i, layer in enumerate(layers):
        last = i == len(layers) - 1
        params = int(np.prod(layer.weight_shape)) + layer.units
        if getattr(layer, "out_shape", ()):  # a model logged from the user's own loop describes itself
            rows.append(logged_row(layer, last))
            continue
        act = ("softmax" if loss == "cross_entropy" else "sigmoid") if last else (activation or "")
        if layer.kind == "conv":
            k = layer.weight_shape[-1]
            side = side - k + 1
            shape = f"{layer.units}×{side}×{side}"
            detail = f"conv {k}×{k}, {act}<br>pool → {layer.units}×{side // 2}×{side // 2}"
            units = layer.units * side * side
            side //= 2
        else:
            shape = str(layer.units)
            detail = f"dense {layer.weight_shape[1]}→{layer.units}<br>{act}"
            units = layer.units
        rows.append({"name": layer.name, "shape": shape, "units": units, "params": params, "detail": detail})
    return rows


def architecture_figure(rows: list[dict]) -> go.Figure:
    """Layers as boxes left to right, height growing with log(units), labelled with shape and parameters."""
    total = sum(r["params"] for r in rows)
    fig = widgets.figure(280, margin=dict(l=8, r=8, t=40, b=8),
               title=dict(text=f"{total:,} parameters"))
    max_log = max(np.log10(max(r["units"], 1)) for r in rows)
    for i, r in enumerate(rows):
        h = 0.25 + 0.75 * np.log10(max(r["units"], 1)) / max(max_log, 1e-9)
        colours = theme.palette()
        color = colours[0] if i == 0 else colours[2] if i == len(rows) - 1 else colours[5]
        fig.add_shape(type="rect", x0=i - 0.3, x1=i + 0.3, y0=-h, y1=h, fillcolor=_rgba(color, 0.35),
                      line=dict(color=color, width=1.5))
        fig.add_annotation(x=i, y=0, text=f"<b>{r['name']}</b><br>{r['shape']}", showarrow=False, font=dict(size=12))
        fig.add_annotation(x=i, y=-1.05, text=r["detail"], showarrow=False, font=dict(size=10), yanchor="top")
        if r["params"]:
            fig.add_annotation(x=i, y=1.1, text=f"{r['params']:,} params", showarrow=False, font=dict(size=11))
        if i:
            fig.add_annotation(x=i - 0.3, y=0, ax=i - 0.7, ay=0, xref="x", yref="y", axref="x", ayref="y",
                               text="", showarrow=True, arrowhead=2, arrowwidth=1.5, arrowcolor="#888")
    # An invisible trace gives the axes their extent.
    fig.add_trace(go.Scatter(x=[-0.6, len(rows) - 0.4], y=[-1.45, 1.25], mode="markers",
                             marker=dict(opacity=0), hoverinfo="skip", showlegend=False))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


# ---- loss landscape ------------------------------------------------------------------------------

def _pc_title(i: int, explained) -> str:
    e = explained[i]
    if np.isfinite(e):
        return f"PC{i + 1} direction ({e:.1%} of the path's variance)"
    return "direction of the path" if i == 0 else "second direction (orthogonal; too few snapshots for PCA)"


def landscape_contour_figure(ls) -> go.Figure:
    """Contours of the loss on the trajectory's PCA plane, with the path from epoch 0 to the last epoch."""
    fig = widgets.figure(440, legend=dict(orientation="h", y=-0.18))
    fig.add_trace(go.Contour(x=ls.alphas, y=ls.betas, z=[gaps(row) for row in ls.loss], colorscale=theme.SEQUENTIAL,
                             ncontours=24,
                             colorbar=dict(title=loss_label(ls.loss_name).replace(" (", "<br>(")),
                             hovertemplate="(%{x:.3g}, %{y:.3g}): loss %{z:.4g}<extra></extra>", name="loss surface"))
    fig.add_trace(go.Scatter(x=ls.path[:, 0], y=ls.path[:, 1], mode="lines+markers+text", name="training path",
                             text=[str(e) for e in ls.epochs], textposition="top center",
                             line=dict(color="white", width=2), marker=dict(color=BAD, size=8),
                             customdata=gaps(ls.path_loss),
                             hovertemplate="epoch %{text}: loss %{customdata:.4g}<extra></extra>"))
    fig.update_xaxes(title_text=_pc_title(0, ls.explained))
    fig.update_yaxes(title_text=_pc_title(1, ls.explained))
    return fig


def landscape_surface_figure(ls) -> go.Figure:
    """The same loss as a 3-D surface, with the path drawn on it."""
    fig = widgets.figure(480, margin=dict(l=0, r=0, t=30, b=0))
    fig.add_trace(go.Surface(x=ls.alphas, y=ls.betas, z=[gaps(row) for row in ls.loss], colorscale=theme.SEQUENTIAL,
                             opacity=0.9,
                             showscale=False, hovertemplate="loss %{z:.4g}<extra></extra>"))
    fig.add_trace(go.Scatter3d(x=ls.path[:, 0], y=ls.path[:, 1], z=gaps(ls.path_loss), mode="lines+markers",
                               text=[f"epoch {e}" for e in ls.epochs], line=dict(color=BAD, width=6),
                               marker=dict(size=4, color=BAD), name="training path",
                               hovertemplate="%{text}: loss %{z:.4g}<extra></extra>"))
    fig.update_layout(scene=dict(xaxis_title="PC1", yaxis_title="PC2", zaxis_title=loss_label(ls.loss_name),
                                 camera=dict(eye=dict(x=1.5, y=-1.5, z=1.0))), showlegend=False)
    return fig
