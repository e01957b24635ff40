"""The hidden units of a run from the user's own loop (training.own_loop), read as it logged them.

Such a run's model code is not in the store, so its activations cannot be recomputed from a snapshot
as a built-in run's are (training.nets.activations).  Instead it logged each hidden layer's units
on the 10,000 test images at every snapshot epoch: `unit_activations/epoch_NNNN.npz`, one float16
(10000, units) array per layer, read here through snapshot_reader's checked reader (headers first,
plain numbers only, exact shapes from the run's logged layer structure, a byte budget).  The run's
layers come resolved (dashboard.loaders.neuron_target.Target): nothing here looks the run up.

A logged file never changes, so what is read is kept, per run and epoch (neuron_target.memoize_by).
"""
import numpy as np

from dashboard.loaders.neuron_target import Target, memoize_by
from dashboard.read import store
from training import contract as C
from training.nets.architecture import N_TEST
from training.nets.snapshot_reader import SnapshotError

HEADROOM_BYTES = 1_000_000  # zip and .npy headers
FLOOR_OF = {"sigmoid": 0.0, "relu": 0.0, "relu6": 0.0, "tanh": -1.0}  # the lowest value each can take


def unit_floor(activation: str, acts: np.ndarray) -> float:
    """Where a unit's activation starts: the activation's own floor, else the layer's lowest value."""
    return FLOOR_OF.get(activation, float(np.min(acts)) if acts.size else 0.0)


@memoize_by(8, lambda t: (t.run_id, t.epoch))
def hidden_units(t: Target) -> tuple[np.ndarray, ...]:
    """Every hidden layer's (10000, units) float32 activations at t's snapshot epoch; StoreError in one line."""
    if not t.own_loop:
        raise store.StoreError(f"run {t.run_id[:8]} was not logged from its own loop: it logged no unit activations")
    run_id, epoch, hidden = t.run_id, t.epoch, t.specs[:-1]
    wanted = {C.unit_acts_key(l.name): (N_TEST, l.units) for l in hidden}
    budget = sum(units * N_TEST for _, units in wanted.values()) * 2 + HEADROOM_BYTES
    path = C.activations_path(int(epoch))
    try:
        arrays = store.read_arrays(run_id, path, wanted, budget)
    except SnapshotError as e:  # a listed snapshot without its units, or a file that is not what was logged
        raise store.StoreError(f"{path} of run {run_id[:8]} cannot be shown: {e}") from None
    out = []
    for key in wanted:
        if key not in arrays:
            raise store.StoreError(f"{path} of run {run_id[:8]} has no {key}")
        a = arrays[key]
        if a.dtype.kind != "f" or not np.isfinite(a).all():
            raise store.StoreError(f"{path} of run {run_id[:8]}: {key} is not finite floating point")
        out.append(a.astype(np.float32))
    return tuple(out)
