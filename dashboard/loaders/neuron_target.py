"""What a neuron page's address asks for: a run, a hidden layer, a snapshot epoch and maybe a unit, checked.

`resolve` is the one place the neuron pages look their run up: it reads the run once and keeps what every
loader needs (its config or why there is none, its layers, its snapshot epochs, whether it came from the
user's own loop, whether it finished, its neuron names) in a frozen Target.  The loaders take that Target
and never ask for the run again; `select` moves it to another layer, epoch or unit without a store read,
and `counterpart` resolves a second run to compare with.  Snapshots are still read by run id, through
dashboard.read.store.

Layers are numbered from 1 (the first hidden layer), as in the URL and in the neuron name tags.
Every problem with what the user asked for raises StoreError with a one-line message the page shows.
"""
import functools
import re
from dataclasses import dataclass, fields
from urllib.parse import urlencode

from dashboard.read import cache, store
from dashboard.read.store import StoreError
from training import contract as C
from training.config import ConfigError, RunConfig
from training.nets.architecture import Layer, layers_of, logged_structure

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
        raise StoreError(_own_loop_reason(run_id))
    try:
        return RunConfig.from_params(run.data.params, where=f"run {run_id[:8]} params")
    except ConfigError as e:
        raise StoreError(f"run {run_id} has no neurons to show: it was not logged by MNIST Lab's trainer "
                         f"({e})") from None


def _own_loop_reason(run_id: str, why: str | None = None) -> str:
    """Why a run from its own loop may have no network to rerun: its run's one-line reason when it logged one
    (training.own_loop.model_graph), else the model graph is missing (an older run, or one stopped before its end)."""
    if why:
        return (f"run {run_id[:8]} was logged from its own training loop and its model could not be logged as data "
                f"({why[:300]}), so what reruns the network cannot be shown")
    return (f"run {run_id[:8]} was logged from its own training loop: its units' activations are in the store "
            f"but not its model graph ({C.own_model_path(C.OWN_MODEL_GRAPH_FILE)}, logged as such a run ends), "
            f"so what reruns the network cannot be shown")


def hidden_layers(run) -> list[str]:
    return store.layer_names(run)[:-1]


@dataclass(frozen=True)
class Target:
    """A run resolved once, at one hidden layer, snapshot epoch and maybe unit: plain data the loaders and
    the pure builders take, so none of them looks the run up again.  Hashable (a cache may key on it)."""
    # the run, as resolve read it
    run_id: str
    run_name: str
    experiment_id: str
    finished: bool  # in a terminal status: its metrics and snapshot list no longer change
    own_loop: bool  # logged from the user's own loop: its units' activations are logged, its model as data maybe
    config: RunConfig | None  # the config it trained with; None for a run from its own loop ...
    no_config: str  # ... and the one-line reason why ('' when there is one; for a run from its own loop, why a view
    #                 that reruns the network may find no model graph: dashboard.loaders.own_model)
    specs: tuple[Layer, ...]  # its weight layers, input to output; every one but the last is hidden
    epochs: tuple[int, ...]  # its snapshot epochs, ascending
    arch_label: str | None
    labels: tuple[tuple[int, int, str, str], ...]  # its units' names and notes: (layer, unit, field, text)
    # where on it
    layer: int  # 1-based hidden layer
    layer_name: str
    kind: str  # "linear" or "conv"
    units: int
    epoch: int
    activation: str
    first: bool  # the first hidden layer: its weights are image-shaped
    prev_name: str | None  # previous hidden layer's name (None for the first)
    unit: int | None = None  # the unit asked for, if any

    @property
    def names(self) -> tuple[str, ...]:
        """The weight layers' names, input to output."""
        return tuple(spec.name for spec in self.specs)

    @property
    def hidden(self) -> tuple[str, ...]:
        return self.names[:-1]


def resolve(run_id, layer=1, epoch=None, unit=None) -> Target:
    """Check a run id, 1-based layer, epoch (default: the last snapshot) and unit; StoreError if any is wrong.

    The only function of the neuron loaders that reads the run itself (tests/test_unit_loader.py holds them to it).
    """
    run = store.get_run(str(run_id))
    specs, config, no_config = _network(run)
    if len(specs) < 2:
        raise StoreError(f"run {run_id} has no hidden layers logged")
    epochs = tuple(store.snapshot_epochs(run_id))
    if not epochs:
        raise StoreError(f"run {run_id} logged no weight snapshots, so its neurons cannot be shown")
    labels = tuple(sorted((n, *found, value) for n in range(1, len(specs)) for key, value in run.data.tags.items()
                          if (found := C.neuron_tag_unit(n, key)) is not None))
    return _place(layer, epoch, unit, run_id=run_id, run_name=run.info.run_name or run_id[:8],
                  experiment_id=run.info.experiment_id, finished=store.is_finished(run), own_loop=config is None,
                  config=config, no_config=no_config, specs=specs, epochs=epochs,
                  arch_label=store.arch_label(run.data.params), labels=labels)


