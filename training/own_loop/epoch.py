"""What one epoch of a run from the user's own loop logs: test metrics, its snapshot and its units' activations.

The same arrays the built-in trainer's snapshot holds (training/engine/evaluation.py), computed from a captured
forward pass over the 10,000 test images, plus every hidden layer's units as float16 (10000, units),
which the dashboard reads instead of rerunning a model whose code it does not have.
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from training import contract as C
from training.engine.evaluation import dead_mask, histogram
from training.nets.architecture import ACT_BINS, CONF_BINS, Layer
from training.own_loop.layer_capture import Capture

EVAL_CHUNK = 1_000  # test images per forward pass: bounds a conv net's feature maps in memory
FLOAT16_MAX = float(np.finfo(np.float16).max)  # larger activations are stored as this, not as inf
DEAD_ACTIVATIONS = ("relu", "sigmoid", "tanh")  # where "dead or saturated on every image" has a meaning


@dataclass
class EpochRecords:
    metrics: dict[str, float]
    snapshot: dict[str, np.ndarray]
    units: dict[str, np.ndarray]  # hidden layer -> (N, units) float16


def _value_range(activation: str, acts: torch.Tensor) -> tuple[float, float]:
    if activation == "sigmoid":
        return 0.0, 1.0
    if activation == "tanh":
        return -1.0, 1.0
    lo = 0.0 if activation in ("relu", "relu6") else float(acts.min())
    return lo, float(acts.max())


def forward_all(capture: Capture, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The model's outputs and every layer's units over x, chunk by chunk, on the CPU."""
    outs, units = [], None
    for i in range(0, len(x), EVAL_CHUNK):
        out, chunk = capture(x[i:i + EVAL_CHUNK])
        outs.append(out.float().cpu())
        chunk = [u.float().cpu() for u in chunk]
        units = [[u] for u in chunk] if units is None else [a + [u] for a, u in zip(units, chunk)]
    return torch.cat(outs), [torch.cat(u) for u in units]


def weights(model: torch.nn.Module, layers: tuple[Layer, ...]) -> dict[str, np.ndarray]:
    """weight/<layer> and bias/<layer> in PyTorch's layout; a layer without a bias logs zeros."""
    modules = dict(model.named_modules())
    snap = {}
    for layer in layers:
        m = modules[layer.name]
        snap[C.weight_key(layer.name)] = m.weight.detach().float().cpu().numpy()
        bias = m.bias.detach().float().cpu().numpy() if m.bias is not None else np.zeros(layer.units, np.float32)
        snap[C.bias_key(layer.name)] = bias
    return snap


def epoch_records(model: torch.nn.Module, capture: Capture, layers: tuple[Layer, ...], x: torch.Tensor,
                  y: torch.Tensor, loss_fn, with_snapshot: bool) -> EpochRecords:
    """Test loss and accuracy, dead fractions, and (with_snapshot) the snapshot and the units' activations."""
    out, units = forward_all(capture, x)
    loss = float(loss_fn(out, y))
    # Softmax of log-probabilities is the probabilities again, so logits and log_softmax outputs both work.
    probs = out.softmax(-1) if (out.min() < 0 or (out.sum(-1) - 1).abs().max() > 1e-3) else out
    conf, pred = probs.max(-1)
    metrics = {C.TEST_LOSS: loss, C.TEST_ACC: float((pred == y).double().mean())}
    hidden = list(zip(layers[:-1], units[:-1]))
    for layer, u in hidden:
        if layer.activation in DEAD_ACTIVATIONS:
            metrics[C.dead_fraction_key(layer.name)] = float(dead_mask(u[None], layer.activation).double().mean())
    if not with_snapshot:
        return EpochRecords(metrics, {}, {})
    snap = weights(model, layers)
    for layer, u in hidden:
        lo, hi = _value_range(layer.activation, u)
        snap[C.act_hist_key(layer.name)], snap[C.act_edges_key(layer.name)] = histogram(u.flatten(), lo, hi, ACT_BINS)
    last = layers[-1].name
    snap[C.act_hist_key(last)], snap[C.act_edges_key(last)] = histogram(probs.flatten(), 0.0, 1.0, ACT_BINS)
    correct = pred == y
    snap[C.CONF_HIST_CORRECT], snap[C.CONF_EDGES] = histogram(conf[correct], 0.0, 1.0, CONF_BINS)
    snap[C.CONF_HIST_INCORRECT], _ = histogram(conf[~correct], 0.0, 1.0, CONF_BINS)
    snap[C.PRED_CLASS] = pred.numpy().astype(np.uint8)
    snap[C.PRED_CONFIDENCE] = conf.numpy().astype(np.float32)
    acts = {l.name: np.clip(u.numpy(), -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16) for l, u in hidden}
    return EpochRecords(metrics, snap, acts)


def default_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy, reading the outputs as logits; log_softmax outputs give the same value (it is idempotent)."""
    return F.cross_entropy(out, y)
