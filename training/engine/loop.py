"""The training engine: trains a cohort of K configs as one stacked computation.

A cohort is configs that share everything that fixes tensor shapes and the
step count (see `training.engine.cohorts`).  A single run is a cohort of one, so
`training.train` and `training.grid` run exactly the same code.

The engine knows nothing of MLflow: it reports each model's epochs to a sink
(see `training.tracking.mlflow_sink`).  Epoch 0 is the untrained network.

Each epoch's evaluation runs here, on the training thread, before the next epoch.
It was tried on a second thread, overlapping the next epoch: any thread that runs
torch ops gets its own OpenMP thread team, and on this 2-core machine that made
every training step 2-3x slower, even while the evaluation thread sat idle
(benchmarks/grid_throughput.py; the evaluation itself adds about a tenth).
MLflow's writes do go to a background thread (training.tracking.mlflow_sink), as they run no
torch ops.
"""
import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch

from training import contract as C
from training.config import RunConfig
from training.engine import interrupt
from training.engine.cohorts import cohort_key, steps_per_epoch
from training.engine.evaluation import Evaluator, snapshot
from training.engine.steps import make_stepper
from training.nets.data import Mnist
from training.nets.models import StackedNet, init_params

TRAIN_EVAL_SIZE = 10_000  # train metrics use this fixed prefix of the training set
GRAD0_BATCHES = 10  # epoch 0's grad_norm: mean over this many mini-batches at the initial weights
# A loss above this multiple of the untrained network's loss has diverged, finite or not: with
# softmax cross-entropy, exploding weights give huge but finite losses rather than NaN.
DIVERGENCE_FACTOR = 10.0
PROGRESS_TICKS = 20  # progress updates (and stop-request checks) per epoch


class Sink(Protocol):
    def log_epoch(self, k: int, epoch: int, metrics: dict[str, float],
                  snapshot: dict[str, np.ndarray] | None) -> None: ...

    def fail(self, k: int, reason: str) -> None: ...


# stop(k, epoch, metrics): True when model k should stop training after this logged epoch.
Stop = Callable[[int, int, dict[str, float]], bool]


@dataclass
class CohortResult:
    params: list[dict[str, torch.Tensor] | None]  # final parameters per model; None for a failed or stopped one


def divergence(epoch: int, train_loss: float, initial_loss: float, values: list[float]) -> str | None:
    """Why a model has diverged at this epoch, or None: a NaN or inf among `values` (its metrics and gradient
    norms), or a train loss over DIVERGENCE_FACTOR times the untrained network's."""
    finite = all(math.isfinite(v) for v in values)
    if finite and not train_loss > DIVERGENCE_FACTOR * initial_loss:
        return None
    why = "NaN or inf" if not finite else f"over {DIVERGENCE_FACTOR:g}x the untrained loss {initial_loss:.3g}"
    return f"diverged at epoch {epoch}: train loss {train_loss:.4g} ({why}); try a smaller lr"


def epoch_metrics(train: tuple[float, float], test: tuple[float, float], seconds: float,
                  grad_norms: dict[str, float], dead_fractions: dict[str, float],
                  val: tuple[float, float] | None = None) -> dict[str, float]:
    """One model's logged metrics for one epoch: (loss, accuracy) on train, test and (with val_size) the
    held-out images, the epoch's training time, and per layer its mean weight-gradient norm and (hidden
    layers) its fraction of dead units."""
    metrics = {C.TRAIN_LOSS: train[0], C.TRAIN_ACC: train[1], C.TEST_LOSS: test[0], C.TEST_ACC: test[1],
               C.EPOCH_SECONDS: seconds}
    if val is not None:
        metrics[C.VAL_LOSS], metrics[C.VAL_ACC] = val
    metrics.update({C.grad_norm_key(layer): v for layer, v in grad_norms.items()})
    metrics.update({C.dead_fraction_key(layer): v for layer, v in dead_fractions.items()})
    return metrics


def wants_snapshot(epoch: int, config: RunConfig) -> bool:
    """Every snapshot_every epochs from the untrained net on, and always the last epoch."""
    return epoch % config.snapshot_every == 0 or epoch == config.epochs


