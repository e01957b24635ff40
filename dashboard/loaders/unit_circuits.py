"""The circuit and digit-map pages' data: a unit's strongest links and each digit's pushing units, with tiles.

Takes the run as resolved once (dashboard.loaders.neuron_target.Target); weights come from the snapshot
(store.complete_weights), mean activations from the activations neuron_stats recomputes and caches per run
and epoch, and the arithmetic from training/nets/circuits.py.  A snapshot never changes, so results are
memoized per run, epoch, layer and unit.  What cannot be shown raises StoreError with one line.
"""
import numpy as np

from dashboard.loaders import neuron_stats as S
from dashboard.loaders.neuron_target import Target, memoize_by, parse_int, select
from dashboard.read import store
from dashboard.read.store import StoreError
from dashboard.views.neurons.neuron_images import tile_uris
from training import contract as C
from training.nets import circuits as K

TOP_K = 8  # links shown on each side: enough to see who matters, few enough to read as tiles
N_DIGITS = 10


def why_no_circuits(t: Target) -> str | None:
    """Why t's run has no circuit or digit-map page, in one line, or None when it has them: every layer dense
    and the network rebuilt from its config.  The one test the pages (for their links) and the loaders ask."""
    if t.own_loop:  # its graph may be logged, but nothing says its layers form a plain chain of dense layers
        return (f"run {t.run_id[:8]} was logged from its own training loop: circuits and digit maps are drawn for "
                f"networks built from MNIST Lab's own configs, a chain of dense layers")
    if any(spec.kind != "linear" for spec in t.specs):
        return f"run {t.run_id[:8]} has conv layers: {K.CONV_REASON}"
    return None


def check_dense(t: Target) -> None:
    if reason := why_no_circuits(t):
        raise StoreError(reason)


@memoize_by(32, lambda t: (t.run_id, t.epoch))
def _network(t: Target) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """(every layer's weight, each hidden layer's mean activation, the output's bias) at t's epoch; checked by
    network() first, as the cache's key does not hold what check_dense looks at."""
    snapshot = store.complete_weights(t.run_id, t.epoch, t.names)
    weights = [np.asarray(snapshot[C.weight_key(n)]) for n in t.names]
    means = [S.layer_activations(select(t, layer, t.epoch)).acts.astype(np.float64).mean(axis=0)
             for layer in range(1, len(t.hidden) + 1)]
    return weights, means, np.asarray(snapshot[C.bias_key(t.names[-1])])


def network(t: Target) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    check_dense(t)
    return _network(t)


def circuit(t: Target) -> K.Circuit:
    """t's unit's strongest incoming and outgoing links at t's epoch."""
    if t.unit is None:
        raise StoreError("the address names no unit: add &unit=<unit> to it")
    weights, means, _ = network(t)
    return K.unit_circuit(weights, means, t.layer, t.unit, TOP_K)


def parse_digit(value) -> int:
    digit = 0 if value in (None, "") else parse_int(value, "digit")
    if not 0 <= digit < N_DIGITS:
        raise StoreError(f"digit {digit} does not exist: the digits are 0–9")
    return digit


def digit_map(t: Target, digit: int) -> K.DigitMap:
    """The last hidden layer's units that push `digit`'s output up and down the most at t's epoch."""
    weights, means, bias = network(t)
    return K.digit_map(weights[-1], bias, means[-1], digit, TOP_K)


def strongest_pushes(t: Target) -> list[float]:
    """Per digit, the largest push up any unit of the last hidden layer gives it (0 when none pushes it up)."""
    return [m.up[0].contribution if (m := digit_map(t, d)).up else 0.0 for d in range(N_DIGITS)]


@memoize_by(64, lambda t: (t.run_id, t.epoch, t.layer))
def tiles(t: Target) -> tuple[list[str], str]:
    """Every unit's tile of t's layer, as the layer page draws them (first layer: weights; deeper: top mean)."""
    return tile_uris(t, S.layer_stats(t), S.weights(t))


def last_hidden(t: Target) -> Target:
    """t moved to the last hidden layer, whose units the digit map shows."""
    return select(t, len(t.hidden), t.epoch)
