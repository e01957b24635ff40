"""Models: K networks of one architecture stacked into single tensors, and plain nn.Modules.

Training always runs on a stack of K models (K = 1 for a single run): every
parameter has a leading model axis, MLP layers are one `baddbmm` for all K, and
the CNN's convolutions are grouped by model.  Weights keep PyTorch's own layout
per model, (K, out, in): MKL's batched GEMM updates that layout in place about
twice as fast as (K, in, out) at batch 10 (see training/engine/steps.py).  Each model keeps its own init
and, in the engine, its own data order, so a model trained in a stack of K
computes what it would compute alone.

`to_module` turns one slice of the stack into an ordinary nn.Module (nn.Linear
weights are (out, in)) for users, and rebuilds a logged model (training.nets.saved_model).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

# Layers and shapes live in the torch-free training.nets.architecture, which the dashboard reads too.
from training.config import N_CLASSES, RunConfig
from training.nets.architecture import CNN_CHANNELS, CNN_FLAT, CNN_KERNEL, Layer, layers_of, n_params  # noqa: F401

ACTIVATION_FNS = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh}


def init_params(config: RunConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One model's parameters in PyTorch layout, drawn from `generator` in a fixed order.

    Default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases, which is
    what nn.Linear and nn.Conv2d do.  With init_std: weights ~ N(0, init_std), biases 0.
    With init="nielsen": weights and biases ~ N(0, 1), as Nielsen's network.py.
    """
    params = {}
    for layer in layers_of(config):
        if config.nielsen_init:
            w = torch.empty(layer.weight_shape).normal_(0.0, 1.0, generator=generator)
            b = torch.empty(layer.units).normal_(0.0, 1.0, generator=generator)
        elif config.init_std is None:
            bound = 1.0 / math.sqrt(layer.fan_in)
            w = torch.empty(layer.weight_shape).uniform_(-bound, bound, generator=generator)
            b = torch.empty(layer.units).uniform_(-bound, bound, generator=generator)
        else:
            w = torch.empty(layer.weight_shape).normal_(0.0, config.init_std, generator=generator)
            b = torch.zeros(layer.units)
        params[f"{layer.name}.weight"] = w
        params[f"{layer.name}.bias"] = b
    return params


