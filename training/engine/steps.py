"""One optimizer step for every model of a stack, and each layer's weight-gradient norm on the way.

Two ways to take it, chosen by `make_stepper`:

- `FusedSgdStep`, for MLPs under plain SGD (no momentum), the write-ups' setting and
  most grids.  The gradient is never materialised where it need not be: each layer's
  update is a single in-place `W.baddbmm_(-(lr * delta)^T, input)`.  The weight-gradient
  norm comes from Gram matrices where that is cheaper, since
  ||x^T d||^2 = sum((x x^T) * (d d^T)): for layer 1 at batch 10 that is 10x10 products
  instead of a 784x30 gradient.
- `GradientStep` for everything else: gradients by hand-written backprop (MLP) or
  autograd (CNN), then `training.engine.optim`'s SGD with momentum or Adam.

At batch 10 the cost of a step is per-op overhead, the gather of its images and the
two 784-wide GEMMs.  So the fused step takes a chunk of steps per call: one
`index_select` fetches the chunk's images with their one-hot labels (a table holds
both side by side), one bmm gives all its first-layer Grams, and one reduction per
layer its norms.  Each layer's bias is the last column of its weight matrix, against
a column of ones after its input, so a forward is one bmm and an update one
baddbmm_.  benchmarks/grid_throughput.py measured the chunks and the folded biases
at 1.3-1.5x the one-step-per-call version, against a plain eager loop.

Where a C compiler is on the machine, `FusedSgdStep` hands each chunk to the C kernel of
training/engine/fused_sgd.c (built and loaded by training.engine.native_kernel), which does the same
arithmetic with no per-op dispatch and needs no Gram matrices: it has each layer's gradient
in registers as it applies it, and sums its squares on the way.  grid_throughput.py measured
it at 2.1-2.6x the PyTorch chunks below, which stay as the fallback and as its reference in
the tests.

Both write each step's norms as one row of a (steps, layers, K) buffer, so the epoch's
mean is one reduction at its end rather than an add per step.
"""
import torch

from training.config import N_CLASSES, RunConfig
from training.engine import native_kernel
from training.engine.optim import make_optimizer
from training.nets.models import ACTIVATION_BACKWARD, StackedNet, mlp_grads, output_delta, per_model_loss

MAX_CHUNK = 32  # steps per FusedSgdStep.steps call in an epoch
# The kernel's chunks: each is one C call that holds no Python lock, so the MLflow writer thread runs
# meanwhile and training takes the interpreter back once per chunk (the engine caps a chunk at a progress tick).
KERNEL_CHUNK = 256
CHUNK_BYTES = 16 << 20  # and at most this much of table rows and per-step buffers per call
# Hidden activations written into a buffer whose last column stays one (FusedSgdStep).
_ACTIVATION_OUT = {"sigmoid": torch.sigmoid, "tanh": torch.tanh,
                   "relu": lambda z, out: torch.clamp_min(z, 0, out=out)}


