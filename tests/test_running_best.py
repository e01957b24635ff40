"""The running best test accuracy: logged by training, backfilled for older runs, and read by the runs page
without a history request for any run that carries it."""
import math

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from dashboard.read import store
from dashboard.views import runs_view as V
from training import backfill_summaries
from training import contract as C
from training.engine.running_best import RunningBest, series


def reference(values: list[float]) -> list[tuple[float, int] | None]:
    """Best finite value so far and the first epoch that reached it, by numpy: None before any finite value."""
    out = []
    for i in range(len(values)):
        seen = np.array(values[:i + 1], dtype=float)
        seen[~np.isfinite(seen)] = -np.inf
        out.append(None if np.all(np.isneginf(seen)) else (float(seen.max()), int(np.argmax(seen))))
    return out


@pytest.mark.parametrize("values", [[0.1, 0.9, 0.8, 0.95], [math.nan, 0.5, 0.5, math.inf, 0.4], [0.3, 0.3, 0.2],
                                    [math.nan, math.nan]])
def test_the_running_best_is_the_max_so_far_and_the_first_epoch_that_reached_it(values):
    best = RunningBest()
    for epoch, (v, ref) in enumerate(zip(values, reference(values))):
        got = best.update(epoch, {C.TEST_ACC: v})
        assert got == ({} if ref is None else {C.BEST_TEST_ACC: ref[0], C.BEST_EPOCH: float(ref[1])})
    assert [s for s, _ in series(list(enumerate(values)))] == [i for i, r in enumerate(reference(values)) if r]


def test_trained_runs_log_the_running_best_at_every_epoch(trained_store):
    client = MlflowClient(trained_store.tracking_uri)
    rid = trained_store.run_ids["relu"]
    acc = sorted(client.get_metric_history(rid, C.TEST_ACC), key=lambda m: m.step)
    best = {m.step: m.value for m in client.get_metric_history(rid, C.BEST_TEST_ACC)}
    epoch = {m.step: m.value for m in client.get_metric_history(rid, C.BEST_EPOCH)}
    ref = reference([m.value for m in acc])
    assert [m.step for m in acc] == sorted(best) == sorted(epoch)
    assert [(best[m.step], epoch[m.step]) for m in acc] == [(pytest.approx(v), float(e)) for v, e in ref]


def test_the_runs_page_reads_histories_only_for_runs_without_a_logged_best(log_run, monkeypatch):
    logged = log_run("new", {C.TEST_ACC: [0.1, 0.9, 0.8], C.BEST_TEST_ACC: [0.1, 0.9, 0.9], C.BEST_EPOCH: [0, 1, 1]})
    older = log_run("older", {C.TEST_ACC: [0.1, 0.7, 0.6]})
    asked = []
    real = store._read_histories
    monkeypatch.setattr(store, "_read_histories", lambda ids, key: asked.extend(ids) or real(ids, key))
    exp = store.client().get_experiment_by_name("runs").experiment_id
    frame = V.load_runs(exp).set_index("run_id")
    assert asked == [older]
    assert frame.loc[logged, C.BEST_TEST_ACC] == pytest.approx(0.9) and frame.loc[logged, C.BEST_EPOCH] == 1
    assert frame.loc[older, C.BEST_TEST_ACC] == pytest.approx(0.7) and frame.loc[older, C.BEST_EPOCH] == 1


def test_the_backfill_logs_the_running_best_of_older_runs_once(log_run):
    values = [0.1, 0.6, math.nan, 0.8, 0.7]
    older = log_run("older", {C.TEST_ACC: values}, experiment="older")
    running = log_run("running", {C.TEST_ACC: [0.2]}, experiment="older", status="RUNNING")
    backfill_summaries.backfill("older", progress=False)
    client = store.client()
    got = {m.step: (m.value, e.value) for m, e in zip(
        sorted(client.get_metric_history(older, C.BEST_TEST_ACC), key=lambda m: m.step),
        sorted(client.get_metric_history(older, C.BEST_EPOCH), key=lambda m: m.step))}
    assert got == {i: (pytest.approx(r[0]), float(r[1])) for i, r in enumerate(reference(values))}
    assert C.BEST_TEST_ACC not in client.get_run(running).data.metrics  # still training: its own to log
    backfill_summaries.backfill("older", progress=False)
    assert len(client.get_metric_history(older, C.BEST_TEST_ACC)) == len(values)
