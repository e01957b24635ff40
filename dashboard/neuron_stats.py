"""A run's neurons as the layer and unit pages see them: activations, statistics, names and matches, cached.

A run's hidden activations at one snapshot epoch are recomputed from that snapshot's weights
over the 10,000 test images once per run and epoch, and every layer's statistics once per
run, layer and epoch.  A logged snapshot never changes, so these caches (dashboard.cache's
memoize: keyed by tracking URI, emptied by cache.clear()) never go stale.  Names and notes are
tags a person may change at any time: they are read fresh.
"""
from dataclasses import dataclass

import numpy as np
import torch

from dashboard import cache, store
from dashboard import logged_activations as logged
from dashboard.analytics import neurons as N
from dashboard.neuron_activations import Activations, compute_activations
from dashboard.neuron_target import Target, resolve, run_config
from dashboard.store import StoreError
from training import contract as C
from training.architecture import layers_of


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


@cache.memoize(32)
def _activations(run_id: str, epoch: int, upto: int | None) -> tuple[Activations, ...]:
    run = store.get_run(run_id)
    if logged.is_logged(run):  # a run from the user's own loop: its units as logged, no forward pass
        return tuple(Activations(a, None) for a in logged.hidden_units(run_id, epoch))[:upto]
    config = run_config(run)
    layers = layers_of(config)
    snapshot = store.complete_weights(run_id, epoch, [l.name for l in layers])
    out = tuple(compute_activations(config, snapshot, test_inputs(), upto))
    for layer, a in zip(layers, out):
        if not np.isfinite(a.acts).all():  # finite weights too large for float32: inf, then inf - inf
            raise StoreError(f"{layer.name}'s activations at epoch {epoch} are not finite: its weights are too "
                             f"large to evaluate (the run diverged?)")
    return out


def layer_activations(run_id: str, epoch: int, layer: int, arch_is_cnn: bool = False) -> Activations:
    """A hidden layer's activations for a validated run, snapshot epoch and 1-based layer (cached)."""
    if arch_is_cnn and layer == 1:
        return _activations(run_id, epoch, 1)[0]
    return _activations(run_id, epoch, None)[layer - 1]


@cache.memoize(64)
def _layer_stats(run_id: str, layer: int, epoch: int, activation: str, cnn: bool) -> N.LayerStats:
    images, labels = test_images()
    a = layer_activations(run_id, epoch, layer, cnn)
    return N.layer_stats(a.acts, labels, images, floor=logged.unit_floor(activation, a.acts), tiebreak=a.pre)


def layer_stats(t: Target) -> N.LayerStats:
    return _layer_stats(t.run_id, t.layer, t.epoch, t.activation, t.kind == "conv")


def weights(t: Target) -> np.ndarray:
    """The layer's weights at the target epoch, PyTorch layout: (units, in) or (units, in, kh, kw)."""
    return store.complete_weights(t.run_id, t.epoch, [t.layer_name])[C.weight_key(t.layer_name)]


def neuron_labels(run_id: str, layer: int) -> dict[int, dict]:
    """{unit: {"name": ..., "note": ...}} from the run's tags, read fresh (another person may just have named one)."""
    out: dict[int, dict] = {}
    for key, value in store.get_run(run_id).data.tags.items():
        if (found := C.neuron_tag_unit(layer, key)) is not None:
            unit, field = found
            out.setdefault(unit, {})[field] = value
    return out


def comparable_runs(t: Target) -> list[dict]:
    """Runs of the same experiment (a sweep) whose layers up to t.layer have the same names, so their
    units see the same input; the same architecture first.  Snapshots are checked when one is picked.
    """
    this = store.get_run(t.run_id)
    want = store.layer_names(this)[:t.layer]
    # Layer names come from our trainer (fc1, conv2); only such names go into the filter string.
    like = f"params.{C.PARAM_LAYERS} LIKE '{','.join(want)},%'" if all(n.isidentifier() for n in want) else ""
    arch = store.arch_label(this.data.params)
    out = []
    for r in store.search_runs([this.info.experiment_id], like):
        layers = store.layer_names(r)
        if r.info.run_id == t.run_id or layers[:t.layer] != want or len(layers) <= t.layer:
            continue
        name = r.info.run_name or r.info.run_id[:8]
        label = f"{name} · {store.arch_label(r.data.params) or '?'} · {r.info.run_id[:8]}"
        out.append({"label": label, "value": r.info.run_id, "_key": store.arch_label(r.data.params) != arch})
    out.sort(key=lambda d: d.pop("_key"))
    return out


@dataclass(frozen=True)
class Match:
    other: Target
    unit: int  # the other run's matching unit
    corr: float
    method: str


def best_match(t: Target, unit: int, other_run_id: str) -> Match:
    """The unit of another run (same layer, same epoch if it has it, else its last) most like `unit`."""
    epochs = store.snapshot_epochs(store.check_run_id(other_run_id))
    if not epochs:
        raise StoreError(f"run {other_run_id} logged no weight snapshots to match against")
    other = resolve(other_run_id, t.layer, t.epoch if t.epoch in epochs else epochs[-1])
    if other.layer_name != t.layer_name:
        raise StoreError(f"run {other_run_id[:8]}'s layer {t.layer} is {other.layer_name}, not {t.layer_name}")
    match, corr, method = matching(t.run_id, other_run_id, t.layer, t.epoch, other.epoch, t.kind == "conv")
    return Match(other=other, unit=int(match[unit]), corr=float(corr[unit]), method=method)


@cache.memoize(64)
def matching(run_a: str, run_b: str, layer: int, epoch_a: int, epoch_b: int, cnn: bool):
    """(match, corr, method) for every unit of run_a's layer against run_b's (analytics.neurons.match_units)."""
    a = layer_activations(run_a, epoch_a, layer, cnn).acts
    b = layer_activations(run_b, epoch_b, layer, cnn).acts
    return N.match_units(a, b)
