"""Health warnings for one run, computed from what it logged (write-up A's list of warning signs).

Every check is a plain function over metric histories (arrays indexed by epoch)
or snapshot arrays and returns a list of `HealthWarning`s; an empty list means healthy.
Nothing here knows about MLflow or Dash.  Thresholds are module constants, each
documented where it is used, so tests and readers see the same numbers.
"""
from dataclasses import dataclass

import numpy as np

from training import contract as C

RISE_TOLERANCE = 0.10  # a loss counts as rising when its last value is > 10 % above its best
OSCILLATION_MIN_STEPS = 4  # oscillation needs at least 4 epoch-to-epoch changes to judge
OSCILLATION_REVERSALS = 0.5  # ... and at least half of consecutive changes flip direction
OSCILLATION_MIN_SWING = 0.02  # ... with swings of at least 2 % of the loss (ignores numeric noise)
OSCILLATION_MIN_RANGE_SHARE = 0.1  # ... and of at least 10 % of the loss's overall drop: the jitter of SGD
# near convergence (lr 3.0 at batch 10 wobbles a few % around 0.05 after falling from 1.4) is not a warning sign
DEAD_LIMIT = 0.5  # more than 50 % dead (ReLU) or saturated (sigmoid/tanh) units in a layer
VANISHING_ABS = 1e-6  # a layer's mean gradient norm below this is vanishing
VANISHING_RATIO = 1e-2  # ... or the first layer's gradient is < 1 % of the output layer's
EXPLODING_ABS = 1e2  # a layer's mean gradient norm above this is exploding
EXPLODING_RATIO = 1e2  # ... or the first layer's gradient is > 100x the output layer's
CONFIDENT = 0.9  # a prediction at or above this confidence is "confident"
CONFIDENT_WRONG_LIMIT = 0.5  # warn when at least half the wrong predictions are confident ...
CONFIDENT_WRONG_MIN = 10  # ... and there are at least 10 of them (a handful proves nothing)
STATIC_ACTIVATION_KS = 0.02  # activations "don't change" if first and last distributions differ by < 0.02 (KS)
# A digit predicted for fewer than 10 % as many test images as truly show it: its correct answers are at most
# its predictions, so its recall is at most 10 %.  A trained net, even at 85 %, predicts each digit about as
# often as it occurs (Nielsen's seeds: 0.83-1.2 times); a count this low means the digit is all but never said.
RARE_PREDICTION_SHARE = 0.10
# Seeds of one config end within about a point of each other on MNIST, so a run 5 points below its replicates'
# median is not seed noise.
REPLICATE_GAP = 0.05
PLATEAU_GAIN = 0.01  # ... and "plateaued": it gained less than 1 point over the last third of its epochs

# What a warning is about (HealthWarning.check).
LOSS_CURVE = "loss curve"
DEAD_UNITS = "dead units"
GRADIENTS = "gradients"
CONFIDENCE = "confidence"
ACTIVATIONS = "activations"
DIGITS = "digits"
REPLICATES = "replicates"


@dataclass(frozen=True)
class HealthWarning:
    check: str  # which check fired: LOSS_CURVE, DEAD_UNITS, GRADIENTS, CONFIDENCE, ACTIVATIONS, DIGITS, REPLICATES
    title: str
    explanation: str  # one line: what the data shows
    fix: str  # one line: what to try
    severity: str = "warning"  # "warning" or "error"
    digit: int | None = None  # the digit it is about: the page links to that digit's map, which shows why


