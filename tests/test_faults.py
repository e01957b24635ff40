"""Faults never lose data: interrupted grids resume, and a missing tracking server is a clear error."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, free_port
from training import contract as C

pytestmark = pytest.mark.slow


def _children(uri):
    c = MlflowClient(uri)
    exps = [e.experiment_id for e in c.search_experiments()]
    return [r for r in c.search_runs(exps, max_results=1000) if r.data.tags.get(C.TAG_PARENT_RUN_ID)] if exps else []


def test_sigterm_mid_grid_kills_open_runs_and_a_rerun_finishes_only_the_rest(tmp_path):
    grid = tmp_path / "g.yaml"
    # Three cohorts (batch sizes differ), trained one after another.
    grid.write_text(textwrap.dedent("""
        experiment: interrupt
        base: {sizes: [784, 16, 10], activation: sigmoid, loss: cross_entropy, lr: 0.5, epochs: 3, train_size: 10000}
        grid: {batch_size: [10, 11, 12], seed: [0, 1]}
    """))
    uri = f"sqlite:///{tmp_path}/mlflow.db?timeout=60"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    MlflowClient(uri).search_experiments()  # create the schema first: two processes migrating one file race
    out_path, err_path = tmp_path / "grid.out", tmp_path / "grid.err"  # files: an unread pipe can stall it
    with open(out_path, "w") as out_f, open(err_path, "w") as err_f:
        proc = subprocess.Popen([sys.executable, "-m", "training.grid", str(grid)], cwd=REPO, env=env,
                                stdout=out_f, stderr=err_f, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        runs = _children(uri)
        done_cohorts = {r.data.params["batch_size"] for r in runs if r.info.status == "FINISHED"}
        # A run of a later cohort that has logged its untrained epoch: training is under way.
        running = [r for r in runs if r.info.status == "RUNNING" and C.TEST_ACC in r.data.metrics
                   and r.data.params["batch_size"] not in done_cohorts]
        if done_cohorts and running:
            break
        assert proc.poll() is None, err_path.read_text()[-2000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    err = err_path.read_text()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "rerun" in err

    before = {r.info.run_id: r for r in _children(uri)}
    finished = {r.data.tags[C.TAG_CONFIG_HASH] for r in before.values() if r.info.status == "FINISHED"}
    killed = [r for r in before.values() if r.info.status == "KILLED"]
    assert finished and killed and all(r.info.status in ("FINISHED", "KILLED") for r in before.values())
    assert all(MlflowClient(uri).get_metric_history(r.info.run_id, C.TEST_ACC) for r in killed)  # kept what it logged

    rerun = subprocess.run([sys.executable, "-m", "training.grid", str(grid)], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    after = _children(uri)
    done = [r for r in after if r.info.status == "FINISHED"]
    assert len({r.data.tags[C.TAG_CONFIG_HASH] for r in done}) == len(done) == 6  # each config exactly once
    retrained = {r.data.tags[C.TAG_CONFIG_HASH] for r in after if r.info.run_id not in before}
    assert not (retrained & finished)  # nothing finished was trained twice


def test_a_tracking_server_that_is_down_is_a_clear_error_before_training(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    start = time.time()
    result = subprocess.run([sys.executable, "-m", "training.train", "--epochs", "1", "--train-size", "100"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot reach the MLflow tracking server")
    assert "Traceback" not in result.stderr and time.time() - start < 60
