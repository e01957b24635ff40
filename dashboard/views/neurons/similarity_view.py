"""The similarity page's pieces: which runs and layer the address asks for, and the CKA heatmaps.

`targets` checks every run of ?runs= at one hidden layer (a run that cannot be shown becomes a
one-line problem, the others stay); `cka_figure` draws a CKA matrix.  No callbacks.
"""
from urllib.parse import urlencode

import numpy as np
import plotly.graph_objects as go

from dashboard.loaders.neuron_target import Target, resolve
from dashboard.read.store import StoreError
from dashboard.views import widgets
from dashboard.views.compare_view import parse_run_ids

CELL_PX, MIN_HEIGHT, MAX_HEIGHT = 60, 360, 720  # 31 epochs at 60 px would be a page of their own


def similarity_href(run_ids, layer: int, run: str | None = None) -> str:
    query = {"runs": ",".join(run_ids), "layer": layer} | ({"run": run} if run else {})
    return "/similarity?" + urlencode(query)


def targets(runs, layer) -> tuple[list[Target], list[str]]:
    """Each asked-for run at `layer` (1-based hidden layer) and its last snapshot, and what could not be used."""
    ids, problems = parse_run_ids(runs)
    out = []
    for run_id in ids:
        try:
            out.append(resolve(run_id, layer))
        except StoreError as e:
            problems.append(f"run {run_id[:8]} left out: {e}")
    return out, problems


def run_label(t: Target) -> str:
    """Short enough for an axis: the id's first 8 characters and the epoch (the names are listed below it)."""
    return f"{t.run_id[:8]} (ep {t.epoch})"


def run_names(ts: list[Target]) -> str:
    return " · ".join(f"{t.run_id[:8]}: {t.run_name}" for t in ts)


def cka_figure(matrix: np.ndarray, labels: list[str], title: str, axis: str) -> go.Figure:
    """A k × k CKA heatmap on a fixed 0–1 scale, each cell labelled with its value."""
    k = len(labels)
    fig = widgets.figure(min(MAX_HEIGHT, max(MIN_HEIGHT, 140 + CELL_PX * k)), title, axis, axis,
                         margin=dict(l=16, r=16, t=48, b=16))
    fig.add_trace(go.Heatmap(z=matrix, x=labels, y=labels, zmin=0, zmax=1, colorscale="Viridis",
                             text=np.round(matrix, 2), texttemplate="%{text:.2f}" if k <= 16 else None,
                             colorbar=dict(title="CKA", thickness=12),
                             hovertemplate="%{y}<br>%{x}<br>linear CKA %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category", automargin=True)
    # Many labels side by side overlap unless they turn.
    fig.update_xaxes(type="category", automargin=True, tickangle=0 if k <= 8 else -45)
    return fig
