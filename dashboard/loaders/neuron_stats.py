"""A run's neurons as the layer and unit pages see them: activations, statistics, names and matches, cached.

Every function takes the run as resolved once (dashboard.loaders.neuron_target.Target) and never looks
it up again.  A run's hidden activations at one snapshot epoch are recomputed from that snapshot's
weights over the 10,000 test images once per run and epoch, and every layer's statistics once per
run, layer and epoch.  A logged snapshot never changes, so these caches (neuron_target.memoize_by:
keyed by tracking URI, run id, epoch..., emptied by dashboard.read.cache.clear()) never go stale.
Names and notes are tags a person may change at any time: they come with the target, which every page
and callback resolves afresh.
"""
from dataclasses import dataclass

import numpy as np
import torch

from common import neurons as N
from dashboard.loaders import logged_activations as logged
from dashboard.loaders.neuron_target import Target, memoize_by
from dashboard.read import cache, store
from dashboard.read.store import StoreError
from training import contract as C
from training.nets.activations import Activations, compute_activations
from training.nets.architecture import layers_of


@cache.memoize(1)
def _test_inputs() -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    images, labels = store.test_set()
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    return x, images, np.asarray(labels, dtype=np.int64)


def test_inputs() -> torch.Tensor:
    """The (10000, 784) float test images in [0, 1], as the network sees them."""
    return _test_inputs()[0]


def test_images() -> tuple[np.ndarray, np.ndarray]:
    """(10000, 28, 28) uint8 test images and their labels."""
    _, images, labels = _test_inputs()
    return images, labels


@memoize_by(32, lambda t, upto: (t.run_id, t.epoch, upto))
def _activations(t: Target, upto: int | None) -> tuple[Activations, ...]:
    if t.own_loop:  # a run from the user's own loop: its units as logged, no forward pass
        return tuple(Activations(a, None) for a in logged.hidden_units(t))[:upto]
    layers = layers_of(t.config)
    snapshot = store.complete_weights(t.run_id, t.epoch, [l.name for l in layers])
    out = tuple(compute_activations(t.config, snapshot, test_inputs(), upto))
    for layer, a in zip(layers, out):
        if not np.isfinite(a.acts).all():  # finite weights too large for float32: inf, then inf - inf
            raise StoreError(f"{layer.name}'s activations at epoch {t.epoch} are not finite: its weights are too "
                             f"large to evaluate (the run diverged?)")
    return out


def layer_activations(t: Target) -> Activations:
    """The target layer's activations at its epoch (cached per run and epoch); a CNN's first layer alone
    runs only that layer."""
    if t.kind == "conv" and t.layer == 1:
        return _activations(t, 1)[0]
    return _activations(t, None)[t.layer - 1]


@memoize_by(64, lambda t: (t.run_id, t.layer, t.epoch, t.activation, t.kind == "conv"))
def layer_stats(t: Target) -> N.LayerStats:
    images, labels = test_images()
    a = layer_activations(t)
    return N.layer_stats(a.acts, labels, images, floor=logged.unit_floor(t.activation, a.acts), tiebreak=a.pre)


def weights(t: Target) -> np.ndarray:
    """The layer's weights at the target epoch, PyTorch layout: (units, in) or (units, in, kh, kw)."""
    return store.complete_weights(t.run_id, t.epoch, [t.layer_name])[C.weight_key(t.layer_name)]


def neuron_labels(t: Target) -> dict[int, dict]:
    """{unit: {"name": ..., "note": ...}} of t's layer, from the run's tags as resolve read them (each page and
    callback resolves afresh, so a name another person just gave is seen)."""
    out: dict[int, dict] = {}
    for layer, unit, field, value in t.labels:
        if layer == t.layer:
            out.setdefault(unit, {})[field] = value
    return out


def comparable_runs(t: Target) -> list[dict]:
    """Runs of the same experiment (a sweep) whose layers up to t.layer have the same names, so their
    units see the same input; the same architecture first.  Snapshots are checked when one is picked.
    """
    want = list(t.names[:t.layer])
    # Layer names come from our trainer (fc1, conv2); only such names go into the filter string.
    like = f"params.{C.PARAM_LAYERS} LIKE '{','.join(want)},%'" if all(n.isidentifier() for n in want) else ""
    out = []
    for r in store.search_runs([t.experiment_id], like):
        layers = store.layer_names(r)
        if r.info.run_id == t.run_id or layers[:t.layer] != want or len(layers) <= t.layer:
            continue
        name = r.info.run_name or r.info.run_id[:8]
        label = f"{name} · {store.arch_label(r.data.params) or '?'} · {r.info.run_id[:8]}"
        out.append({"label": label, "value": r.info.run_id, "_key": store.arch_label(r.data.params) != t.arch_label})
    out.sort(key=lambda d: d.pop("_key"))
    return out


@dataclass(frozen=True)
class Match:
    other: Target
    unit: int  # the other run's matching unit
    corr: float
    method: str


def best_match(t: Target, unit: int, other: Target) -> Match:
    """The unit of another run (resolved by neuron_target.counterpart: same layer, same epoch if it has it)
    most like `unit`."""
    match, corr, method = matching(t, other)
    return Match(other=other, unit=int(match[unit]), corr=float(corr[unit]), method=method)


@memoize_by(64, lambda a, b: (a.run_id, b.run_id, a.layer, a.epoch, b.epoch, a.kind == "conv"))
def matching(a: Target, b: Target):
    """(match, corr, method) for every unit of a's layer against b's (common.neurons.match_units)."""
    return N.match_units(layer_activations(a).acts, layer_activations(b).acts)
