"""Run detail figures: pure builders over arrays, plus the page's loader (dashboard.loaders.run_data) over a real store."""
import numpy as np
import pandas as pd
import pytest

from dashboard.views import run_detail_view as V
from training import contract as C
from training.config import RunConfig
from training.nets.models import layers_of


def curve(values):
    return pd.DataFrame({"step": range(len(values)), "value": values})


def has_axis_titles(fig):
    layout = fig.to_plotly_json()["layout"]
    axes = [v for k, v in layout.items() if k.startswith(("xaxis", "yaxis")) and v.get("visible", True)]
    return axes and all(a.get("title", {}).get("text") for a in axes if "title" in a) and \
        any(a.get("title", {}).get("text") for a in axes)


def fake_snapshot(layers=("fc1", "fc2"), n=10000, seed=0):
    rng = np.random.default_rng(seed)
    snap = {}
    for i, layer in enumerate(layers):
        snap[C.weight_key(layer)] = rng.standard_normal((10, 20)).astype(np.float32)
        snap[C.act_hist_key(layer)] = rng.integers(0, 100, 40)
        snap[C.act_edges_key(layer)] = np.linspace(0, 1, 41, dtype=np.float32)
    snap[C.CONF_EDGES] = np.linspace(0, 1, 21, dtype=np.float32)
    snap[C.CONF_HIST_CORRECT] = rng.integers(0, 100, 20)
    snap[C.CONF_HIST_INCORRECT] = rng.integers(0, 10, 20)
    return snap


def test_progress_figure_draws_train_and_test_loss_and_accuracy_in_percent():
    hist = {C.TRAIN_LOSS: curve([2.0, 1.0]), C.TEST_LOSS: curve([2.1, 1.2]),
            C.TRAIN_ACC: curve([0.1, 0.9]), C.TEST_ACC: curve([0.1, 0.85])}
    fig = V.progress_figure(hist, "cross_entropy")
    assert len(fig.data) == 4
    acc = [t for t in fig.data if t.xaxis == "x2"]
    assert max(max(t.y) for t in acc) == pytest.approx(90.0)
    assert fig.layout.yaxis.title.text == "loss (cross-entropy, nats)" and fig.layout.yaxis2.title.text == "accuracy (%)"
    assert {t.line.dash for t in fig.data} == {"solid", "dash"}


def test_gradient_figure_has_one_log_scaled_line_per_layer():
    fig = V.gradient_figure({"fc1": curve([0.1, 0.2]), "fc2": curve([1.0, 0.5])})
    assert [t.name for t in fig.data] == ["fc1", "fc2"] and fig.layout.yaxis.type == "log"
    assert has_axis_titles(fig)


def test_dead_figure_shows_percent_and_the_warning_line():
    fig = V.dead_figure({"fc1": curve([0.0, 0.6])}, "relu")
    assert list(fig.data[0].y) == [0.0, 60.0] and fig.layout.yaxis.title.text == "dead units (%)"
    assert fig.layout.shapes[0].y0 == 50


def test_activation_figure_one_panel_per_layer_as_shares_with_a_reference_outline():
    snap, ref = fake_snapshot(), fake_snapshot(seed=1)
    fig = V.activation_figure(snap, ["fc1", "fc2"], 2, ref, 0)
    bars = [t for t in fig.data if t.type == "bar"]
    assert len(bars) == 2 and sum(bars[0].y) == pytest.approx(100.0)
    assert len([t for t in fig.data if t.type == "scatter"]) == 2
    assert fig.layout.annotations[1].text == "fc2 (output)"


