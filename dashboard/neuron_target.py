"""What a neuron page's address asks for: a run, a hidden layer, a snapshot epoch and maybe a unit, checked.

Layers are numbered from 1 (the first hidden layer), as in the URL and in the neuron name tags.
Every problem with what the user asked for raises StoreError with a one-line message the page shows.
"""
import re
from dataclasses import dataclass
from urllib.parse import urlencode

from dashboard import store
from dashboard.logged_activations import logged_layers
from dashboard.store import StoreError
from training import contract as C
from training.config import ConfigError, RunConfig
from training.architecture import layers_of

INTEGER_RE = re.compile(r"-?[0-9]{1,9}")


def layer_href(run_id: str, layer: int, epoch: int | None = None) -> str:
    query = {"layer": layer} | ({"epoch": epoch} if epoch is not None else {})
    return f"/runs/{run_id}/neurons?{urlencode(query)}"


def unit_href(run_id: str, layer: int, unit: int, epoch: int | None = None) -> str:
    return f"/runs/{run_id}/neurons/{layer}/{unit}" + (f"?epoch={epoch}" if epoch is not None else "")


def parse_int(value, what: str) -> int:
    """An integer from a URL part or query value, or StoreError naming what was wrong."""
    text = str(value).strip()
    if not INTEGER_RE.fullmatch(text):  # ASCII only: str.isdigit() accepts '²', which int() rejects
        raise StoreError(f"{what} '{text[:20]}' is not a whole number")
    return int(text)


def run_config(run) -> RunConfig:
    """The model config a run trained with, from its params; StoreError for runs our trainer did not log."""
    run_id = run.info.run_id
    if C.PARAM_LAYER_STRUCTURE in run.data.params:
        raise StoreError(f"run {run_id[:8]} was logged from its own training loop: its units' activations are in "
                         f"the store but not its model's code, so what reruns the network cannot be shown")
    try:
        return RunConfig.from_params(run.data.params, where=f"run {run_id[:8]} params")
    except ConfigError as e:
        raise StoreError(f"run {run_id} has no neurons to show: it was not logged by MNIST Lab's trainer "
                         f"({e})") from None


def hidden_layers(run) -> list[str]:
    return store.layer_names(run)[:-1]


@dataclass(frozen=True)
class Target:
    """A validated (run, layer, epoch) and what the pages need to know about it."""
    run_id: str
    run_name: str
    layer: int  # 1-based hidden layer
    layer_name: str
    kind: str  # "linear" or "conv"
    units: int
    epoch: int
    epochs: tuple
    activation: str
    first: bool  # the first hidden layer: its weights are image-shaped
    prev_name: str | None  # previous hidden layer's name (None for the first)
    unit: int | None = None  # the unit asked for, if any


def resolve(run_id, layer=1, epoch=None, unit=None) -> Target:
    """Check a run id, 1-based layer, epoch (default: the last snapshot) and unit; StoreError if any is wrong."""
    run = store.get_run(str(run_id))
    specs, activation_of = _layer_specs(run)
    hidden = hidden_layers(run)
    if not hidden:
        raise StoreError(f"run {run_id} has no hidden layers logged")
    layer = 1 if layer in (None, "") else parse_int(layer, "layer")
    if not 1 <= layer <= len(hidden):
        raise StoreError(f"layer {layer} does not exist: this run's hidden layers are 1–{len(hidden)} "
                         f"({', '.join(hidden)})")
    epochs = tuple(store.snapshot_epochs(run_id))
    if not epochs:
        raise StoreError(f"run {run_id} logged no weight snapshots, so its neurons cannot be shown")
    epoch = epochs[-1] if epoch in (None, "") else parse_int(epoch, "epoch")
    if epoch not in epochs:
        raise StoreError(f"epoch {epoch} has no snapshot: this run has snapshots for epochs "
                         f"{_epoch_list(epochs)}")
    spec = specs[hidden[layer - 1]]
    u = None
    if unit not in (None, ""):
        u = parse_int(unit, "unit")
        if not 0 <= u < spec.units:
            raise StoreError(f"unit {u} does not exist: layer {layer} ({spec.name}) has units 0–{spec.units - 1}")
    return Target(run_id=run_id, run_name=run.info.run_name or run_id[:8], layer=layer, layer_name=spec.name,
                  kind=spec.kind, units=spec.units, epoch=epoch, epochs=epochs, activation=activation_of(spec),
                  first=layer == 1 and sees_image(spec), prev_name=hidden[layer - 2] if layer > 1 else None, unit=u)


def sees_image(layer) -> bool:
    """Whether a first layer's input is the image itself, so its weights are image-shaped."""
    return (layer.kind == "conv" and layer.weight_shape[1] == 1) or (layer.kind == "linear" and layer.fan_in == 784)


def _layer_specs(run):
    """The run's layers by name, and each one's activation: a built-in run's config's, or as its own loop logged."""
    if (logged := logged_layers(run)) is not None:
        return {l.name: l for l in logged}, lambda spec: spec.activation
    config = run_config(run)
    return {l.name: l for l in layers_of(config)}, lambda spec: config.activation


def _epoch_list(epochs) -> str:
    if list(epochs) == list(range(epochs[0], epochs[-1] + 1)) and len(epochs) > 2:
        return f"{epochs[0]}–{epochs[-1]}"
    return ", ".join(map(str, epochs))
