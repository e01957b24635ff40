"""A run's model rebuilt from its logged graph (training.own_loop.model_graph), with nothing from the files run as code.

The files are untrusted (any store, anyone's files), so reading them is checked at every step:
- graph.json: its size before a byte is read, then every node's op, name and target: a module type,
  function or tensor method outside the allowlists (training.nets.graph_ops) refuses the whole model;
- the modules are built from their settings on PyTorch's meta device first, so a planted
  Linear(10**9, 10**9) costs nothing, and their parameters are counted and checked against the run's layers;
- the .npz: its sha256 must be the one the graph names (a half-written artifact is no model), then it is
  read by training.nets.snapshot_reader: headers first, plain numbers, the shapes the graph declares.
The graph is then walked by GraphNet, a small interpreter: no code is generated, imported or evaluated.
Every refusal is one line (GraphModelError).
"""
import hashlib
import json
import keyword
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training import contract as C
from training.nets.architecture import Layer
from training.nets.graph_ops import FUNCTIONS, MODULES, METHODS, ATTRIBUTES, GraphFormatError, Ref, decode
from training.nets.snapshot_reader import SnapshotError, read_snapshot

MAX_GRAPH_BYTES = 2_000_000  # a graph of a few dozen nodes is some 10 kB of JSON
MAX_NODES = 5_000
MAX_PARAMS = 50_000_000  # 200 MB of float32: far above any MNIST net, far below what a planted graph could ask for
HEADROOM_BYTES = 1_000_000
MAX_FILE_BYTES = 1 << 30  # as a snapshot's ceiling (training.nets.snapshot_reader)
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
# A module or tensor path as PyTorch names them (fcs.0.weight, blocks.lin 0); no part may start with "__" (__class__).
# Paths are only ever keys of modules' own tables (add_module, get_submodule): no code is made from them.
PATH = re.compile(r"(?!__)[\w\- :]{1,100}(\.(?!__)[\w\- :]{1,100}){0,15}", re.ASCII)
OPS = ("placeholder", "get_attr", "call_module", "call_function", "call_method", "output")
SETTING_TYPES = (bool, int, float, str, type(None))


class GraphModelError(ValueError):
    """A logged model graph that cannot be rebuilt safely; the message is one line for a person."""


@dataclass(frozen=True)
class GraphSpec:
    """A graph.json, checked: what GraphNet is built from."""
    input_shape: tuple[int, ...]
    modules: dict  # path -> (type name, settings)
    tensors: dict  # state name -> shape
    nodes: tuple  # (name, op, target, args, kwargs), args decoded (Ref for a node)
    units: dict  # layer name -> node holding its units
    epochs: tuple[int, ...]
    weights_sha256: str


def _fail(message: str):
    raise GraphModelError(f"{C.OWN_MODEL_GRAPH_FILE}: {message}")


def _settings(path: str, spec) -> tuple[str, dict]:
    if not isinstance(spec, dict) or spec.get("type") not in MODULES or not isinstance(spec.get("settings"), dict):
        kind = spec.get("type") if isinstance(spec, dict) else spec
        _fail(f"module {path} is of type {str(kind)[:40]!r}, which is not on the allowlist: refused")
    _, keys = MODULES[spec["type"]]
    out = {}
    for key, value in spec["settings"].items():
        if key not in keys:
            _fail(f"module {path} ({spec['type']}) has no setting {str(key)[:40]!r}")
        if isinstance(value, dict) and set(value) == {"tuple"} and isinstance(value["tuple"], list):
            value = tuple(value["tuple"])
        items = value if isinstance(value, tuple) else (value,)
        if not all(isinstance(v, SETTING_TYPES) and not (isinstance(v, str) and len(v) > 20) for v in items):
            _fail(f"module {path}: setting {key} = {str(value)[:40]!r} is not a plain number, flag or short word")
        out[key] = value
    return spec["type"], out


