"""What the engine measures after each epoch: every model of a stack on fixed data, and its snapshot arrays."""
from dataclasses import dataclass

import numpy as np
import torch

from training import contract as C
from training.config import RunConfig
from training.nets.architecture import ACT_BINS, CONF_BINS  # the dashboard checks snapshots against these
from training.nets.models import StackedNet, output_probs, per_model_loss

EVAL_CHUNK = 2_000
SATURATION = 0.01  # a sigmoid unit below 0.01 or above 0.99 (tanh: |a| > 0.98) is saturated


@dataclass
class Evaluation:
    """All K models on one data set of N images."""
    loss: torch.Tensor  # (K,)
    acc: torch.Tensor  # (K,)
    pred: torch.Tensor  # (K, N) predicted classes
    conf: torch.Tensor  # (K, N) the predicted class's probability
    hidden: list[torch.Tensor]  # per hidden layer, (K, N, units); a conv channel's unit is its spatial max
    output: torch.Tensor  # (K, N, classes) output probabilities

    def dead_fractions(self, activation: str) -> list[torch.Tensor]:
        """Per hidden layer, (K,): the fraction of its units dead or saturated on every image."""
        return [dead_mask(h, activation).double().mean(1) for h in self.hidden]


def hidden_units(h: torch.Tensor) -> torch.Tensor:
    """A hidden layer's per-unit activation: (K, B, units); a conv channel's is its spatial max."""
    return h.amax(dim=(-2, -1)) if h.dim() == 5 else h


def dead_mask(a: torch.Tensor, activation: str) -> torch.Tensor:
    """(K, N, units) -> (K, units): units dead (ReLU: 0 everywhere) or saturated on every image."""
    if activation == "relu":
        return (a <= 0).all(dim=1)
    if activation == "tanh":
        return (a.abs() > 1 - 2 * SATURATION).all(dim=1)
    return ((a < SATURATION) | (a > 1 - SATURATION)).all(dim=1)


def histogram(values: torch.Tensor, lo: float, hi: float, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts per bin and the bins' edges (one more than the counts)."""
    if hi <= lo:
        hi = lo + 1e-6
    counts = torch.histc(values.float(), bins=bins, min=lo, max=hi)
    return counts.to(torch.int64).numpy(), np.linspace(lo, hi, bins + 1, dtype=np.float32)


class Evaluator:
    """Forward passes on fixed data for all K models at once, without gradients."""

    def __init__(self, net: StackedNet, config: RunConfig):
        self.net, self.config = net, config

    @torch.no_grad()
    def loss_acc(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each model's mean loss and accuracy on (x, y), both (K,)."""
        loss_sum = torch.zeros(self.net.k, dtype=torch.float64)
        correct = torch.zeros(self.net.k, dtype=torch.int64)
        for i in range(0, len(x), EVAL_CHUNK):
            xb, yb = self._expand(x[i:i + EVAL_CHUNK]), self._expand(y[i:i + EVAL_CHUNK])
            logits, _ = self.net.forward(xb)
            loss_sum += per_model_loss(logits, yb, self.config.loss).double() * len(xb[0])
            correct += (logits.argmax(-1) == yb).sum(1)
        return loss_sum / len(x), correct.double() / len(x)

    @torch.no_grad()
    def full(self, x: torch.Tensor, y: torch.Tensor) -> Evaluation:
        """Loss, accuracy, predictions, confidences, and each layer's per-unit activations on (x, y)."""
        loss_sum = torch.zeros(self.net.k, dtype=torch.float64)
        preds, confs, outputs, units = [], [], [], None
        for i in range(0, len(x), EVAL_CHUNK):
            xb, yb = self._expand(x[i:i + EVAL_CHUNK]), self._expand(y[i:i + EVAL_CHUNK])
            logits, hidden = self.net.forward(xb, keep_hidden=True)
            loss_sum += per_model_loss(logits, yb, self.config.loss).double() * len(xb[0])
            probs = output_probs(logits, self.config.loss)
            conf, pred = probs.max(-1)
            preds.append(pred)
            confs.append(conf)
            outputs.append(probs)
            chunk_units = [hidden_units(h) for h in hidden]
            units = [[u] for u in chunk_units] if units is None else [a + [u] for a, u in zip(units, chunk_units)]
        pred = torch.cat(preds, 1)
        return Evaluation(loss=loss_sum / len(x), acc=(pred == y).double().mean(1), pred=pred,
                          conf=torch.cat(confs, 1), hidden=[torch.cat(u, 1) for u in (units or [])],
                          output=torch.cat(outputs, 1))

    def _expand(self, t: torch.Tensor) -> torch.Tensor:
        return t.unsqueeze(0).expand(self.net.k, *t.shape)


def _activation_range(activation: str, layer_acts: torch.Tensor, is_output: bool) -> tuple[float, float]:
    if activation == "relu" and not is_output:
        return 0.0, float(layer_acts.max())
    if activation == "tanh" and not is_output:
        return -1.0, 1.0
    return 0.0, 1.0  # sigmoid units and output probabilities


def snapshot(net: StackedNet, config: RunConfig, k: int, ev: Evaluation, y_test: torch.Tensor) -> dict[str, np.ndarray]:
    """Model k's snapshot: its weights, each layer's activation histogram, and its test predictions."""
    snap = {}
    for name, tensor in net.model_params(k).items():
        layer, kind = name.rsplit(".", 1)
        key = C.weight_key(layer) if kind == "weight" else C.bias_key(layer)
        snap[key] = tensor.numpy().astype(np.float32)
    output = net.layers[-1].name
    layer_acts = list(zip([l.name for l in net.layers[:-1]], ev.hidden)) + [(output, ev.output)]
    for name, acts in layer_acts:
        lo, hi = _activation_range(config.activation, acts[k], name == output)
        snap[C.act_hist_key(name)], snap[C.act_edges_key(name)] = histogram(acts[k].flatten(), lo, hi, ACT_BINS)
    correct = ev.pred[k] == y_test
    conf = ev.conf[k]
    snap[C.CONF_HIST_CORRECT], snap[C.CONF_EDGES] = histogram(conf[correct], 0.0, 1.0, CONF_BINS)
    snap[C.CONF_HIST_INCORRECT], _ = histogram(conf[~correct], 0.0, 1.0, CONF_BINS)
    snap[C.PRED_CLASS] = ev.pred[k].numpy().astype(np.uint8)
    snap[C.PRED_CONFIDENCE] = conf.numpy().astype(np.float32)
    return snap
