"""What a hidden unit responds to: plain functions over arrays (no Dash, no MLflow).

Shapes: `acts` is (N, U), one column per unit, one row per test image, in
test-set order; `labels` is (N,) digits 0-9; `images` is (N, 28, 28).

Definitions (the page and the report quote them):

- Selectivity index (Morcos et al. 2018): SI = (mu_max - mu_rest) / (mu_max + mu_rest),
  where mu_max is the largest class-conditional mean activation and mu_rest the
  mean of the other nine class means.  SI is 0 when all classes excite the unit
  equally and 1 when only one class does.  It needs activations >= 0, so they
  are measured from the activation's floor: tanh units are shifted by +1
  (tanh's floor, -1, becomes 0; SI ignores scale, so this equals rescaling
  tanh to sigmoid's [0, 1]).  Sigmoid and ReLU already have floor 0.
- NMI: mutual information between the unit's activation, cut into NMI_BINS
  equal-width bins over its own range, and the label, divided by the mean of
  the two entropies (scikit-learn's "arithmetic" normalisation).  0 means the
  activation says nothing about the digit; 1 means it determines it.
- Verdict:
  `dead` when the unit's activation spans less than DEAD_RANGE over all test
  images (it never varies, so it carries no information);
  `class-selective (digit d)` when SI >= SI_THRESHOLD and at least
  TOPK_MAJORITY of its top-k images are digit d, d being its preferred class
  (largest class mean);
  `feature-selective` otherwise: it responds to strokes or parts shared by
  several digits.
- Matching across runs (Li et al. 2015, "Convergent learning"): Pearson
  correlation of two units' activations over the same test images; one-to-one
  Hungarian matching when the layers have equal width, otherwise each unit's
  best match.
"""
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

N_CLASSES = 10
SI_THRESHOLD = 0.5  # a class-mean 3x the mean of the other classes
TOPK_MAJORITY = 0.75  # 6 of the top 8 images
DEAD_RANGE = 1e-3  # max - min activation over the test set
NMI_BINS = 16
DEFAULT_K = 8
ACTIVATION_FLOORS = {"sigmoid": 0.0, "relu": 0.0, "tanh": -1.0}


def activation_floor(activation: str) -> float:
    """The lowest value a hidden activation can take; SI measures activations from here."""
    return ACTIVATION_FLOORS.get(activation, 0.0)  # a logged model's other activations: measured from 0


def class_means(acts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(U, 10): each unit's mean activation per digit (NaN for a digit with no images)."""
    acts = np.asarray(acts, dtype=np.float64)
    onehot = np.eye(N_CLASSES)[labels]  # (N, 10)
    counts = onehot.sum(0)
    sums = onehot.T @ acts
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts[:, None]).T


