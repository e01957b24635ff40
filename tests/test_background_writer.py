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
from training.tracking.background_writer import COALESCE_LIMIT, COALESCE_PAUSE, HOLD, BackgroundWriter

# training.train as its CLI runs, with the writer slowed down (a store far slower than training) and every
# epoch that reaches the writer announced on stdout as it is queued.
SLOW_TRAINER = r"""
import runpy, sys, time
from training.tracking import mlflow_sink as tracking
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
    calls, writing, gate = [], threading.Event(), threading.Event()

    def write(jobs):
        writing.set()
        gate.wait(10)
        calls.append(list(jobs))

    writer = BackgroundWriter(write)
    writer.put(0)
    assert writing.wait(10)  # job 0's call has begun: nothing put from here on can join it
    for job in range(1, 6):
        writer.put(job)
    gate.set()
    writer.close()
    assert calls == [[0], [1, 2, 3, 4, 5]]


def test_jobs_within_the_hold_share_one_call_and_a_flush_cuts_the_hold_short():
    """A fast grid's consecutive epochs in one call per run (training.tracking.background_writer.HOLD), and no
    run's end waiting for the hold: flush writes what is queued at once."""
    assert HOLD >= 0.5  # what the grid's epochs of about a second need to pair up
    calls = []
    writer = BackgroundWriter(lambda batch: calls.append((time.monotonic(), list(batch))), hold=0.6)
    first = time.monotonic()
    writer.put(0)
    time.sleep(0.2)
    writer.put(1)  # 0.2 s later, well within the hold: the same call
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [jobs for _, jobs in calls] == [[0, 1]]
    assert calls[0][0] - first >= 0.6  # written only once the hold ran out
    writer.put(2)
    start = time.monotonic()
    writer.flush()
    assert time.monotonic() - start < 0.3, "flush waited for the hold"
    assert [jobs for _, jobs in calls] == [[0, 1], [2]]
    writer.put(3)
    start = time.monotonic()
    writer.close()  # the stop cuts the hold short too
    assert time.monotonic() - start < 0.3 and [jobs for _, jobs in calls][-1] == [3]


def _timed_puts(jobs: int, spacing: float | None = None, seconds: float | None = None):
    """Jobs 0, 1, ... put `spacing` apart (all `jobs`, or for `seconds`) into a fresh writer; its calls, and
    the monotonic time just before and just after each put (what the writer's rule is checked against)."""
    calls, times = [], []
    writer = BackgroundWriter(lambda batch: calls.append(list(batch)), hold=0)  # the pause rule alone
    stop = time.monotonic() + seconds if seconds else None
    while (len(times) < jobs) if stop is None else (time.monotonic() < stop):
        start = time.monotonic()
        writer.put(len(times))
        times.append((start, time.monotonic()))
        time.sleep(spacing or 0)
    writer.close()
    assert [job for call in calls for job in call] == list(range(len(times)))  # every job once, in order
    return calls, times


def _cuts(calls, times) -> list[tuple[float, float]]:
    """At each boundary between two calls: (the next job's put end - the last job's put start, the next job's
    put end - the call's first job's put start).  The writer waits COALESCE_PAUSE for each next job, from after
    it took the last one, and stops waiting COALESCE_LIMIT after it took the first: so a cut where the first
    is within COALESCE_PAUSE and the second within COALESCE_LIMIT is one its rule forbids."""
    out, first = [], 0
    for call in calls[:-1]:
        last = first + len(call) - 1
        arrived = times[last + 1][1]
        out.append((arrived - times[last][0], arrived - times[first][0]))
        first = last + 1
    return out


def test_writes_a_millisecond_apart_go_in_one_call_and_none_is_cut_off_before_a_pause():
    tight = 0
    for _ in range(20):  # the grid's 12 models reporting one epoch; again if the machine stalled this thread
        calls, times = _timed_puts(12, spacing=0.001)
        early = [c for c in _cuts(calls, times) if c[0] <= COALESCE_PAUSE and c[1] <= COALESCE_LIMIT]
        assert early == [], (early, [len(c) for c in calls])
        gaps = [b[1] - a[0] for a, b in zip(times, times[1:])]
        if max(gaps) <= COALESCE_PAUSE and times[-1][1] - times[0][0] <= COALESCE_LIMIT:
            tight += 1
            assert calls == [list(range(12))], [len(c) for c in calls]
            if tight == 3:
                return
    pytest.fail(f"in 20 bursts only {tight} had every put within COALESCE_PAUSE of the last: too loaded to tell")


def test_a_stream_without_a_pause_is_still_written_every_coalesce_limit():
    for _ in range(10):  # each a stream of 0.5 s; again if the machine stalled this thread all along
        calls, times = _timed_puts(0, spacing=0.001, seconds=0.5)
        cuts = _cuts(calls, times)
        assert not [c for c in cuts if c[0] <= COALESCE_PAUSE and c[1] <= COALESCE_LIMIT], cuts
        # A cut with no pause before it: only the deadline makes one.
        if [c for c in cuts if c[0] <= COALESCE_PAUSE]:
            return
    pytest.fail("in 10 streams of 0.5 s the writer never cut a stream that did not pause: no deadline")


def test_a_crash_mid_run_keeps_every_epoch_that_reached_the_writer(monkeypatch):
    from training.tracking import mlflow_sink as tracking
    from training.config import RunConfig
    from training.nets.data import load
    from training.engine.loop import train_cohort
    from training.tracking.lifecycle import RunLifecycle

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