def test_weight_percentiles_follow_numpy_and_bands_nest():
    rng = np.random.default_rng(0)
    snaps = {e: {C.weight_key("fc1"): rng.standard_normal((50, 40)) * (e + 1)} for e in range(3)}
    df = V.weight_percentiles(snaps, "fc1")
    assert list(df["epoch"]) == [0, 1, 2]
    w = snaps[2][C.weight_key("fc1")]
    assert df.loc[2, "p50"] == pytest.approx(np.median(w)) and df.loc[2, "p100"] == pytest.approx(w.max())
    cols = [f"p{p:g}" for p in V.PERCENTILES]
    assert (np.diff(df[cols].to_numpy(), axis=1) >= 0).all()
    fig = V.weight_distribution_figure({"fc1": df})
    assert len(fig.data) == 2 * 4 + 1  # 4 bands (upper and lower edge) and the median


def test_confusion_matrix_counts_true_rows_by_predicted_columns():
    labels = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 2, 2, 0])
    cm = V.confusion_matrix(pred, labels)
    assert cm[0, 0] == 1 and cm[0, 1] == 1 and cm[2, 0] == 1 and cm[2, 2] == 2 and cm.sum() == 6
    fig = V.confusion_figure(cm, 3)
    assert fig.data[0].z[2][2] == pytest.approx(200 / 3)  # 2 of 3 twos: 66.7 % of the true class
    assert has_axis_titles(fig)


def test_misclassified_are_the_wrong_ones_most_confident_first():
    labels = np.array([1, 2, 3, 4, 5])
    pred = np.array([1, 0, 3, 0, 0])
    conf = np.array([0.99, 0.6, 0.9, 0.95, 0.7])
    assert list(V.misclassified(pred, conf, labels, n=2)) == [3, 4]


def test_image_grid_titles_say_true_and_pred_in_green_or_red():
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    fig = V.image_grid_figure(images, [7, 2, 1], [7, 3, 1], [0.9, 0.8, 0.7], cols=2)
    texts = [a.text for a in fig.layout.annotations]
    assert V.GOOD in texts[0] and "pred <b>7</b> · 90%" in texts[0]
    assert V.BAD in texts[1] and "true <b>2</b>" in texts[1]
    assert np.asarray(fig.data[0].z).shape == (2 * 39, 2 * 31 - 3)  # 2 rows, 2 columns of 28 px tiles


def test_architecture_rows_count_parameters_like_pytorch():
    mlp = layers_of(RunConfig(sizes=(784, 128, 10), activation="relu", loss="cross_entropy"))
    rows = V.architecture_rows(mlp, "relu", "cross_entropy")
    assert [r["params"] for r in rows] == [0, 784 * 128 + 128, 128 * 10 + 10]
    assert "softmax" in rows[-1]["detail"]
    cnn = V.architecture_rows(layers_of(RunConfig(arch="cnn", activation="relu", loss="cross_entropy")),
                              "relu", "cross_entropy")
    assert [r["shape"] for r in cnn] == ["1×28×28", "16×26×26", "32×11×11", "10"]
    assert sum(r["params"] for r in cnn) == 16 * 9 + 16 + 32 * 16 * 9 + 32 + 800 * 10 + 10
    fig = V.architecture_figure(rows)
    assert "101,770 parameters" in fig.layout.title.text


def test_confidence_figure_labels_counts():
    fig = V.confidence_figure(fake_snapshot(), 4)
    assert [t.name.split(" ")[0] for t in fig.data] == ["correct", "incorrect"]
    assert "epoch 4" in fig.layout.xaxis.title.text


def test_landscape_figures_draw_the_path_on_contour_and_surface():
    from dashboard.analytics.landscape import Landscape
    a = np.linspace(-1, 1, 5)
    ls = Landscape(a, a, np.add.outer(a ** 2, a ** 2), np.array([[1.0, 1.0], [0.0, 0.0]]), np.array([2.0, 0.0]),
                   [0, 3], np.array([0.9, 0.1]), 100, "mse")
    contour = V.landscape_contour_figure(ls)
    assert contour.data[0].type == "contour" and list(contour.data[1].text) == ["0", "3"]
    assert "90.0%" in contour.layout.xaxis.title.text
    surface = V.landscape_surface_figure(ls)
    assert surface.data[0].type == "surface" and list(surface.data[1].z) == [2.0, 0.0]


