"""The deeper neuron views' data: feature visualisations, emergence, layer maps, one image, similarity.

The loader under pages similarity, image and neuron_map and the unit and layer pages' new panels: it
reads activations and statistics from dashboard.loaders.neuron_stats, networks from dashboard.loaders.neuron_forward,
and hands arrays to the pure functions in dashboard.analytics.  Every function takes the run as resolved
once (dashboard.loaders.neuron_target.Target) and never looks it up again.  Everything here is computed
from logged snapshots, which never change, so it is memoized per run, epoch and layer
(neuron_target.memoize_by); what spans epochs is keyed by the epochs it spans, so a running run's new
snapshot is a new key.
"""
from dataclasses import dataclass

import numpy as np

from dashboard.analytics import emergence as E
from dashboard.analytics.attribution import integrated_gradients
from dashboard.analytics.cka import cka_matrix
from dashboard.analytics.feature_vis import Visualisation, maximise
from dashboard.analytics.layer_map import embed
from dashboard.loaders import neuron_stats as S
from dashboard.loaders.neuron_forward import module_at, one_image, unit_objective
from dashboard.loaders.neuron_target import Target, memoize_by, parse_int, select
from dashboard.read.store import StoreError

TEST_IMAGES = 10_000


@memoize_by(512, lambda t, unit: (t.run_id, t.epoch, t.layer, unit))
def feature_vis(t: Target, unit: int) -> Visualisation:
    """The input that maximises one unit of t's layer at t's epoch (analytics.feature_vis), about 0.2 s on 2 cores."""
    config, module = module_at(t)
    return maximise(unit_objective(config, module, t.layer, unit))


@dataclass(frozen=True)
class Emergence:
    epochs: tuple
    si: np.ndarray  # (E, U)
    verdicts: list  # per epoch, per unit
    emergence: list  # per unit: first class-selective epoch or None
    counts: dict  # kind -> (E,) unit counts


@memoize_by(64, lambda t: (t.run_id, t.layer, t.epochs))
def emergence(t: Target) -> Emergence:
    """Every unit's SI and verdict at every snapshot epoch of the target's layer, and when each emerged."""
    stats = [S.layer_stats(select(t, t.layer, e)) for e in t.epochs]
    verdicts = [list(s.verdicts) for s in stats]
    return Emergence(epochs=t.epochs, si=np.stack([s.si for s in stats]), verdicts=verdicts,
                     emergence=E.layer_emergence(t.epochs, verdicts), counts=E.kind_counts(verdicts))


@memoize_by(32, lambda t, method: (t.run_id, t.epoch, t.layer, method))
def layer_map(t: Target, method: str) -> tuple[np.ndarray, str]:
    """(10000, 2) coordinates of the test images in t's layer's activation space and how they were made."""
    return embed(S.layer_activations(t).acts, method)


def image_index(value) -> int:
    index = parse_int(value, "image index")
    if not 0 <= index < TEST_IMAGES:
        raise StoreError(f"image {index} does not exist: the test set's images are 0–{TEST_IMAGES - 1}")
    return index


@dataclass(frozen=True)
class OneImage:
    index: int
    image: np.ndarray  # (28, 28) uint8
    label: int
    probs: np.ndarray  # (10,)
    acts: list  # per hidden layer (U,)
    output: str  # what probs are: softmax (cross-entropy) or sigmoid (quadratic cost)


@memoize_by(64, lambda t, index: (t.run_id, t.epoch, index))
def one_image_data(t: Target, index: int) -> OneImage:
    """One test image through the network at t's snapshot: its outputs and hidden activations."""
    config, module = module_at(t)
    images, labels = S.test_images()
    acts, probs = one_image(config, module, S.test_inputs()[index].numpy())
    return OneImage(index=index, image=images[index], label=int(labels[index]), probs=probs, acts=acts,
                    output="softmax" if config is None or config.loss == "cross_entropy" else "sigmoid")


@memoize_by(64, lambda t, index: (t.run_id, t.epoch, index))
def attributions(t: Target, index: int) -> dict:
    """{class: ((28, 28) IG map, f(x) − f(black), completeness gap)} for the predicted and the true class.

    Apart from one_image_data so the page paints first: on a CNN this is the slow part (about a second).
    """
    d = one_image_data(t, index)
    _, module = module_at(t)
    x = S.test_inputs()[index].numpy()
    return {c: integrated_gradients(module, x, c) for c in dict.fromkeys((int(np.argmax(d.probs)), d.label))}


@memoize_by(32, lambda ts: (tuple(t.run_id for t in ts), ts[0].layer, tuple(t.epoch for t in ts)))
def runs_similarity(ts: tuple[Target, ...]) -> np.ndarray:
    """(k, k) linear CKA between the targets' layer activations over the test set, each at its own epoch."""
    return cka_matrix([S.layer_activations(t).acts for t in ts])


def epochs_similarity(t: Target) -> np.ndarray:
    """(E, E) linear CKA between the layer's test-set activations at every pair of the run's snapshot epochs."""
    return runs_similarity(tuple(select(t, t.layer, e) for e in t.epochs))
