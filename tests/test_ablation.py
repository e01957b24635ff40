"""Unit ablation (training/nets/ablation.py) against the plain way: switch a unit off inside training's own
nn.Module, rerun the whole network from the snapshot on the 10,000 test images, count the right answers per
digit.  One evaluation per unit here; one batched computation per layer there."""
import itertools

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from training import contract as C
from training.config import RunConfig
from training.nets import ablation as A
from training.nets.architecture import layers_of
from training.nets.models import to_module


def mnist_test() -> tuple[torch.Tensor, np.ndarray]:
    """The test images as the network sees them (float32 in [0, 1]) and their labels, from the raw idx files."""
    raw = REPO / "data" / "MNIST" / "raw"
    images = np.frombuffer((raw / "t10k-images-idx3-ubyte").read_bytes()[16:], np.uint8).reshape(-1, 784)
    labels = np.frombuffer((raw / "t10k-labels-idx1-ubyte").read_bytes()[8:], np.uint8).astype(np.int64)
    return torch.from_numpy(images.astype(np.float32) / 255.0), labels


def last_snapshot(tracking_uri: str, run_id: str) -> tuple[RunConfig, dict]:
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    epoch = max(C.snapshot_epoch(f.path) for f in client.list_artifacts(run_id, C.SNAPSHOT_DIR))
    with np.load(client.download_artifacts(run_id, C.snapshot_path(epoch)), allow_pickle=False) as npz:
        return RunConfig.from_params(run.data.params), dict(npz)


def plain_module(config, snapshot) -> torch.nn.Module:
    """Training's own nn.Module (models.to_module) holding the snapshot's weights."""
    params = {}
    for layer in layers_of(config):
        params[f"{layer.name}.weight"] = torch.from_numpy(np.asarray(snapshot[C.weight_key(layer.name)], np.float32))
        params[f"{layer.name}.bias"] = torch.from_numpy(np.asarray(snapshot[C.bias_key(layer.name)], np.float32))
    return to_module(config, params)


def plain_correct(config, snapshot, x, labels, layer: int, units, replace=None) -> np.ndarray:
    """(10,) right answers per digit with `units` of hidden layer `layer` (0-based) set to 0 (or to `replace`,
    their mean activations), by a hand-made hook in the module's activation function: a whole evaluation."""
    module = plain_module(config, snapshot)
    act, calls, units = module.act, itertools.count(), list(units)

    def ablating(z):
        h = act(z)
        if next(calls) == layer and units:
            h = h.clone()
            h[:, units] = 0 if replace is None else replace[units]
        return h
    module.act = ablating
    with torch.no_grad():
        pred = module(x).argmax(-1).numpy()
    return np.bincount(labels[pred == labels], minlength=10)


def mean_activation(config, snapshot, x, layer: int) -> torch.Tensor:
    """Each unit's mean activation over the test set (a conv channel's: its mean map), taken in the module."""
    seen = []
    module = plain_module(config, snapshot)
    act, calls = module.act, itertools.count()
    module.act = lambda z: (h := act(z), seen.append(h) if next(calls) == layer else None)[0]
    with torch.no_grad():
        module(x)
    return seen[0].double().mean(0).float()


def assert_counts_equal(got: np.ndarray, want: np.ndarray) -> None:
    """Equal counts of right answers.  The batched sum and the module's differ in float32 rounding, which can
    flip an image whose two best logits tie to 1e-6: at most one image, in at most two cells of the table.  A
    wrong unit, digit or replacement moves whole rows."""
    diff = np.abs(np.asarray(got, np.int64) - np.asarray(want, np.int64))
    assert diff.max(initial=0) <= 1 and np.count_nonzero(diff) <= 2, (np.argwhere(diff), got, want)


@pytest.fixture(scope="module")
def test_set():
    return mnist_test()


def images_for(name: str, test_set):
    """The test set, or for the CNN its first 2,000 images: the same arithmetic checked on fewer images, since each
    plain evaluation the tests compare against runs both convolutions again (5x less time in CI)."""
    x, labels = test_set
    return (x[:2000], labels[:2000]) if name == "cnn" else (x, labels)


@pytest.mark.parametrize("name, layer", [("sigmoid", 0), ("relu", 0), ("relu", 1),
                                         pytest.param("cnn", 0, marks=pytest.mark.slow)])  # 16 CNN evaluations