class StackedNet:
    """K models of one architecture.  Parameters are leaf tensors with a leading model axis.

    Linear weights are (K, out, in) and biases (K, 1, out), so a layer is one baddbmm.
    """

    def __init__(self, config: RunConfig, per_model: list[dict[str, torch.Tensor]]):
        self.config = config
        self.layers = layers_of(config)
        self.k = len(per_model)
        self.act = ACTIVATION_FNS[config.activation]
        self.params: dict[str, torch.Tensor] = {}
        for layer in self.layers:
            w = torch.stack([p[f"{layer.name}.weight"] for p in per_model])
            b = torch.stack([p[f"{layer.name}.bias"] for p in per_model])
            if layer.kind == "linear":
                b = b.unsqueeze(1)
            self.params[f"{layer.name}.weight"] = w.requires_grad_()
            self.params[f"{layer.name}.bias"] = b.requires_grad_()

    def weight(self, name: str) -> torch.Tensor:
        return self.params[f"{name}.weight"]

    def model_params(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's parameters in PyTorch layout (detached copies)."""
        out = {}
        for layer in self.layers:
            w = self.params[f"{layer.name}.weight"][k].detach()
            b = self.params[f"{layer.name}.bias"][k].detach()
            if layer.kind == "linear":
                b = b.squeeze(0)
            out[f"{layer.name}.weight"] = w.contiguous().clone()
            out[f"{layer.name}.bias"] = b.contiguous().clone()
        return out

    def subset(self, ks: list[int]) -> "StackedNet":
        """A stack of models ks alone, their parameters copied: to evaluate only the models still training."""
        return StackedNet(self.config, [self.model_params(k) for k in ks])

    def forward(self, x: torch.Tensor, keep_hidden: bool = False):
        """x: (K, B, 784).  Returns logits (K, B, 10) and, if asked, each hidden layer's activations.

        Hidden activations are (K, B, units) for linear layers and (K, B, C, H, W) for conv layers.
        """
        hidden = []
        if self.config.arch == "cnn":
            k, b = x.shape[0], x.shape[1]
            h = x.permute(1, 0, 2).reshape(b, k, 28, 28)
            for name in ("conv1", "conv2"):
                w = self.params[f"{name}.weight"]
                h = F.conv2d(h, w.flatten(0, 1), self.params[f"{name}.bias"].flatten(), groups=k)
                h = self.act(h)
                if keep_hidden:
                    # grouped conv orders channels model by model: (B, K*C, H, W) -> (K, B, C, H, W)
                    hidden.append(h.reshape(b, k, -1, *h.shape[2:]).transpose(0, 1))
                h = F.max_pool2d(h, 2)
            h = h.reshape(b, k, -1).transpose(0, 1)
            logits = torch.baddbmm(self.params["fc.bias"], h, self.params["fc.weight"].transpose(1, 2))
            return logits, hidden
        h = x
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if i == 0 and x.stride(0) == 0:
                h = self._shared_first_layer(x[0])
            else:
                h = torch.baddbmm(self.params[f"{layer.name}.bias"], h, self.params[f"{layer.name}.weight"].transpose(1, 2))
            if i < last:
                h = self.act(h)
                if keep_hidden:
                    hidden.append(h)
        return h, hidden

    def _shared_first_layer(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, fan_in), the same images for every model (an expanded input, as evaluation passes) ->
        the first layer's pre-activations (K, N, units), as one (N, fan_in) x (fan_in, K*units) GEMM
        instead of K thin ones."""
        layer = self.layers[0]
        w, b = self.params[f"{layer.name}.weight"].detach(), self.params[f"{layer.name}.bias"].detach()
        z = torch.addmm(b.reshape(1, -1), x, w.reshape(-1, w.shape[-1]).t())
        return z.view(len(x), self.k, -1).transpose(0, 1)


@torch.no_grad()
def mlp_deltas(net: StackedNet, x: torch.Tensor, target: torch.Tensor, scale: torch.Tensor | float):
    """Hand-written backprop for stacked MLPs: yields (layer index, its input, its delta), last layer first.

    x is (K, B, 784), target the one-hot labels (K, B, 10) and scale multiplies the output
    delta: 1/B gives the gradient of the batch-mean loss (weight grad = delta^T @ input,
    bias grad = delta summed over the batch).  The delta of layer i-1 is computed from
    layer i's weights before (i, ...) is yielded, so the caller may update layer i in place.
    The same numbers autograd gives (tests check this) in a few fused ops per layer: at
    batch 10 the per-op overhead, not arithmetic, is the cost.
    """
    h, hidden = net.forward(x, keep_hidden=True)
    acts = [x] + hidden
    delta = output_delta(net.config.loss, h, target, scale)
    backward = ACTIVATION_BACKWARD[net.config.activation]
    for i in range(len(net.layers) - 1, -1, -1):
        below = None
        if i > 0:
            below = backward(torch.bmm(delta, net.params[f"{net.layers[i].name}.weight"]), acts[i])
        yield i, acts[i], delta
        delta = below


def mlp_grads(net: StackedNet, x: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
    """Gradients of each model's batch-mean loss, in net.params order (weight, bias per layer)."""
    grads = [None] * (2 * len(net.layers))
    for i, a, delta in mlp_deltas(net, x, target, 1.0 / x.shape[1]):
        grads[2 * i] = torch.bmm(delta.transpose(1, 2), a)
        grads[2 * i + 1] = delta.sum(1, keepdim=True)
    return grads


def output_delta(loss: str, logits: torch.Tensor, target: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """d(loss)/d(logits) times scale, for one-hot targets: softmax cross-entropy, or the Nielsen-style
    quadratic cost on sigmoid outputs."""
    if loss == "cross_entropy":
        return torch.softmax(logits, -1).sub_(target).mul_(scale)
    out = torch.sigmoid(logits)
    return torch.ops.aten.sigmoid_backward(out - target, out).mul_(scale)


# d(activation)/dz from the activation's output, each one fused op.
ACTIVATION_BACKWARD = {
    "sigmoid": torch.ops.aten.sigmoid_backward,
    "tanh": torch.ops.aten.tanh_backward,
    "relu": lambda grad, out: torch.ops.aten.threshold_backward(grad, out, 0),
}


def output_probs(logits: torch.Tensor, loss: str) -> torch.Tensor:
    """What the network outputs per class: softmax for cross-entropy, sigmoid for Nielsen's quadratic cost."""
    return torch.softmax(logits, -1) if loss == "cross_entropy" else torch.sigmoid(logits)


def per_model_loss(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean loss over the batch, one value per model: (K, B, 10), (K, B) -> (K,)."""
    if loss == "cross_entropy":
        logp = torch.log_softmax(logits, -1)
        return -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(1)
    # Nielsen's quadratic cost: C_x = 0.5 * ||sigmoid(z) - onehot(y)||^2, averaged over the batch.
    target = F.one_hot(y, N_CLASSES).to(logits.dtype)
    return 0.5 * (torch.sigmoid(logits) - target).pow(2).sum(-1).mean(1)


class MLP(nn.Module):
    def __init__(self, sizes: tuple[int, ...], activation: str):
        super().__init__()
        self.act = ACTIVATION_FNS[activation]
        for i in range(len(sizes) - 1):
            self.add_module(f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1]))
        self.n_layers = len(sizes) - 1

    def forward(self, x):
        h = x.flatten(1)
        for i in range(1, self.n_layers + 1):
            h = getattr(self, f"fc{i}")(h)
            if i < self.n_layers:
                h = self.act(h)
        return h


class CNN(nn.Module):
    """Conv(1->16, 3) -> pool -> Conv(16->32, 3) -> pool -> Linear(800 -> 10)."""

    def __init__(self, activation: str):
        super().__init__()
        self.act = ACTIVATION_FNS[activation]
        self.conv1 = nn.Conv2d(1, CNN_CHANNELS[0], CNN_KERNEL)
        self.conv2 = nn.Conv2d(CNN_CHANNELS[0], CNN_CHANNELS[1], CNN_KERNEL)
        self.fc = nn.Linear(CNN_FLAT, N_CLASSES)

    def forward(self, x):
        h = x.reshape(-1, 1, 28, 28)
        h = F.max_pool2d(self.act(self.conv1(h)), 2)
        h = F.max_pool2d(self.act(self.conv2(h)), 2)
        return self.fc(h.flatten(1))


def to_module(config: RunConfig, params: dict[str, torch.Tensor]) -> nn.Module:
    """A plain nn.Module holding one model's parameters; outputs logits for (N, 784) input."""
    module = CNN(config.activation) if config.arch == "cnn" else MLP(config.sizes, config.activation)
    module.load_state_dict(params)
    return module.eval()
