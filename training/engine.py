"""The training engine: trains a cohort of K configs as one stacked computation.

A cohort is configs that share everything that fixes tensor shapes and the
step count (see `cohort_key`); they may differ in lr, momentum, seed, init and
snapshot interval.  A single run is a cohort of one, so `training.train` and
`training.grid` run exactly the same code.

The engine knows nothing of MLflow: it reports each model's epochs to a sink
(see `training.tracking`).  Epoch 0 is the untrained network.
"""
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from training import contract as C
from training import interrupt
from training.config import RunConfig
from training.data import Mnist
from training.models import StackedNet, init_params, output_probs, per_model_loss
from training.steps import make_stepper

TRAIN_EVAL_SIZE = 10_000  # train metrics use this fixed prefix of the training set
EVAL_CHUNK = 2_000
ACT_BINS, CONF_BINS = 40, 20
GRAD0_BATCHES = 10  # epoch 0's grad_norm: mean over this many mini-batches at the initial weights
# A loss above this multiple of the untrained network's loss has diverged, finite or not: with
# softmax cross-entropy, exploding weights give huge but finite losses rather than NaN.
DIVERGENCE_FACTOR = 10.0
SATURATION = 0.01  # a sigmoid unit below 0.01 or above 0.99 (tanh: |a| > 0.98) is saturated