def _check_node(raw, known: set) -> tuple:
    if not isinstance(raw, dict) or raw.get("op") not in OPS:
        _fail(f"a node has op {str(raw.get('op') if isinstance(raw, dict) else raw)[:40]!r}, which is not an fx op")
    name, op, target = raw.get("name"), raw["op"], raw.get("target")
    if not isinstance(name, str) or not NAME.fullmatch(name) or keyword.iskeyword(name) or name in known:
        _fail(f"node name {str(name)[:40]!r} is not a fresh identifier")
    if op == "call_function" and target not in FUNCTIONS:
        _fail(f"node {name} calls {str(target)[:60]!r}, which is not on the allowlist: refused, nothing was run")
    if op == "call_method" and target not in METHODS:
        _fail(f"node {name} calls method {str(target)[:60]!r}, which is not on the allowlist: refused")
    if op in ("call_module", "get_attr") and not (isinstance(target, str) and PATH.fullmatch(target)):
        _fail(f"node {name} names {str(target)[:60]!r}, which is not a module path")
    try:
        args = decode(raw.get("args", {"tuple": []}), known)
        kwargs = raw.get("kwargs", {})
        if not isinstance(args, tuple) or not isinstance(kwargs, dict):
            _fail(f"node {name}'s arguments are not a tuple and an object")
        kwargs = {str(k): decode(v, known) for k, v in kwargs.items()}
    except GraphFormatError as e:
        _fail(f"node {name}: {e}")
    if target == "builtins.getattr" and (len(args) != 2 or args[1] not in ATTRIBUTES):
        _fail(f"node {name} reads attribute {str(args[1:])[:40]}, which is not on the allowlist: refused")
    return name, op, target, args, kwargs


