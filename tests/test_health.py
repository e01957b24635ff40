"""Health warnings: each check fires on data that shows its problem, and stays quiet on healthy data."""
import numpy as np
import pytest

from dashboard.analytics import health as H
from training import contract as C

EDGES = np.linspace(0, 1, 21)


def checks(warnings):
    return [w.check for w in warnings]


def test_a_steadily_falling_loss_is_healthy():
    assert H.loss_warnings("train_loss", [2.3, 1.0, 0.6, 0.4, 0.3, 0.25]) == []


def test_a_loss_that_ends_well_above_its_best_is_rising():
    (w,) = H.loss_warnings("train_loss", [2.3, 0.5, 0.4, 0.6, 0.9])
    assert w.title == "train_loss is rising" and "epoch 2" in w.explanation and "learning rate" in w.fix


def test_a_rising_test_loss_is_reported_as_overfitting():
    (w,) = H.loss_warnings("test_loss", [0.5, 0.3, 0.35, 0.42])
    assert "overfitting" in w.fix


def test_a_rise_within_tolerance_is_not_a_warning():
    assert H.loss_warnings("train_loss", [1.0, 0.50, 0.54]) == []  # 8 % above the best: under 10 %


def test_a_loss_that_flips_direction_every_epoch_is_oscillating():
    ws = H.loss_warnings("train_loss", [1.0, 0.6, 0.8, 0.5, 0.7, 0.45, 0.65])
    assert "train_loss is oscillating" in [w.title for w in ws]


def test_tiny_wiggles_are_not_oscillation():
    v = 0.3 + 0.0005 * np.array([0, 1, 0, 1, 0, 1, 0])
    assert H.loss_warnings("train_loss", v) == []


def test_sgd_jitter_after_convergence_is_not_oscillation():
    # Nielsen's net at lr 3.0: falls from 1.4 to 0.05, then wobbles by a few percent every epoch.
    tail = 0.05 + 0.003 * np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    assert H.loss_warnings("train_loss", np.concatenate([[1.4, 0.1, 0.07], tail])) == []


def test_a_nan_loss_is_an_error_naming_the_epoch():
    (w,) = H.loss_warnings("train_loss", [2.3, 1.0, float("nan")])
    assert w.severity == "error" and "epoch 2" in w.explanation


def test_more_than_half_dead_units_is_flagged_per_layer():
    ws = H.dead_unit_warnings({"fc1": 0.75, "fc2": 0.5}, "relu")
    assert [w.title for w in ws] == ["75% of fc1's units are dead"]


def test_sigmoid_layers_are_called_saturated_not_dead():
    (w,) = H.dead_unit_warnings({"fc1": 0.9}, "sigmoid")
    assert "saturated" in w.title


@pytest.mark.parametrize("norms, expected", [
    ({"fc1": 0.5, "fc2": 1.0}, []),
    ({"fc1": 1e-4, "fc2": 1.0}, ["Vanishing gradients"]),  # first layer gets 0.01 % of the output's
    ({"fc1": 1e-8, "fc2": 1e-8}, ["Vanishing gradients"]),  # tiny everywhere
    ({"fc1": 500.0, "fc2": 1.0}, ["Exploding gradients"]),
    ({"fc1": float("inf"), "fc2": 1.0}, ["Exploding gradients"]),
])
def test_gradient_checks(norms, expected):
    assert [w.title for w in H.gradient_warnings(norms)] == expected


def test_confident_wrong_fraction_counts_bins_at_or_above_0_9():
    counts = np.zeros(20)
    counts[18], counts[19], counts[5] = 30, 10, 60  # 40 of 100 wrong predictions are >= 0.9
    assert H.confident_wrong_fraction(EDGES, counts) == (pytest.approx(0.4), 100)


def test_mostly_confident_mistakes_warn_and_mostly_unsure_ones_do_not():
    confident = np.zeros(20)
    confident[19], confident[10] = 80, 20
    unsure = confident[::-1].copy()
    assert checks(H.confidence_warnings(EDGES, confident)) == [H.CONFIDENCE]
    assert H.confidence_warnings(EDGES, unsure) == []


def test_a_handful_of_confident_mistakes_proves_nothing():
    counts = np.zeros(20)
    counts[19] = 5
    assert H.confidence_warnings(EDGES, counts) == []


def test_ks_distance_of_identical_histograms_is_zero_and_of_disjoint_ones_is_one():
    e = np.linspace(0, 1, 11)
    a = np.array([0, 0, 5, 5, 0, 0, 0, 0, 0, 0])
    b = np.array([0, 0, 0, 0, 0, 0, 0, 5, 5, 0])
    assert H.histogram_ks(e, a, e, a) == 0
    assert H.histogram_ks(e, a, e, b) == pytest.approx(1.0)