class FusedSgdStep:
    """Plain SGD for stacked MLPs, a chunk of steps per call (see the module docstring)."""

    def __init__(self, net: StackedNet, x: torch.Tensor, y: torch.Tensor, lrs: list[float], batch_size: int):
        self.net, self.k, self.n_in, self.batch_size = net, net.k, x.shape[1], batch_size
        ones = torch.ones(len(x), 1, dtype=x.dtype)
        self.table = torch.cat([x, ones, torch.nn.functional.one_hot(y, N_CLASSES).to(x.dtype)], 1)
        self.lr = torch.tensor(lrs, dtype=x.dtype).view(-1, 1, 1)
        # Per layer: does the Gram route cost fewer multiply-adds than forming the gradient?
        self.gram = [batch_size * (l.fan_in + l.units) < l.fan_in * l.units for l in net.layers]
        # Each layer's weight and bias as one (K, units, fan_in + 1) tensor, the bias its last column, so
        # that with a column of ones after each layer's input a forward is one bmm and an update one
        # baddbmm_.  net.params become views of these, so evaluation and snapshots see every update.
        self.aug = []
        for l in net.layers:
            w, b = net.params[f"{l.name}.weight"].detach(), net.params[f"{l.name}.bias"].detach()
            aug = torch.cat([w, b.transpose(1, 2)], 2).contiguous()
            net.params[f"{l.name}.weight"], net.params[f"{l.name}.bias"] = aug[..., :-1], aug[..., -1:].transpose(1, 2)
            self.aug.append(aug)
        self.weights_t = [aug.transpose(1, 2) for aug in self.aug]  # (K, fan_in + 1, units), for the forward
        self.weights = [aug[..., :-1] for aug in self.aug]  # (K, units, fan_in), for the backward
        self.act = _ACTIVATION_OUT[net.config.activation]
        self.backward = ACTIVATION_BACKWARD[net.config.activation]
        self.hidden = {}  # batch size -> each hidden layer's (K, B, units + 1) activations, a column of ones last
        self.chunk = max(1, min(MAX_CHUNK, CHUNK_BYTES // self._bytes_per_step()))
        # The C kernel (training.engine.native_kernel) when it is built and the tensors are what it takes.
        self.kernel = native_kernel.kernel() if self.table.dtype == torch.float32 else None
        if self.kernel is not None:  # it keeps no per-step buffers: chunks as long as a progress tick allows
            self.chunk = KERNEL_CHUNK

    def _bytes_per_step(self) -> int:
        """What one step of a chunk holds: its rows of the table, and per layer a gradient or two Grams."""
        b, per_layer = self.batch_size, 0
        for l, gram in zip(self.net.layers, self.gram):
            per_layer += 2 * b * b if gram else l.units * (l.fan_in + 1)
        return 4 * self.k * (b * self.table.shape[1] + per_layer)

    def step(self, idx: torch.Tensor, raw_norms: torch.Tensor, update: bool = True) -> None:
        """One step: idx (K*B,) holds model k's rows at [k*B, (k+1)*B); raw_norms (layers, K)."""
        self.steps(idx.unsqueeze(0), raw_norms.unsqueeze(0), update)

    @torch.no_grad()
    def steps(self, idx: torch.Tensor, raw_norms: torch.Tensor, update: bool = True) -> None:
        """Consecutive steps: idx (S, K*B), one step's rows per row; raw_norms (S, layers, K) gets what
        grad_norms reads.  The rows of all S steps come in one gather, the first layer's Grams in one bmm,
        and the norms in one reduction per layer at the end."""
        if self.kernel is not None:
            return self._kernel_steps(idx, raw_norms, update)
        n_steps, b = idx.shape[0], idx.shape[1] // self.k
        rows = self.table.index_select(0, idx.flatten()).view(n_steps, self.k, b, -1)
        inputs, targets = rows[..., :self.n_in + 1], rows[..., self.n_in + 1:]
        grams, grads = self._buffers(rows, n_steps, b)
        hidden = self._hidden(b)
        # Deltas carry lr/B, so an update is one in-place GEMM.  The norms written carry lr too, squared;
        # grad_norms takes both out once per epoch instead of once per step.
        scale = self.lr / b
        last = len(self.aug) - 1
        # Views made once, not per step: at batch 10 each costs about what a small kernel does.
        weights_t, weights = self.weights_t, self.weights
        hidden_out = [h[..., :-1] for h in hidden]
        grams_d = [None if g is None else g[1].unbind(0) for g in grams]
        grams_a = [None if g is None or i == 0 else g[0].unbind(0) for i, g in enumerate(grams)]
        grads_s = [None if g is None else g.unbind(0) for g in grads]
        for x, target, s in zip(inputs.unbind(0), targets.unbind(0), range(n_steps)):
            acts = [x]
            for i in range(last):
                self.act(torch.bmm(acts[i], weights_t[i]), out=hidden_out[i])
                acts.append(hidden[i])
            delta = output_delta(self.net.config.loss, torch.bmm(acts[last], weights_t[last]), target, scale)
            for i in range(last, -1, -1):
                a, delta_t, below = acts[i], delta.transpose(1, 2), None
                if i > 0:  # from the weights before this step's update
                    below = self.backward(torch.bmm(delta, weights[i]), hidden_out[i - 1])
                if self.gram[i]:
                    if i > 0:
                        a_out = hidden_out[i - 1]
                        torch.bmm(a_out, a_out.transpose(1, 2), out=grams_a[i][s])
                    torch.bmm(delta, delta_t, out=grams_d[i][s])
                    if update:
                        self.aug[i].baddbmm_(delta_t, a, alpha=-1.0)
                else:
                    g = torch.bmm(delta_t, a, out=grads_s[i][s])
                    if update:
                        self.aug[i].sub_(g)
                delta = below
        for i in range(len(self.aug)):
            if self.gram[i]:  # ||x^T d||^2 = sum((x x^T) * (d d^T))
                torch.linalg.vecdot(grams[i][0].flatten(2), grams[i][1].flatten(2), out=raw_norms[:, i])
            else:  # the bias column left out
                torch.sum(grads[i][..., :-1].square(), (-2, -1), out=raw_norms[:, i])

    def _kernel_steps(self, idx: torch.Tensor, raw_norms: torch.Tensor, update: bool) -> None:
        raw = raw_norms if raw_norms.is_contiguous() else torch.empty_like(raw_norms, memory_format=torch.contiguous_format)
        # The kernel trusts its arguments (it reads rows by these indices), so they are made what it takes here.
        self.kernel.steps(self.table, self.n_in, idx.to(torch.int64).contiguous(), self.aug, self.lr.view(-1), raw,
                          self.net.config.activation, self.net.config.loss, update)
        if raw is not raw_norms:
            raw_norms.copy_(raw)

    def _buffers(self, rows: torch.Tensor, n_steps: int, b: int):
        """Per layer, for the whole chunk: the Grams of its inputs and deltas, or its gradients."""
        grams, grads = [None] * len(self.aug), [None] * len(self.aug)
        for i, aug in enumerate(self.aug):
            if not self.gram[i]:
                grads[i] = torch.empty(n_steps, *aug.shape, dtype=aug.dtype)
                continue
            if i == 0:  # the images are known up front: all the chunk's Grams in one bmm
                x = rows[..., :self.n_in].flatten(0, 1)
                gram_a = torch.bmm(x, x.transpose(1, 2)).view(n_steps, self.k, b, b)
            else:
                gram_a = torch.empty(n_steps, self.k, b, b, dtype=aug.dtype)
            grams[i] = (gram_a, torch.empty(n_steps, self.k, b, b, dtype=aug.dtype))
        return grams, grads

    def _hidden(self, b: int) -> list[torch.Tensor]:
        if b not in self.hidden:
            self.hidden[b] = [torch.ones(self.k, b, l.units + 1, dtype=self.table.dtype) for l in self.net.layers[:-1]]
        return self.hidden[b]

    def grad_norms(self, raw: torch.Tensor) -> torch.Tensor:
        """(..., layers, K) as steps wrote it -> each layer's weight-gradient norm (NaN for a disabled model)."""
        return raw.sqrt() / self.lr.view(-1)

    def disable(self, k: int) -> None:
        """Stop updating model k (it diverged, or a search pruned it); the others carry on untouched, and
        the kernel skips its steps altogether."""
        self.lr[k] = 0.0


class GradientStep:
    def __init__(self, net: StackedNet, x: torch.Tensor, y: torch.Tensor, config: RunConfig,
                 lrs: list[float], momenta: list[float]):
        self.net, self.k, self.config = net, net.k, config
        self.x, self.y = x, y
        self.targets = torch.nn.functional.one_hot(y, N_CLASSES).to(x.dtype)
        self.params = list(net.params.values())
        self.weight_idx = [list(net.params).index(f"{l.name}.weight") for l in net.layers]
        self.opt = make_optimizer(config.optimizer, self.params, lrs, momenta)
        self.chunk = 1

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

    def steps(self, idx: torch.Tensor, raw_norms: torch.Tensor, update: bool = True) -> None:
        for one, raw in zip(idx, raw_norms):
            self.step(one, raw, update)

    def grad_norms(self, raw: torch.Tensor) -> torch.Tensor:
        return raw

    def disable(self, k: int) -> None:
        self.opt.disable(k)


def takes_fused_step(configs: list[RunConfig]) -> bool:
    """Whether a cohort's steps are FusedSgdStep's: MLPs under plain SGD, no model with momentum."""
    first = configs[0]
    return first.arch == "mlp" and first.optimizer == "sgd" and not any(c.momentum for c in configs)


def step_path(config: RunConfig, cohort: list[RunConfig] | None = None) -> str:
    """Which code takes the config's optimizer steps, one of training.contract.STEP_PATHS: the C kernel's
    build (named by its widest vectors) where it is built and the config's steps are FusedSgdStep's, else
    "torch".  `cohort`: the configs it trains with, where known, since one with momentum sends them all to
    GradientStep.  Training's tensors are float32, the only dtype the kernel takes."""
    if not takes_fused_step(cohort or [config]):
        return "torch"
    fused = native_kernel.kernel()
    return "torch" if fused is None else fused.path


def fallback_notice(configs: list[RunConfig]) -> str | None:
    """The line a command prints once at its start when configs that would take the C kernel take the
    PyTorch path instead, since it cannot be built or is switched off; None when there is nothing to say."""
    if not any(takes_fused_step([c]) for c in configs) or native_kernel.kernel() is not None:
        return None
    return f"fused SGD kernel: {native_kernel.why_not()}; training takes the PyTorch path (about 2x slower)"


def make_stepper(configs: list[RunConfig], net: StackedNet, x: torch.Tensor, y: torch.Tensor):
    first = configs[0]
    lrs, momenta = [c.lr for c in configs], [c.momentum for c in configs]
    if takes_fused_step(configs):
        return FusedSgdStep(net, x, y, lrs, first.batch_size)
    return GradientStep(net, x, y, first, lrs, momenta)