def test_each_units_drop_per_digit_equals_a_plain_evaluation_without_it(trained_store, test_set, name, layer):
    x, labels = images_for(name, test_set)
    config, snap = last_snapshot(trained_store.tracking_uri, trained_store.run_ids[name])
    got = A.ablate_units(config, snap, x, labels, layer)
    assert_counts_equal(got.base, plain_correct(config, snap, x, labels, layer, []))
    want = np.array([plain_correct(config, snap, x, labels, layer, [u]) for u in range(len(got.correct))])
    assert_counts_equal(got.correct, want)
    assert np.array_equal(got.images, np.bincount(labels, minlength=10))
    assert got.drop.shape == (len(want), 10) and np.any(got.drop != 0), "no unit matters: the test shows nothing"


@pytest.mark.parametrize("name, layer", [("relu", 0), pytest.param("cnn", 0, marks=pytest.mark.slow)])
def test_mean_ablation_sets_a_unit_to_its_test_set_mean(trained_store, test_set, name, layer):
    x, labels = images_for(name, test_set)
    config, snap = last_snapshot(trained_store.tracking_uri, trained_store.run_ids[name])
    got = A.ablate_units(config, snap, x, labels, layer, mode="mean")
    mean = mean_activation(config, snap, x, layer)
    want = np.array([plain_correct(config, snap, x, labels, layer, [u], mean) for u in range(len(got.correct))])
    assert_counts_equal(got.correct, want)
    zero = A.ablate_units(config, snap, x, labels, layer)
    assert not np.array_equal(zero.correct, got.correct), "mean ablation answered as zero ablation does"


@pytest.mark.parametrize("name, layer", [("relu", 1), pytest.param("cnn", 0, marks=pytest.mark.slow)])
def test_cumulative_curves_equal_removing_the_first_k_units_directly(trained_store, test_set, name, layer):
    x, labels = images_for(name, test_set)
    config, snap = last_snapshot(trained_store.tracking_uri, trained_store.run_ids[name])
    units = config.sizes[layer + 1] if config.arch == "mlp" else (16, 32)[layer]
    orders = [np.arange(units)[::-1], *A.random_orders(units, 2 if config.arch == "mlp" else 1)]
    got = A.cumulative_accuracy(config, snap, x, labels, layer, orders)
    assert got.shape == (len(orders), units + 1)
    for o, curve in zip(orders, got):
        want = [plain_correct(config, snap, x, labels, layer, o[:k]).sum() for k in range(units + 1)]
        assert np.abs(np.round(curve * len(x) / 100) - want).max() <= 1, (curve, want)
    assert got[:, -1].max() < got[:, 0].min(), "removing every unit did not hurt: the test shows nothing"


def test_a_critical_unit_costs_a_whole_point_counted_in_images():
    images = np.full(10, 1000)
    base = np.full(10, 900)
    correct = np.array([base, base - np.r_[100, [0] * 9], base - np.r_[99, [0] * 9], base - 10])
    ablation = A.LayerAblation("zero", images, base, correct)
    assert list(ablation.overall_drop) == [0.0, 1.0, 0.99, 1.0] and ablation.critical == 2
    assert list(A.drop_order(ablation)) == [1, 3, 2, 0]


def test_a_bad_mode_or_order_is_refused_in_one_line(trained_store, test_set):
    x, labels = test_set
    config, snap = last_snapshot(trained_store.tracking_uri, trained_store.run_ids["sigmoid"])
    with pytest.raises(ValueError, match="ablation mode 'max'"):
        A.ablate_units(config, snap, x[:10], labels[:10], 0, mode="max")
    with pytest.raises(ValueError, match="permutation"):
        A.cumulative_accuracy(config, snap, x[:10], labels[:10], 0, [[0, 0]])
    with pytest.raises(ValueError, match="hidden layer 1 does not exist"):
        A.ablate_units(config, snap, x[:10], labels[:10], 1)


def test_a_run_from_its_own_loop_gets_one_line_saying_why_there_is_no_ablation(trained_store, monkeypatch):
    import dataclasses
    from dashboard.loaders import unit_ablation
    from dashboard.loaders.neuron_target import resolve
    from dashboard.read import cache
    from dashboard.read.store import StoreError
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    cache.clear()
    own = dataclasses.replace(resolve(trained_store.run_ids["sigmoid"], 1), config=None, own_loop=True)
    with pytest.raises(StoreError, match="own training loop") as e:
        unit_ablation.ablation(own)
    assert "\n" not in str(e.value)
    with pytest.raises(StoreError, match="mode=zero or mode=mean"):
        unit_ablation.check_mode("max")