def test_epoch_parameter_picks_a_snapshot_or_explains():
    assert V.parse_epoch(None, [0, 1, 2]) == (2, None)
    assert V.parse_epoch("1", [0, 1, 2]) == (1, None)
    epoch, note = V.parse_epoch("9", [0, 1, 2])
    assert epoch == 2 and note.startswith("Epoch 9 has no snapshot (this run has epochs 0–2)")
    assert V.parse_epoch("x", [0, 1, 2])[1].startswith("'x' is not an epoch")
    assert V.parse_epoch("3", []) == (None, None)


def test_missing_parts_name_what_a_plain_script_run_lacks():
    missing = V.missing_parts({}, {"accuracy": 0.5}, [], [])
    assert len(missing) == 3
    assert "train_loss" in missing[0] and "'layers'" in missing[1] and "snapshot" in missing[2]
    full = {k: 0.0 for k in (C.TRAIN_LOSS, C.TEST_LOSS, C.TRAIN_ACC, C.TEST_ACC, C.grad_norm_key("fc1"))}
    assert V.missing_parts({}, full, ["fc1", "fc2"], [0, 1]) == []


# ---- over the real trained store ----

def non_empty(fig):
    return len(fig.data) > 0 and all(len(t.y if t.y is not None else t.z) > 0 for t in fig.data
                                     if t.type in ("bar", "heatmap", "contour", "scatter"))


@pytest.mark.parametrize("kind", ["sigmoid", "relu", "cnn"])
def test_every_figure_builds_from_a_real_runs_data(trained_store, monkeypatch, kind):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    from dashboard.read import store
    rid = trained_store.run_ids[kind]
    run = store.get_run(rid)
    layers, params = store.layer_names(run), run.data.params
    hist = {k: store.metric_history(rid, k) for k in (C.TRAIN_LOSS, C.TEST_LOSS, C.TRAIN_ACC, C.TEST_ACC)}
    epochs = store.snapshot_epochs(rid)
    snaps = {e: store.load_snapshot(rid, e) for e in epochs}
    last = snaps[epochs[-1]]
    images, labels = store.test_set()
    pred, conf = last[C.PRED_CLASS], last[C.PRED_CONFIDENCE]
    wrong = V.misclassified(pred, conf, labels)
    figures = [
        V.progress_figure(hist, params["loss"]),
        V.gradient_figure({l: store.metric_history(rid, C.grad_norm_key(l)) for l in layers}),
        V.dead_figure({l: store.metric_history(rid, C.dead_fraction_key(l)) for l in layers[:-1]}, params["activation"]),
        V.weight_distribution_figure({l: V.weight_percentiles(snaps, l) for l in layers}),
        V.activation_figure(last, layers, epochs[-1], snaps[epochs[0]], epochs[0]),
        V.confidence_figure(last, epochs[-1]),
        V.confusion_figure(V.confusion_matrix(pred, labels), epochs[-1]),
        V.image_grid_figure(images[wrong], labels[wrong], pred[wrong], conf[wrong]),
        V.architecture_figure(V.architecture_rows(
            layers_of(RunConfig.from_params(params)),
            params["activation"], params["loss"])),
    ]
    assert all(non_empty(f) for f in figures)
    assert V.confusion_matrix(pred, labels).sum() == 10000
    assert (pred[wrong] != labels[wrong]).all() and len(wrong) > 0
    assert V.missing_parts(params, run.data.metrics, layers, epochs) == []


