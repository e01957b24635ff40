"""One run lifecycle: open runs end FINISHED, FAILED with the error, or KILLED, in a real SQLite store.

Any loop works inside it, the engine's or a plain PyTorch one; these tests use a few lines of plain torch.
"""
import pickle

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import free_port
from training import contract as C
from training.sweep.runners import CohortDone, Stopped
from training.tracking.lifecycle import CRASH_TEXT, LOST, Interrupted, OpenRuns, RunLifecycle, RunOutcome, crash_reason
from training.tracking.store_connection import RETRY_ENV, TrackingLostError


@pytest.fixture
def store(use_module_store):
    """A client on this module's store and a helper that opens n new runs in a fresh experiment."""
    client = MlflowClient(use_module_store)

    def open_runs(n: int, name: str) -> OpenRuns:
        exp = client.create_experiment(f"{name}-{len(client.search_experiments())}")
        runs = OpenRuns(client)
        for _ in range(n):
            runs.add(client.create_run(exp).info.run_id)
        return runs
    return client, open_runs


def ended(client, run_ids) -> list[tuple[str, str | None]]:
    return [(client.get_run(r).info.status, client.get_run(r).data.tags.get(C.TAG_FAILURE_REASON)) for r in run_ids]


def plain_loop(client, run_ids, epochs: int = 3, crash_at: int | None = None) -> None:
    """A user's own PyTorch loop that logs each epoch's loss to its runs."""
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    for epoch in range(epochs):
        if epoch == crash_at:
            raise RuntimeError("disk full")
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        for rid in run_ids:
            client.log_metric(rid, C.TRAIN_LOSS, loss.item(), step=epoch)


def steps(client, run_id) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, C.TRAIN_LOSS))


def test_leaving_the_block_ends_the_open_runs_finished_and_keeps_an_earlier_end(store):
    client, open_runs = store
    runs = open_runs(3, "ok")
    run_ids = list(runs)
    with RunLifecycle(runs):
        plain_loop(client, run_ids)
        runs.end(run_ids[1], C.STATUS_FAILED, "diverged at epoch 1")
    assert ended(client, run_ids) == [(C.STATUS_FINISHED, None), (C.STATUS_FAILED, "diverged at epoch 1"),
                                      (C.STATUS_FINISHED, None)]
    assert len(runs) == 0 and all(steps(client, r) == [0, 1, 2] for r in run_ids)


def test_an_error_ends_the_open_runs_failed_with_the_error_and_goes_on_up(store):
    client, open_runs = store
    runs = open_runs(2, "crash")
    run_ids = list(runs)
    with pytest.raises(RuntimeError, match="disk full"):
        with RunLifecycle(runs):
            plain_loop(client, run_ids, crash_at=1)
    assert ended(client, run_ids) == [(C.STATUS_FAILED, "crashed: RuntimeError: disk full")] * 2
    assert all(steps(client, r) == [0] for r in run_ids)  # what it logged is kept


def test_each_run_ends_with_what_its_describer_says_and_a_describer_bug_does_not_keep_it_open(store):
    client, _ = store
    runs, exp = OpenRuns(client), client.create_experiment("described")
    said, broken = (client.create_run(exp).info.run_id for _ in range(2))
    runs.add(said, lambda status, reason: f"{status} because {reason}")
    runs.add(broken, lambda status, reason: 1 / 0)
    with pytest.raises(RuntimeError):
        with RunLifecycle(runs):
            raise RuntimeError("disk full")
    notes = [client.get_run(r).data.tags[C.TAG_NOTE] for r in (said, broken)]
    assert notes[0] == "FAILED because crashed: RuntimeError: disk full"
    assert notes[1] == "FAILED: crashed: RuntimeError: disk full (no description: ZeroDivisionError: division by zero)"
    assert ended(client, [said, broken]) == [(C.STATUS_FAILED, "crashed: RuntimeError: disk full")] * 2


