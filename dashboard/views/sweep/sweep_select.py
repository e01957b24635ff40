"""From the grid review to runs: what a heatmap cell or the parallel-coordinates brushes pick.

Plotly's parcoords has no click events.  Dragging along an axis (a brush) fires a restyle event with
that axis's `constraintrange`; the page keeps the ranges of every axis and lists the runs whose lines
pass all of them, each a link, with "compare these".  Brushing down to one line therefore opens that
run in one click.  Pure functions of the runs frame: no store.
"""
import re

import numpy as np
import pandas as pd

from dashboard.views import runs_view as V

_DIM_KEY = re.compile(r"^dimensions\[(\d+)\]\.constraintrange$")
MAX_LISTED = 12


def href_for(run_ids: list[str]) -> str | None:
    """One run: its page; several: the compare page of them; none: None."""
    ids = [r for r in run_ids if r]
    if not ids:
        return None
    return f"/runs/{ids[0]}" if len(ids) == 1 else "/compare?runs=" + ",".join(ids)


def cell_href(click_data) -> str | None:
    """Where a click on a heatmap cell goes: the cell's customdata holds its runs' ids, comma-joined."""
    try:
        ids = str(click_data["points"][0]["customdata"] or "")
    except (KeyError, IndexError, TypeError):
        return None
    return href_for(ids.split(","))


def merge_constraints(kept: dict | None, restyle) -> dict:
    """The brushes after one restyle event: {axis index (str): [[lo, hi], ...]}; a cleared axis is dropped."""
    out = dict(kept or {})
    if not isinstance(restyle, list) or not restyle or not isinstance(restyle[0], dict):
        return out
    for key, value in restyle[0].items():
        m = _DIM_KEY.match(str(key))
        if not m:
            continue
        ranges = value[0] if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list) \
            and value[0] and isinstance(value[0][0], list) else value
        if not ranges:
            out.pop(m.group(1), None)
            continue
        ranges = [ranges] if not isinstance(ranges[0], list) else ranges
        out[m.group(1)] = [[float(lo), float(hi)] for lo, hi in ranges]
    return out


def axis_values(frame: pd.DataFrame, params: list[str], metric: str = "final_test_acc") -> tuple[list[str], list]:
    """The parcoords' run ids and each axis's values, exactly as runs_view.parallel_figure draws them."""
    runs, _ = V.usable_runs(frame, params, metric)
    dims = [np.asarray(V.dimension(runs[f"params.{p}"], p)["values"], dtype=float) for p in params]
    dims += [runs[col].astype(float).to_numpy() for col, _ in V.summary_axes(runs)]
    dims.append(runs[metric].astype(float).to_numpy())
    return list(runs["run_id"]), dims


def selected_runs(frame: pd.DataFrame, params: list[str], constraints: dict,
                  metric: str = "final_test_acc") -> list[str] | None:
    """The runs whose lines pass every brushed axis; None when nothing is brushed."""
    if not constraints or not params:
        return None
    ids, dims = axis_values(frame, params, metric)
    keep = np.ones(len(ids), dtype=bool)
    for axis, ranges in constraints.items():
        i = int(axis)
        if i >= len(dims):
            continue
        inside = np.zeros(len(ids), dtype=bool)
        for lo, hi in ranges:
            inside |= (dims[i] >= min(lo, hi)) & (dims[i] <= max(lo, hi))
        keep &= inside
    return [rid for rid, k in zip(ids, keep) if k]