def select(t: Target, layer=1, epoch=None, unit=None) -> Target:
    """The resolved run at another layer, epoch (default: the last snapshot) or unit, checked as resolve
    checks them, from what was resolved: no store read."""
    return _place(layer, epoch, unit, **{f: getattr(t, f) for f in RUN_FIELDS})


def counterpart(t: Target, other_run_id) -> Target:
    """Another run at t's layer, to compare with: at t's epoch if it has that snapshot, else at its last.
    StoreError if that layer is another layer there (its units would not see the same input)."""
    other = resolve(store.check_run_id(other_run_id), t.layer)
    if t.epoch in other.epochs:
        other = select(other, t.layer, t.epoch)
    if other.layer_name != t.layer_name:
        raise StoreError(f"run {other.run_id[:8]}'s layer {t.layer} is {other.layer_name}, not {t.layer_name}")
    return other


_FIELDS = [f.name for f in fields(Target)]
RUN_FIELDS = tuple(_FIELDS[:_FIELDS.index("layer")])  # Target's run half, as resolve read it; the rest: where on it


def _place(layer, epoch, unit, *, specs, epochs, own_loop, config, **run) -> Target:
    """A Target from its run half (RUN_FIELDS, as keywords) and a layer, epoch and unit, checked against it."""
    hidden = specs[:-1]
    layer = 1 if layer in (None, "") else parse_int(layer, "layer")
    if not 1 <= layer <= len(hidden):
        raise StoreError(f"layer {layer} does not exist: this run's hidden layers are 1–{len(hidden)} "
                         f"({', '.join(s.name for s in hidden)})")
    epoch = epochs[-1] if epoch in (None, "") else parse_int(epoch, "epoch")
    if epoch not in epochs:
        raise StoreError(f"epoch {epoch} has no snapshot: this run has snapshots for epochs {_epoch_list(epochs)}")
    spec = hidden[layer - 1]
    u = None
    if unit not in (None, ""):
        u = parse_int(unit, "unit")
        if not 0 <= u < spec.units:
            raise StoreError(f"unit {u} does not exist: layer {layer} ({spec.name}) has units 0–{spec.units - 1}")
    return Target(**run, specs=specs, epochs=epochs, own_loop=own_loop, config=config, layer=layer,
                  layer_name=spec.name, kind=spec.kind, units=spec.units, epoch=epoch, unit=u,
                  activation=spec.activation if own_loop else config.activation,
                  first=layer == 1 and sees_image(spec), prev_name=hidden[layer - 2].name if layer > 1 else None)


def sees_image(layer) -> bool:
    """Whether a first layer's input is the image itself, so its weights are image-shaped."""
    return (layer.kind == "conv" and layer.weight_shape[1] == 1) or (layer.kind == "linear" and layer.fan_in == 784)


def _network(run) -> tuple[tuple[Layer, ...], RunConfig | None, str]:
    """The run's layers, and its config or why it has none: a built-in run's from its config, a run from the
    user's own loop as that loop logged them (training.own_loop).  StoreError for a run with neither."""
    try:
        logged = logged_structure(run.data.params)
    except ValueError as e:
        raise StoreError(f"run {run.info.run_id[:8]}: {e}") from None
    if logged is not None:
        return tuple(logged), None, _own_loop_reason(run.info.run_id, run.data.tags.get(C.TAG_OWN_MODEL_MISSING))
    config = run_config(run)
    return tuple(layers_of(config)), config, ""


def _epoch_list(epochs) -> str:
    if list(epochs) == list(range(epochs[0], epochs[-1] + 1)) and len(epochs) > 2:
        return f"{epochs[0]}–{epochs[-1]}"
    return ", ".join(map(str, epochs))


def memoize_by(maxsize: int, key):
    """dashboard.read.cache's memoize for a loader of a Target, keyed by `key(*args)`: the parts of the target
    that decide the answer (run id, epoch, layer...), as the caches were keyed when loaders took run ids, so
    another unit, or a name given to one, does not recompute a layer's activations."""
    def wrap(fn):
        kept = cache.LRU(maxsize)  # registered with cache.clear(); keys get the tracking URI in front

        @functools.wraps(fn)
        def call(*args):
            k = key(*args)
            if (hit := kept.get(k)) is not None:
                return hit
            return kept.put(k, fn(*args))
        call.cache_clear = kept.clear
        return call
    return wrap
