"""The deeper neuron views' data: feature visualisations, emergence, layer maps, one image, similarity.

The loader under pages similarity, image and neuron_map and the unit and layer pages' new panels: it
reads activations and statistics from dashboard.neuron_stats, networks from dashboard.neuron_forward,
and hands arrays to the pure functions in dashboard.analytics.  Everything here is computed from logged
snapshots, which never change, so it is memoized per run, epoch and layer (dashboard.cache); what
spans epochs is keyed by the epochs it spans, so a running run's new snapshot is a new key.
"""
from dataclasses import dataclass

import numpy as np

from dashboard import cache
from dashboard import neuron_stats as S
from dashboard.analytics import emergence as E
from dashboard.analytics.attribution import integrated_gradients
from dashboard.analytics.cka import cka_matrix
from dashboard.analytics.feature_vis import Visualisation, maximise
from dashboard.analytics.layer_map import embed
from dashboard.neuron_forward import module_at, one_image, unit_objective
from dashboard.neuron_target import Target, parse_int, resolve
from dashboard.store import StoreError

TEST_IMAGES = 10_000


@cache.memoize(512)
def feature_vis(run_id: str, epoch: int, layer: int, unit: int) -> Visualisation:
    """The input that maximises one unit at one snapshot (analytics.feature_vis), about 0.2 s on 2 cores."""
    config, module = module_at(run_id, epoch)
    return maximise(unit_objective(config, module, layer, unit))


@dataclass(frozen=True)
class Emergence:
    epochs: tuple
    si: np.ndarray  # (E, U)
    verdicts: list  # per epoch, per unit
    emergence: list  # per unit: first class-selective epoch or None
    counts: dict  # kind -> (E,) unit counts


@cache.memoize(64)
def _emergence(run_id: str, layer: int, epochs: tuple) -> Emergence:
    stats = [S.layer_stats(resolve(run_id, layer, e)) for e in epochs]
    verdicts = [list(s.verdicts) for s in stats]
    return Emergence(epochs=epochs, si=np.stack([s.si for s in stats]), verdicts=verdicts,
                     emergence=E.layer_emergence(epochs, verdicts), counts=E.kind_counts(verdicts))


def emergence(t: Target) -> Emergence:
    """Every unit's SI and verdict at every snapshot epoch of the target's layer, and when each emerged."""
    return _emergence(t.run_id, t.layer, tuple(t.epochs))


def _acts(run_id: str, layer: int, epoch: int) -> np.ndarray:
    """(10000, units) activations of a hidden layer at a snapshot, without the statistics the map does not need."""
    t = resolve(run_id, layer, epoch)
    return S.layer_activations(t.run_id, t.epoch, t.layer, t.kind == "conv").acts


@cache.memoize(32)
def layer_map(run_id: str, epoch: int, layer: int, method: str) -> tuple[np.ndarray, str]:
    """(10000, 2) coordinates of the test images in the layer's activation space and how they were made."""
    return embed(_acts(run_id, layer, epoch), method)


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


@cache.memoize(64)
def one_image_data(run_id: str, epoch: int, index: int) -> OneImage:
    """One test image through the network at a snapshot: its outputs and hidden activations."""
    config, module = module_at(run_id, epoch)
    images, labels = S.test_images()
    acts, probs = one_image(config, module, S.test_inputs()[index].numpy())
    return OneImage(index=index, image=images[index], label=int(labels[index]), probs=probs, acts=acts,
                    output="softmax" if config.loss == "cross_entropy" else "sigmoid")


@cache.memoize(64)
def attributions(run_id: str, epoch: int, index: int) -> dict:
    """{class: ((28, 28) IG map, f(x) − f(black), completeness gap)} for the predicted and the true class.

    Apart from one_image_data so the page paints first: on a CNN this is the slow part (about a second).
    """
    d = one_image_data(run_id, epoch, index)
    _, module = module_at(run_id, epoch)
    x = S.test_inputs()[index].numpy()
    return {c: integrated_gradients(module, x, c) for c in dict.fromkeys((int(np.argmax(d.probs)), d.label))}


@cache.memoize(32)
def runs_similarity(run_ids: tuple, layer: int, epochs: tuple) -> np.ndarray:
    """(k, k) linear CKA between the runs' layer activations over the test set, each at its given epoch."""
    return cka_matrix([_acts(r, layer, e) for r, e in zip(run_ids, epochs)])


def epochs_similarity(t: Target) -> np.ndarray:
    """(E, E) linear CKA between the layer's test-set activations at every pair of the run's snapshot epochs."""
    return runs_similarity((t.run_id,) * len(t.epochs), t.layer, tuple(t.epochs))