def loss_warnings(name: str, values) -> list[HealthWarning]:
    """Rising, oscillating or non-finite loss over epochs.

    - non-finite: any NaN or inf (error).
    - rising: the last value exceeds the best (lowest) value by more than RISE_TOLERANCE (10 %).
      For the test loss while the train loss falls this is overfitting; the caller names the series.
    - oscillating: at least OSCILLATION_MIN_STEPS changes, at least OSCILLATION_REVERSALS of
      consecutive changes flip sign, and the typical swing is at least OSCILLATION_MIN_SWING of the loss
      and OSCILLATION_MIN_RANGE_SHARE of its overall range.
    """
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return []
    if not np.all(np.isfinite(v)):
        first = int(np.flatnonzero(~np.isfinite(v))[0])
        return [HealthWarning(LOSS_CURVE, f"{name} is not finite", f"{name} became NaN or infinite at epoch {first}.",
                        "Lower the learning rate, or check the input scaling and the initialisation.", "error")]
    out = []
    best = float(v.min())
    if len(v) >= 2 and v[-1] > best * (1 + RISE_TOLERANCE) and v[-1] - best > 1e-12:
        at = int(v.argmin())
        rise = (v[-1] - best) / max(best, 1e-12)
        if name.startswith("test"):
            fix = "The model is overfitting: stop at the best epoch, add data or regularisation (weight decay)."
        else:
            fix = "Lower the learning rate (try 3-10x smaller) or add momentum damping."
        out.append(HealthWarning(LOSS_CURVE, f"{name} is rising",
                           f"{name} was lowest at epoch {at} ({best:.4g}) and ended {rise:.0%} higher ({v[-1]:.4g}).",
                           fix))
    d = np.diff(v)
    if len(d) >= OSCILLATION_MIN_STEPS:
        flips = np.sum(np.sign(d[1:]) * np.sign(d[:-1]) < 0) / (len(d) - 1)
        typical = float(np.median(np.abs(d)))
        swing = typical / max(float(np.median(np.abs(v))), 1e-12)
        big = typical >= OSCILLATION_MIN_RANGE_SHARE * float(v.max() - v.min())
        if flips >= OSCILLATION_REVERSALS and swing >= OSCILLATION_MIN_SWING and big:
            out.append(HealthWarning(LOSS_CURVE, f"{name} is oscillating",
                               f"{name} changed direction in {flips:.0%} of epochs, by {swing:.0%} a step.",
                               "Lower the learning rate or raise the batch size to smooth the updates."))
    return out


def dead_unit_warnings(final_dead: dict[str, float], activation: str) -> list[HealthWarning]:
    """Layers whose latest dead (ReLU: zero on every test image) or saturated (sigmoid/tanh) fraction > DEAD_LIMIT."""
    out = []
    word = "dead" if activation == "relu" else "saturated"
    for layer, frac in final_dead.items():
        if frac is not None and np.isfinite(frac) and frac > DEAD_LIMIT:
            fix = ("Lower the learning rate, use a smaller init or a leaky activation."
                   if activation == "relu" else
                   "Scale the initial weights down (init std ~ 1/sqrt(fan_in)) or use ReLU.")
            out.append(HealthWarning(DEAD_UNITS, f"{frac:.0%} of {layer}'s units are {word}",
                               f"More than {DEAD_LIMIT:.0%} of {layer}'s units are {word} on every test image,"
                               " so they no longer learn.", fix))
    return out


def gradient_warnings(final_norms: dict[str, float]) -> list[HealthWarning]:
    """Vanishing or exploding gradients from each layer's latest mean gradient norm (layers input to output).

    - exploding: any layer above EXPLODING_ABS (100) or non-finite, or the first layer's norm is more
      than EXPLODING_RATIO (100x) the output layer's.
    - vanishing: any layer below VANISHING_ABS (1e-6), or the first layer's norm is less than
      VANISHING_RATIO (1 %) of the output layer's.
    """
    names = [k for k, v in final_norms.items() if v is not None]
    if not names:
        return []
    norms = np.array([final_norms[k] for k in names], dtype=float)
    out = []
    big = [n for n, g in zip(names, norms) if not np.isfinite(g) or g > EXPLODING_ABS]
    small = [n for n, g in zip(names, norms) if np.isfinite(g) and g < VANISHING_ABS]
    first, last = norms[0], norms[-1]
    ratio = first / last if len(norms) >= 2 and np.isfinite(first) and last > 0 else None
    if big or (ratio is not None and ratio > EXPLODING_RATIO):
        where = ", ".join(big) if big else f"{names[0]} ({ratio:.0f}x {names[-1]})"
        out.append(HealthWarning(GRADIENTS, "Exploding gradients",
                           f"Gradient norms are very large in {where}.",
                           "Lower the learning rate, clip gradients, or use a smaller initialisation.",
                           "error" if any(not np.isfinite(g) for g in norms) else "warning"))
    if small or (ratio is not None and ratio < VANISHING_RATIO):
        where = ", ".join(small) if small else f"{names[0]} ({ratio:.1e}x {names[-1]})"
        out.append(HealthWarning(GRADIENTS, "Vanishing gradients",
                           f"Gradient norms are tiny in {where}: the early layers barely learn.",
                           "Use ReLU instead of sigmoid, cross-entropy instead of quadratic cost,"
                           " or a larger init (std ~ 1/sqrt(fan_in))."))
    return out


