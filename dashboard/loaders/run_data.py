"""What the run page shows, read from the store: plain data in, plain data out, no Dash and no figures.

pages/run_detail.py turns these into figures (views/run_detail_view.py) and messages.  Every read goes
through dashboard.read.store; what is kept follows dashboard.read.cache's rule, so a finished run's loss
landscape is computed once per (run, snapshot epochs).  Unreadable snapshots raise store.StoreError,
params from another tool training.config.ConfigError: both are one line for the page to show.
"""
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common import mnist_idx
from dashboard.analytics import health, landscape
from dashboard.loaders import own_model
from dashboard.loaders.neuron_target import resolve
from dashboard.read import cache, store
from training import contract as C
from training.config import RunConfig
from training.nets import data as mnist
from training.nets.architecture import Layer

PROGRESS_KEYS = (C.TRAIN_LOSS, C.TEST_LOSS, C.TRAIN_ACC, C.TEST_ACC)
LANDSCAPE_IMAGES = {"mlp": 1000, "cnn": 300}  # fixed prefix of the training set the loss is evaluated on
LANDSCAPE_RESOLUTION = {"mlp": 21, "cnn": 11}
# A model from the user's own loop may be far larger than ours (pytorch/examples' CNN: 12 M multiply-adds an
# image, 40 times our CNN's): its landscape gets fewer images, so the grid costs about this many (some 10 s on 2 cores).
OWN_LANDSCAPE_MACS = 6e10
OWN_LANDSCAPE_MIN_IMAGES = 50
N_SAMPLES = 16  # the first test images, shown with their predictions
TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")

_landscapes = cache.LRU(32)  # (run id, snapshot epochs) -> Landscape, finished runs only


@dataclass
class Overview:
    """Everything above the epoch slider: curves, the architecture and the health checks."""
    params: dict[str, str]
    layers: list[str]  # weight layers, input to output; every one but the last is hidden
    histories: dict[str, pd.DataFrame]  # the contract's metrics this run logged, by key
    other_metrics: dict[str, pd.DataFrame]  # every metric it logged, when it has none of PROGRESS_KEYS
    model: list[Layer] | None  # None when its params describe no model of ours ...
    model_problem: str  # ... and why
    warnings: list[health.HealthWarning]
    health_problem: str  # why the checks could not run ('' when they did)

    @property
    def hidden(self) -> list[str]:
        return self.layers[:-1]

    def progress(self) -> dict[str, pd.DataFrame]:
        return {k: self.histories[k] for k in PROGRESS_KEYS if k in self.histories}

    def grad_norms(self) -> dict[str, pd.DataFrame]:
        return {l: self.histories[C.grad_norm_key(l)] for l in self.layers if C.grad_norm_key(l) in self.histories}

    def dead(self) -> dict[str, pd.DataFrame]:
        return {l: self.histories[k] for l in self.hidden if (k := C.dead_fraction_key(l)) in self.histories}


def overview(run_id: str) -> Overview:
    run = store.get_run(run_id)
    layers = store.layer_names(run)
    keys = [*PROGRESS_KEYS, *map(C.grad_norm_key, layers), *map(C.dead_fraction_key, layers[:-1])]
    hist = {k: df for k in keys if not (df := store.metric_history(run_id, k)).empty}
    other = {} if any(k in hist for k in PROGRESS_KEYS) else \
        {k: store.metric_history(run_id, k) for k in sorted(run.data.metrics)}
    arch = store.layers(run)
    model, model_problem = (list(arch.layers) if arch.layers else None), arch.problem
    warnings, health_problem = _health(run_id, run.data.params.get(C.PARAM_ACTIVATION, ""), layers, hist)
    return Overview(run.data.params, layers, hist, other, model, model_problem, warnings, health_problem)


def _health(run_id: str, activation: str, layers: list[str], hist: dict) -> tuple[list, str]:
    epochs = store.snapshot_epochs(run_id)
    try:
        first = store.load_snapshot(run_id, epochs[0]) if epochs else None
        last = store.load_snapshot(run_id, epochs[-1]) if epochs else None
    except store.StoreError as e:
        return [], str(e)
    warnings = health.run_health({k: df["value"].to_numpy() for k, df in hist.items()}, layers[:-1], layers,
                                 activation, first, last, (epochs[0], epochs[-1]) if epochs else None)
    return warnings, ""


def snapshots(run_id: str) -> tuple[dict[int, dict[str, np.ndarray]], list[str]]:
    """Every snapshot of the run by epoch ({} without any), and its weight layers."""
    run = store.get_run(run_id)
    return {e: store.load_snapshot(run_id, e) for e in store.snapshot_epochs(run_id)}, store.layer_names(run)


@dataclass
class Predictions:
    """The test set and one snapshot's predictions of it, in test-set order."""
    images: np.ndarray  # (10000, 28, 28) uint8
    labels: np.ndarray
    pred: np.ndarray
    confidence: np.ndarray  # NaN where the run logged none
    samples: np.ndarray  # indices of the first N_SAMPLES test images


