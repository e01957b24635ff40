"""Faults never lose data: interrupted grids resume, and a missing or lost tracking server is a clear error."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, all_runs, free_port, start_server
from training import contract as C

pytestmark = pytest.mark.slow


def _children(uri):
    return [r for r in all_runs(uri) if r.data.tags.get(C.TAG_PARENT_RUN_ID)]


def test_sigterm_mid_grid_kills_open_runs_and_a_rerun_finishes_only_the_rest(tmp_path):
    grid = tmp_path / "g.yaml"
    # Three cohorts (batch sizes differ), trained one after another; 60 epochs, so that a later cohort is seen
    # mid-way though the writer holds each epoch up to a second (training.tracking.background_writer.HOLD).
    grid.write_text(textwrap.dedent("""
        experiment: interrupt
        base: {sizes: [784, 16, 10], activation: sigmoid, loss: cross_entropy, lr: 0.5, epochs: 60, train_size: 10000}
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
        # .get: a run's params reach the store with its first epoch (the writer sends them off the training path)
        done_cohorts = {r.data.params.get("batch_size") for r in runs if r.info.status == "FINISHED"}
        # A run of a later cohort that has logged its untrained epoch and at most half of the rest: training is
        # under way, with epochs still to come (a signal once they are all logged rightly lets the cohort finish).
        running = [r for r in runs if r.info.status == "RUNNING" and C.TEST_ACC in r.data.metrics
                   and r.data.params.get("batch_size") not in done_cohorts
                   and max(m.step for m in MlflowClient(uri).get_metric_history(r.info.run_id, C.TEST_ACC)) <= 30]
        if done_cohorts and running:
            break
        assert proc.poll() is None, err_path.read_text()[-2000:]
        time.sleep(0.05)
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


class _ServedStore:
    """A real tracking server for one test, the commands the test starts against it, and their output.

    The server can be stopped and started again on the same store; at the end every command still
    running is killed and the server stopped, whatever the test did.
    """

    def __init__(self, tmp_path, retry_seconds: int):
        self.tmp_path, self.port = tmp_path, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        # A small retry budget keeps a test quick; the default is 60 s per write.
        self.env = {**os.environ, "MLFLOW_TRACKING_URI": self.uri,
                    "MNISTLAB_TRACKING_RETRY_SECONDS": str(retry_seconds), "OMP_NUM_THREADS": "1"}
        self.server, self.commands = None, []
        self.start()

    def start(self) -> None:
        """A real `mlflow server` on a SQLite store, in its own process group so `stop` can kill it whole."""
        store = self.tmp_path
        self.server = start_server(
            ["-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{store}/db.sqlite", "--artifacts-destination",
             str(store / "art"), "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"],
            store / f"server-{time.time_ns()}.log", ready="/health", port=self.port, cwd=store, own_group=True)

    def stop(self) -> None:
        self.server.kill()  # uvicorn workers too, the way a crashed host goes

    def launch(self, *module_args: str):
        """`python -m <module_args>` in the background; returns it and the file its stderr goes to."""
        name = f"{module_args[0]}-{len(self.commands)}"
        err_path = self.tmp_path / f"{name}.err"
        # Files, not pipes: an unread pipe can stall the command.
        with open(self.tmp_path / f"{name}.out", "w") as out_f, open(err_path, "w") as err_f:
            proc = subprocess.Popen([sys.executable, "-m", *module_args], cwd=REPO, env=self.env,
                                    stdout=out_f, stderr=err_f)
        self.commands.append(proc)
        return proc, err_path

    def launch_grid(self, text: str, *options: str):
        """`python -m training.grid` on a grid file holding `text`; returns it, its stderr file and the grid file."""
        grid = self.tmp_path / "g.yaml"
        grid.write_text(textwrap.dedent(text))
        return (*self.launch("training.grid", str(grid), *options), grid)

    def close(self) -> None:
        for proc in self.commands:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.stop()