def confident_wrong_fraction(edges, incorrect_counts, threshold: float = CONFIDENT) -> tuple[float, int]:
    """(fraction of wrong predictions with confidence >= threshold, number of wrong predictions).

    Bins are counted as confident when their lower edge is >= threshold (edges are 0.05 apart in the contract).
    """
    edges = np.asarray(edges, dtype=float)
    counts = np.asarray(incorrect_counts, dtype=float)
    total = counts.sum()
    if total == 0:
        return 0.0, 0
    confident = counts[edges[:-1] >= threshold - 1e-9].sum()
    return float(confident / total), int(total)


def confidence_warnings(edges, incorrect_counts) -> list[HealthWarning]:
    """Warn when at least CONFIDENT_WRONG_LIMIT (half) of >= CONFIDENT_WRONG_MIN wrong predictions are >= 0.9 confident."""
    frac, n = confident_wrong_fraction(edges, incorrect_counts)
    if n >= CONFIDENT_WRONG_MIN and frac >= CONFIDENT_WRONG_LIMIT:
        return [HealthWarning(CONFIDENCE, "Confident wrong predictions",
                        f"{frac:.0%} of the {n} wrong test predictions have confidence >= {CONFIDENT:.0%}:"
                        " the model is overconfident.",
                        "Regularise (weight decay, early stopping) or calibrate with temperature scaling.")]
    return []


def histogram_ks(edges_a, counts_a, edges_b, counts_b) -> float:
    """Kolmogorov-Smirnov distance between two binned distributions (which may use different bins).

    Each histogram's CDF is linear within a bin; both are evaluated on the union of the edges.
    """
    def cdf(edges, counts, at):
        edges, counts = np.asarray(edges, float), np.asarray(counts, float)
        total = counts.sum()
        if total == 0:
            return np.zeros_like(at)
        c = np.concatenate([[0.0], np.cumsum(counts) / total])
        return np.interp(at, edges, c, left=0.0, right=1.0)

    at = np.union1d(np.asarray(edges_a, float), np.asarray(edges_b, float))
    return float(np.max(np.abs(cdf(edges_a, counts_a, at) - cdf(edges_b, counts_b, at))))


def static_activation_warnings(first: dict[str, tuple], last: dict[str, tuple], epochs: tuple[int, int]) -> list[HealthWarning]:
    """Hidden layers whose activation histogram barely moved between the first and last snapshot.

    `first` and `last` map layer -> (edges, counts).  Fires when the KS distance is < STATIC_ACTIVATION_KS
    (0.02) and the two snapshots are different epochs.
    """
    if epochs[0] == epochs[1]:
        return []
    out = []
    for layer in first:
        if layer not in last:
            continue
        ks = histogram_ks(*first[layer], *last[layer])
        if ks < STATIC_ACTIVATION_KS:
            out.append(HealthWarning(ACTIVATIONS, f"{layer}'s activations don't change",
                               f"{layer}'s activation distribution at epoch {epochs[1]} is almost the one at"
                               f" epoch {epochs[0]} (KS distance {ks:.3f}): the layer is not learning.",
                               "Raise the learning rate, check the gradients reach this layer, or re-initialise."))
    return out


def run_health(histories: dict[str, np.ndarray], hidden_layers: list[str], all_layers: list[str],
               activation: str, first_snapshot: dict | None, last_snapshot: dict | None,
               snapshot_epochs: tuple[int, int] | None) -> list[HealthWarning]:
    """Every check over one run's data.  `histories` maps metric key -> values by epoch (missing keys skipped)."""
    out = []
    for key in (C.TRAIN_LOSS, C.TEST_LOSS):
        if key in histories and len(histories[key]):
            out += loss_warnings(key, histories[key])
    dead = {l: float(histories[C.dead_fraction_key(l)][-1]) for l in hidden_layers
            if len(histories.get(C.dead_fraction_key(l), [])) > 0}
    out += dead_unit_warnings(dead, activation)
    norms = {l: float(histories[C.grad_norm_key(l)][-1]) for l in all_layers
             if len(histories.get(C.grad_norm_key(l), [])) > 0}
    out += gradient_warnings(norms)
    if last_snapshot is not None and C.CONF_EDGES in last_snapshot and C.CONF_HIST_INCORRECT in last_snapshot:
        out += confidence_warnings(last_snapshot[C.CONF_EDGES], last_snapshot[C.CONF_HIST_INCORRECT])
    if first_snapshot is not None and last_snapshot is not None and snapshot_epochs is not None:
        def hists(snap):
            return {l: (snap[C.act_edges_key(l)], snap[C.act_hist_key(l)]) for l in hidden_layers
                    if C.act_hist_key(l) in snap and C.act_edges_key(l) in snap}
        out += static_activation_warnings(hists(first_snapshot), hists(last_snapshot), snapshot_epochs)
    return out


