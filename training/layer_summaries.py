"""Run-level summaries of each hidden layer at a run's last snapshot, logged as MLflow metrics.

Per hidden layer: how many units are class-selective, feature-selective and dead, and the mean
selectivity index over its units (C.unit_summary_key).  The verdicts are the neuron pages' own
(dashboard.analytics.neurons.layer_stats over the activations dashboard.neuron_activations computes
from the snapshot's weights on the 10,000 test images), so a sweep's "12 class-selective units in fc1"
is the count the layer page shows.  Logged when a built-in run ends (training.tracking) and by
`python -m training.backfill_summaries` for runs already in a store.
"""
import functools
import time

import numpy as np
import torch
from mlflow.entities import Metric

from dashboard.analytics import neurons as N
from dashboard.neuron_activations import compute_activations
from training import contract as C
from training.architecture import layers_of
from training.config import RunConfig
from training.store_connection import retry


@functools.lru_cache(maxsize=1)
def _test_set() -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    from training.data import load_test_images
    images, labels = (t.numpy() for t in load_test_images())
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    return x, images, labels.astype(np.int64)


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
    for layer, a in zip(layers_of(config), compute_activations(config, snapshot, x)):
        if np.isfinite(a.acts).all():
            out.update(layer_summary(layer.name, a.acts, labels, images, config.activation, a.pre))
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
