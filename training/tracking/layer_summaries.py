"""Run-level summaries of each hidden layer at a run's last snapshot, logged as MLflow metrics.

Per hidden layer (C.unit_summary_key): how many units are class-selective, feature-selective and dead,
the mean selectivity index over its units, and how many are critical: switching one off alone costs at
least a point of test accuracy (training.nets.ablation, the ablation page's numbers).  The verdicts are the
neuron pages' own (common.neurons.layer_stats over the activations training.nets.activations computes
from the snapshot's weights on the 10,000 test images), so a sweep's "12 class-selective units in fc1"
is the count the layer page shows.  Logged when a built-in run ends (training.tracking.mlflow_sink) and by
`python -m training.backfill_summaries` for runs already in a store.
"""
import time

import numpy as np
import torch
from mlflow.entities import Metric

from common import mnist_idx
from common import neurons as N
from training import contract as C
from training.config import RunConfig
from training.errors import UserError
from training.nets.ablation import ablate_units
from training.nets.activations import compute_activations
from training.nets.architecture import layers_of
from training.tracking.store_connection import retry


def _test_set() -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The shared verified test set (common.mnist_idx.test_set): as the network's float input, and as stored."""
    try:
        images, labels = mnist_idx.test_set()
    except mnist_idx.MnistFileError as e:
        raise UserError(str(e)) from None
    return torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0), images, labels


def layer_summary(layer: str, acts: np.ndarray, labels: np.ndarray, images: np.ndarray, activation: str,
                  pre: np.ndarray | None = None) -> dict[str, float]:
    """One hidden layer's four summary metrics from its (N, units) test-set activations."""
    stats = N.layer_stats(acts, labels, images, floor=N.activation_floor(activation), tiebreak=pre)
    kinds = [v.split(" ")[0] for v in stats.verdicts]
    return {C.unit_summary_key(layer, "class_selective"): float(kinds.count("class-selective")),
            C.unit_summary_key(layer, "feature_selective"): float(kinds.count("feature-selective")),
            C.unit_summary_key(layer, "dead"): float(kinds.count("dead")),
            C.unit_summary_key(layer, "mean_si"): float(np.mean(stats.si))}


def summaries(config: RunConfig, snapshot: dict[str, np.ndarray]) -> dict[str, float]:
    """Every hidden layer's summaries from one snapshot's weights; a layer whose activations are not
    finite (a diverged run) gets none."""
    x, images, labels = _test_set()
    out = {}
    for i, (layer, a) in enumerate(zip(layers_of(config), compute_activations(config, snapshot, x))):
        if np.isfinite(a.acts).all():
            out.update(layer_summary(layer.name, a.acts, labels, images, config.activation, a.pre))
            critical = ablate_units(config, snapshot, x, labels, i).critical
            out[C.unit_summary_key(layer.name, "critical")] = float(critical)
    return out


def unit_summaries(units: dict[str, np.ndarray], activations: dict[str, str]) -> dict[str, float]:
    """A run from the user's own loop: each hidden layer's four verdict counts from the units it logged on the
    test set (layer -> (N, units)), the same verdicts as a built-in run's.  No `critical`: that reruns the
    network, and such a run's model code is not in the store."""
    _, images, labels = _test_set()
    out = {}
    for layer, acts in units.items():
        acts = np.asarray(acts, dtype=np.float32)
        if acts.shape[0] == len(labels) and np.isfinite(acts).all():
            out.update(layer_summary(layer, acts, labels, images, activations.get(layer, "")))
    return out


def snapshot_of(config: RunConfig, params: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A model's parameters ({'fc1.weight': tensor, ...}) in a snapshot's keys."""
    out = {}
    for layer in layers_of(config):
        out[C.weight_key(layer.name)] = params[f"{layer.name}.weight"].detach().cpu().numpy()
        out[C.bias_key(layer.name)] = params[f"{layer.name}.bias"].detach().cpu().numpy()
    return out


def log(client, run_id: str, values: dict[str, float], epoch: int) -> None:
    ts = int(time.time() * 1000)
    retry(client.log_batch, run_id, metrics=[Metric(k, v, ts, int(epoch)) for k, v in values.items()])


def log_at_end(client, run_id: str, config: RunConfig, params: dict[str, torch.Tensor], epoch: int | None) -> None:
    """What a built-in run logs as it ends: its final parameters are its last snapshot (the engine always
    snapshots the last epoch).  A failure here must not fail a run that trained: it is reported and skipped."""
    try:
        log(client, run_id, summaries(config, snapshot_of(config, params)), epoch if epoch is not None else config.epochs)
    except Exception as e:  # noqa: BLE001 (the run's own result matters more than its summaries)
        print(f"warning: run {run_id[:8]}: layer summaries not logged ({str(e).splitlines()[0][:160]}); "
              f"`python -m training.backfill_summaries` adds them later")
