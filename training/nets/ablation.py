"""What each hidden unit is worth to the network: test accuracy per digit with the unit switched off.

A unit is ablated by setting its activation to 0 (or, with mode="mean", to its mean over the test set); a
conv unit is a channel, and its whole feature map is replaced (by zeros, or by its mean map, position by
position).  Every unit of a layer is ablated in one batched computation, not one evaluation per unit:

- the layers below run once over the test images;
- the next layer's pre-activation is linear in this layer's (pooled) output, so it splits into one
  contribution per unit (a grouped convolution computes all of a conv layer's at once), and the
  pre-activation without unit c is the whole one minus c's contribution (minus its replacement's);
- the layers above then run on all those variants as one batch, in chunks of images.

Cumulative ablation (Morcos et al. 2018, "On the importance of single directions for generalization")
removes units one after another in a given order; the same contributions, summed along the order, give
every prefix at once.  Predictions are the argmax of the logits (the first, on a tie), as in evaluation.
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from training import contract as C
from training.config import N_CLASSES, RunConfig
from training.nets.architecture import layers_of
from training.nets.models import ACTIVATION_FNS

MODES = ("zero", "mean")
CRITICAL_POINTS = 1.0  # a unit is critical when switching it off alone costs at least this much test accuracy
N_RANDOM_ORDERS, RANDOM_SEED = 10, 0  # the random removal orders of the cumulative curve
VARIANT_BUDGET = 8_000_000  # floats of next-layer pre-activations per chunk: bounds memory (about 32 MB)
BELOW_CHUNK = 2000  # images per pass of the layers below (a conv1 feature map: 2000 x 16 x 26 x 26)


@dataclass(frozen=True)
class LayerAblation:
    """Correct test answers per digit with each unit of one hidden layer switched off alone."""
    mode: str
    images: np.ndarray  # (10,) test images of each digit
    base: np.ndarray  # (10,) correct answers per digit, nothing ablated
    correct: np.ndarray  # (units, 10) correct answers per digit with unit u ablated

    @property
    def drop(self) -> np.ndarray:
        """(units, 10) accuracy lost on each digit's images, in percentage points."""
        return 100.0 * (self.base - self.correct) / self.images

    @property
    def overall_drop(self) -> np.ndarray:
        """(units,) overall test accuracy lost, in percentage points."""
        return 100.0 * (self.base.sum() - self.correct.sum(1)) / self.images.sum()

    @property
    def critical(self) -> int:
        """How many units cost at least CRITICAL_POINTS of overall accuracy when switched off alone
        (counted in whole images, so no rounding decides it)."""
        lost = self.base.sum() - self.correct.sum(1)
        return int(np.sum(lost * 100 >= CRITICAL_POINTS * self.images.sum()))


def _params(config: RunConfig, snapshot: dict) -> dict[str, torch.Tensor]:
    out = {}
    for layer in layers_of(config):
        out[f"{layer.name}.weight"] = torch.as_tensor(np.asarray(snapshot[C.weight_key(layer.name)], np.float32))
        out[f"{layer.name}.bias"] = torch.as_tensor(np.asarray(snapshot[C.bias_key(layer.name)], np.float32))
    return out


