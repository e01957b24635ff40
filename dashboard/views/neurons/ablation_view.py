"""The ablation page's figures and sentences: what each unit costs per digit, and accuracy as units go.

Pure functions of the numbers training.nets.ablation computes (dashboard.loaders.unit_ablation): no store.
"""
from urllib.parse import urlencode

import numpy as np
import plotly.graph_objects as go

from dashboard.views import widgets
from dashboard.views.neurons.neuron_images import NEGATIVE, NEUTRAL, POSITIVE
from dashboard.views.theme import DIVERGING, SAFE_PALETTE

SORTS = {"drop": "total drop (largest first)", "index": "unit index"}
SHOWN_POINTS = 0.05  # a drop that rounds to 0.0 points at one decimal is "nothing" in a sentence
# Colours both palettes share (theme.palette()), so fixed here.
CURVE_COLORS = {"selectivity": SAFE_PALETTE[0], "drop": SAFE_PALETTE[3], "random": NEUTRAL}


def ablation_href(run_id: str, layer: int, epoch: int | None = None, mode: str = "zero") -> str:
    query = {"layer": layer} | ({"epoch": epoch} if epoch is not None else {}) | ({"mode": mode} if mode != "zero" else {})
    return f"/runs/{run_id}/neurons/ablation?" + urlencode(query)


def unit_order(overall_drop: np.ndarray, sort: str) -> list[int]:
    """Units for the heatmap's rows, top to bottom: by total drop (largest first, ties by index), or by index."""
    units = range(len(overall_drop))
    if sort == "drop":
        return sorted(units, key=lambda u: (-overall_drop[u], u))
    return list(units)


def drop_heatmap(drop: np.ndarray, order: list[int], mode_label: str) -> go.Figure:
    """Units × digits: accuracy lost (percentage points) on each digit's test images with the unit switched off.
    Rows top to bottom in `order`; red a loss, blue a gain, on one symmetric scale.  Plain lists, not numpy
    arrays (which Plotly sends base64-encoded), so the page's data reads back as the numbers themselves."""
    z = drop[order]
    vmax = max(float(np.abs(z).max(initial=0.0)), 0.1)
    fig = widgets.figure(max(260, 60 + 18 * len(order)), f"Accuracy lost per digit with one unit {mode_label} "
                         "(percentage points)", "digit", "unit")
    fig.add_trace(go.Heatmap(
        z=z.tolist(), zmin=-vmax, zmax=vmax, zmid=0, colorscale=DIVERGING, reversescale=True, x=[str(d) for d in range(10)],
        y=[f"#{u}" for u in order], customdata=[[u] * 10 for u in order],
        text=np.round(z, 2).tolist(), hovertemplate="unit %{customdata}, digit %{x}: %{text} points lost<extra></extra>",
        colorbar=dict(title="points lost", thickness=12)))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return fig


def cumulative_figure(by_selectivity, by_drop, random) -> go.Figure:
    """Accuracy as units are removed: most selective first, largest drop first, and random (mean, min–max band)."""
    k = np.arange(len(by_selectivity))
    fig = widgets.figure(340, "Accuracy as units are removed (cumulative ablation)", "units removed",
                         "test accuracy (%)", showlegend=True)
    lo, hi, mean = random.min(0), random.max(0), random.mean(0)
    fig.add_trace(go.Scatter(x=np.r_[k, k[::-1]], y=np.r_[hi, lo[::-1]], fill="toself", line=dict(width=0),
                             fillcolor="rgba(154,164,181,0.3)", name=f"random: range of {len(random)} orders",
                             hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=k, y=mean, name="random order (mean)", line=dict(color=CURVE_COLORS["random"])))
    fig.add_trace(go.Scatter(x=k, y=by_selectivity, name="most selective first",
                             line=dict(color=CURVE_COLORS["selectivity"])))
    fig.add_trace(go.Scatter(x=k, y=by_drop, name="largest ablation drop first", line=dict(color=CURVE_COLORS["drop"])))
    return fig


def selectivity_answer(by_selectivity, random) -> str:
    """One sentence: does selectivity predict importance here?  Compares the mean accuracy along the curve
    (the area under it) removing the most selective units first with the random orders'."""
    sel, rand = float(np.mean(by_selectivity)), np.mean(random, axis=1)
    lo, hi = float(rand.min()), float(rand.max())
    if sel < lo:
        return (f"Yes, here selectivity predicts importance: removing the most selective units first hurts more "
                f"than any of {len(rand)} random orders (mean accuracy along the curve {sel:.1f} % against "
                f"{lo:.1f}–{hi:.1f} %).")
    if sel > hi:
        return (f"No, the opposite: removing the most selective units first hurts less than any random order "
                f"({sel:.1f} % against {lo:.1f}–{hi:.1f} % mean accuracy along the curve).")
    return (f"No, here selectivity does not predict importance: removing the most selective units first hurts as "
            f"much as a random order ({sel:.1f} % mean accuracy along the curve; random {lo:.1f}–{hi:.1f} %), as "
            f"Morcos et al. (2018) found.")


def unit_drop_figure(drop: np.ndarray, unit: int) -> go.Figure:
    """One unit's accuracy lost on each digit when it alone is switched off."""
    fig = widgets.figure(260, f"Switching unit {unit} off: accuracy lost per digit", "digit",
                         "points lost", showlegend=False)
    fig.add_trace(go.Bar(x=[str(d) for d in range(10)], y=np.asarray(drop, float).tolist(),
                         marker_color=[NEGATIVE if v > 0 else POSITIVE for v in drop],
                         hovertemplate="digit %{x}: %{y:.2f} points lost<extra></extra>"))
    fig.update_xaxes(type="category")
    return fig


def unit_drop_sentence(drop: np.ndarray, overall: float) -> str:
    """'Switching it off costs 3.1 points on 7s and nothing elsewhere.', from its per-digit drops."""
    losses = [d for d in np.argsort(-drop, kind="stable") if drop[d] >= SHOWN_POINTS]
    gains = [d for d in np.argsort(drop, kind="stable") if drop[d] <= -SHOWN_POINTS]
    if not losses and not gains:
        return "Switching it off changes no digit's accuracy by 0.1 points or more."
    parts = [f"{drop[d]:.1f} points on {d}s" if i == 0 else f"{drop[d]:.1f} on {d}s" for i, d in enumerate(losses[:3])]
    text = "Switching it off costs " + _join(parts) if parts else "Switching it off costs nothing"
    if len(losses) > 3:
        text += f", and less on {len(losses) - 3} other digit{'s' if len(losses) > 4 else ''}"
    if gains:
        text += "; it helps " + _join([f"{d}s (+{-drop[d]:.1f})" for d in gains[:3]])
    elif len(losses) <= 3:
        text += " and nothing elsewhere"
    return text + f" ({overall:.2f} points overall)."


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