def _shape(value, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > 8 or not all(isinstance(v, int) and 0 < v < 1 << 31 for v in value):
        _fail(f"{what} has shape {str(value)[:40]}, not a list of positive sizes")
    return tuple(value)


def parse_graph(path: Path) -> GraphSpec:
    """graph.json, checked (its size first); GraphModelError in one line for anything outside the format."""
    if (size := path.stat().st_size) > MAX_GRAPH_BYTES:
        _fail(f"{size:,} bytes, more than a model graph's {MAX_GRAPH_BYTES:,}: refused before reading")
    try:
        raw = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        _fail(f"not JSON ({str(e)[:80]})")
    if not isinstance(raw, dict) or raw.get("format") != "mnistlab.fx-graph" or raw.get("version") != 1:
        _fail("not a model graph this version of MNIST Lab writes (format mnistlab.fx-graph, version 1)")
    if not isinstance(raw.get("nodes"), list) or not 2 <= len(raw["nodes"]) <= MAX_NODES:
        _fail(f"its nodes are not a list of 2–{MAX_NODES:,}")
    if not isinstance(raw.get("modules"), dict) or not isinstance(raw.get("tensors"), dict):
        _fail("it has no modules or tensors")
    modules = {p: _settings(p, s) for p, s in raw["modules"].items() if PATH.fullmatch(str(p)) or _fail(
        f"module path {str(p)[:40]!r} is not a module path")}
    known, nodes = set(), []
    for item in raw["nodes"]:
        node = _check_node(item, known)
        if node[1] == "call_module" and node[2] not in modules:
            _fail(f"node {node[0]} calls module {node[2]}, which the graph does not describe")
        if node[1] == "get_attr" and node[2] not in raw["tensors"]:
            _fail(f"node {node[0]} reads {node[2]}, which is not one of the graph's tensors")
        known.add(node[0])
        nodes.append(node)
    if [n[1] for n in nodes].count("placeholder") != 1 or nodes[-1][1] != "output":
        _fail("the graph does not take one input and end in its output")
    units, epochs = raw.get("units"), raw.get("snapshot_epochs")
    if not isinstance(units, dict) or not all(isinstance(v, str) and v in known for v in units.values()):
        _fail("its units do not name nodes of the graph")
    if not isinstance(epochs, list) or not all(isinstance(e, int) and 0 <= e < 10**6 for e in epochs):
        _fail("its epochs are not whole numbers")
    tensors = {n: _shape(s, f"tensor {str(n)[:40]}") for n, s in raw["tensors"].items()
               if PATH.fullmatch(str(n)) or _fail(f"tensor name {str(n)[:40]!r} is not a module path")}
    digest = raw.get("weights_sha256")
    if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        _fail("it names no sha256 of its weights")
    return GraphSpec(_shape(raw.get("input_shape"), "input"), modules, tensors, tuple(nodes), units, tuple(epochs),
                     digest)


def state_budget(spec: GraphSpec) -> int:
    """The most bytes the .npz may hold: the input's scale and shift and every epoch's state, as float32."""
    per_epoch = sum(math.prod(s) for s in spec.tensors.values())
    return min((2 * math.prod(spec.input_shape) + len(spec.epochs) * per_epoch) * 4 + HEADROOM_BYTES, MAX_FILE_BYTES)


def read_state(path: Path, spec: GraphSpec, epoch: int) -> dict[str, np.ndarray]:
    """The .npz's input scale and shift and the state at `epoch`, after its sha256 is checked against the graph's."""
    name = C.MODEL_WEIGHTS_FILE
    if epoch not in spec.epochs:
        raise GraphModelError(f"{name} holds no state for epoch {epoch} (it has {list(spec.epochs)[:10]})")
    wanted = {C.OWN_INPUT_SCALE: spec.input_shape, C.OWN_INPUT_SHIFT: spec.input_shape}
    wanted |= {C.own_state_key(epoch, n): s for n, s in spec.tensors.items()}
    budget = sum(math.prod(s) for s in wanted.values()) * 4 + HEADROOM_BYTES
    if (size := path.stat().st_size) > state_budget(spec):
        raise GraphModelError(f"{name} is {size:,} bytes, more than its graph's tensors take "
                              f"({state_budget(spec):,}): refused before reading")
    if hashlib.sha256(path.read_bytes()).hexdigest() != spec.weights_sha256:
        raise GraphModelError(f"{name} is not the file its graph was written with (sha256 differs): refused")
    try:
        arrays = read_snapshot(path, wanted, budget)
    except SnapshotError as e:
        raise GraphModelError(f"{name}: {e}") from None
    for key in wanted:
        if key not in arrays or arrays[key].dtype != np.float32:
            raise GraphModelError(f"{name} has no float32 {key}")
    return arrays


def _set(root: nn.Module, path: str, child: nn.Module) -> None:
    *owners, last = path.split(".")
    at = root
    try:
        for part in owners:
            children = dict(at.named_children())
            if part not in children:
                at.add_module(part, children.setdefault(part, nn.Module()))
            at = children[part]
        at.add_module(last, child)
    except (KeyError, TypeError, AttributeError):
        _fail(f"module path {path} clashes with another or with a module's own attribute")


def _modules(spec: GraphSpec) -> nn.Module:
    root = nn.Module()
    with torch.device("meta"):  # nothing is allocated until the sizes are counted
        for path, (kind, settings) in spec.modules.items():
            try:
                module = MODULES[kind][0](**settings)
            except Exception as e:  # noqa: BLE001 (a constructor's own check: one line)
                _fail(f"module {path} ({kind}) cannot be built from its settings ({str(e).splitlines()[0][:80]})")
            _set(root, path, module)
    count = sum(p.numel() for p in root.parameters()) + sum(math.prod(s) for s in spec.tensors.values())
    if count > MAX_PARAMS:
        _fail(f"its modules hold {count:,} parameters, more than any MNIST net here ({MAX_PARAMS:,}): refused")
    return root


def build(spec: GraphSpec, layers: tuple[Layer, ...], weights: dict[str, np.ndarray], state: dict[str, np.ndarray],
          epoch: int) -> "GraphNet":
    """The model at `epoch`: the weight layers' weights from that snapshot (`weights`, snapshot keys), the rest
    from `state` (read_state).  GraphModelError if a module's shape is not the run's own or a tensor is missing."""
    root = _modules(spec)
    for layer in layers:
        module = root.get_submodule(layer.name) if layer.name in spec.modules else None
        if module is None or tuple(module.weight.shape) != tuple(layer.weight_shape) or layer.name not in spec.units:
            _fail(f"layer {layer.name} is not the {layer.kind} of shape {layer.weight_shape} the run logged")
    root = root.to_empty(device="cpu")
    given = {}
    for layer in layers:
        given[f"{layer.name}.weight"] = weights[C.weight_key(layer.name)]
        if root.get_submodule(layer.name).bias is not None:
            given[f"{layer.name}.bias"] = weights[C.bias_key(layer.name)]
    given |= {n: state[C.own_state_key(epoch, n)] for n in spec.tensors}
    own = dict(root.named_parameters()) | {n: b for n, b in root.named_buffers() if b.is_floating_point()}
    if missing := [n for n in own if n not in given]:
        _fail(f"no value for {missing[0]}")
    net = GraphNet(root, spec, state[C.OWN_INPUT_SCALE], state[C.OWN_INPUT_SHIFT])
    with torch.no_grad():
        for name, value in given.items():
            _place(net.body, name, torch.from_numpy(np.array(value, dtype=np.float32)))
    return net.eval()


def _place(root: nn.Module, name: str, value: torch.Tensor) -> None:
    owner, _, attr = name.rpartition(".")
    try:
        at = root.get_submodule(owner) if owner else root
        current = getattr(at, attr, None)
        if isinstance(current, torch.Tensor):
            if tuple(current.shape) != tuple(value.shape):
                _fail(f"{name} is {tuple(value.shape)}, its module has {tuple(current.shape)}")
            current.copy_(value)
        else:  # a tensor the graph reads with get_attr (a model's own parameter or constant)
            at.register_buffer(attr, value.clone())
    except (AttributeError, KeyError, TypeError):
        _fail(f"tensor {name} has no place in the graph's modules")


class GraphNet(nn.Module):
    """The logged graph as a module: takes (B, 784) or (B, 1, 28, 28) images in [0, 1], applies the run's
    preprocess (scale and shift), walks the nodes.  `run(x, keep)` also returns the values of the nodes named."""

    def __init__(self, body: nn.Module, spec: GraphSpec, scale: np.ndarray, shift: np.ndarray):
        super().__init__()
        self.body, self.spec = body, spec
        self.register_buffer("scale", torch.from_numpy(np.array(scale, dtype=np.float32)))
        self.register_buffer("shift", torch.from_numpy(np.array(shift, dtype=np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x, ())[0]

    def run(self, x: torch.Tensor, keep) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        env = {}
        for name, op, target, args, kwargs in self.spec.nodes:
            if op == "placeholder":
                env[name] = x.reshape(len(x), *self.spec.input_shape) * self.scale + self.shift
                continue
            a, k = _resolve(args, env), {key: _resolve(v, env) for key, v in kwargs.items()}
            if op == "output":
                return a[0], {n: env[n] for n in keep}
            if op == "get_attr":
                owner, _, attr = target.rpartition(".")
                env[name] = getattr(self.body.get_submodule(owner) if owner else self.body, attr)
            elif op == "call_module":
                env[name] = self.body.get_submodule(target)(*a, **k)
            elif op == "call_function":
                env[name] = FUNCTIONS[target](*a, **k)
            else:  # call_method, on a tensor: the allowlist names tensor methods only
                if not isinstance(a[0], torch.Tensor):
                    raise GraphModelError(f"node {name} calls .{target}() on a {type(a[0]).__name__}")
                env[name] = getattr(a[0], target)(*a[1:], **k)
        raise GraphModelError("the graph has no output")


def _resolve(value, env):
    if isinstance(value, Ref):
        return env[value.name]
    if isinstance(value, (tuple, list)):
        return type(value)(_resolve(v, env) for v in value)
    if isinstance(value, slice):
        return slice(_resolve(value.start, env), _resolve(value.stop, env), _resolve(value.step, env))
    return value
