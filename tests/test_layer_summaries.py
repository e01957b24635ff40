"""Per-layer unit summaries as MLflow metrics: logged when a built-in run ends, backfilled idempotently,
and seen by MLflow's filter syntax and the runs page."""
import subprocess
import sys

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from dashboard.loaders import neuron_stats
from dashboard.loaders.neuron_target import resolve
from dashboard.read import cache, store
from dashboard.views import runs_view
from tests.conftest import REPO
from training import backfill_summaries
from training import contract as C
from training.location import tracking_uri
from training.tracking import layer_summaries


# The definitions common/neurons.py's docstring states, restated here so the reference shares no code with
# what it checks: SI >= 0.5 and 6 of the top 8 images of the preferred digit is class-selective; a range
# under 1e-3 over the test set is dead; activations are measured from 0 (sigmoid, ReLU).
SI_THRESHOLD, TOPK_MAJORITY, TOP_K, DEAD_RANGE = 0.5, 0.75, 8, 1e-3
SUMMARY_KINDS = ("class_selective", "feature_selective", "dead", "mean_si")
ACTIVATIONS = {"sigmoid": lambda z: 0.5 * (1.0 + np.tanh(z / 2)), "relu": lambda z: np.maximum(z, 0.0)}


def _key(layer: int, kind: str) -> str:
    return C.unit_summary_key(f"fc{layer}", kind)  # the MLPs here name their hidden layers fc1, fc2, ...


def _mnist_test_set() -> tuple[np.ndarray, np.ndarray]:
    """(10000, 784) float64 pixels in [0, 1] and the labels, read from the raw idx files (16- and 8-byte headers)."""
    raw = REPO / "data" / "MNIST" / "raw"
    images = np.frombuffer((raw / "t10k-images-idx3-ubyte").read_bytes()[16:], np.uint8).reshape(-1, 784) / 255.0
    return images, np.frombuffer((raw / "t10k-labels-idx1-ubyte").read_bytes()[8:], np.uint8).astype(np.int64)


def _unit_verdict(pre: np.ndarray, acts: np.ndarray, labels: np.ndarray) -> tuple[str, float, bool]:
    """One unit's verdict and SI from the docstring's definitions, and whether float32 rounding could tip it."""
    means = np.array([acts[labels == d].mean() for d in range(10)])
    preferred = int(np.argmax(means))
    mu_max, mu_rest = means[preferred], np.delete(means, preferred).mean()
    si = (mu_max - mu_rest) / (mu_max + mu_rest) if mu_max + mu_rest > 0 else 0.0
    order = np.argsort(-pre, kind="stable")  # the activation is monotone in the pre-activation
    top, swapped = labels[order[:TOP_K]], labels[np.r_[order[:TOP_K - 1], order[TOP_K]]]
    majority = np.mean(top == preferred) >= TOPK_MAJORITY
    spread = acts.max() - acts.min()
    if spread < DEAD_RANGE:
        return "dead", si, spread > DEAD_RANGE - 1e-5
    # Float32 activations move an SI by about 1e-6 and a pre-activation by about 1e-5.
    near = (abs(si - SI_THRESHOLD) < 1e-5 or spread < DEAD_RANGE + 1e-5 or np.sort(means)[-2] > mu_max - 1e-6
            or (pre[order[TOP_K - 1]] - pre[order[TOP_K]] < 1e-3
                and majority != (np.mean(swapped == preferred) >= TOPK_MAJORITY)))
    return ("class" if si >= SI_THRESHOLD and majority else "feature"), si, near


def _expected(run_id: str, layer: int) -> tuple[dict[str, float], int]:
    """A layer's four summaries at the run's last snapshot, from its weights by a float64 numpy forward pass,
    and how many of its units sit so near a threshold that float32 rounding could flip their verdict."""
    client = MlflowClient(tracking_uri())  # by name: MLflow's process-wide default may be an earlier test's store
    run = client.get_run(run_id)
    epoch = max(C.snapshot_epoch(f.path) for f in client.list_artifacts(run_id, C.SNAPSHOT_DIR))
    with np.load(client.download_artifacts(run_id, C.snapshot_path(epoch)), allow_pickle=False) as npz:
        snapshot = dict(npz)
    act = ACTIVATIONS[run.data.params[C.PARAM_ACTIVATION]]
    h, labels = _mnist_test_set()
    for i in range(1, layer + 1):
        pre = h @ snapshot[C.weight_key(f"fc{i}")].astype(np.float64).T + snapshot[C.bias_key(f"fc{i}")]
        h = act(pre)
    units = [_unit_verdict(pre[:, u], h[:, u], labels) for u in range(h.shape[1])]
    kinds = [kind for kind, _, _ in units]
    counts = {_key(layer, k): kinds.count(k.split("_")[0]) for k in SUMMARY_KINDS[:3]}
    return counts | {_key(layer, "mean_si"): float(np.mean([si for _, si, _ in units]))}, sum(n for _, _, n in units)