def selectivity_index(means: np.ndarray, floor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """SI per unit and its preferred digit, from (U, 10) class means.  0 where every mean is at the floor."""
    m = np.asarray(means, dtype=np.float64) - floor
    m = np.clip(m, 0.0, None)  # float error below the floor
    preferred = np.nanargmax(m, axis=1)
    mu_max = m[np.arange(len(m)), preferred]
    rest = m.copy()
    rest[np.arange(len(m)), preferred] = np.nan
    mu_rest = np.nanmean(rest, axis=1)
    denom = mu_max + mu_rest
    with np.errstate(invalid="ignore", divide="ignore"):
        si = np.where(denom > 0, (mu_max - mu_rest) / np.where(denom > 0, denom, 1.0), 0.0)
    return si, preferred


def normalized_mutual_information(acts: np.ndarray, labels: np.ndarray, bins: int = NMI_BINS) -> np.ndarray:
    """NMI per unit between its binned activation and the label (see module docstring)."""
    acts = np.asarray(acts, dtype=np.float64)
    n, u = acts.shape
    lo, hi = acts.min(0), acts.max(0)
    width = np.where(hi > lo, hi - lo, 1.0)
    b = np.clip(((acts - lo) / width * bins).astype(np.int64), 0, bins - 1)  # (N, U)
    flat = (np.arange(u)[None, :] * bins + b) * N_CLASSES + labels[:, None]
    joint = np.bincount(flat.ravel(), minlength=u * bins * N_CLASSES).reshape(u, bins, N_CLASSES) / n
    p_a, p_y = joint.sum(2), joint.sum(1)  # (U, bins), (U, 10)
    with np.errstate(divide="ignore", invalid="ignore"):
        h_a = -np.nansum(p_a * np.log(p_a), axis=1)
        h_y = -np.nansum(p_y * np.log(p_y), axis=1)
        ratio = joint / (p_a[:, :, None] * p_y[:, None, :])
        mi = np.nansum(np.where(joint > 0, joint * np.log(ratio), 0.0), axis=(1, 2))
    denom = (h_a + h_y) / 2
    return np.where(h_a > 0, mi / np.where(denom > 0, denom, 1.0), 0.0).clip(0.0, 1.0)


def is_dead(acts: np.ndarray) -> np.ndarray:
    """(U,) True where the unit never varies on the test set."""
    acts = np.asarray(acts)
    return (acts.max(0) - acts.min(0)) < DEAD_RANGE


def _order(acts: np.ndarray, tiebreak: np.ndarray | None, descending: bool) -> np.ndarray:
    sign = -1 if descending else 1
    acts = np.asarray(acts)
    if tiebreak is None:
        return np.argsort(sign * acts, axis=0, kind="stable")
    # Saturated units (sigmoid at exactly 1.0 in float32) tie on thousands of images: rank ties by the
    # pre-activation, which the activation is a monotone function of.
    return np.lexsort((sign * np.asarray(tiebreak), sign * acts), axis=0)


def top_k(acts: np.ndarray, k: int = DEFAULT_K, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """(U, k) image indices, highest activation first; ties by `tiebreak` (e.g. pre-activation), then index."""
    return _order(acts, tiebreak, descending=True)[:k].T


def bottom_k(acts: np.ndarray, k: int = DEFAULT_K, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """(U, k) image indices, lowest activation first; ties by `tiebreak`, then index."""
    return _order(acts, tiebreak, descending=False)[:k].T


def verdict(si: float, preferred: int, top_labels: np.ndarray, dead: bool) -> str:
    """One unit's verdict from its SI, preferred digit, its top-k images' labels and deadness."""
    if dead:
        return "dead"
    share = float(np.mean(np.asarray(top_labels) == preferred)) if len(top_labels) else 0.0
    if si >= SI_THRESHOLD and share >= TOPK_MAJORITY:
        return f"class-selective (digit {int(preferred)})"
    return "feature-selective"


def mean_images(images: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(U, 28, 28) float: the mean of each unit's images, e.g. its top-k (index is (U, k))."""
    return np.asarray(images, dtype=np.float32)[index].mean(axis=1)


@dataclass(frozen=True)
class LayerStats:
    """Everything the neuron pages show about one layer of one run at one epoch."""
    acts: np.ndarray  # (N, U) float32
    means: np.ndarray  # (U, 10)
    si: np.ndarray  # (U,)
    preferred: np.ndarray  # (U,) digit with the largest class mean
    nmi: np.ndarray  # (U,)
    dead: np.ndarray  # (U,) bool
    top: np.ndarray  # (U, k) image indices, highest first
    bottom: np.ndarray  # (U, k) image indices, lowest first
    top_mean: np.ndarray  # (U, 28, 28) mean of the top-k images
    verdicts: list

    @property
    def units(self) -> int:
        return self.acts.shape[1]


def layer_stats(acts: np.ndarray, labels: np.ndarray, images: np.ndarray, floor: float = 0.0,
                k: int = DEFAULT_K, tiebreak: np.ndarray | None = None) -> LayerStats:
    """All per-unit statistics of one layer, computed together (about 10,000 x U numbers).

    `tiebreak` (N, U), e.g. the pre-activations, orders images whose activations tie.
    """
    acts = np.asarray(acts, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    means = class_means(acts, labels)
    si, preferred = selectivity_index(means, floor)
    dead = is_dead(acts)
    top, bottom = top_k(acts, k, tiebreak), bottom_k(acts, k, tiebreak)
    verdicts = [verdict(si[u], preferred[u], labels[top[u]], dead[u]) for u in range(acts.shape[1])]
    return LayerStats(acts=acts, means=means, si=si, preferred=preferred,
                      nmi=normalized_mutual_information(acts, labels), dead=dead, top=top, bottom=bottom,
                      top_mean=mean_images(images, top), verdicts=verdicts)


def correlation_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(Ua, Ub) Pearson correlation between the units of two layers over the same images; 0 for constant units."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    za, zb = a - a.mean(0), b - b.mean(0)
    na, nb = np.linalg.norm(za, axis=0), np.linalg.norm(zb, axis=0)
    za = za / np.where(na > 0, na, 1.0)
    zb = zb / np.where(nb > 0, nb, 1.0)
    return za.T @ zb


def match_units(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """For each unit of `a`, its counterpart in `b` and their correlation, plus the method used.

    Equal widths: one-to-one Hungarian matching that maximises the summed correlation.
    Otherwise: each unit's single best-correlated unit (several may share one).
    """
    corr = correlation_matrix(a, b)
    if corr.shape[0] == corr.shape[1]:
        rows, cols = linear_sum_assignment(-corr)
        match = np.empty(corr.shape[0], dtype=np.int64)
        match[rows] = cols
        method = "one-to-one (Hungarian)"
    else:
        match = corr.argmax(1)
        method = "best match per unit"
    return match, corr[np.arange(len(match)), match], method
