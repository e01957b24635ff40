"""A layer's units switched off, one at a time and cumulatively, from a run's snapshot (training.nets.ablation).

Every function takes the run as the page resolved it once (neuron_target.Target) and reads only its
snapshot, by run id.  A logged snapshot never changes, so the answers are cached per run, layer, epoch and
mode (neuron_target.memoize_by: keyed by tracking URI too, emptied by dashboard.read.cache.clear()).
"""
from dataclasses import dataclass

import numpy as np

from dashboard.loaders import neuron_stats as S
from dashboard.loaders.neuron_target import Target, memoize_by
from dashboard.read import store
from dashboard.read.store import StoreError
from training.nets import ablation as A
from training.nets.architecture import layers_of

MODES = {"zero": "set to 0", "mean": "set to its mean over the test set"}


@dataclass(frozen=True)
class Cumulative:
    """Test accuracy (%) as units are removed, k = 0..units, in three kinds of order (Morcos et al. 2018)."""
    by_selectivity: np.ndarray  # (units + 1,) most selective (highest SI) first
    by_drop: np.ndarray  # (units + 1,) largest single-unit ablation drop first
    random: np.ndarray  # (N_RANDOM_ORDERS, units + 1) random orders, fixed seed


def check_mode(mode) -> str:
    """'zero' (the default) or 'mean'; StoreError naming the choices otherwise."""
    if mode in (None, ""):
        return "zero"
    if mode not in MODES:
        raise StoreError(f"mode '{str(mode)[:20]}' is not an ablation mode: use mode=zero or mode=mean")
    return mode


def _snapshot(t: Target) -> dict:
    """The snapshot's weights; StoreError for a run whose network cannot be rebuilt (its own loop's)."""
    if t.config is None:
        raise StoreError(f"No ablation for run {t.run_id[:8]}: it was logged from its own training loop, and "
                         f"ablation reruns only networks built from MNIST Lab's own configs (its logged model "
                         f"graph serves feature visualisation, attributions and the loss landscape)")
    S.layer_activations(t)  # StoreError for weights too large to evaluate (a diverged run), as the layer page
    return store.complete_weights(t.run_id, t.epoch, [layer.name for layer in layers_of(t.config)])


def _test_set() -> tuple:
    """The network's inputs and their labels (both from neuron_stats' one cached read of the test set)."""
    return S.test_inputs(), S.test_images()[1]


@memoize_by(16, lambda t, mode="zero": (t.run_id, t.layer, t.epoch, mode))
def ablation(t: Target, mode: str = "zero") -> A.LayerAblation:
    """Every unit of t's layer switched off alone: right answers per digit."""
    snapshot = _snapshot(t)
    x, labels = _test_set()
    return A.ablate_units(t.config, snapshot, x, labels, t.layer - 1, mode)


@memoize_by(16, lambda t, mode="zero": (t.run_id, t.layer, t.epoch, mode))
def cumulative(t: Target, mode: str = "zero") -> Cumulative:
    """Accuracy as t's layer loses units by selectivity (the layer page's SI), by ablation drop, at random."""
    snapshot = _snapshot(t)
    x, labels = _test_set()
    si = S.layer_stats(t).si
    orders = [np.lexsort((np.arange(len(si)), -si)), A.drop_order(ablation(t, mode)),
              *A.random_orders(t.units)]
    curves = A.cumulative_accuracy(t.config, snapshot, x, labels, t.layer - 1, orders, mode)
    return Cumulative(by_selectivity=curves[0], by_drop=curves[1], random=curves[2:])


def unit_drop(t: Target, unit: int, mode: str = "zero") -> np.ndarray:
    """(10,) accuracy lost on each digit when `unit` alone is switched off, in percentage points."""
    return ablation(t, mode).drop[unit]
