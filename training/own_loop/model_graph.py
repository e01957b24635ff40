"""A run's model written as data, so the dashboard can rerun it without the user's code and without pickle.

torch.export would be the obvious format, but torch.export.load unpickles the weights and constants
(torch.load(weights_only=False), pickle.loads), and a store is untrusted.  So the model is written as
torch.fx sees it: the traced graph as JSON, each module as an allowlisted type with its constructor
settings, each function and tensor method by an allowlisted name (training.nets.graph_ops), and the
numbers in an .npz of plain arrays.  training.nets.graph_model reads it back with nothing imported,
evaluated or unpickled from the files.

What the .npz holds (the weight layers' weights and biases are in the run's snapshots already):
- the run's preprocess as a per-pixel scale and shift, so the rebuilt model takes images in [0, 1];
- per snapshot epoch, every tensor outside the weight layers (LayerNorm and BatchNorm settings and
  statistics, a model's own parameters), which are a few hundred numbers at most.
A model that cannot be described (untraceable control flow, a module or function outside the allowlists,
a preprocess that is not a per-pixel scale and shift) gets `missing`, a one-line reason, instead.
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import fx, nn

from training import contract as C
from training.nets import graph_model
from training.nets.architecture import Layer
from training.nets.graph_ops import ATTRIBUTES, METHODS, GraphFormatError, encode, function_name, module_settings, \
    module_type
from training.own_loop.layer_capture import eval_trace, units_node

FORMAT = "mnistlab.fx-graph"
VERSION = 1
PIXELS = 28 * 28


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return eval_trace(model)  # the eval graph is the one the views run
    except Exception as e:
        raise GraphFormatError(f"torch.fx cannot trace {type(model).__name__} ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None


def _tensor_at(root: nn.Module, path: str) -> torch.Tensor:
    owner, _, name = path.rpartition(".")
    value = getattr(root.get_submodule(owner) if owner else root, name)
    if not isinstance(value, torch.Tensor):
        raise GraphFormatError(f"attribute {path} is a {type(value).__name__}, not a tensor")
    return value


def _node(node: fx.Node) -> dict:
    if node.op == "call_function":
        target = function_name(node.target)
        if target == "builtins.getattr" and (len(node.args) != 2 or node.args[1] not in ATTRIBUTES):
            raise GraphFormatError(f"node {node.name} reads attribute {node.args[1:]!r} of a tensor; only "
                                   f"{', '.join(sorted(ATTRIBUTES))} can be described")
    elif node.op == "call_method":
        if node.target not in METHODS:
            raise GraphFormatError(f"tensor method .{node.target}() is not one the model graph can describe")
        target = node.target
    else:
        target = node.target if node.op in ("call_module", "get_attr") else None
    return {"name": node.name, "op": node.op, "target": target, "args": encode(tuple(node.args), fx.Node),
            "kwargs": {k: encode(v, fx.Node) for k, v in node.kwargs.items()}}


def input_affine(preprocess, device) -> tuple[np.ndarray, np.ndarray]:
    """The preprocess as scale and shift arrays of its output's per-image shape (e.g. (1, 28, 28)), checked on
    random images; GraphFormatError if it is not a per-pixel scale and shift of its input."""
    gen = torch.Generator().manual_seed(0)
    probe = torch.cat([torch.zeros(1, 1, 28, 28), torch.ones(1, 1, 28, 28), torch.rand(2, 1, 28, 28, generator=gen)])
    with torch.no_grad():
        out = preprocess(probe.to(device)).detach().float().cpu()
    if out.dim() < 2 or out.shape[0] != len(probe) or out[0].numel() != PIXELS:
        raise GraphFormatError(f"the preprocess gives {tuple(out.shape[1:])} per image, not the 784 pixels rescaled")
    shift, scale = out[0], out[1] - out[0]
    expect = shift.flatten() + probe[2:].flatten(1) * scale.flatten()
    if not torch.allclose(out[2:].flatten(1), expect, rtol=1e-4, atol=1e-5):
        raise GraphFormatError("the preprocess is not a per-pixel scale and shift (as Normalize is), so the "
                               "dashboard cannot apply it to the images it feeds the model")
    return scale.numpy().astype(np.float32), shift.numpy().astype(np.float32)


def describe(model: nn.Module, layers: tuple[Layer, ...]) -> tuple[dict, fx.GraphModule, list[str]]:
    """The model's graph as JSON data, the traced module, and the names of the tensors outside its weight layers.
    GraphFormatError, one line, if any part of it is outside the allowlists."""
    traced = _trace(model)
    modules = dict(traced.named_modules())
    nodes, described = [], {}
    for node in traced.graph.nodes:
        if node.op == "call_module" and node.target not in described:
            described[node.target] = {"type": module_type(modules[node.target]),
                                      "settings": module_settings(modules[node.target])}
        nodes.append(_node(node))
    if sum(n["op"] == "placeholder" for n in nodes) != 1:
        raise GraphFormatError(f"{type(model).__name__}.forward takes more than the images")
    calls = {n.target: n for n in traced.graph.nodes if n.op == "call_module"}
    if missing := [l.name for l in layers if l.name not in calls]:
        raise GraphFormatError(f"layer {missing[0]} is not called in the traced graph")
    units = {l.name: units_node(calls[l.name], modules)[0].name for l in layers}
    weight_keys = {f"{l.name}.{p}" for l in layers for p in ("weight", "bias")}
    tensors = [f"{path}.{name}" if path else name for path in described
               for name, t in [*modules[path].named_parameters(recurse=False), *modules[path].named_buffers(recurse=False)]
               if t is not None and t.is_floating_point()]
    tensors += [n.target for n in traced.graph.nodes if n.op == "get_attr"]
    tensors = [t for t in dict.fromkeys(tensors) if t not in weight_keys]
    graph = {"format": FORMAT, "version": VERSION, "model_class": type(model).__name__,
             "modules": described, "nodes": nodes, "units": units}
    return graph, traced, tensors


class ModelGraph:
    """What a LoggedRun keeps to write its model as it ends: the graph, and the state outside the weight layers
    at each snapshot epoch.  `missing` is why there is none ("" when there is one)."""

    def __init__(self, model: nn.Module, layers: tuple[Layer, ...], preprocess, device):
        self.missing, self.states = "", {}
        try:
            self.graph, self.traced, self.tensors = describe(model, layers)
            self.scale, self.shift = input_affine(preprocess, device)
            json.dumps(self.graph, allow_nan=False)
        except (GraphFormatError, ValueError, TypeError) as e:
            self.missing = str(e).splitlines()[0][:300]

    def record(self, epoch: int) -> None:
        """Keep the state outside the weight layers as it is now, for snapshot epoch `epoch`."""
        if not self.missing:
            self.states[epoch] = {n: _tensor_at(self.traced, n).detach().float().cpu().numpy().copy()
                                  for n in self.tensors}

    def write(self, directory: Path) -> tuple[Path, Path]:
        """The .npz, then the graph that names its sha256: a graph without its weights, or with others, is no model."""
        arrays = {C.OWN_INPUT_SCALE: self.scale, C.OWN_INPUT_SHIFT: self.shift}
        arrays |= {C.own_state_key(e, n): a for e, state in self.states.items() for n, a in state.items()}
        weights, graph = directory / C.MODEL_WEIGHTS_FILE, directory / C.OWN_MODEL_GRAPH_FILE
        np.savez(weights, **arrays)
        shapes = {n: list(a.shape) for n, a in next(iter(self.states.values()), {}).items()}
        body = {**self.graph, "input_shape": list(self.scale.shape), "tensors": shapes, "snapshot_epochs": sorted(self.states),
                "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
        graph.write_text(json.dumps(body, indent=None, allow_nan=False) + "\n")
        graph_model.parse_graph(graph)  # what is written must be what the reader takes (GraphModelError otherwise)
        return weights, graph
