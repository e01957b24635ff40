"""Per-layer unit summaries as MLflow metrics: logged when a built-in run ends, backfilled idempotently,
and seen by MLflow's filter syntax and the runs page."""
import subprocess
import sys

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from dashboard import cache, neuron_stats, store
from dashboard.neuron_target import resolve
from dashboard.views import runs_view
from tests.conftest import REPO
from training import backfill_summaries, layer_summaries
from training import contract as C


def _expected(run_id: str, layer: int) -> dict[str, float]:
    """What the layer page shows for that layer at the run's last snapshot, counted here."""
    epoch = store.snapshot_epochs(run_id)[-1]
    t = resolve(run_id, layer, epoch)
    stats = neuron_stats.layer_stats(t)
    return {C.unit_summary_key(t.layer_name, "class_selective"): sum(v.startswith("class-") for v in stats.verdicts),
            C.unit_summary_key(t.layer_name, "feature_selective"): stats.verdicts.count("feature-selective"),
            C.unit_summary_key(t.layer_name, "dead"): int(np.sum(stats.dead)),
            C.unit_summary_key(t.layer_name, "mean_si"): float(np.mean(stats.si))}


def test_the_key_builder_and_its_inverse_round_trip():
    key = C.unit_summary_key("fc2", "mean_si")
    assert key == "units.fc2.mean_si" and C.unit_summary_parts(key) == ("fc2", "mean_si")
    assert C.unit_summary_parts("units.fc2.bogus") is None and C.unit_summary_parts(C.TEST_ACC) is None


def test_new_runs_carry_every_hidden_layers_summaries_equal_to_the_layer_pages_counts(trained_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    cache.clear()
    for name, layers in (("sigmoid", 1), ("relu", 2)):
        run = store.get_run(trained_store.run_ids[name])
        for layer in range(1, layers + 1):
            for key, value in _expected(run.info.run_id, layer).items():
                assert run.data.metrics[key] == pytest.approx(value), key
        last = store.snapshot_epochs(run.info.run_id)[-1]
        history = MlflowClient(trained_store.tracking_uri).get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [last]


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
    from training.data import load
    from training.config import RunConfig
    from training.engine import train_cohort
    from training.tracking import MlflowSink, client
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
        for k, v in _expected(rid, 1).items():
            history = store.client().get_metric_history(rid, k)
            assert [m.value for m in history] == [pytest.approx(v)], k  # one value, never two


def test_the_backfill_names_an_unknown_experiment_in_one_line_and_exits_non_zero():
    out = subprocess.run([sys.executable, "-m", "training.backfill_summaries", "--experiment", "nope"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    last = out.stderr.strip().splitlines()[-1]  # above it: MLflow's own log lines as it creates an empty store
    assert out.returncode == 2 and last.startswith("error: experiment 'nope'") and "Traceback" not in out.stderr
