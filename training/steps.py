"""One optimizer step for every model of a stack, and each layer's weight-gradient norm on the way.

Two ways to take it, chosen by `make_stepper`:

- `FusedSgdStep`, for MLPs under plain SGD (no momentum), the write-ups' setting and
  most grids.  The gradient is never materialised: each layer's update is a single
  in-place `W.baddbmm_(-(lr * delta)^T, input)`.  The weight-gradient norm comes from
  Gram matrices where that is cheaper, since ||x^T d||^2 = sum((x x^T) * (d d^T)): for
  layer 1 at batch 10 that is 10x10 products instead of a 784x30 gradient.
- `GradientStep` for everything else: gradients by hand-written backprop (MLP) or
  autograd (CNN), then `training.optim`'s SGD with momentum or Adam.

At batch 10 the cost of a step is per-op overhead, the gather of its images and the
two 784-wide GEMMs.  The fused step drops a GEMM-sized gradient, its update and its norm
per layer, and fetches each step's images with their one-hot labels in one
`index_select` from a table that holds both side by side (benchmarks/grid_throughput.py
measures the result against a plain eager loop).

Both write each step's norms as one row of a (steps, layers, K) buffer, so the epoch's
mean is one reduction at its end rather than an add per step.
"""
import torch

from training.config import N_CLASSES, RunConfig
from training.models import StackedNet, mlp_deltas, mlp_grads, per_model_loss
from training.optim import make_optimizer


class FusedSgdStep:
    def __init__(self, net: StackedNet, x: torch.Tensor, y: torch.Tensor, lrs: list[float], batch_size: int):
        self.net, self.k = net, net.k
        self.table = torch.cat([x, torch.nn.functional.one_hot(y, N_CLASSES).to(x.dtype)], 1)
        self.n_in = x.shape[1]
        self.lr = torch.tensor(lrs, dtype=x.dtype).view(-1, 1, 1)
        self.batch_size = batch_size
        self.scale = self.lr / batch_size
        # Per layer: does the Gram route cost fewer multiply-adds than forming the gradient?
        self.gram = [batch_size * (l.fan_in + l.units) < l.fan_in * l.units for l in net.layers]
        self.weights = [net.params[f"{l.name}.weight"].detach() for l in net.layers]
        self.biases = [net.params[f"{l.name}.bias"].detach() for l in net.layers]

    @torch.no_grad()
    def step(self, idx: torch.Tensor, raw_norms: torch.Tensor, update: bool = True) -> None:
        """idx (K*B,) holds model k's rows at [k*B, (k+1)*B); raw_norms (layers, K) gets what grad_norms reads."""
        rows = self.table.index_select(0, idx).view(self.k, -1, self.table.shape[1])
        x, target = rows[..., :self.n_in], rows[..., self.n_in:]
        b = x.shape[1]
        # Deltas carry lr/B, so an update is one in-place GEMM.  The norms written carry lr too,
        # squared; grad_norms takes both out once per epoch instead of once per step.
        for i, a, delta in mlp_deltas(self.net, x, target, self.scale if b == self.batch_size else self.lr / b):
            if self.gram[i]:
                torch.linalg.vecdot(torch.bmm(a, a.transpose(1, 2)).flatten(1),
                                    torch.bmm(delta, delta.transpose(1, 2)).flatten(1), out=raw_norms[i])
                if update:
                    self.weights[i].baddbmm_(delta.transpose(1, 2), a, alpha=-1.0)
            else:
                g = torch.bmm(delta.transpose(1, 2), a)
                torch.linalg.vecdot(g.flatten(1), g.flatten(1), out=raw_norms[i])
                if update:
                    self.weights[i].sub_(g)
            if update:
                self.biases[i].sub_(delta.sum(1, keepdim=True))

    def grad_norms(self, raw: torch.Tensor) -> torch.Tensor:
        """(..., layers, K) as step wrote it -> each layer's weight-gradient norm (NaN for a disabled model)."""
        return raw.sqrt() / self.lr.view(-1)

    def disable(self, k: int) -> None:
        """Stop updating model k (it diverged); the others carry on untouched."""
        self.lr[k] = 0.0
        self.scale[k] = 0.0


class GradientStep:
    def __init__(self, net: StackedNet, x: torch.Tensor, y: torch.Tensor, config: RunConfig,
                 lrs: list[float], momenta: list[float]):
        self.net, self.k, self.config = net, net.k, config
        self.x, self.y = x, y
        self.targets = torch.nn.functional.one_hot(y, N_CLASSES).to(x.dtype)
        self.params = list(net.params.values())
        self.weight_idx = [list(net.params).index(f"{l.name}.weight") for l in net.layers]
        self.opt = make_optimizer(config.optimizer, self.params, lrs, momenta)

    def step(self, idx: torch.Tensor, raw_norms: torch.Tensor, update: bool = True) -> None:
        xb = self.x.index_select(0, idx).view(self.k, -1, self.x.shape[1])
        if self.config.arch == "mlp":
            grads = mlp_grads(self.net, xb, self.targets.index_select(0, idx).view(self.k, -1, N_CLASSES))
        else:
            logits, _ = self.net.forward(xb)
            losses = per_model_loss(logits, self.y.index_select(0, idx).view(self.k, -1), self.config.loss)
            grads = list(torch.autograd.grad(losses.sum(), self.params))
        with torch.no_grad():
            for j, i in enumerate(self.weight_idx):
                torch.linalg.vector_norm(grads[i].flatten(1), dim=1, out=raw_norms[j])
        if update:
            self.opt.step(grads)

    def grad_norms(self, raw: torch.Tensor) -> torch.Tensor:
        return raw

    def disable(self, k: int) -> None:
        self.opt.disable(k)


def make_stepper(configs: list[RunConfig], net: StackedNet, x: torch.Tensor, y: torch.Tensor):
    first = configs[0]
    lrs, momenta = [c.lr for c in configs], [c.momentum for c in configs]
    if first.arch == "mlp" and first.optimizer == "sgd" and not any(momenta):
        return FusedSgdStep(net, x, y, lrs, first.batch_size)
    return GradientStep(net, x, y, first, lrs, momenta)
