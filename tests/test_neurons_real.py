"""Neuron analytics on real runs, through the real store: verdicts, top images, matching, pages' data."""
import numpy as np
import pytest
import torch

from dashboard import neuron_data as D
from dashboard import store
from dashboard.analytics import neurons as N
from dashboard.store import StoreError
from training import contract as C


@pytest.fixture(scope="module")
def writeup_c_run(tmp_path_factory):
    """Write-up C's best config ([784,20,10], sigmoid, quadratic cost, SGD lr 3.0, batch 10), shortened to
    3 epochs on 20,000 images so it runs in about half a minute; it already reaches ~92 % test accuracy."""
    from tests.conftest import sqlite_uri
    from training.config import RunConfig
    from training.data import load
    from training.engine import train_cohort
    from training.tracking import MlflowSink, client

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
        target = D.resolve(run_id, 1)
        yield uri, run_id, target, D.layer_stats(target)


@pytest.mark.slow
def test_a_writeup_c_run_has_class_selective_and_feature_selective_units(writeup_c_run):
    _, _, t, stats = writeup_c_run
    assert t.epoch == 3 and t.units == 20
    assert any(v.startswith("class-selective (digit ") for v in stats.verdicts), stats.verdicts
    assert "feature-selective" in stats.verdicts, stats.verdicts
    _, labels = D.test_images()
    for u, v in enumerate(stats.verdicts):
        if v.startswith("class-selective"):
            d = int(v.rstrip(")").split()[-1])
            assert stats.si[u] >= N.SI_THRESHOLD
            assert (labels[stats.top[u]] == d).mean() >= N.TOPK_MAJORITY


@pytest.mark.slow
def test_a_units_top_8_are_its_8_highest_activations_on_the_test_set(writeup_c_run, monkeypatch):
    uri, run_id, t, stats = writeup_c_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    images, _ = D.test_images()
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
    config = D.run_config(run)
    snap = store.load_snapshot(rid, store.snapshot_epochs(rid)[-1])
    x = D._test_inputs()[0][:300]
    alone = D.compute_activations(config, snap, x, upto=1)[0].acts
    full = D.compute_activations(config, snap, x)
    np.testing.assert_allclose(alone, full[0].acts, atol=1e-6)
    kernel = torch.from_numpy(snap[C.weight_key("conv1")][:1])
    fmap = torch.relu(torch.nn.functional.conv2d(x.reshape(-1, 1, 28, 28), kernel,
                                                 torch.from_numpy(snap[C.bias_key("conv1")][:1])))
    np.testing.assert_allclose(alone[:, 0], fmap.amax(dim=(-2, -1))[:, 0].numpy(), atol=1e-6)
    assert [a.acts.shape[1] for a in full] == [16, 32]


def test_matching_two_seeds_of_one_architecture_is_one_to_one(trained_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    t = D.resolve(trained_store.run_ids["sigmoid"], 1)
    m = D.best_match(t, 3, trained_store.run_ids["sigmoid_b"])
    assert 0 <= m.unit < 20 and -1 <= m.corr <= 1 and m.method.startswith("one-to-one")
    match, corr, _ = D._matching(t.run_id, trained_store.run_ids["sigmoid_b"], 1, t.epoch, m.other.epoch, False)
    assert sorted(match.tolist()) == list(range(20))
    # A run matched with itself finds every unit's own twin, at r = 1.
    self_match, self_corr, _ = N.match_units(D.layer_stats(t).acts, D.layer_stats(t).acts)
    live = ~D.layer_stats(t).dead
    np.testing.assert_array_equal(self_match[live], np.arange(20)[live])
    np.testing.assert_allclose(self_corr[live], 1.0, atol=1e-6)


def test_runs_offered_for_comparison_share_the_layers_up_to_the_unit(trained_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    ids = trained_store.run_ids
    offered = [o["value"] for o in D.comparable_runs(D.resolve(ids["sigmoid"], 1))]
    assert ids["sigmoid_b"] in offered and ids["relu"] in offered  # both start with fc1: 784 -> hidden
    assert ids["sigmoid"] not in offered and ids["cnn"] not in offered and ids["foreign"] not in offered
    assert offered[0] == ids["sigmoid_b"]  # the same architecture comes first
    deeper = [o["value"] for o in D.comparable_runs(D.resolve(ids["relu"], 2))]
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
        D.resolve(trained_store.run_ids["sigmoid"], layer, epoch, unit)


def test_runs_without_neurons_say_why(trained_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    with pytest.raises(StoreError, match="not logged by MNIST Lab's trainer"):
        D.resolve(trained_store.run_ids["foreign"], 1)
    with pytest.raises(StoreError, match="is not in the store"):
        D.resolve("0" * 32, 1)
    with pytest.raises(StoreError, match="is not a run id"):
        D.resolve("../../etc", 1)


def test_the_report_is_one_self_contained_page_with_the_name_as_text(trained_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    rid = trained_store.run_ids["relu"]
    store.set_neuron_label(rid, 2, 5, name="<script>alert(1)</script>", note="a & b")
    report = D.report_html(D.resolve(rid, 2, None, 5), 5)
    assert "<script>" not in report and "&lt;script&gt;alert(1)&lt;/script&gt;" in report
    assert "a &amp; b" in report
    assert report.count("data:image/png;base64,") == 1 + 8  # top-k mean (deeper layer: no heatmap) + top 8
    assert "SI " in report and "<svg" in report
    assert "<script" not in report.lower() and "src=\"http" not in report  # no scripts, nothing fetched


def test_png_tiles_are_valid_pngs_with_the_right_size_and_colours():
    import zlib
    rgb = D.diverging_rgb(np.array([[-1.0, 0.0, 1.0]]), 1.0)
    assert rgb[0, 0].tolist() == [103, 0, 31] and rgb[0, 1].tolist() == [247, 247, 247]  # red -, white 0
    assert rgb[0, 2].tolist() == [5, 48, 97]  # blue +
    png = D.png_bytes(rgb, scale=2)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (6, 2)
    idat = png[png.index(b"IDAT") + 4:png.index(b"IEND") - 8]
    assert len(zlib.decompress(idat)) == height * (1 + width * 3)
