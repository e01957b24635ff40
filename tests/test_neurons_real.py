"""Neuron analytics on real runs, through the real store: verdicts, top images, matching, pages' data."""
import numpy as np
import pytest
import torch

from common import neurons as N
from dashboard.loaders import neuron_stats as S
from dashboard.loaders.neuron_target import counterpart, resolve, run_config
from dashboard.loaders.unit_panels import report
from dashboard.read import store
from dashboard.read.store import StoreError
from training import contract as C
from training.nets.activations import compute_activations


@pytest.fixture(scope="module")
def writeup_c_run(tmp_path_factory):
    """Write-up C's best config ([784,20,10], sigmoid, quadratic cost, SGD lr 3.0, batch 10), shortened to
    3 epochs on 20,000 images so it runs in about half a minute; it already reaches ~92 % test accuracy."""
    from tests.conftest import sqlite_uri
    from training.config import RunConfig
    from training.nets.data import load
    from training.engine.loop import train_cohort
    from training.tracking.mlflow_sink import MlflowSink, client

    root = tmp_path_factory.mktemp("writeup-c")
    uri = sqlite_uri(root)
    with pytest.MonkeyPatch.context() as env:  # undone at the module's teardown
        env.setenv("MLFLOW_TRACKING_URI", uri)
        # Artifacts beside the store, not in ./mlruns of whatever directory pytest runs from.
        client().create_experiment("writeup-c", artifact_location=(root / "artifacts").as_uri())
        cfg = RunConfig(sizes=(784, 20, 10), activation="sigmoid", loss="mse", lr=3.0, batch_size=10, epochs=3,
                        train_size=20000, experiment="writeup-c")
        data = load(train_size=cfg.train_size)
        sink = MlflowSink(client(), [cfg], data)
        sink.finish(train_cohort([cfg], data, sink).params)
        run_id = sink.run_ids[0]
        target = resolve(run_id, 1)
        yield uri, run_id, target, S.layer_stats(target)


@pytest.mark.slow
def test_a_writeup_c_run_has_class_selective_and_feature_selective_units(writeup_c_run):
    _, _, t, stats = writeup_c_run
    assert t.epoch == 3 and t.units == 20
    assert any(v.startswith("class-selective (digit ") for v in stats.verdicts), stats.verdicts
    assert "feature-selective" in stats.verdicts, stats.verdicts
    _, labels = S.test_images()
    for u, v in enumerate(stats.verdicts):
        if v.startswith("class-selective"):
            d = int(v.rstrip(")").split()[-1])
            assert stats.si[u] >= N.SI_THRESHOLD
            assert (labels[stats.top[u]] == d).mean() >= N.TOPK_MAJORITY


@pytest.mark.slow
def test_a_units_top_8_are_its_8_highest_activations_on_the_test_set(writeup_c_run, monkeypatch):
    uri, run_id, t, stats = writeup_c_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    images, _ = S.test_images()
    # Recompute one unit by hand from the snapshot: sigmoid(W x + b) on all 10,000 test images.
    snap = store.load_snapshot(run_id, t.epoch)
    w, b = snap[C.weight_key("fc1")], snap[C.bias_key("fc1")]
    x = images.reshape(len(images), -1).astype(np.float32) / 255
    for u in (0, 7, 19):
        by_hand = torch.sigmoid(torch.from_numpy(x @ w[u] + b[u])).numpy()
        np.testing.assert_allclose(stats.acts[:, u], by_hand, atol=1e-5)
        top8 = stats.top[u]
        assert len(top8) == 8 and len(set(top8.tolist())) == 8
        np.testing.assert_array_equal(np.sort(stats.acts[top8, u]), np.sort(stats.acts[:, u])[-8:])
        assert (np.diff(stats.acts[top8, u]) <= 0).all()  # highest first