def test_ks_distance_compares_histograms_with_different_bins():
    # The same uniform distribution on [0, 1] binned two ways is the same distribution.
    assert H.histogram_ks(np.linspace(0, 1, 11), np.ones(10), np.linspace(0, 1, 41), np.ones(40)) < 1e-9
    # Uniform on [0, 1] vs uniform on [0, 2]: CDFs differ most at 1, by 0.5.
    assert H.histogram_ks(np.linspace(0, 1, 11), np.ones(10), np.linspace(0, 2, 21), np.ones(20)) == pytest.approx(0.5)


def test_activations_that_do_not_move_between_snapshots_are_flagged():
    e = np.linspace(0, 1, 11)
    before = {"fc1": (e, np.arange(10)), "fc2": (e, np.arange(10))}
    after = {"fc1": (e, np.arange(10)), "fc2": (e, np.arange(10)[::-1])}
    (w,) = H.static_activation_warnings(before, after, (0, 5))
    assert w.title == "fc1's activations don't change"
    assert H.static_activation_warnings(before, before, (3, 3)) == []  # one snapshot: nothing to compare


def test_every_warning_is_one_line_with_a_fix():
    counts = np.zeros(20)
    counts[19] = 50
    ws = (H.loss_warnings("train_loss", [1, 0.5, 0.9]) + H.dead_unit_warnings({"fc1": 1.0}, "relu")
          + H.gradient_warnings({"fc1": 1e-9, "fc2": 1}) + H.confidence_warnings(EDGES, counts))
    assert len(ws) == 4
    for w in ws:
        assert w.explanation and w.fix and "\n" not in w.explanation + w.fix


def test_run_health_combines_the_checks_over_a_runs_histories():
    hist = {C.TRAIN_LOSS: np.array([2.3, 0.4, 0.9]), C.dead_fraction_key("fc1"): np.array([0.0, 0.6, 0.8]),
            C.grad_norm_key("fc1"): np.array([1.0, 1.0, 1.0]), C.grad_norm_key("fc2"): np.array([1.0, 1.0, 1.0])}
    ws = H.run_health(hist, ["fc1"], ["fc1", "fc2"], "relu", None, None, None)
    assert checks(ws) == [H.LOSS_CURVE, H.DEAD_UNITS]


def expected_real_run_checks(hist, hidden, layers, last_snapshot, labels) -> list[str]:
    """The checks that should fire on a real run, worked out another way than run_health: the confidence
    check from the per-image predictions rather than the logged histogram, the others from their rules."""
    expected = []
    for key in (C.TRAIN_LOSS, C.TEST_LOSS):
        v = hist[key]
        if v[-1] > v.min() * (1 + H.RISE_TOLERANCE):
            expected.append(H.LOSS_CURVE)
    expected += [H.DEAD_UNITS for l in hidden if hist[C.dead_fraction_key(l)][-1] > H.DEAD_LIMIT]
    norms = np.array([hist[C.grad_norm_key(l)][-1] for l in layers])
    ratio = norms[0] / norms[-1]
    if (norms > H.EXPLODING_ABS).any() or ratio > H.EXPLODING_RATIO:
        expected.append(H.GRADIENTS)
    if (norms < H.VANISHING_ABS).any() or ratio < H.VANISHING_RATIO:
        expected.append(H.GRADIENTS)
    wrong = last_snapshot[C.PRED_CLASS] != labels
    confident = last_snapshot[C.PRED_CONFIDENCE][wrong] >= H.CONFIDENT
    if wrong.sum() >= H.CONFIDENT_WRONG_MIN and confident.mean() >= H.CONFIDENT_WRONG_LIMIT:
        expected.append(H.CONFIDENCE)
    return expected


@pytest.mark.parametrize("kind", ["sigmoid", "relu", "cnn"])
def test_real_runs_get_exactly_the_warnings_their_data_shows(trained_store, monkeypatch, kind):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    from dashboard.read import store
    rid = trained_store.run_ids[kind]
    run = store.get_run(rid)
    layers = store.layer_names(run)
    keys = [C.TRAIN_LOSS, C.TEST_LOSS] + [C.grad_norm_key(l) for l in layers] \
        + [C.dead_fraction_key(l) for l in layers[:-1]]
    hist = {k: store.metric_history(rid, k)["value"].to_numpy() for k in keys}
    n_epochs = int(run.data.params[C.PARAM_EPOCHS])
    assert all(len(v) == n_epochs + 1 for v in hist.values()), hist  # every key, epoch 0 (untrained) to the last
    epochs = store.snapshot_epochs(rid)
    first, last = store.load_snapshot(rid, epochs[0]), store.load_snapshot(rid, epochs[-1])
    ws = H.run_health(hist, layers[:-1], layers, run.data.params[C.PARAM_ACTIVATION], first, last,
                      (epochs[0], epochs[-1]))
    _, labels = store.test_set()
    assert sorted(checks(ws)) == sorted(expected_real_run_checks(hist, layers[:-1], layers, last, labels)), ws
    # Two epochs of real training lower the training loss and move every hidden layer's activations.
    assert hist[C.TRAIN_LOSS][-1] < hist[C.TRAIN_LOSS][0]
    assert H.ACTIVATIONS not in checks(ws), ws
