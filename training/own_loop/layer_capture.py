"""Finding a model's weight layers and capturing their units, for any nn.Module built from Linear and Conv2d.

A layer's units are its output features (Linear) or channels (Conv2d) after the activation that
follows it.  "Follows" is read from the model's own graph, traced with torch.fx: from the layer's
output, through any batch norm or dropout (which only rescale or, in eval mode, pass each unit
through), to the first activation, whether a module (nn.ReLU) or a call (F.relu, torch.sigmoid,
x.tanh()).  A layer with anything else after it first (a pooling, a sum, a reshape), or nothing,
has no activation: its units are its raw outputs, and its activation is logged as "none".  A conv
channel's value on an image is the spatial max of its feature map, as for the built-in CNN.

A model torch.fx cannot trace (Python control flow on tensor values) falls back to forward hooks
on the layers themselves: raw outputs, activation "none", said once on stderr.

Capture runs in eval mode under no_grad and puts every module's training flag back after.
"""
import sys
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import fx, nn

from training.errors import UserError
from training.nets.architecture import Layer

ACTIVATION_MODULES = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.GELU: "gelu",
                      nn.LeakyReLU: "leaky_relu", nn.ELU: "elu", nn.SiLU: "silu", nn.ReLU6: "relu6",
                      nn.Softplus: "softplus", nn.Mish: "mish"}
ACTIVATION_CALLS = {F.relu: "relu", torch.relu: "relu", F.relu_: "relu", torch.relu_: "relu",
                    torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh", F.tanh: "tanh",
                    F.gelu: "gelu", F.leaky_relu: "leaky_relu", F.elu: "elu", F.silu: "silu", F.relu6: "relu6",
                    F.softplus: "softplus", F.mish: "mish"}
ACTIVATION_METHODS = {"relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "sigmoid_": "sigmoid",
                      "tanh": "tanh", "tanh_": "tanh"}
PASS_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout,
                nn.Identity)
PASS_CALLS = (F.dropout, F.dropout1d, F.dropout2d, F.batch_norm)
NO_ACTIVATION = "none"
PROBE = 2  # images in the trial forward pass: batch > 1, so BatchNorm in train mode would work too


class ModelError(UserError):
    """A model the logging API cannot log; the message is one line."""


@dataclass(frozen=True)
class Found:
    """A model's weight layers (input to output) and, per layer, the graph node whose output is its units."""
    layers: tuple[Layer, ...]
    graph: fx.GraphModule | None  # None: fx could not trace the model; hooks on the layers instead


def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Linear and Conv2d by qualified name, in registration order."""
    found = {name: m for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    if not found:
        raise ModelError(f"{type(model).__name__} has no nn.Linear or nn.Conv2d layer, so it has no units to log")
    return found


def _layer(name: str, module: nn.Module, activation: str) -> Layer:
    kind = "conv" if isinstance(module, nn.Conv2d) else "linear"
    return Layer(name, kind, tuple(module.weight.shape), activation)


def _activation_of(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    if node.op == "call_module":
        return ACTIVATION_MODULES.get(type(modules[node.target]))
    if node.op == "call_function":
        return ACTIVATION_CALLS.get(node.target)
    if node.op == "call_method":
        return ACTIVATION_METHODS.get(node.target)
    return None


def _passes(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], PASS_MODULES)
    return node.op == "call_function" and node.target in PASS_CALLS


def units_node(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[fx.Node, str]:
    """The node holding a layer's units: its activation's, through batch norm and dropout; else its own."""
    current = node
    while len(current.users) == 1:
        (user,) = current.users
        if (act := _activation_of(user, modules)) is not None:
            return user, act
        if not _passes(user, modules):
            break
        current = user
    return node, NO_ACTIVATION


def eval_trace(model: nn.Module) -> fx.GraphModule:
    """torch.fx's graph of the model in eval mode, each module's mode restored after: fx bakes `self.training` in
    as a constant, and the eval graph is the one captured and rerun.  Raises what tracing raises."""
    was = {m: m.training for m in model.modules()}
    model.eval()
    try:
        return fx.symbolic_trace(model)
    finally:
        for m, flag in was.items():
            m.train(flag)


def _trace(model: nn.Module, layers: dict[str, nn.Module]) -> Found | None:
    try:
        traced = eval_trace(model)
    except Exception:
        return None
    modules = dict(traced.named_modules())
    calls = [n for n in traced.graph.nodes if n.op == "call_module" and n.target in layers]
    if sorted({n.target for n in calls}) != sorted(layers) or len(calls) != len(layers):
        return None  # a layer called twice or never: its units are not one thing per image
    picked = [(n, *units_node(n, modules)) for n in calls]
    output = next(n for n in traced.graph.nodes if n.op == "output")
    result = output.args[0]
    with traced.graph.inserting_before(output):
        output.args = ((result, *[units for _, units, _ in picked]),)
    traced.recompile()
    return Found(tuple(_layer(n.target, layers[n.target], act) for n, _, act in picked), traced)


def find_layers(model: nn.Module) -> Found:
    """The model's layers and how to capture them; ModelError for a model with no Linear or Conv2d."""
    layers = weight_layers(model)
    found = _trace(model, layers)
    if found is None:
        print(f"note: torch.fx cannot trace {type(model).__name__}; logging its layers' raw outputs "
              f"(activation '{NO_ACTIVATION}')", file=sys.stderr)
        found = Found(tuple(_layer(name, m, NO_ACTIVATION) for name, m in layers.items()), None)
    return found