@dataclass
class EpochData:
    """What the views below the epoch slider show, at one snapshot epoch."""
    epoch: int
    first_epoch: int
    snapshot: dict[str, np.ndarray]
    first: dict[str, np.ndarray] | None  # the first snapshot, when it is another epoch: the outline to compare with
    layers: list[str]
    predictions: Predictions | None  # None when the snapshot has no test predictions


def epoch_data(run_id: str, epoch) -> EpochData | None:
    """The snapshot at `epoch` (the last if that one has none) and what goes with it; None without snapshots."""
    run = store.get_run(run_id)
    epochs = store.snapshot_epochs(run_id)
    if not epochs:
        return None
    epoch = epoch if epoch in epochs else epochs[-1]
    snap = store.load_snapshot(run_id, epoch)
    first = store.load_snapshot(run_id, epochs[0]) if epochs[0] != epoch else None
    predictions = None
    if C.PRED_CLASS in snap:
        images, labels = store.test_set()
        confidence = snap.get(C.PRED_CONFIDENCE, np.full(len(labels), np.nan))
        predictions = Predictions(images, labels, snap[C.PRED_CLASS], confidence, np.arange(N_SAMPLES))
    return EpochData(epoch, epochs[0], snap, first, store.layer_names(run), predictions)


# ---- loss landscape ----------------------------------------------------------------------------

def ready_landscape(run_id: str) -> landscape.Landscape | None:
    """The run's landscape if it was computed before (a finished run's is kept), else None."""
    return _landscapes.get((run_id, tuple(store.snapshot_epochs(run_id))))


def run_landscape(run_id: str) -> landscape.Landscape:
    """The loss landscape over the run's snapshots.  ConfigError for another tool's run, StoreError with < 2 snapshots."""
    run = store.get_run(run_id)
    epochs = tuple(store.snapshot_epochs(run_id))
    if (hit := _landscapes.get((run_id, epochs))) is not None:
        return hit
    if C.PARAM_LAYER_STRUCTURE in run.data.params:
        result = _own_landscape(run_id, epochs)
        return _landscapes.put((run_id, epochs), result) if store.is_finished(run) else result
    config = RunConfig.from_params(run.data.params, where="this run's params")
    if len(epochs) < 2:
        raise store.StoreError("the loss landscape needs at least two weight snapshots")
    x, y = train_prefix(LANDSCAPE_IMAGES[config.arch])
    names = store.layer_names(run)
    result = landscape.loss_landscape(config, [store.complete_weights(run_id, e, names) for e in epochs], list(epochs), x, y,
                                      resolution=LANDSCAPE_RESOLUTION[config.arch])
    # A running run's next snapshot changes the key anyway; only a finished run's is worth keeping.
    return _landscapes.put((run_id, epochs), result) if store.is_finished(run) else result


def _own_landscape(run_id: str, epochs: tuple[int, ...]) -> landscape.Landscape:
    """A run from its own loop: the plane of its weight layers' trajectory, the loss through its logged graph
    (dashboard.loaders.own_model), with the state outside the weight layers (norms) as at the last snapshot."""
    if len(epochs) < 2:
        raise store.StoreError("the loss landscape needs at least two weight snapshots")
    t = resolve(run_id)
    net = own_model.module_at(t)
    arch = "cnn" if any(s.kind == "conv" for s in t.specs) else "mlp"
    points = LANDSCAPE_RESOLUTION[arch] ** 2 + len(epochs)
    per_image = sum(math.prod(s.out_shape or (s.units,)) * s.fan_in for s in t.specs)  # multiply-adds, as logged
    x, y = train_prefix(int(min(LANDSCAPE_IMAGES[arch], max(OWN_LANDSCAPE_MIN_IMAGES,
                                                               OWN_LANDSCAPE_MACS / (points * per_image)))))
    shapes = {f"body.{s.name}.{part}": shape for s in t.specs
              for part, shape in (("weight", s.weight_shape), ("bias", (s.units,)))}
    thetas = np.stack([landscape.flatten_layers(store.complete_weights(run_id, e, t.names), t.names) for e in epochs])
    acts = sum(math.prod(s.out_shape or (s.units,)) for s in t.specs)
    return landscape.plane_landscape(thetas, lambda points: landscape.module_losses(net, shapes, points, x, y, acts),
                                     list(epochs), len(x), "cross_entropy", LANDSCAPE_RESOLUTION[arch])


@cache.memoize(maxsize=4)
def _verified_train_files(root: str) -> str:
    """Check the two training files' sha256s: once per process and data folder (hashing them takes a moment).
    DataError (a UserError), one line naming the file and the fix, if they are missing or altered."""
    mnist.verify(Path(root), {name: mnist.SHA256[name] for name in TRAIN_FILES})
    return root


def train_prefix(n: int, root: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n training images (float32 in [0, 1], flattened) and labels, as training.nets.data.load gives them.

    Reads n records of the verified raw files (common.mnist_idx) rather than all 60,000 images.
    """
    images, labels = mnist_idx.read_split(_verified_train_files(str(root or mnist.data_root())), True, count=n)
    return torch.from_numpy(images).reshape(n, -1).to(torch.float32).div_(255.0), torch.from_numpy(labels)
