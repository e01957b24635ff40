"""Epochs are written off the training thread, and nothing that reached the writer is lost on SIGTERM or a crash."""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, all_runs
from training import contract as C
from training.background_writer import COALESCE_LIMIT, BackgroundWriter

# training.train as its CLI runs, with the writer slowed down (a store far slower than training) and every
# epoch that reaches the writer announced on stdout as it is queued.
SLOW_TRAINER = r"""
import runpy, sys, time
from training import tracking
real_log, real_write = tracking.MlflowSink.log_epoch, tracking.MlflowSink._write
def log_epoch(self, k, epoch, metrics, snapshot):
    real_log(self, k, epoch, metrics, snapshot)
    print(f"QUEUED {self.run_ids[k]} {epoch} {int(snapshot is not None)}", flush=True)
def slow_write(self, jobs):
    time.sleep(0.7)
    real_write(self, jobs)
tracking.MlflowSink.log_epoch, tracking.MlflowSink._write = log_epoch, slow_write
sys.argv = ["python -m training.train"] + sys.argv[1:]
runpy.run_module("training.train", run_name="__main__", alter_sys=True)
"""


def _epochs_in_store(client: MlflowClient, run_id: str) -> set[int]:
    return {m.step for m in client.get_metric_history(run_id, C.TEST_ACC)}


def _snapshots_in_store(client: MlflowClient, run_id: str) -> set[int]:
    return {C.snapshot_epoch(f.path) for f in client.list_artifacts(run_id, C.SNAPSHOT_DIR)}


def _queued(lines: list[str]) -> list[tuple[str, int, bool]]:
    return [(p[1], int(p[2]), p[3] == "1") for p in (l.split() for l in lines) if p and p[0] == "QUEUED"]


@pytest.mark.slow
def test_sigterm_while_the_writer_is_behind_loses_no_epoch_that_reached_it(tmp_path):
    uri = os.environ["MLFLOW_TRACKING_URI"]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_TRAINER, "--epochs", "200", "--train-size", "500",
                             "--sizes", "784,16,10", "--experiment", "writer"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline, behind, client = time.time() + 120, 0, MlflowClient(uri)
        # Signal once the writer is at least two epochs behind: on a loaded machine that can take a while.
        while (len(_queued(lines)) < 8 or behind < 2) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
            if _queued(lines):
                run_id = _queued(lines)[0][0]
                behind = len(_queued(lines)) - len(_epochs_in_store(client, run_id))
        assert len(_queued(lines)) >= 8, proc.stderr.read()[-2000:] if proc.poll() is not None else "too slow"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    err = proc.stderr.read()
    assert proc.returncode == 130, err[-2000:]
    assert behind >= 2, "the writer was not behind when the signal came: the test would prove nothing"
    queued = _queued(lines)
    run = client.get_run(run_id)
    assert run.info.status == C.STATUS_KILLED
    assert {epoch for _, epoch, _ in queued} <= _epochs_in_store(client, run_id)
    assert {epoch for _, epoch, snap in queued if snap} <= _snapshots_in_store(client, run_id)
    assert len(all_runs(uri, "writer")) == 1 and "Traceback" not in err


def test_a_failed_write_is_raised_on_the_training_thread_and_later_writes_still_happen():
    written = []

    def write(jobs):
        if "bad" in jobs:
            raise ValueError("store refused it")
        written.extend(jobs)

    writer = BackgroundWriter(write)
    writer.put("bad")
    writer.flush(raise_error=False)
    with pytest.raises(ValueError, match="store refused it"):
        writer.put("good")
    writer.put("good")
    writer.close()
    assert written == ["good"]


def test_writes_queued_while_the_writer_is_busy_go_in_one_call_in_order():
    calls, gate = [], threading.Event()

    def write(jobs):
        gate.wait(10)
        calls.append(list(jobs))

    writer = BackgroundWriter(write)
    writer.put(0)
    time.sleep(0.2)  # the writer holds job 0 and waits at the gate
    for job in range(1, 6):
        writer.put(job)
    gate.set()
    writer.close()
    assert calls == [[0], [1, 2, 3, 4, 5]]


def test_a_burst_of_writes_goes_in_one_call_and_a_steady_stream_is_not_held_back():
    calls = []
    writer = BackgroundWriter(lambda jobs: calls.append(list(jobs)))
    for job in range(12):  # a grid's 12 models reporting one epoch, a millisecond apart
        writer.put(job)
        time.sleep(0.001)
    writer.flush()
    assert calls == [list(range(12))]
    calls.clear()
    start = time.monotonic()
    while time.monotonic() - start < 0.5:  # never a pause: still written every COALESCE_LIMIT or so
        writer.put(0)
        time.sleep(0.001)
    writer.close()
    assert len(calls) >= 0.5 / COALESCE_LIMIT / 2, [len(c) for c in calls]


def test_a_crash_mid_run_keeps_every_epoch_that_reached_the_writer(monkeypatch):
    from training import tracking
    from training.config import RunConfig
    from training.data import load
    from training.engine import train_cohort
    from training.lifecycle import RunLifecycle

    real_write = tracking.MlflowSink._write
    monkeypatch.setattr(tracking.MlflowSink, "_write", lambda self, jobs: time.sleep(0.3) or real_write(self, jobs))
    config = RunConfig(sizes=(784, 16, 10), epochs=6, train_size=300, experiment="crash")
    data = load(train_size=300)
    sink = tracking.MlflowSink(tracking.client(), [config], data)
    reached = []
    real_log = sink.log_epoch

    def log_then_crash(k, epoch, metrics, snapshot):
        real_log(k, epoch, metrics, snapshot)
        reached.append(epoch)
        if epoch == 4:
            raise RuntimeError("boom")

    sink.log_epoch = log_then_crash
    with pytest.raises(RuntimeError, match="boom"):
        with RunLifecycle(sink.runs):
            train_cohort([config], data, sink)
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    assert reached == [0, 1, 2, 3, 4]
    assert _epochs_in_store(client, sink.run_ids[0]) == set(reached)
    assert client.get_run(sink.run_ids[0]).info.status == C.STATUS_FAILED
