"""Neurons across runs (/compare/neurons): one row of unit tiles per run, each row reordered to follow the
first run's units.

`load` reads the store (through neuron_target, neuron_stats and their caches); `rows_of` is pure.  Each
other run's units are matched to the first run's on the correlation of their test-set activations
(common.neurons.match_units): one-to-one Hungarian when the layers have the same width,
else each of the first run's units gets its best match in the other run (a unit may then appear twice).
"""
from dataclasses import dataclass, field

from dashboard.loaders import neuron_stats
from dashboard.loaders.neuron_target import Target, counterpart, parse_int, resolve
from dashboard.read import cache, store
from dashboard.views import compare_view
from dashboard.views.neurons.neuron_images import tile_uris

MAX_RUNS = 8  # rows of tiles; more would not fit a screen


@dataclass
class Row:
    target: Target
    order: list  # this run's units, in the first run's unit order
    corr: list  # correlation of each shown unit with the first run's unit in its column (None: the first run)
    tiles: list  # PNG data URIs, in `order`
    method: str = ""


@dataclass
class Across:
    rows: list = field(default_factory=list)
    layer: int = 1
    epoch: int | None = None
    epochs: list = field(default_factory=list)  # snapshot epochs every run has
    layers: list = field(default_factory=list)  # (number, name) of the first run's hidden layers
    caption: str = ""
    problems: list = field(default_factory=list)


@cache.memoize(64)
def _tiles(t: Target) -> tuple[tuple[str, ...], str]:
    """The layer's tiles at a logged snapshot: they never change, so encoded once (dashboard.read.cache's rule)."""
    stats = None if t.first else neuron_stats.layer_stats(t)  # first-layer tiles are weights: no statistics needed
    uris, caption = tile_uris(t, stats, neuron_stats.weights(t))
    return tuple(uris), caption


def _epoch(value) -> int | None:
    return None if value in (None, "") else parse_int(value, "epoch")


def load(runs_value, layer=None, epoch=None) -> Across:
    """The rows for `?runs=..&layer=L&epoch=E`; StoreError for a bad first run, layer or epoch."""
    ids, problems = compare_view.parse_run_ids(runs_value)
    if len(ids) > MAX_RUNS:
        problems.append(f"{len(ids)} runs asked for; showing the first {MAX_RUNS} (rows that fit a screen)")
        ids = ids[:MAX_RUNS]
    out = Across(layer=parse_int(layer, "layer") if layer not in (None, "") else 1, problems=problems)
    runs, missing = store.get_runs(ids)
    out.problems += missing
    if not runs:
        raise store.StoreError("No runs to show: open /compare/neurons?runs=<id>,<id>&layer=1")
    common = set.intersection(*(set(store.snapshot_epochs(r.info.run_id)) for r in runs))
    out.epochs = sorted(common)
    asked = _epoch(epoch)
    out.epoch = asked if asked is not None else (out.epochs[-1] if out.epochs else None)
    first = resolve(runs[0].info.run_id, out.layer, out.epoch)
    out.epoch, out.layers = first.epoch, _hidden(runs[0])
    tiles, out.caption = _tiles(first)
    out.rows.append(Row(first, list(range(first.units)), [None] * first.units, tiles))
    for run in runs[1:]:
        try:
            out.rows.append(_row(first, run.info.run_id))
        except store.StoreError as e:
            out.problems.append(str(e))
    return out


def _hidden(run) -> list[tuple[int, str]]:
    return list(enumerate(store.layer_names(run)[:-1], start=1))


def _row(first: Target, run_id: str) -> Row:
    other = counterpart(first, run_id)
    match, corr, method = neuron_stats.matching(first, other)
    tiles, _ = _tiles(other)
    order = [int(u) for u in match]
    return Row(other, order, [float(c) for c in corr], [tiles[u] for u in order], method)