def steps_per_epoch(config: RunConfig) -> int:
    return -(-config.train_size // config.batch_size)


def total_steps(config: RunConfig) -> int:
    """Optimizer steps one model takes over its whole run: the unit of the progress bars."""
    return config.epochs * steps_per_epoch(config)


def cohort_key(config: RunConfig) -> tuple:
    return (config.arch, config.sizes if config.arch == "mlp" else (), config.activation, config.loss,
            config.optimizer, config.batch_size, config.epochs, config.train_size)


class Sink(Protocol):
    def log_epoch(self, k: int, epoch: int, metrics: dict[str, float],
                  snapshot: dict[str, np.ndarray] | None) -> None: ...

    def fail(self, k: int, reason: str) -> None: ...


@dataclass
class CohortResult:
    params: list[dict[str, torch.Tensor] | None]  # final parameters per model; None for a failed one


def _hidden_units(h: torch.Tensor) -> torch.Tensor:
    """A hidden layer's per-unit activation: (K, B, units); a conv channel's is its spatial max."""
    return h.amax(dim=(-2, -1)) if h.dim() == 5 else h


def _dead_mask(a: torch.Tensor, activation: str) -> torch.Tensor:
    """(K, N, units) -> (K, units): units dead (ReLU: 0 everywhere) or saturated on every image."""
    if activation == "relu":
        return (a <= 0).all(dim=1)
    if activation == "tanh":
        return (a.abs() > 1 - 2 * SATURATION).all(dim=1)
    return ((a < SATURATION) | (a > 1 - SATURATION)).all(dim=1)


def _hist(values: torch.Tensor, lo: float, hi: float, bins: int) -> tuple[np.ndarray, np.ndarray]:
    if hi <= lo:
        hi = lo + 1e-6
    counts = torch.histc(values.float(), bins=bins, min=lo, max=hi)
    return counts.to(torch.int64).numpy(), np.linspace(lo, hi, bins + 1, dtype=np.float32)


class Evaluator:
    """Forward passes on fixed data for all K models at once, without gradients."""

    def __init__(self, net: StackedNet, config: RunConfig):
        self.net, self.config = net, config

    @torch.no_grad()
    def loss_acc(self, x: torch.Tensor, y: torch.Tensor):
        loss_sum = torch.zeros(self.net.k, dtype=torch.float64)
        correct = torch.zeros(self.net.k, dtype=torch.int64)
        for i in range(0, len(x), EVAL_CHUNK):
            xb, yb = self._expand(x[i:i + EVAL_CHUNK]), self._expand(y[i:i + EVAL_CHUNK])
            logits, _ = self.net.forward(xb)
            loss_sum += per_model_loss(logits, yb, self.config.loss).double() * len(xb[0])
            correct += (logits.argmax(-1) == yb).sum(1)
        return loss_sum / len(x), correct.double() / len(x)

    @torch.no_grad()
    def full(self, x: torch.Tensor, y: torch.Tensor):
        """Loss, accuracy, predictions, confidences, and each layer's per-unit activations on (x, y)."""
        k = self.net.k
        loss_sum = torch.zeros(k, dtype=torch.float64)
        preds, confs, units = [], [], None
        outputs = []
        for i in range(0, len(x), EVAL_CHUNK):
            xb, yb = self._expand(x[i:i + EVAL_CHUNK]), self._expand(y[i:i + EVAL_CHUNK])
            logits, hidden = self.net.forward(xb, keep_hidden=True)
            loss_sum += per_model_loss(logits, yb, self.config.loss).double() * len(xb[0])
            probs = output_probs(logits, self.config.loss)
            conf, pred = probs.max(-1)
            preds.append(pred)
            confs.append(conf)
            outputs.append(probs)
            chunk_units = [_hidden_units(h) for h in hidden]
            units = [[u] for u in chunk_units] if units is None else [a + [u] for a, u in zip(units, chunk_units)]
        pred = torch.cat(preds, 1)
        return {
            "loss": loss_sum / len(x),
            "acc": (pred == y).double().mean(1),
            "pred": pred,
            "conf": torch.cat(confs, 1),
            "hidden": [torch.cat(u, 1) for u in (units or [])],
            "output": torch.cat(outputs, 1),
        }

    def _expand(self, t: torch.Tensor) -> torch.Tensor:
        return t.unsqueeze(0).expand(self.net.k, *t.shape)


def _snapshot(net: StackedNet, config: RunConfig, k: int, ev: dict, y_test: torch.Tensor) -> dict[str, np.ndarray]:
    snap = {}
    for name, tensor in net.model_params(k).items():
        layer, kind = name.rsplit(".", 1)
        key = C.weight_key(layer) if kind == "weight" else C.bias_key(layer)
        snap[key] = tensor.numpy().astype(np.float32)
    layer_acts = list(zip([l.name for l in net.layers[:-1]], ev["hidden"])) + [(net.layers[-1].name, ev["output"])]
    for name, acts in layer_acts:
        a = acts[k]
        if config.activation == "relu" and name != net.layers[-1].name:
            lo, hi = 0.0, float(a.max())
        elif config.activation == "tanh" and name != net.layers[-1].name:
            lo, hi = -1.0, 1.0
        else:
            lo, hi = 0.0, 1.0
        snap[C.act_hist_key(name)], snap[C.act_edges_key(name)] = _hist(a.flatten(), lo, hi, ACT_BINS)
    correct = ev["pred"][k] == y_test
    conf = ev["conf"][k]
    snap[C.CONF_HIST_CORRECT], snap[C.CONF_EDGES] = _hist(conf[correct], 0.0, 1.0, CONF_BINS)
    snap[C.CONF_HIST_INCORRECT], _ = _hist(conf[~correct], 0.0, 1.0, CONF_BINS)
    snap[C.PRED_CLASS] = ev["pred"][k].numpy().astype(np.uint8)
    snap[C.PRED_CONFIDENCE] = conf.numpy().astype(np.float32)
    return snap


def train_cohort(configs: list[RunConfig], data: Mnist, sink: Sink, progress=None) -> CohortResult:
    """Train every config of one cohort together; report each model's epochs to `sink`."""
    first = configs[0]
    assert all(cohort_key(c) == cohort_key(first) for c in configs), "configs are not one cohort"
    k_models = len(configs)
    generators = [torch.Generator().manual_seed(c.seed) for c in configs]
    net = StackedNet(first, [init_params(c, g) for c, g in zip(configs, generators)])
    evaluator = Evaluator(net, first)
    x_train, y_train = data.train_x[:first.train_size], data.train_y[:first.train_size]
    stepper = make_stepper(configs, net, x_train, y_train)
    n, bs = len(x_train), first.batch_size
    x_eval, y_eval = x_train[:TRAIN_EVAL_SIZE], y_train[:TRAIN_EVAL_SIZE]
    alive = [True] * k_models
    initial_loss = [float("inf")] * k_models
    n_steps = steps_per_epoch(first)
    tick = max(1, n_steps // 20)
    n_layers = len(net.layers)

    def report(epoch: int, grad_norms: torch.Tensor, seconds: float) -> None:
        """grad_norms: (K, layers), each layer's mean weight-gradient norm over the epoch."""
        ev = evaluator.full(data.test_x, data.test_y)
        tr_loss, tr_acc = evaluator.loss_acc(x_eval, y_eval)
        dead = [_dead_mask(h, first.activation).double().mean(1) for h in ev["hidden"]]
        for k, config in enumerate(configs):
            if not alive[k]:
                continue
            values = [tr_loss[k], tr_acc[k], ev["loss"][k], ev["acc"][k]]
            if epoch == 0:
                initial_loss[k] = float(tr_loss[k])
            finite = all(torch.isfinite(v) for v in values) and bool(torch.isfinite(grad_norms[k]).all())
            if not finite or float(tr_loss[k]) > DIVERGENCE_FACTOR * initial_loss[k]:
                alive[k] = False
                stepper.disable(k)
                why = "NaN or inf" if not finite else f"over {DIVERGENCE_FACTOR:g}x the untrained loss {initial_loss[k]:.3g}"
                sink.fail(k, f"diverged at epoch {epoch}: train loss {float(tr_loss[k]):.4g} ({why}); "
                             f"try a smaller lr")
                continue
            metrics = {C.TRAIN_LOSS: float(tr_loss[k]), C.TRAIN_ACC: float(tr_acc[k]),
                       C.TEST_LOSS: float(ev["loss"][k]), C.TEST_ACC: float(ev["acc"][k]),
                       C.EPOCH_SECONDS: seconds}
            for j, layer in enumerate(net.layers):
                metrics[C.grad_norm_key(layer.name)] = float(grad_norms[k, j])
            for layer, d in zip(net.layers[:-1], dead):
                metrics[C.dead_fraction_key(layer.name)] = float(d[k])
            wants_snapshot = epoch % config.snapshot_every == 0 or epoch == config.epochs
            snap = _snapshot(net, first, k, ev, data.test_y) if wants_snapshot else None
            sink.log_epoch(k, epoch, metrics, snap)

    def mean_norms(raw: torch.Tensor) -> torch.Tensor:
        return stepper.grad_norms(raw).double().mean(0).t()  # (steps, layers, K) -> (K, layers)

    # Epoch 0: the untrained network.  Its gradient norms come from a few fixed mini-batches, no update.
    n0 = min(GRAD0_BATCHES, n_steps)
    norms = torch.zeros(n0, n_layers, k_models)
    for s in range(n0):
        stepper.step(torch.arange(s * bs, min((s + 1) * bs, n)).repeat(k_models), norms[s], update=False)
    report(0, mean_norms(norms), 0.0)

    for epoch in range(1, first.epochs + 1):
        if not any(alive):
            break
        start = time.perf_counter()
        perm = torch.stack([torch.randperm(n, generator=g) for g in generators])
        norms = torch.zeros(n_steps, n_layers, k_models)
        for step, idx in enumerate(_batches(perm, bs)):
            stepper.step(idx, norms[step])
            if (step + 1) % tick == 0:
                interrupt.check()
                if progress is not None:
                    progress.update(sum(alive) * tick)
        if progress is not None:
            progress.update(sum(alive) * (n_steps % tick))
        seconds = time.perf_counter() - start
        interrupt.check()
        report(epoch, mean_norms(norms), seconds)

    return CohortResult([net.model_params(k) if alive[k] else None for k in range(k_models)])


def _batches(perm: torch.Tensor, bs: int):
    """Each step's training rows for all K models, (K*B,): model k's at [k*B, (k+1)*B).

    Laid out once per epoch, so a step's indices are a row of one contiguous tensor, not a
    strided slice to copy: model k's batch j is perm[k, j*B:(j+1)*B], a last short one included.
    """
    k, n = perm.shape
    full = n // bs
    yield from perm[:, :full * bs].reshape(k, full, bs).transpose(0, 1).reshape(full, k * bs)
    if n % bs:
        yield perm[:, full * bs:].reshape(-1)