def test_a_cnn_channels_activation_is_the_spatial_max_and_conv1_alone_matches_the_full_forward(trained_store,
                                                                                           monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    rid = trained_store.run_ids["cnn"]
    run = store.get_run(rid)
    config = run_config(run)
    snap = store.load_snapshot(rid, store.snapshot_epochs(rid)[-1])
    x = S.test_inputs()[:300]
    alone = compute_activations(config, snap, x, upto=1)[0].acts
    full = compute_activations(config, snap, x)
    np.testing.assert_allclose(alone, full[0].acts, atol=1e-6)
    kernel = torch.from_numpy(snap[C.weight_key("conv1")][:1])
    fmap = torch.relu(torch.nn.functional.conv2d(x.reshape(-1, 1, 28, 28), kernel,
                                                 torch.from_numpy(snap[C.bias_key("conv1")][:1])))
    np.testing.assert_allclose(alone[:, 0], fmap.amax(dim=(-2, -1))[:, 0].numpy(), atol=1e-6)
    assert [a.acts.shape[1] for a in full] == [16, 32]


def reference_matching(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each unit of a's Hungarian partner in b and their correlation, from np.corrcoef and scipy directly."""
    from scipy.optimize import linear_sum_assignment
    corr = np.nan_to_num(np.corrcoef(a.T, b.T)[:a.shape[1], a.shape[1]:])  # a constant unit correlates 0
    rows, cols = linear_sum_assignment(corr, maximize=True)
    return cols[np.argsort(rows)], corr[rows, cols][np.argsort(rows)]


def test_matching_two_seeds_of_one_architecture_is_one_to_one(trained_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    t = resolve(trained_store.run_ids["sigmoid"], 1)
    other = trained_store.run_ids["sigmoid_b"]
    m = S.best_match(t, 3, counterpart(t, other))
    assert m.method.startswith("one-to-one") and m.other.run_id == other and m.other.epoch == t.epoch
    a, b = S.layer_stats(t).acts, S.layer_stats(m.other).acts
    expected_match, expected_corr = reference_matching(a, b)
    assert m.unit == expected_match[3]
    assert m.corr == pytest.approx(expected_corr[3], abs=1e-6)
    assert m.corr == pytest.approx(np.corrcoef(a[:, 3], b[:, m.unit])[0, 1], abs=1e-6)
    match, corr, _ = S.matching(t, m.other)
    np.testing.assert_array_equal(match, expected_match)
    np.testing.assert_allclose(corr, expected_corr, atol=1e-6)
    # A run matched with itself finds every unit's own twin, at r = 1.
    self_match, self_corr, _ = N.match_units(a, a)
    live = ~S.layer_stats(t).dead
    np.testing.assert_array_equal(self_match[live], np.arange(20)[live])
    np.testing.assert_allclose(self_corr[live], 1.0, atol=1e-6)


def test_runs_offered_for_comparison_share_the_layers_up_to_the_unit(trained_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    ids = trained_store.run_ids
    options = S.comparable_runs(resolve(ids["sigmoid"], 1))
    offered = [o["value"] for o in options]
    assert ids["sigmoid_b"] in offered and ids["relu"] in offered  # both start with fc1: 784 -> hidden
    assert ids["sigmoid"] not in offered and ids["cnn"] not in offered and ids["foreign"] not in offered
    assert offered[0] == ids["sigmoid_b"]  # the same architecture comes first
    labels = {o["value"]: o["label"] for o in options}  # each says its architecture, from the arch_label param
    assert " · mlp-784-20-10-sigmoid · " in labels[ids["sigmoid_b"]]
    assert " · mlp-784-16-16-10-relu · " in labels[ids["relu"]]
    deeper = [o["value"] for o in S.comparable_runs(resolve(ids["relu"], 2))]
    assert deeper == []  # no other run has fc1 -> fc2 hidden


@pytest.mark.parametrize("layer, epoch, unit, message", [
    ("9", None, None, "layer 9 does not exist"),
    ("abc", None, None, "layer 'abc' is not a whole number"),
    ("1", "77", None, "epoch 77 has no snapshot"),
    ("1", "1.5", None, "epoch '1.5' is not a whole number"),
    ("1", None, "20", "unit 20 does not exist"),
    ("1", None, "-1", "unit -1 does not exist"),
])
def test_bad_addresses_are_one_line_messages(trained_store, monkeypatch, layer, epoch, unit, message):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    with pytest.raises(StoreError, match=message):
        resolve(trained_store.run_ids["sigmoid"], layer, epoch, unit)


def test_runs_without_neurons_say_why(trained_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    with pytest.raises(StoreError, match="not logged by MNIST Lab's trainer"):
        resolve(trained_store.run_ids["foreign"], 1)
    with pytest.raises(StoreError, match="is not in the store"):
        resolve("0" * 32, 1)
    with pytest.raises(StoreError, match="is not a run id"):
        resolve("../../etc", 1)


def test_names_and_notes_are_read_from_the_layers_neuron_tags_only(trained_store_copy):
    rid = trained_store_copy.run_ids["relu"]
    store.set_neuron_label(rid, 2, 5, name="loop", note="a & b")
    client = store.client()
    client.set_tag(rid, C.neuron_tag_prefix(2) + "5.colour", "red")  # not a name or a note
    client.set_tag(rid, C.neuron_tag_prefix(2) + "x.name", "no unit")
    client.set_tag(rid, C.neuron_name_tag(12, 5), "layer 12, not layer 1 or 2")
    assert S.neuron_labels(resolve(rid, 2)) == {5: {"name": "loop", "note": "a & b"}}
    assert S.neuron_labels(resolve(rid, 1)) == {}


def test_the_report_is_one_self_contained_page_with_the_name_as_text(trained_store_copy):
    rid = trained_store_copy.run_ids["relu"]
    store.set_neuron_label(rid, 2, 5, name="<script>alert(1)</script>", note="a & b")
    page = report(resolve(rid, 2, None, 5), 5)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a &amp; b" in page
    assert page.count("data:image/png;base64,") == 1 + 8  # top-k mean (deeper layer: no heatmap) + top 8
    assert "SI " in page and "<svg" in page
    assert "<script" not in page.lower() and "src=\"http" not in page  # no scripts, nothing fetched