@pytest.fixture
def real_store(trained_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    return trained_store


def test_the_overview_of_a_contract_run_has_every_curve_its_model_and_its_checks(real_store):
    from dashboard.loaders import run_data
    from dashboard.read import store
    rid = real_store.run_ids["relu"]
    o = run_data.overview(rid)
    assert set(o.progress()) == set(run_data.PROGRESS_KEYS) and o.other_metrics == {}
    assert list(o.grad_norms()) == o.layers == store.layer_names(store.get_run(rid)) == ["fc1", "fc2", "fc3"]
    assert list(o.dead()) == ["fc1", "fc2"]
    assert [l.name for l in o.model] == o.layers and o.model_problem == "" and o.health_problem == ""
    for key, df in o.histories.items():
        assert df.equals(store.metric_history(rid, key))


def test_the_overview_of_another_tools_run_shows_its_own_metrics_and_says_why_there_is_no_model(real_store):
    from dashboard.loaders import run_data
    o = run_data.overview(real_store.run_ids["foreign"])
    assert o.model is None and "no arch, sizes, activation, loss param" in o.model_problem
    assert list(o.other_metrics) == ["accuracy"] and o.histories == {} and o.warnings == []


def test_epoch_data_is_the_asked_snapshot_with_the_test_sets_predictions(real_store):
    from dashboard.loaders import run_data
    from dashboard.read import store
    rid = real_store.run_ids["sigmoid"]
    d = run_data.epoch_data(rid, 1)
    assert (d.epoch, d.first_epoch) == (1, 0)
    np.testing.assert_array_equal(d.snapshot[C.PRED_CLASS], store.load_snapshot(rid, 1)[C.PRED_CLASS])
    np.testing.assert_array_equal(d.first[C.weight_key("fc1")], store.load_snapshot(rid, 0)[C.weight_key("fc1")])
    assert len(d.predictions.pred) == len(d.predictions.labels) == 10000
    assert run_data.epoch_data(rid, 99).epoch == 2  # an epoch without a snapshot: the last one
    assert run_data.epoch_data(rid, 0).first is None  # the first epoch is its own reference
    assert run_data.epoch_data(real_store.run_ids["foreign"], None) is None


def test_a_finished_runs_landscape_is_computed_once_and_kept_until_the_caches_are_cleared(real_store):
    from dashboard.read import cache
    from dashboard.loaders import run_data
    rid = real_store.run_ids["sigmoid"]
    cache.clear()
    assert run_data.ready_landscape(rid) is None
    ls = run_data.run_landscape(rid)
    assert ls.n_images == run_data.LANDSCAPE_IMAGES["mlp"] and ls.loss.shape == (21, 21)
    assert run_data.ready_landscape(rid) is ls and run_data.run_landscape(rid) is ls
    cache.clear()
    assert run_data.ready_landscape(rid) is None


def test_another_tools_run_has_no_landscape_and_says_why_in_one_line(real_store):
    from dashboard.loaders import run_data
    from training.config import ConfigError
    with pytest.raises(ConfigError, match="not a run of MNIST Lab's trainer"):
        run_data.run_landscape(real_store.run_ids["foreign"])


def test_nan_and_inf_in_a_history_are_gaps_in_the_figure_and_counted_in_its_note():
    from dashboard.views import gaps
    df = pd.DataFrame({"step": [0, 1, 2, 3], "value": [1.0, np.nan, np.inf, 0.5]})
    fig = V.progress_figure({C.TRAIN_LOSS: df})
    assert list(fig.data[0].y) == [1.0, None, None, 0.5]  # a list with None: no NaN ever reaches Plotly.js
    assert gaps.histories_note({C.TRAIN_LOSS: df}) == \
        f"2 logged values are not finite (NaN or ±inf), drawn as gaps ({C.TRAIN_LOSS}: 2)."
    grads = V.gradient_figure({"fc1": df.assign(value=[0.0, 1.0, -np.inf, 2.0])})
    assert list(grads.data[0].y) == [None, 1.0, None, 2.0]  # a log axis cannot draw 0 either
    assert gaps.histories_note({"fc1": df}, log_scale=True).startswith("2 logged values are not finite (NaN or ±inf) "
                                                                       "or not above 0 on this log scale")