def _wait_while_running(proc, err_path, ready, timeout: float, what: str) -> None:
    """Poll `ready()` until it holds; fail with `what` after `timeout` s, or with the stderr if proc exits."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, err_path.read_text()[-2000:]
        if ready():
            return
        time.sleep(0.2)
    pytest.fail(what)


def _epochs_logged(uri: str, experiment: str) -> list:
    """The first run of the experiment's test_acc history (epoch 0 is the untrained net); [] before it exists."""
    runs = all_runs(uri, experiment)
    return MlflowClient(uri).get_metric_history(runs[0].info.run_id, C.TEST_ACC) if runs else []


def _finish(proc, err_path, timeout: float, code: int) -> tuple[str, str]:
    """Wait for proc to exit with `code`; returns its stderr and the stderr's last line."""
    proc.wait(timeout=timeout)
    err = err_path.read_text()
    assert proc.returncode == code, err[-2000:]
    return err, err.strip().splitlines()[-1]


@pytest.fixture
def served_store(tmp_path, request):
    store = _ServedStore(tmp_path, retry_seconds=request.param)
    yield store
    store.close()


@pytest.mark.parametrize("served_store", [5], indirect=True)
def test_a_tracking_server_lost_mid_run_is_a_clear_error_soon_and_the_logged_epochs_are_kept(served_store):
    uri = served_store.uri
    trainer, err_path = served_store.launch("training.train", "--epochs", "50", "--train-size", "2000",
                                            "--sizes", "784,16,10", "--experiment", "lost")
    # Epoch 0 (untrained) and at least one trained epoch.
    _wait_while_running(trainer, err_path, lambda: len(_epochs_logged(uri, "lost")) >= 2, 120,
                        "the trainer logged no epoch in time")
    run_id = all_runs(uri, "lost")[0].info.run_id

    served_store.stop()
    lost_at = time.time()
    err, last = _finish(trainer, err_path, 60, 2)
    took = time.time() - lost_at
    print(f"trainer exited {took:.1f} s after the server died")
    assert last.startswith(f"error: lost the MLflow tracking server at {uri} mid-run"), err[-2000:]
    assert f"run {run_id} keeps what it logged up to epoch" in last and "Traceback" not in err
    assert took < 45  # 5 s of retries, one quick try to end the run, no MLflow-length stall

    # The server comes back on the same store: every epoch logged before the loss is there.
    served_store.start()
    kept = MlflowClient(uri).get_metric_history(run_id, C.TEST_ACC)
    last_epoch = int(last.split("up to epoch ")[1].split(";")[0])
    assert {m.step for m in kept} == set(range(last_epoch + 1))