def per_unit(t: torch.Tensor) -> torch.Tensor:
    """(B, units, ...) -> (B, units): a conv channel's value is the spatial max of its feature map."""
    return t.amax(dim=tuple(range(2, t.dim()))) if t.dim() > 2 else t


class Capture:
    """Runs the model on a batch in eval mode, returning its output and every layer's units."""

    def __init__(self, model: nn.Module, found: Found):
        self.model, self.found = model, found

    @torch.no_grad()
    def _plain(self, x: torch.Tensor) -> torch.Tensor:
        was = {m: m.training for m in self.model.modules()}
        self.model.eval()
        try:
            return self.model(x)
        finally:
            for m, flag in was.items():
                m.train(flag)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        was = {m: m.training for m in self.model.modules()}
        self.model.eval()
        try:
            if self.found.graph is not None:
                out, *units = self.found.graph(x)
            else:
                out, units = self._hooked(x)
        finally:
            for m, flag in was.items():
                m.train(flag)
        return out, [per_unit(u) for u in units]

    def _hooked(self, x: torch.Tensor):
        modules = dict(self.model.named_modules())
        seen: dict[str, torch.Tensor] = {}
        handles = [modules[l.name].register_forward_hook(lambda m, i, o, name=l.name: seen.update({name: o}))
                   for l in self.found.layers]
        try:
            out = self.model(x)
        finally:
            for h in handles:
                h.remove()
        return out, [seen[l.name] for l in self.found.layers]


def _output_shapes(model: nn.Module, names, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    modules, shapes = dict(model.named_modules()), {}
    # A forward hook that returns a value replaces the module's output: these return None.
    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: shapes.update({n: tuple(o.shape[1:])}))
               for n in names]
    try:
        Capture(model, Found((), None))._plain(x)
    finally:
        for h in handles:
            h.remove()
    return shapes


def check_model(model: nn.Module, capture: Capture, preprocess, device: torch.device) -> Capture:
    """A trial pass on PROBE blank MNIST images: ModelError, one line, if the model cannot take them; else
    the capture, its layers with their output shapes."""
    x = preprocess(torch.zeros(PROBE, 1, 28, 28, device=device))
    try:
        out, units = capture(x)
        shapes = _output_shapes(model, [l.name for l in capture.found.layers], x)
    except Exception as e:
        raise ModelError(f"{type(model).__name__} cannot take a batch of 1x28x28 MNIST images "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); pass preprocess= to reshape them "
                         f"as it expects") from None
    if tuple(out.shape) != (PROBE, 10):
        raise ModelError(f"{type(model).__name__} returns shape {tuple(out.shape[1:])} per image, not 10 class "
                         f"scores (logits, log-probabilities or probabilities)")
    for layer, u in zip(capture.found.layers, units):
        if u.dim() != 2 or u.shape[1] != layer.units:
            raise ModelError(f"layer {layer.name} gives {tuple(u.shape[1:])} per image, not its {layer.units} units")
    layers = tuple(replace(l, out_shape=shapes.get(l.name, ())) for l in capture.found.layers)
    return Capture(model, replace(capture.found, layers=layers))