def _digit_counts(pred, labels, n_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Per digit: how many test images the network labels it (the confusion matrix's column sum), and how many
    truly show it (its row sum)."""
    def count(values):
        return np.bincount(np.asarray(values, dtype=np.int64), minlength=n_classes)[:n_classes]
    return count(pred), count(labels)


def predicted_share(pred, labels, n_classes: int = 10) -> np.ndarray:
    """Per digit: images labelled it over images showing it; NaN for a digit with no test images."""
    return _share(*_digit_counts(pred, labels, n_classes))


def _share(predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(true > 0, predicted / np.maximum(true, 1), np.nan)


def rare_digit_warnings(pred, labels) -> list[HealthWarning]:
    """A digit predicted for fewer than RARE_PREDICTION_SHARE (10 %) as many test images as show it: an empty,
    or almost empty, confusion-matrix column, so at most 10 % of that digit's images can be right."""
    predicted, true = _digit_counts(pred, labels)
    share = _share(predicted, true)
    out = []
    for d in np.flatnonzero(np.nan_to_num(share, nan=1.0) < RARE_PREDICTION_SHARE):
        never = predicted[d] == 0
        out.append(HealthWarning(
            DIGITS, f"{d} is never predicted" if never else f"{d} is almost never predicted",
            f"The network predicts {d} for {predicted[d]} of the {len(pred):,} test images, though {true[d]} of them "
            f"show a {d} (under "
            f"{RARE_PREDICTION_SHARE:.0%}): its confusion-matrix column is {'empty' if never else 'nearly empty'}.",
            "Retrain with another seed or a smaller learning rate; the digit map shows which hidden units push "
            f"{d}'s output up (few or weak ones for a digit the net has given up on).", "error" if never else "warning",
            digit=int(d)))
    return out


def plateau_gain(acc) -> float:
    """How much accuracy rose over the last third of the epochs (at least one step)."""
    a = np.asarray(acc, dtype=float)
    w = max(1, (len(a) - 1) // 3)
    return float(a[-1] - a[-1 - w]) if len(a) > w else float("nan")


def replicate_warnings(acc, replicate_finals: list[float], weakest_digit: int | None = None) -> list[HealthWarning]:
    """Test accuracy that ended at least REPLICATE_GAP (5 points) below the median of the run's replicates (same
    config, other seeds) and gained less than PLATEAU_GAIN (1 point) over the last third of its epochs."""
    a = np.asarray(acc, dtype=float)
    others = [v for v in replicate_finals if np.isfinite(v)]
    if len(a) < 2 or not others or not np.isfinite(a[-1]):
        return []
    median, gain = float(np.median(others)), plateau_gain(a)
    if median - a[-1] < REPLICATE_GAP or not gain < PLATEAU_GAIN:
        return []
    span = f"{min(others):.2%}" if len(others) == 1 else f"{min(others):.2%}–{max(others):.2%}"
    weakest = f"; its weakest digit is {weakest_digit}" if weakest_digit is not None else ""
    return [HealthWarning(
        REPLICATES, "Stuck far below its replicates",
        f"Test accuracy plateaued at {a[-1]:.2%} (+{gain * 100:.2f} points over its last third of epochs) while "
        f"its {len(others)} replicate{'s' if len(others) > 1 else ''} (same config, other seeds) ended at "
        f"{span}{weakest}.",
        "This seed's initialisation trapped it: use another seed, or a smaller learning rate so fewer units "
        "saturate.", digit=weakest_digit)]


def weakest_digit(pred, labels) -> int:
    """The digit with the lowest recall (ties: the lower digit)."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    recall = [float(np.mean(pred[labels == d] == d)) if np.any(labels == d) else 1.0 for d in range(10)]
    return int(np.argmin(recall))
