"""The compare page grouped by config: one mean curve per config with a band, and mean ± sd, n in the table.

Pure functions of a compare_view.Comparison and the groups of dashboard.analytics.replicates.
"""
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.analytics import replicates as R
from dashboard.read import cache, store
from dashboard.views import gaps
from dashboard.views.compare_view import CURVES, Comparison
from dashboard.views.theme import empty_figure, palette, template

BAND_LABELS = {"sd": "± 1 sd", "ci": "95 % CI of the mean"}


def groups_of(comp: Comparison) -> list[R.Group]:
    return R.group_runs({r.info.run_id: r.data.params for r in comp.runs})


def group_colors(groups: list[R.Group]) -> dict[str, str]:
    colours = palette()
    return {g.label: colours[i % len(colours)] for i, g in enumerate(groups)}


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


_figures = cache.LRU(64)  # finished runs' grouped curves, as dicts


def grouped_curve(comp: Comparison, groups: list[R.Group], key: str, band: str = "sd") -> dict:
    """grouped_curve_figure as the plain dict dcc.Graph takes; kept for finished runs (dashboard.read.cache's
    rule: built from histories that never change, labelled by params, which never change either)."""
    if not all(store.is_finished(r) for r in comp.runs):
        return grouped_curve_figure(comp, groups, key, band).to_dict()
    cache_key = (tuple((r.info.run_id, r.info.end_time) for r in comp.runs), key, band)
    if (hit := _figures.get(cache_key)) is None:
        hit = _figures.put(cache_key, grouped_curve_figure(comp, groups, key, band).to_dict())
    return hit


def grouped_curve_figure(comp: Comparison, groups: list[R.Group], key: str, band: str = "sd",
                         colors: dict | None = None) -> go.Figure:
    """One metric against epoch: each config's mean over its seeds, with a shaded band (sd or 95 % CI)."""
    title, ytitle, is_acc = CURVES[key]
    colors = colors or group_colors(groups)
    fig = go.Figure()
    yfmt = ".2%" if is_acc else ".4f"
    for g in groups:
        agg = R.aggregate_curve(comp.history, g.run_ids, key)
        if agg.empty:
            continue
        color, half = colors[g.label], R.half_width(agg["sd"], agg["n"], band)
        if np.isfinite(half).any():
            fig.add_trace(go.Scatter(
                x=list(agg["step"]) + list(agg["step"])[::-1],
                y=list(agg["mean"] + half) + list((agg["mean"] - half))[::-1], fill="toself", mode="lines",
                fillcolor=_rgba(color, 0.18), line=dict(width=0), hoverinfo="skip", showlegend=False,
                legendgroup=g.label))
        fig.add_trace(go.Scatter(
            x=agg["step"], y=gaps.gaps(agg["mean"]), mode="lines+markers" if len(agg) <= 40 else "lines",
            name=g.label, legendgroup=g.label, line=dict(color=color, width=2), marker=dict(size=5),
            customdata=np.stack([agg["sd"].fillna(0), agg["n"]], axis=1),
            hovertemplate=f"{g.label}<br>epoch %{{x}}<br>{key} mean %{{y:{yfmt}}} ± %{{customdata[0]:{yfmt}}} "
                          f"(sd), n=%{{customdata[1]}}<extra></extra>"))
    if not fig.data:
        return empty_figure(f"{title}: none of these runs logged '{key}'.")
    fig.update_layout(template=template(), height=300, showlegend=False,
                      title=f"{title}: mean per config, band {BAND_LABELS[band]}")
    last = comp.history["step"].max() if len(comp.history) else 0
    fig.update_xaxes(title="epoch", rangemode="tozero", dtick=1 if last <= 12 else None)
    fig.update_yaxes(title=ytitle, tickformat=".0%" if is_acc else None)
    return fig


def grouped_table(comp: Comparison, groups: list[R.Group]) -> pd.DataFrame:
    """One row per config: n, and for each curve metric the final value's mean and sd over its seeds."""
    rows = []
    for g in groups:
        row = {"config": g.label, "n": len(g.run_ids), "run_ids": list(g.run_ids)}
        for key in CURVES:
            finals = R.final_values(comp.history[comp.history["run_id"].isin(list(g.run_ids))], key)
            row[f"mean {key}"], row[f"sd {key}"], row[f"n {key}"] = R.summary(finals.values())
        rows.append(row)
    return pd.DataFrame(rows)


def mean_sd_text(key: str, mean: float, sd: float) -> str:
    """'95.12 % ± 0.31' for accuracies (sd in points), '0.1234 ± 0.0050' for losses; '—' when there is nothing."""
    if mean is None or not math.isfinite(mean):
        return "—"
    if key.endswith("acc"):
        return f"{mean:.2%}" + (f" ± {sd * 100:.2f}" if math.isfinite(sd) else "")
    return f"{mean:.4f}" + (f" ± {sd:.4f}" if math.isfinite(sd) else "")