def test_a_crash_reason_keeps_the_first_300_characters_of_the_error():
    assert crash_reason(ValueError("x" * 1000)) == "crashed: ValueError: " + "x" * CRASH_TEXT


def test_ctrl_c_ends_the_open_runs_killed_says_so_and_raises_interrupted(store, capsys):
    client, open_runs = store
    runs = open_runs(2, "stop")
    run_ids = list(runs)
    with pytest.raises(Interrupted) as stop:
        with RunLifecycle(runs, interrupted="interrupted (Ctrl-C or SIGTERM); rerun it"):
            raise KeyboardInterrupt
    assert stop.value.ended is True and isinstance(stop.value, KeyboardInterrupt)
    assert ended(client, run_ids) == [(C.STATUS_KILLED, "interrupted (Ctrl-C or SIGTERM); rerun it")] * 2
    assert capsys.readouterr().err == "\nstopping: ending 2 open run(s) KILLED (Ctrl-C again to quit at once)\n"


def test_a_quiet_lifecycle_ends_a_run_killed_without_a_reason_or_a_word(store, capsys):
    client, open_runs = store
    runs = open_runs(1, "parent")
    run_ids = list(runs)
    with pytest.raises(Interrupted):
        with RunLifecycle(runs, interrupted=None, announce=False):
            raise KeyboardInterrupt
    assert ended(client, run_ids) == [(C.STATUS_KILLED, None)]
    assert capsys.readouterr().err == ""


def test_a_lost_server_abandons_the_runs_in_one_try_and_adds_the_hint_to_its_one_line(store):
    client, open_runs = store
    runs = open_runs(2, "lost")
    run_ids = list(runs)
    with pytest.raises(TrackingLostError) as e:
        with RunLifecycle(runs, on_lost="rerun to train it again"):
            raise TrackingLostError("lost the MLflow tracking server at http://x mid-run (retried for 5 s)")
    assert str(e.value) == "lost the MLflow tracking server at http://x mid-run (retried for 5 s); rerun to train it again"
    assert ended(client, run_ids) == [(C.STATUS_FAILED, LOST)] * 2  # the store answered this time


def test_a_store_that_does_not_answer_leaves_the_runs_running_and_says_so(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # one refused connection, not MLflow's backoff
    runs = OpenRuns(MlflowClient(f"http://127.0.0.1:{free_port()}"))  # nothing listens there
    runs.add("0" * 32)
    with pytest.raises(Interrupted) as stop:
        with RunLifecycle(runs, stop_budget=0):
            raise KeyboardInterrupt
    assert stop.value.ended is False and len(runs) == 1
    runs.abandon()  # one quick try, and no error of its own
    assert len(runs) == 1


def test_a_store_lost_when_the_runs_end_is_the_same_one_line_error(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv(RETRY_ENV, "0")  # one try per write
    runs = OpenRuns(MlflowClient(f"http://127.0.0.1:{free_port()}"))
    runs.add("0" * 32)
    with pytest.raises(TrackingLostError) as e:
        with RunLifecycle(runs, on_lost="rerun to train it again"):
            pass  # training went fine; the store went away before the end
    assert str(e.value).startswith("lost the MLflow tracking server at ")
    assert str(e.value).endswith("; rerun to train it again") and "\n" not in str(e.value)


@pytest.mark.parametrize("report", [CohortDone([RunOutcome("a" * 32, C.STATUS_FINISHED)]), Stopped(), Stopped(lost="lost the server; its runs keep...")])
def test_what_a_pool_worker_reports_crosses_a_process_queue_and_says_what_to_raise(report):
    copy = pickle.loads(pickle.dumps(report))
    assert copy == report
    if isinstance(report, Stopped):
        with pytest.raises(TrackingLostError if report.lost else KeyboardInterrupt) as e:
            copy.raise_again()
        assert str(e.value) == (report.lost or "")