def held_out(data: Mnist, config: RunConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation images: the last val_size of the training set, never among the first train_size."""
    n = len(data.train_x)
    if config.train_size + config.val_size > n:
        raise ValueError(f"train_size {config.train_size} + val_size {config.val_size} exceed the {n} training images")
    return data.train_x[n - config.val_size:], data.train_y[n - config.val_size:]


class _Cohort:
    """One cohort's training state: the stacked net, its stepper, and which models are still alive."""

    def __init__(self, configs: list[RunConfig], data: Mnist, sink: Sink, progress, stop: Stop | None = None):
        first = self.first = configs[0]
        self.configs, self.data, self.sink, self.progress, self.stop = configs, data, sink, progress, stop
        self.generators = [torch.Generator().manual_seed(c.seed) for c in configs]
        self.net = StackedNet(first, [init_params(c, g) for c, g in zip(configs, self.generators)])
        self.evaluator = Evaluator(self.net, first)
        self.x_train, self.y_train = data.train_x[:first.train_size], data.train_y[:first.train_size]
        self.x_val, self.y_val = held_out(data, first)
        self.stepper = make_stepper(configs, self.net, self.x_train, self.y_train)
        self.alive = [True] * len(configs)
        self.initial_loss = [math.inf] * len(configs)
        self.n_steps = steps_per_epoch(first)

    def untrained_grad_norms(self) -> torch.Tensor:
        """Epoch 0's gradient norms: from a few fixed mini-batches, with no update."""
        k_models, bs, n = len(self.configs), self.first.batch_size, len(self.x_train)
        n0 = min(GRAD0_BATCHES, self.n_steps)
        norms = torch.zeros(n0, len(self.net.layers), k_models)
        for s in range(n0):
            self.stepper.step(torch.arange(s * bs, min((s + 1) * bs, n)).repeat(k_models), norms[s], update=False)
        return self._mean_norms(norms)

    def train_epoch(self) -> tuple[torch.Tensor, float]:
        """One epoch of steps for every live model.  Returns its mean gradient norms and its seconds."""
        start = time.perf_counter()
        tick = max(1, self.n_steps // PROGRESS_TICKS)
        perm = torch.stack([torch.randperm(len(self.x_train), generator=g) for g in self.generators])
        norms = torch.zeros(self.n_steps, len(self.net.layers), len(self.configs))
        done = 0
        # No chunk spans more than a tick, so progress and Ctrl-C keep their pace whatever the batch size.
        for idx in _batches(perm, self.first.batch_size, min(self.stepper.chunk, tick)):
            self.stepper.steps(idx, norms[done:done + len(idx)])
            ticks = (done + len(idx)) // tick - done // tick
            done += len(idx)
            if ticks:
                interrupt.check()
                self._progress(ticks * tick)
        self._progress(self.n_steps % tick)
        return self._mean_norms(norms), time.perf_counter() - start

    def report(self, epoch: int, grad_norms: torch.Tensor, seconds: float) -> None:
        """Evaluate the live models; report each one's epoch, or its divergence, to the sink."""
        live = [k for k, alive in enumerate(self.alive) if alive]
        # Models that left the stack (diverged, pruned) are not evaluated: a search prunes most of its stack.
        net, evaluator = self.net, self.evaluator
        if len(live) < len(self.configs):
            net = self.net.subset(live)
            evaluator = Evaluator(net, self.first)
        ev = evaluator.full(self.data.test_x, self.data.test_y)
        x, y = self.x_train[:TRAIN_EVAL_SIZE], self.y_train[:TRAIN_EVAL_SIZE]
        train_loss, train_acc = evaluator.loss_acc(x, y)
        val_loss, val_acc = evaluator.loss_acc(self.x_val, self.y_val) if len(self.x_val) else (None, None)
        dead = ev.dead_fractions(self.first.activation)
        layers = [layer.name for layer in self.net.layers]
        for j, k in enumerate(live):  # j: the model's place among the evaluated, k: in the stack
            config = self.configs[k]
            if epoch == 0:
                self.initial_loss[k] = float(train_loss[j])
            train, test = (float(train_loss[j]), float(train_acc[j])), (float(ev.loss[j]), float(ev.acc[j]))
            val = None if val_loss is None else (float(val_loss[j]), float(val_acc[j]))
            norms = dict(zip(layers, grad_norms[k].tolist()))
            why = divergence(epoch, train[0], self.initial_loss[k], [*train, *test, *(val or ()), *norms.values()])
            if why:
                self.alive[k] = False
                self.stepper.disable(k)
                self.sink.fail(k, why)
                continue
            metrics = epoch_metrics(train, test, seconds, norms, {l: float(d[j]) for l, d in zip(layers, dead)}, val)
            snap = snapshot(net, self.first, j, ev, self.data.test_y) if wants_snapshot(epoch, config) else None
            self.sink.log_epoch(k, epoch, metrics, snap)
            if self.stop is not None and self.stop(k, epoch, metrics):  # it leaves the stack; the caller ended its run
                self.alive[k] = False
                self.stepper.disable(k)

    def final_params(self) -> list[dict[str, torch.Tensor] | None]:
        return [self.net.model_params(k) if alive else None for k, alive in enumerate(self.alive)]

    def _mean_norms(self, raw: torch.Tensor) -> torch.Tensor:
        return self.stepper.grad_norms(raw).double().mean(0).t()  # (steps, layers, K) -> (K, layers)

    def _progress(self, steps: int) -> None:
        if self.progress is not None:
            self.progress.update(sum(self.alive) * steps)


def train_cohort(configs: list[RunConfig], data: Mnist, sink: Sink, progress=None,
                 stop: Stop | None = None) -> CohortResult:
    """Train every config of one cohort together; report each model's epochs to `sink`.  `stop`, asked
    after each logged epoch, takes a model out of the stack when it says so (a search's pruner)."""
    assert all(cohort_key(c) == cohort_key(configs[0]) for c in configs), "configs are not one cohort"
    cohort = _Cohort(configs, data, sink, progress, stop)
    cohort.report(0, cohort.untrained_grad_norms(), 0.0)
    for epoch in range(1, configs[0].epochs + 1):
        if not any(cohort.alive):
            break
        grad_norms, seconds = cohort.train_epoch()
        interrupt.check()
        cohort.report(epoch, grad_norms, seconds)
    return CohortResult(cohort.final_params())


def _batches(perm: torch.Tensor, bs: int, chunk: int):
    """The epoch's steps in chunks of up to `chunk`: (S, K*B), model k's rows of a step at [k*B, (k+1)*B).

    Laid out once per epoch, so a chunk is a slice of one contiguous tensor, not a strided one to
    copy: model k's batch j is perm[k, j*B:(j+1)*B], a last short one included as a chunk of its own.
    """
    k, n = perm.shape
    full = n // bs
    steps = perm[:, :full * bs].reshape(k, full, bs).transpose(0, 1).reshape(full, k * bs)
    yield from steps.split(chunk)
    if n % bs:
        yield perm[:, full * bs:].reshape(1, -1)
