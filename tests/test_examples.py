"""The two own-loop examples, run as a user runs them, and a unit of a built-in [784,16,16,10] run matched with
one of example (a): both routes give data the dashboard reads the same way."""
import os
import subprocess
import sys

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from dashboard.loaders import logged_activations, neuron_stats, neuron_target
from dashboard.read import store
from tests.conftest import REPO
from training import contract as C

EXPERIMENT = "own-loops"
EXAMPLES = {"writeup_d": "net-784-16-16-10-sigmoid", "pytorch_mnist": "net-c32-c64-128-10-relu"}


def _run(args: list[str], uri: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": uri}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_each_example_runs_as_a_script_and_ends_finished(examples_store, name):
    uri, done, runs = examples_store
    assert done[name].returncode == 0, done[name].stderr[-2000:]
    run = MlflowClient(uri).get_run(runs[name])
    assert run.info.status == C.STATUS_FINISHED
    assert [m.step for m in MlflowClient(uri).get_metric_history(run.info.run_id, C.TEST_ACC)] == [0, 1, 2]
    assert done[name].stdout.strip().splitlines()[-1] == f"run {run.info.run_id} FINISHED"


@pytest.mark.slow
def test_example_b_logs_every_hidden_layer_after_its_relu(in_examples_store):
    run = store.get_run(in_examples_store["pytorch_mnist"])
    layers = store.layers(run).layers
    assert [(l.name, l.kind, l.units, l.activation) for l in layers] == [
        ("conv1", "conv", 32, "relu"), ("conv2", "conv", 64, "relu"), ("fc1", "linear", 128, "relu"),
        ("fc2", "linear", 10, "none")]
    acts = logged_activations.hidden_units(neuron_target.resolve(run.info.run_id, 1, 2))
    assert [a.shape for a in acts] == [(10_000, 32), (10_000, 64), (10_000, 128)]
    assert all(a.min() >= 0 for a in acts)  # after a ReLU


@pytest.mark.slow
def test_a_builtin_unit_is_matched_with_a_unit_of_example_a(in_examples_store):
    builtin, own = in_examples_store["builtin"], in_examples_store["writeup_d"]
    t = neuron_target.resolve(builtin, 1, None, 3)
    assert own in [o["value"] for o in neuron_stats.comparable_runs(t)]
    match = neuron_stats.best_match(t, 3, neuron_target.counterpart(t, own))
    a = neuron_stats.layer_activations(t).acts.astype(np.float64)
    b = logged_activations.hidden_units(match.other)[0].astype(np.float64)
    corr = np.corrcoef(a.T, b.T)[:16, 16:]  # the reference: Pearson's r from numpy
    assert match.corr == pytest.approx(corr[3, match.unit], abs=1e-4)
    from scipy.optimize import linear_sum_assignment
    rows, cols = linear_sum_assignment(-np.nan_to_num(corr))
    assert match.unit == cols[list(rows).index(3)]