def _assert_logged_as_expected(logged: dict[str, float], run_id: str, layer: int) -> None:
    expected, near = _expected(run_id, layer)
    assert near <= 1, f"{near} units of layer {layer} sit on a threshold: the reference cannot decide them"
    for kind in SUMMARY_KINDS[:3]:
        key = _key(layer, kind)
        assert abs(logged[key] - expected[key]) <= near, (key, logged[key], expected[key], near)
    key = _key(layer, "mean_si")
    assert logged[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), key


def test_the_key_builder_and_its_inverse_round_trip():
    key = C.unit_summary_key("fc2", "mean_si")
    assert key == "units.fc2.mean_si" and C.unit_summary_parts(key) == ("fc2", "mean_si")
    assert C.unit_summary_parts("units.fc2.bogus") is None and C.unit_summary_parts(C.TEST_ACC) is None


def test_new_runs_carry_every_hidden_layers_summaries_equal_to_the_layer_pages_counts(trained_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    cache.clear()
    for name, layers in (("sigmoid", 1), ("relu", 2)):
        run = store.get_run(trained_store.run_ids[name])
        last = store.snapshot_epochs(run.info.run_id)[-1]
        for layer in range(1, layers + 1):
            _assert_logged_as_expected(run.data.metrics, run.info.run_id, layer)
            # And the layer page, which counts from the snapshot the dashboard reads, shows the same counts.
            verdicts = neuron_stats.layer_stats(resolve(run.info.run_id, layer, last)).verdicts
            shown = [sum(v.startswith(k) for v in verdicts) for k in ("class-", "feature-", "dead")]
            assert shown == [run.data.metrics[_key(layer, k)] for k in SUMMARY_KINDS[:3]], layer
            for kind in SUMMARY_KINDS:  # logged once, at the last snapshot's epoch
                history = store.client().get_metric_history(run.info.run_id, _key(layer, kind))
                assert [m.step for m in history] == [last], kind


def test_an_mlflow_filter_on_a_summary_selects_exactly_the_runs_above_it(trained_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    key = C.unit_summary_key("fc1", "feature_selective")
    exp = store.client().get_experiment_by_name("dash-tests").experiment_id
    everything = store.search_runs([exp])
    values = {r.info.run_id: r.data.metrics[key] for r in everything if key in r.data.metrics}
    assert len(values) >= 3
    threshold = sorted(values.values())[len(values) // 2]
    frame = runs_view.load_runs(exp, f"metrics.{key} > {threshold}")
    assert set(frame["run_id"]) == {rid for rid, v in values.items() if v > threshold}
    assert "metrics." + key in runs_view.summary_columns(runs_view.load_runs(exp))


def _train_without_summaries():
    from training.nets.data import load
    from training.config import RunConfig
    from training.engine.loop import train_cohort
    from training.tracking.mlflow_sink import MlflowSink, client
    configs = [RunConfig(sizes=(784, 12, 10), train_size=500, epochs=1, batch_size=50, lr=1.0, seed=s,
                         experiment="older") for s in (0, 1)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(layer_summaries, "log_at_end", lambda *a, **k: None)  # an older trainer
        sink = MlflowSink(client(), configs, load(train_size=500))
        sink.finish(train_cohort(configs, load(train_size=500), sink).params)
    return sink.run_ids


@pytest.mark.slow  # trains two tiny runs and logs their models: about a minute on two cores
def test_the_backfill_adds_the_summaries_once_however_often_it_runs():
    ids = _train_without_summaries()
    key = C.unit_summary_key("fc1", "class_selective")
    assert key not in store.client().get_run(ids[0]).data.metrics
    assert backfill_summaries.backfill("older", progress=False) == {"added": 2}
    assert backfill_summaries.backfill("older", progress=False) == {"had": 2}
    out = subprocess.run([sys.executable, "-m", "training.backfill_summaries", "--experiment", "older"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "added to 0 runs; 2 already had them" in out.stdout
    cache.clear()
    for rid in ids:
        histories = {_key(1, kind): store.client().get_metric_history(rid, _key(1, kind)) for kind in SUMMARY_KINDS}
        assert all(len(h) == 1 for h in histories.values()), histories  # one value, never two
        _assert_logged_as_expected({k: h[0].value for k, h in histories.items()}, rid, 1)


def test_the_backfill_names_an_unknown_experiment_in_one_line_and_exits_non_zero():
    out = subprocess.run([sys.executable, "-m", "training.backfill_summaries", "--experiment", "nope"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    last = out.stderr.strip().splitlines()[-1]  # above it: MLflow's own log lines as it creates an empty store
    assert out.returncode == 2 and last.startswith("error: experiment 'nope'") and "Traceback" not in out.stderr


# ---- units.<layer>.critical: units whose ablation alone costs a point (training/nets/ablation.py) ----------

def _critical_by_plain_evaluations(run_id: str, layer: int) -> tuple[int, int]:
    """Units of hidden layer `layer` (1-based) whose removal alone costs >= 1 point, each found by a whole
    evaluation of the network without it (tests/test_ablation.py's plain loop), and how many sit within one
    image of the line (float32 rounding may tip those)."""
    from tests.test_ablation import last_snapshot, mnist_test, plain_correct
    x, labels = mnist_test()
    config, snap = last_snapshot(tracking_uri(), run_id)
    base = plain_correct(config, snap, x, labels, layer - 1, []).sum()
    units = config.sizes[layer]
    lost = np.array([base - plain_correct(config, snap, x, labels, layer - 1, [u]).sum() for u in range(units)])
    return int(np.sum(lost * 100 >= len(x))), int(np.sum(np.abs(lost * 100 - len(x)) <= 100))


def test_new_runs_carry_the_critical_unit_count_of_a_plain_ablation(trained_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    for name, layer in (("sigmoid", 1), ("relu", 1), ("relu", 2)):
        rid = trained_store.run_ids[name]
        logged = store.client().get_run(rid).data.metrics[_key(layer, "critical")]
        want, near = _critical_by_plain_evaluations(rid, layer)
        assert abs(logged - want) <= near, (name, layer, logged, want, near)
    critical = store.client().get_run(trained_store.run_ids["cnn"]).data.metrics
    assert {C.unit_summary_key(n, "critical") for n in ("conv1", "conv2")} <= set(critical)


def test_a_runs_page_filter_on_critical_units_selects_exactly_the_runs_above_it(trained_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    key = C.unit_summary_key("fc1", "critical")
    exp = store.client().get_experiment_by_name("dash-tests").experiment_id
    values = {r.info.run_id: r.data.metrics[key] for r in store.search_runs([exp]) if key in r.data.metrics}
    assert len(values) >= 3 and len(set(values.values())) >= 2, values
    threshold = min(values.values())
    frame = runs_view.load_runs(exp, f"metrics.{key} > {threshold}")
    assert set(frame["run_id"]) == {rid for rid, v in values.items() if v > threshold} != set()
    assert "metrics." + key in runs_view.summary_columns(runs_view.load_runs(exp))


@pytest.mark.slow  # trains two tiny runs and logs their models: about a minute on two cores
def test_the_backfill_adds_critical_to_runs_that_have_the_four_older_summaries(monkeypatch):
    older = layer_summaries.summaries  # a trainer from before the critical count: the four others only

    def four(config, snapshot):
        return {k: v for k, v in older(config, snapshot).items() if not k.endswith(".critical")}
    monkeypatch.setattr(layer_summaries, "summaries", four)
    from training.nets.data import load
    from training.config import RunConfig
    from training.engine.loop import train_cohort
    from training.tracking.mlflow_sink import MlflowSink, client
    configs = [RunConfig(sizes=(784, 12, 10), train_size=500, epochs=1, batch_size=50, lr=1.0, seed=s,
                         experiment="four") for s in (0, 1)]
    sink = MlflowSink(client(), configs, load(train_size=500))
    sink.finish(train_cohort(configs, load(train_size=500), sink).params)
    ids = sink.run_ids
    metrics = store.client().get_run(ids[0]).data.metrics
    assert _key(1, "mean_si") in metrics and _key(1, "critical") not in metrics
    monkeypatch.setattr(layer_summaries, "summaries", older)
    assert backfill_summaries.backfill("four", progress=False) == {"added": 2}
    assert backfill_summaries.backfill("four", progress=False) == {"had": 2}
    for rid in ids:
        histories = {k: store.client().get_metric_history(rid, _key(1, k)) for k in SUMMARY_KINDS + ("critical",)}
        assert all(len(h) == 1 for h in histories.values()), histories  # the four not logged again
        want, near = _critical_by_plain_evaluations(rid, 1)
        assert abs(histories["critical"][0].value - want) <= near