class _Split:
    """A network cut after hidden layer `index` (0-based): what runs below it, the next layer as a sum of
    per-unit contributions, and what runs above it.  Plain functional ops, as models.MLP and models.CNN."""

    def __init__(self, config: RunConfig, snapshot: dict, index: int):
        self.layers = layers_of(config)
        if not 0 <= index < len(self.layers) - 1:
            raise ValueError(f"hidden layer {index} does not exist: the network has {len(self.layers) - 1}")
        self.cnn, self.index, self.act = config.arch == "cnn", index, ACTIVATION_FNS[config.activation]
        self.p = _params(config, snapshot)
        self.units = self.layers[index].units

    def _wb(self, i: int):
        name = self.layers[i].name
        return self.p[f"{name}.weight"], self.p[f"{name}.bias"]

    def below(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden layer's activations for images x (n, 784): (n, units), or (n, C, H, W) feature maps."""
        if self.cnn:
            h = x.reshape(-1, 1, 28, 28)
            for i in range(self.index + 1):
                h = self.act(F.conv2d(h if i == 0 else F.max_pool2d(h, 2), *self._wb(i)))
            return h
        h = x
        for i in range(self.index + 1):
            h = self.act(F.linear(h, *self._wb(i)))
        return h

    def output(self, a: torch.Tensor) -> torch.Tensor:
        """What the next layer sees of the activations: a conv layer's pooled maps, flattened before fc."""
        return F.max_pool2d(a, 2) if self.cnn else a

    def next_pre(self, out: torch.Tensor) -> torch.Tensor:
        w, b = self._wb(self.index + 1)
        if self.layers[self.index + 1].kind == "conv":
            return F.conv2d(out, w, b)
        return F.linear(out.flatten(1), w, b)

    def contributions(self, out: torch.Tensor) -> torch.Tensor:
        """(n, units, *next) each unit's share of the next layer's pre-activation, bias left out."""
        w, _ = self._wb(self.index + 1)
        n = len(out)
        if self.layers[self.index + 1].kind == "conv":  # input channel c alone, by im2col: a grouped
            # convolution computes the same but about 50x slower on CPU (oneDNN's grouped kernels)
            kh, kw = w.shape[2:]
            cols = F.unfold(out, (kh, kw)).view(n, self.units, kh * kw, -1)  # (n, c, k, positions)
            z = torch.einsum("nckp,ock->ncop", cols, w.reshape(w.shape[0], self.units, kh * kw))
            side = out.shape[-1] - kw + 1
            return z.reshape(n, self.units, w.shape[0], out.shape[-2] - kh + 1, side)
        if out.dim() == 2:  # a linear layer's units: a broadcast product, no copies
            return out.unsqueeze(-1) * w.t()
        flat = out.reshape(n, self.units, -1)  # (n, units, positions): a conv channel's pooled map
        return torch.einsum("nup,oup->nuo", flat, w.view(w.shape[0], self.units, -1))

    def above(self, z: torch.Tensor) -> torch.Tensor:
        """Logits from the next layer's pre-activations (m, *next)."""
        i = self.index + 1
        if self.cnn:
            if i == 1:  # conv2's pre-activation: then pool and the classifier.  Pooling before the activation
                # gives the same numbers (each activation is non-decreasing) on a quarter of the values.
                z = F.linear(self.act(_pool(z)).flatten(1), *self._wb(2))
            return z
        for j in range(i + 1, len(self.layers)):
            z = F.linear(self.act(z), *self._wb(j))
        return z


def _pool(z: torch.Tensor) -> torch.Tensor:
    """F.max_pool2d(z, 2), the same numbers, as two elementwise maxima: about twice as fast on CPU, where
    max_pool2d also works out indices, and the layers above run on every variant."""
    h, w = z.shape[-2] // 2 * 2, z.shape[-1] // 2 * 2
    rows = torch.maximum(z[..., 0:h:2, :w], z[..., 1:h:2, :w])
    return torch.maximum(rows[..., 0::2], rows[..., 1::2])


def _replacement(split: _Split, x: torch.Tensor, mode: str) -> torch.Tensor | None:
    """What an ablated unit's output becomes, as the next layer sees it: None for zero (its contribution
    goes), else its mean activation over the images (a conv channel's mean map, then pooled)."""
    if mode not in MODES:
        raise ValueError(f"ablation mode {mode!r}: use one of {', '.join(MODES)}")
    if mode == "zero":
        return None
    with torch.no_grad():
        total = sum(split.below(x[i:i + BELOW_CHUNK]).sum(0, dtype=torch.float64)
                    for i in range(0, len(x), BELOW_CHUNK))
    mean = (total / len(x)).to(torch.float32)
    return split.output(mean.unsqueeze(0))[0]


def _right(split: _Split, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(variants, 10) right answers per digit from the next layer's pre-activations z (n, variants, *next)."""
    n, m = z.shape[:2]
    right = split.above(z.flatten(0, 1)).argmax(-1).view(n, m) == y[:, None]
    return torch.zeros(N_CLASSES, m, dtype=torch.int64).index_add_(0, y, right.to(torch.int64)).T


def _count(split: _Split, x: torch.Tensor, labels: np.ndarray, mode: str, variants, n_variants: int):
    """Right answers per digit of the intact network (10,) and of each variant (n_variants, 10), where
    variants(full, deltas) turns the next layer's whole pre-activation (n, *next) and each unit's removal
    (n, units, *next) into the variants' pre-activations, a list of (n, m, *next) with the m summing to
    n_variants (one at a time through the layers above: less memory than one batch)."""
    y = torch.as_tensor(np.array(labels, np.int64))
    replace = _replacement(split, x, mode)
    base = torch.zeros(N_CLASSES, dtype=torch.int64)
    counts = torch.zeros(n_variants, N_CLASSES, dtype=torch.int64)
    with torch.no_grad():
        probe = split.next_pre(split.output(split.below(x[:1])))
        chunk = max(1, min(BELOW_CHUNK, VARIANT_BUDGET // (split.units * probe[0].numel())))
        for i in range(0, len(x), chunk):
            out = split.output(split.below(x[i:i + chunk]))
            yb = y[i:i + len(out)]
            full = split.next_pre(out)
            base += _right(split, full.unsqueeze(1), yb)[0]
            deltas = split.contributions(out if replace is None else out - replace)
            at = 0
            for z in variants(full, deltas):
                counts[at:at + z.shape[1]] += _right(split, z, yb)
                at += z.shape[1]
    return base.numpy(), counts.numpy()


def ablate_units(config: RunConfig, snapshot: dict, x: torch.Tensor, labels: np.ndarray, layer: int,
                 mode: str = "zero") -> LayerAblation:
    """Every unit of hidden layer `layer` (0-based) switched off alone, on images x (N, 784) in [0, 1]."""
    split = _Split(config, snapshot, layer)

    def variants(full, deltas):  # unit by unit: the whole pre-activation less the unit's share
        return [torch.sub(full.unsqueeze(1), deltas, out=deltas)]
    base, correct = _count(split, x, labels, mode, variants, split.units)
    images = np.bincount(np.asarray(labels), minlength=N_CLASSES)
    return LayerAblation(mode=mode, images=images, base=base, correct=correct)


def cumulative_accuracy(config: RunConfig, snapshot: dict, x: torch.Tensor, labels: np.ndarray, layer: int,
                        orders, mode: str = "zero") -> np.ndarray:
    """(len(orders), units + 1) test accuracy (%) with the first k units of each order switched off,
    k = 0..units.  Each order is a permutation of the layer's units."""
    split = _Split(config, snapshot, layer)
    orders = [torch.as_tensor(np.array(o, np.int64)) for o in orders]
    for o in orders:
        if sorted(o.tolist()) != list(range(split.units)):
            raise ValueError(f"a removal order must be a permutation of the layer's {split.units} units")

    def variants(full, deltas):  # order by order: the whole pre-activation less the first k units' shares
        return (deltas[:, o].cumsum(1).neg_().add_(full.unsqueeze(1)) for o in orders)
    base, counts = _count(split, x, labels, mode, variants, len(orders) * split.units)
    right = np.c_[np.full(len(orders), base.sum()), counts.sum(1).reshape(len(orders), split.units)]
    return 100.0 * right / len(x)


def random_orders(units: int, n: int = N_RANDOM_ORDERS, seed: int = RANDOM_SEED) -> list[np.ndarray]:
    """n random removal orders, the same every time (a fixed seed)."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(units) for _ in range(n)]


def drop_order(ablation: LayerAblation) -> np.ndarray:
    """Units by their single-unit ablation drop, largest first (ties: lower index first)."""
    return np.lexsort((np.arange(len(ablation.correct)), -ablation.overall_drop))
