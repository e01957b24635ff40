"""A network's weight layers, and the arrays each of its snapshots holds, from its config alone.

training/models.py builds the networks from these layers; the dashboard reads them to know what
a run's snapshot must hold before it reads a byte of it.  No torch here: dashboard.store imports
this module and must start without torch.
"""
import math
from dataclasses import dataclass

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
    """The arrays of a snapshot besides weights and biases (training/evaluation.py writes them), by shape."""
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


def run_layers(params: dict[str, str], where: str = "this run's params") -> RunLayers:
    """A run's layers from its params (RunConfig.from_params), or only their names from its layers param."""
    try:
        layers = tuple(layers_of(RunConfig.from_params(params, where=where)))
    except (ConfigError, ValueError, OverflowError) as e:  # ValueError: a number too long for int()
        names = params.get(C.PARAM_LAYERS, "")
        return RunLayers(tuple(dict.fromkeys(n for n in str(names).split(",") if n)), None, str(e))
    return RunLayers(tuple(l.name for l in layers), layers, "")
