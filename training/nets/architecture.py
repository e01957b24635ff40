"""A network's weight layers, and the arrays each of its snapshots holds, from its config alone.

training/nets/models.py builds the networks from these layers; the dashboard reads them to know what
a run's snapshot must hold before it reads a byte of it.  No torch here: dashboard.read.store imports
this module and must start without torch.
"""
import json
import math
from dataclasses import MISSING, asdict, dataclass, fields

from training import contract as C
from training.config import N_CLASSES, ConfigError, RunConfig

CNN_CHANNELS = (16, 32)
CNN_KERNEL = 3
CNN_FLAT = CNN_CHANNELS[1] * 5 * 5  # 28 -conv-> 26 -pool-> 13 -conv-> 11 -pool-> 5

ACT_BINS, CONF_BINS = 40, 20  # bins of a snapshot's activation and confidence histograms
N_TEST = 10_000  # MNIST test images: a snapshot holds one prediction for each


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str  # "linear" or "conv"
    weight_shape: tuple[int, ...]  # PyTorch's own layout: (out, in) or (out, in, kh, kw)
    activation: str = ""  # a logged model's own, per layer (training.own_loop.layer_capture); "" when the config says
    out_shape: tuple[int, ...] = ()  # a logged model's layer output per image, e.g. (32, 26, 26); () when unknown

    @property
    def fan_in(self) -> int:
        return math.prod(self.weight_shape[1:])

    @property
    def units(self) -> int:
        return self.weight_shape[0]


def layers_of(config: RunConfig) -> list[Layer]:
    """The network's weight layers, input to output.  Every layer but the last is hidden."""
    if config.arch == "cnn":
        c1, c2 = CNN_CHANNELS
        return [Layer("conv1", "conv", (c1, 1, CNN_KERNEL, CNN_KERNEL)),
                Layer("conv2", "conv", (c2, c1, CNN_KERNEL, CNN_KERNEL)),
                Layer("fc", "linear", (N_CLASSES, CNN_FLAT))]
    s = config.sizes
    return [Layer(f"fc{i + 1}", "linear", (s[i + 1], s[i])) for i in range(len(s) - 1)]


def n_params(config: RunConfig) -> int:
    return sum(math.prod(l.weight_shape) + l.units for l in layers_of(config))


def record_shapes(layer_names) -> dict[str, tuple[int, ...]]:
    """The arrays of a snapshot besides weights and biases (training/engine/evaluation.py writes them), by shape."""
    shapes = {}
    for name in layer_names:
        shapes[C.act_hist_key(name)], shapes[C.act_edges_key(name)] = (ACT_BINS,), (ACT_BINS + 1,)
    shapes.update({C.CONF_EDGES: (CONF_BINS + 1,), C.CONF_HIST_CORRECT: (CONF_BINS,),
                   C.CONF_HIST_INCORRECT: (CONF_BINS,), C.PRED_CLASS: (N_TEST,), C.PRED_CONFIDENCE: (N_TEST,)})
    return shapes


def snapshot_shapes(layers) -> dict[str, tuple[int, ...]]:
    """Every array a snapshot of a network with these layers holds, and its shape."""
    shapes = {}
    for layer in layers:
        shapes[C.weight_key(layer.name)], shapes[C.bias_key(layer.name)] = layer.weight_shape, (layer.units,)
    return shapes | record_shapes([l.name for l in layers])


@dataclass(frozen=True)
class RunLayers:
    """What a logged run says about its network."""
    names: tuple[str, ...]  # weight layers, input to output: its config's, else its logged layers param
    layers: tuple[Layer, ...] | None  # with shapes, when its params are a config of ours; else None ...
    problem: str  # ... and why not ('' when they are)


MAX_STRUCTURE_LAYERS = 256  # a logged structure longer than this is not a network anyone logged with us
MAX_SHAPE_VALUES = 10_000_000  # per weight: more than any MNIST model's, so a planted shape cannot cost memory


def structure_param(layers) -> str:
    """The layer_structure param of a run from the user's own loop: its layers as JSON."""
    return json.dumps([asdict(l) for l in layers], separators=(",", ":"))


def _layer_from(d: dict) -> Layer:
    """A Layer from structure_param's JSON, by the dataclass's own field names; KeyError when one is missing."""
    values = [d[f.name] if f.default is MISSING else d.get(f.name, f.default) for f in fields(Layer)]
    name, kind, shape, activation, out_shape = values
    return Layer(str(name), str(kind), tuple(int(n) for n in shape), str(activation), tuple(int(n) for n in out_shape))


def logged_structure(params: dict[str, str]) -> tuple[Layer, ...] | None:
    """A run's layers from its layer_structure param; None without one; ValueError naming what is wrong."""
    text = params.get(C.PARAM_LAYER_STRUCTURE)
    if text is None:
        return None
    try:
        items = json.loads(text)
        layers = tuple(_layer_from(d) for d in items[:MAX_STRUCTURE_LAYERS + 1])
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"its {C.PARAM_LAYER_STRUCTURE} param is not a list of layers ({type(e).__name__})") from None
    for l in layers:
        ok = (l.kind == "linear" and len(l.weight_shape) == 2) or (l.kind == "conv" and len(l.weight_shape) == 4)
        if not ok or not l.name or min(l.weight_shape) < 1 or math.prod(l.weight_shape) > MAX_SHAPE_VALUES:
            raise ValueError(f"its {C.PARAM_LAYER_STRUCTURE} param has an impossible layer: {l.name[:40]!r} "
                             f"{l.kind[:10]} {l.weight_shape}")
    if not layers or len(layers) > MAX_STRUCTURE_LAYERS or len({l.name for l in layers}) != len(layers):
        raise ValueError(f"its {C.PARAM_LAYER_STRUCTURE} param needs 1–{MAX_STRUCTURE_LAYERS} distinct layers")
    return layers


def run_layers(params: dict[str, str], where: str = "this run's params") -> RunLayers:
    """A run's layers from its params (RunConfig.from_params, or the layer_structure a run from the user's own
    loop logged), or only their names from its layers param."""
    try:
        if (logged := logged_structure(params)) is not None:
            return RunLayers(tuple(l.name for l in logged), logged, "")
    except ValueError as e:
        return RunLayers((), None, f"{where}: {e}")
    try:
        layers = tuple(layers_of(RunConfig.from_params(params, where=where)))
    except (ConfigError, ValueError, OverflowError) as e:  # ValueError: a number too long for int()
        names = params.get(C.PARAM_LAYERS, "")
        return RunLayers(tuple(dict.fromkeys(n for n in str(names).split(",") if n)), None, str(e))
    return RunLayers(tuple(l.name for l in layers), layers, "")
