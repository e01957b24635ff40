"""Circuits: which units feed a hidden unit, which it feeds, and which units push each digit's output.

A unit's contribution to a unit of the next layer is the weight between them times the source unit's
mean activation over the test set: the part of the target's mean pre-activation that comes from it.
For a dense layer this is exact, since the mean of W a + b is W mean(a) + b: a target's contributions
and its bias add up to its mean pre-activation (tests/test_circuits.py holds the sums to it).

Dense layers only.  A conv channel's output is a feature map, and what it passes on is max-pooled at
positions the next kernel weights differently, so no one weight joins two channels; a run's conv layers
get one line saying so (CONV_REASON) instead of a reduction that would only approximate the sum.

Plain numpy over a snapshot's weights and the activations training/nets/activations.py recomputes:
nothing here reads a store or knows about Dash.
"""
from dataclasses import dataclass

import numpy as np

CONV_REASON = ("circuits join dense layers only: a conv channel passes on a pooled feature map that the next "
               "kernel weights position by position, so no single weight joins two channels")


@dataclass(frozen=True)
class Link:
    unit: int  # the other end: a unit of the previous or next layer, or a digit at the output
    contribution: float  # weight x mean activation of the source unit (signed)
    weight: float
    source_mean: float  # the source unit's mean activation over the test set


@dataclass(frozen=True)
class Circuit:
    layer: int  # 1-based hidden layer of the unit
    unit: int
    mean: float  # the unit's own mean activation
    incoming: tuple[Link, ...] | None  # strongest first; None for the first hidden layer (its input is pixels)
    outgoing: tuple[Link, ...]  # strongest first, into the next hidden layer or the digits
    to_output: bool  # outgoing links go to the 10 digits


@dataclass(frozen=True)
class DigitMap:
    digit: int
    bias: float
    up: tuple[Link, ...]  # the last hidden layer's units with the largest positive contributions, largest first
    down: tuple[Link, ...]  # ... and the most negative, most negative first
    total: float  # bias + every unit's contribution: the digit's mean output before its activation
    pushing_up: int  # how many units contribute > 0 at all


def contributions(weight: np.ndarray, source_mean: np.ndarray) -> np.ndarray:
    """(targets, sources) mean contributions: weight[t, s] x source_mean[s]."""
    return np.asarray(weight, np.float64) * np.asarray(source_mean, np.float64)[None, :]


def strongest(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k values largest in magnitude, largest first (ties: lower index first)."""
    return np.lexsort((np.arange(len(values)), -np.abs(values)))[:k]


def _links(contrib: np.ndarray, weight: np.ndarray, source_mean, order) -> tuple[Link, ...]:
    means = np.broadcast_to(np.asarray(source_mean, np.float64), contrib.shape)
    return tuple(Link(int(i), float(contrib[i]), float(weight[i]), float(means[i])) for i in order)


def unit_circuit(weights: list[np.ndarray], means: list[np.ndarray], layer: int, unit: int, k: int = 8) -> Circuit:
    """One hidden unit's strongest incoming and outgoing links.

    weights: every dense layer's (out, in) weight, input to output; means: each hidden layer's (units,) mean
    activation over the test set; layer: 1-based hidden layer.  Incoming links come from hidden layer
    layer - 1 (None for the first, which sees pixels); outgoing go to layer + 1 or the output's digits.
    """
    mean = float(means[layer - 1][unit])
    incoming = None
    if layer > 1:
        w_in = np.asarray(weights[layer - 1][unit], np.float64)
        c = contributions(w_in[None, :], means[layer - 2])[0]
        incoming = _links(c, w_in, means[layer - 2], strongest(c, k))
    w_out = np.asarray(weights[layer][:, unit], np.float64)
    c = w_out * mean
    outgoing = _links(c, w_out, mean, strongest(c, k))
    return Circuit(layer, unit, mean, incoming, outgoing, to_output=layer == len(weights) - 1)


def digit_map(w_out: np.ndarray, b_out: np.ndarray, last_mean: np.ndarray, digit: int, k: int = 8) -> DigitMap:
    """The last hidden layer's units that push one digit's output up and down the most (weight x mean activation)."""
    w = np.asarray(w_out[digit], np.float64)
    c = contributions(w[None, :], last_mean)[0]
    order = np.lexsort((np.arange(len(c)), -c))  # largest first
    up = [i for i in order if c[i] > 0][:k]
    down = [i for i in order[::-1] if c[i] < 0][:k]
    bias = float(b_out[digit])
    return DigitMap(digit, bias, _links(c, w, last_mean, up), _links(c, w, last_mean, down),
                    total=bias + float(c.sum()), pushing_up=int((c > 0).sum()))
