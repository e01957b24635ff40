"""Layer summaries for runs from the user's own loop (issue #28, item 2): logged as the run ends, equal to
the counts the layer page shows from the units it logged, and added by the backfill to runs made before.
A real model trained a few real MNIST steps, a real SQLite store (conftest's per-test store)."""
import numpy as np
import torch
from mlflow.tracking import MlflowClient

from dashboard.loaders import neuron_stats
from dashboard.loaders.neuron_target import resolve
from dashboard.read import cache, store
from tests.test_own_loop import OddNet, _train_steps
from training import backfill_summaries
from training import contract as C
from training.own_loop import LoggedRun, logged_run

FIELDS = [f for f in C.UNIT_SUMMARY_FIELDS if f != "critical"]  # critical reruns the model: not stored


def _trained_run(epochs: int = 2) -> str:
    torch.manual_seed(3)
    model = OddNet()
    with logged_run(model, params={"lr": 0.05}) as run:
        run.log_epoch(0)
        for epoch in range(1, epochs + 1):
            _train_steps(model, steps=5)
            run.log_epoch(epoch)
    return run.run_id


def _assert_summaries_equal_the_layer_pages(run_id: str, last: int) -> None:
    cache.clear()
    run = store.get_run(run_id)
    t0 = resolve(run_id, 1, last)
    for index, name in enumerate(t0.hidden, start=1):
        verdicts = neuron_stats.layer_stats(resolve(run_id, index, last)).verdicts
        shown = [sum(v.startswith(k) for v in verdicts) for k in ("class-", "feature-", "dead")]
        keys = [C.unit_summary_key(name, f) for f in FIELDS]
        assert shown == [run.data.metrics[k] for k in keys[:3]], name
        assert 0 <= run.data.metrics[keys[3]] <= 1, name
        assert C.unit_summary_key(name, "critical") not in run.data.metrics
        for key in keys:  # once, at the last snapshot's epoch
            assert [m.step for m in store.client().get_metric_history(run_id, key)] == [last], key


def test_an_own_loop_run_ends_with_every_hidden_layers_summaries_equal_to_the_layer_pages_counts():
    run_id = _trained_run(epochs=2)
    _assert_summaries_equal_the_layer_pages(run_id, last=2)


def test_the_backfill_adds_them_to_an_own_loop_run_made_before_they_were_logged_and_only_once(monkeypatch):
    with monkeypatch.context() as before:  # a run from before this existed
        before.setattr(LoggedRun, "_log_summaries", lambda self: None)
        run_id = _trained_run(epochs=1)
    assert not [k for k in MlflowClient().get_run(run_id).data.metrics if k.startswith(C.UNIT_SUMMARY_PREFIX + ".")]
    first = backfill_summaries.backfill(progress=False)
    assert first.get("added") == 1, first
    _assert_summaries_equal_the_layer_pages(run_id, last=1)
    again = backfill_summaries.backfill(progress=False)
    assert again.get("added", 0) == 0 and again.get("had") == 1, again
    history = MlflowClient().get_metric_history(run_id, C.unit_summary_key("blocks.b", "mean_si"))
    assert len(history) == 1 and np.isfinite(history[0].value)