@pytest.mark.parametrize("served_store", [5], indirect=True)
def test_a_grid_that_loses_its_server_says_so_in_one_line_and_a_rerun_finishes_every_config(served_store):
    # Two cohorts, trained most steps first: bs 10 (4,000 steps in 20 epochs) finishes before the
    # server goes; bs 50 (3,000 steps, but 75 epochs of evaluation and logging) is cut off.
    proc, err_path, grid = served_store.launch_grid("""
        experiment: lost-grid
        base: {sizes: [784, 16, 10], activation: relu, loss: cross_entropy, lr: 0.1, train_size: 2000,
               snapshot_every: 25}
        runs:
          - {batch_size: 10, epochs: 20}
          - {batch_size: 50, epochs: 75}
    """)
    uri = served_store.uri

    def second_cohort_under_way():  # the first cohort finished and the second has logged epochs 0 and 1
        runs = {r.data.params.get("batch_size"): r for r in _children(uri)}
        return "10" in runs and runs["10"].info.status == C.STATUS_FINISHED and "50" in runs and \
            len(MlflowClient(uri).get_metric_history(runs["50"].info.run_id, C.TEST_ACC)) >= 2
    _wait_while_running(proc, err_path, second_cohort_under_way, 180,
                        "the grid did not reach its second cohort in time")
    served_store.stop()
    err, last = _finish(proc, err_path, 60, 2)
    assert last.startswith(f"error: lost the MLflow tracking server at {uri} mid-run"), err[-2000:]
    assert "finished configs are kept" in last and "Traceback" not in err

    served_store.start()  # back, on the same store
    rerun = subprocess.run([sys.executable, "-m", "training.grid", str(grid)], cwd=REPO, env=served_store.env,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "1 to train, 1 already FINISHED" in rerun.stdout
    finished = [r for r in _children(uri) if r.info.status == "FINISHED"]
    assert sorted(r.data.params["batch_size"] for r in finished) == ["10", "50"]  # each config once


@pytest.mark.parametrize("served_store", [5], indirect=True)
def test_a_grid_on_ray_that_loses_its_server_ends_in_the_same_one_line(served_store):
    proc, err_path, _ = served_store.launch_grid("""
        experiment: lost-ray
        base: {sizes: [784, 16, 10], activation: relu, loss: cross_entropy, lr: 0.1, train_size: 2000,
               batch_size: 50, epochs: 100, snapshot_every: 25}
        runs: [{seed: 0}]
    """, "--ray")
    uri = served_store.uri
    def task_logged_two_epochs():  # the Ray task's child run has logged epochs 0 and 1
        runs = _children(uri)
        return bool(runs) and len(MlflowClient(uri).get_metric_history(runs[0].info.run_id, C.TEST_ACC)) >= 2
    _wait_while_running(proc, err_path, task_logged_two_epochs, 240, "the Ray task logged no epoch in time")
    served_store.stop()
    err, last = _finish(proc, err_path, 120, 2)
    assert last.startswith(f"error: lost the MLflow tracking server at {uri} mid-run"), err[-2000:]
    assert "rerun `python -m training.grid" in last and "Traceback" not in err


@pytest.mark.parametrize("served_store", [300], indirect=True)
def test_ctrl_c_while_the_server_is_lost_stops_in_seconds_not_after_the_retry_budget(served_store):
    trainer, err_path = served_store.launch("training.train", "--epochs", "200", "--train-size", "2000",
                                            "--sizes", "784,16,10", "--experiment", "stop")
    _wait_while_running(trainer, err_path, lambda: len(_epochs_logged(served_store.uri, "stop")) >= 2, 120,
                        "the trainer logged no epoch in time")
    served_store.stop()
    time.sleep(3)  # it is now waiting on the lost server, with 300 s of retries ahead
    trainer.send_signal(signal.SIGINT)
    asked = time.time()
    err, last = _finish(trainer, err_path, 120, 130)
    took = time.time() - asked
    print(f"trainer stopped {took:.1f} s after Ctrl-C")
    assert "stays RUNNING there with what it logged" in last, err[-2000:]
    assert "Traceback" not in err
    assert took < 60, took  # the stop budget (5 s per write) plus MLflow's own connection attempts


@pytest.mark.parametrize("message, lost", [
    # Seen when the server was killed in the middle of answering a log-batch request.
    ("API request to http://127.0.0.1:43613/api/2.0/mlflow/runs/log-batch failed with exception ('Connection "
     "broken: IncompleteRead(0 bytes read, 2 more expected)', IncompleteRead(0 bytes read, 2 more expected))", True),
    ("API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/get failed with exception "
     "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded with url", True),
    ("('Connection aborted.', RemoteDisconnected('Remote end closed connection without response'))", True),
    ("RESOURCE_DOES_NOT_EXIST: Run 'abc' not found", False),
    ("INVALID_PARAMETER_VALUE: Changing param values is not allowed", False),
])
def test_a_broken_or_refused_connection_counts_as_a_lost_server_and_a_refusal_by_the_server_does_not(message, lost):
    from mlflow.exceptions import MlflowException
    from training.tracking.store_connection import lost_connection
    assert lost_connection(MlflowException(message)) is lost
