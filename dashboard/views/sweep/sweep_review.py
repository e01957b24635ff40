"""The compare page's review of two runs or two configs: is the difference real, and what changed image by image.

`load_review` is the only function here that reads the store (snapshots only through store.load_snapshot);
the builders below it are pure.  With exactly two runs, A is the first and B the second; with exactly two
configs, the config test uses every seed's final test accuracy and the image-level view compares each
config's first run.
"""
from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go
from dash import html

from dashboard.analytics import image_diff as D
from dashboard.analytics import replicates as R
from dashboard.analytics import significance as S
from dashboard.read import store
from dashboard.views.compare_view import Comparison, run_label
from dashboard.views.neurons.neuron_images import ink, png_uri
from dashboard.views.theme import DIVERGING, template
from training import contract as C


@dataclass
class Review:
    name_a: str
    name_b: str
    run_a: str
    run_b: str
    epochs: list = field(default_factory=list)  # snapshot epochs both runs have
    epoch: int | None = None
    sentences: list = field(default_factory=list)  # the verdicts, one sentence each
    notes: list = field(default_factory=list)  # why something is not shown
    pair: S.PairTest | None = None
    config: S.ConfigTest | None = None
    diff: D.ImageDiff | None = None
    preds: dict = field(default_factory=dict)  # "a"/"b" -> (pred, conf) at the epoch
    test_set: tuple = ()  # (images, labels), in the order predictions are logged


def sides(comp: Comparison, groups: list[R.Group]) -> tuple[str, str, list | None] | None:
    """(run A, run B, the two groups or None) when the page compares two runs or two configs; else None."""
    if len(comp.runs) == 2:
        return comp.runs[0].info.run_id, comp.runs[1].info.run_id, None
    if len(groups) == 2:
        return groups[0].run_ids[0], groups[1].run_ids[0], groups
    return None


def _finals(comp: Comparison, run_ids) -> list[float]:
    finals = R.final_values(comp.history[comp.history["run_id"].isin(list(run_ids))], C.TEST_ACC)
    return [v for v in finals.values() if np.isfinite(v)]


def _config_part(review: Review, comp: Comparison, groups: list[R.Group]) -> None:
    a, b = _finals(comp, groups[0].run_ids), _finals(comp, groups[1].run_ids)
    if min(len(a), len(b)) >= S.MIN_SEEDS:
        review.config = S.config_test(a, b)
        review.sentences.append(S.config_verdict(review.config, groups[0].label, groups[1].label))
    else:
        review.notes.append(S.NEED_REPLICATES)


def _predictions(run_id: str, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    snap = store.load_snapshot(run_id, epoch)
    if C.PRED_CLASS not in snap or C.PRED_CONFIDENCE not in snap:
        raise store.StoreError(f"{C.snapshot_path(epoch)} of run {run_id[:8]} holds no per-image predictions")
    return snap[C.PRED_CLASS], snap[C.PRED_CONFIDENCE]


def load_review(comp: Comparison, groups: list[R.Group], epoch=None) -> Review | None:
    """The review of the page's two sides at `epoch` (default, or when they lack it: the last common snapshot)."""
    found = sides(comp, groups)
    if found is None:
        return None
    run_a, run_b, two_groups = found
    names = {r.info.run_id: run_label(r) for r in comp.runs}
    if names[run_a] == names[run_b]:  # seeds of one config share a name
        names = {rid: f"{name} ({rid[:8]})" for rid, name in names.items()}
    review = Review(names[run_a], names[run_b], run_a, run_b) if two_groups is None else \
        Review(two_groups[0].label, two_groups[1].label, run_a, run_b)
    if two_groups is not None:
        _config_part(review, comp, two_groups)
    elif len(groups) == 2:  # two configs, one seed each
        review.notes.append(S.NEED_REPLICATES)
    review.epochs = sorted(set(store.snapshot_epochs(run_a)) & set(store.snapshot_epochs(run_b)))
    if not review.epochs:
        review.notes.append("These runs share no snapshot epoch, so their per-image predictions cannot be compared.")
        return review
    asked = _int(epoch)
    review.epoch = asked if asked in review.epochs else review.epochs[-1]
    if asked is not None and asked != review.epoch:
        review.notes.append(f"Epoch {asked} is not a snapshot both runs have; showing epoch {review.epoch}.")
    try:
        review.preds = {"a": _predictions(run_a, review.epoch), "b": _predictions(run_b, review.epoch)}
    except store.StoreError as e:
        review.notes.append(str(e))
        return review
    review.test_set = store.test_set()
    labels = review.test_set[1]
    review.pair = S.mcnemar_pair(review.preds["a"][0], review.preds["b"][0], labels)
    review.diff = D.image_diff(labels, review.preds["a"][0], review.preds["b"][0], review.preds["b"][1])
    if two_groups is None:
        review.sentences.append(S.pair_verdict(review.pair, review.name_a, review.name_b))
    return review


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def confusion_delta_figure(review: Review) -> go.Figure:
    """B − A per (true digit, predicted digit): blue where B puts more images, red where fewer."""
    delta = review.diff.confusion_delta
    vmax = max(1, int(np.abs(delta).max()))
    digits = [str(d) for d in range(D.N_CLASSES)]
    fig = go.Figure(go.Heatmap(
        z=delta, x=digits, y=digits, text=delta, texttemplate="%{text}", colorscale=DIVERGING, zmid=0,
        zmin=-vmax, zmax=vmax, colorbar=dict(title=dict(text="B − A")),
        hovertemplate="true %{y}, predicted %{x}<br>B − A: %{z} images<extra></extra>"))
    fig.update_layout(template=template(), height=380, title=f"Confusion matrix B − A at epoch {review.epoch} "
                                                          "(diagonal: more right in B is blue)")
    fig.update_xaxes(title="predicted digit", type="category")
    fig.update_yaxes(title="true digit", type="category", autorange="reversed")
    return fig


def gallery(review: Review, index: np.ndarray, limit: int = D.GALLERY) -> html.Div:
    """Test images with the true digit and both runs' predictions and confidences."""
    images, labels = review.test_set
    (pa, ca), (pb, cb) = review.preds["a"], review.preds["b"]
    tiles = [html.Div([
        html.Img(src=png_uri(ink(images[i]), 2), width=56, height=56, title=f"test image {i}"),
        html.Div(f"true {labels[i]}", className="small"),
        html.Div(f"A {pa[i]} ({ca[i]:.2f})", className="small muted"),
        html.Div(f"B {pb[i]} ({cb[i]:.2f})", className="small muted"),
    ], style={"textAlign": "center", "width": "76px"}, className="sweep-gallery-item") for i in index[:limit]]
    more = len(index) - limit
    return html.Div([html.Div(tiles, className="row", style={"flexWrap": "wrap", "gap": "6px"}),
                     html.Div(f"and {more} more", className="muted small") if more > 0 else None])
