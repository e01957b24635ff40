"""A user's script that logs its own loop, run as a real process: an exception ends its run FAILED with the
error, Ctrl-C or SIGTERM ends it KILLED, and either way the epochs it logged stay in the store."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, all_runs
from training import contract as C
from training.location import tracking_uri

SCRIPT = textwrap.dedent("""
    import sys, time
    import torch
    from torch import nn
    from training.own_loop import logged_run, script_main

    def main():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.ReLU(), nn.Linear(8, 10))
        with logged_run(model, params={"mode": sys.argv[1]}) as run:
            for epoch in range(2):
                run.log_epoch(epoch)
            print("logged", flush=True)
            if sys.argv[1] == "raise":
                raise ValueError("the loader ran dry")
            while True:  # a long epoch, stopped from outside
                time.sleep(0.05)

    script_main(main)
""")


def _start(tmp_path, mode: str) -> subprocess.Popen:
    script = tmp_path / "my_loop.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(script), mode], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _only_run():
    (run,) = all_runs()
    # The store this test's process points at: a bare MlflowClient() follows whatever URI an earlier test set.
    steps = [m.step for m in MlflowClient(tracking_uri()).get_metric_history(run.info.run_id, C.TEST_ACC)]
    return run, steps


@pytest.mark.slow
def test_an_exception_in_the_users_loop_ends_the_run_failed_with_the_error(tmp_path):
    proc = _start(tmp_path, "raise")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "ValueError: the loader ran dry" in err
    run, steps = _only_run()
    assert run.info.status == C.STATUS_FAILED
    assert run.data.tags[C.TAG_FAILURE_REASON] == "crashed: ValueError: the loader ran dry"
    assert steps == [0, 1]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_ends_the_run_killed_and_keeps_its_epochs(tmp_path, sig):
    proc = _start(tmp_path, "wait")
    assert proc.stdout.readline().strip() == "logged"
    time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "stopped: the run ended KILLED and keeps the epochs it logged"
    assert "Traceback" not in err
    run, steps = _only_run()
    assert run.info.status == C.STATUS_KILLED
    assert steps == [0, 1]


@pytest.mark.slow
def test_a_run_logs_through_a_tracking_server_and_the_dashboard_reads_its_units(tmp_path, monkeypatch):
    from torch import nn

    from dashboard.read import cache
    from dashboard.loaders import logged_activations, neuron_target
    from tests.conftest import sqlite_uri, start_server
    from training.own_loop import logged_run
    (tmp_path / "db").mkdir()
    server = start_server(["-m", "mlflow", "server", "--backend-store-uri", sqlite_uri(tmp_path / "db"),
                           "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
                           "--port", "{port}", "--workers", "1"], tmp_path / "mlflow.log", ready="/health",
                          cwd=tmp_path, own_group=True, timeout=180)
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        cache.clear()
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 6), nn.Sigmoid(), nn.Linear(6, 10))
        with logged_run(model, experiment="served") as run:
            run.log_epoch(0)
        (got,) = all_runs(server.url, "served")
        assert got.info.status == C.STATUS_FINISHED
        (units,) = logged_activations.hidden_units(neuron_target.resolve(run.run_id, 1, 0))
        assert units.shape == (10_000, 6) and 0 <= units.min() and units.max() <= 1  # sigmoid units
        # uploaded through the server: the epoch's snapshot and units, and the model's weights (own_model/)
        epoch_file = C.snapshot_path(0).rsplit("/", 1)[1]
        assert sorted("/".join(p.parts[-2:]) for p in (tmp_path / "artifacts").rglob("*.npz")) == \
            sorted([C.snapshot_path(0), f"{C.ACTIVATIONS_DIR}/{epoch_file}", C.own_model_path(C.MODEL_WEIGHTS_FILE)])
    finally:
        server.stop(timeout=20)
        server.kill()
