"""Searches: an Optuna study proposes the trials, they train stacked and pruned, each an MLflow child run.

Everything is real: MNIST, a SQLite MLflow store, Optuna's storage beside it, real signals.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, all_runs
from training import contract as C
from training.sweep.search_study import UNCOUNTED_ATTR

pytestmark = pytest.mark.slow

SEARCH = """
    experiment: search
    base: {{activation: sigmoid, loss: mse, train_size: {train_size}, val_size: 1000, epochs: {epochs}}}
    search:
      trials: {trials}
      sampler: tpe
      pruner: {pruner}
      metric: val_acc
      seed: 0
      space:
        lr: {{log_uniform: [0.05, 20]}}
        batch_size: {{choice: [10, 20]}}
        sizes: {{choice: [[784, 10, 10], [784, 20, 10]]}}
"""


def write_search(tmp_path, trials=10, epochs=4, pruner="median", train_size=2000, name="s.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(SEARCH.format(trials=trials, epochs=epochs, pruner=pruner, train_size=train_size)))
    return path


def trials_of(uri: str) -> list:
    return [r for r in all_runs(uri, "search") if r.data.tags.get(C.TAG_PARENT_RUN_ID)]


def study_of(store_dir, name="search/s"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{store_dir}/optuna.db")


def test_a_search_trains_its_trials_as_child_runs_prunes_the_losers_and_names_the_best(tmp_path, monkeypatch):
    from training.grid import main as grid_main
    uri = os.environ["MLFLOW_TRACKING_URI"]
    store_dir = uri[len("sqlite:///"):].split("?")[0].rsplit("/", 1)[0]
    path = write_search(tmp_path, trials=12, epochs=5)
    assert grid_main([str(path)]) == 0

    children = trials_of(uri)
    assert len(children) == 12
    c = MlflowClient(uri)
    states = {r.data.tags[C.TAG_SEARCH_STATE] for r in children}
    assert states <= set(C.SEARCH_STATES) and C.SEARCH_COMPLETE in states
    study = study_of(store_dir)
    by_number = {t.number: t for t in study.trials}
    for r in children:
        history = sorted((m.step, m.value) for m in c.get_metric_history(r.info.run_id, C.VAL_ACC))
        trial = by_number[int(r.data.tags[C.TAG_SEARCH_TRIAL])]
        # What the study was told is what the run logged, epoch by epoch (epoch 0 is the untrained net).
        assert trial.intermediate_values == {step: v for step, v in history if step > 0}
        if r.data.tags[C.TAG_SEARCH_STATE] == C.SEARCH_PRUNED:
            at = int(r.data.tags[C.TAG_SEARCH_PRUNED_AT])
            assert trial.state == optuna.trial.TrialState.PRUNED
            assert history[-1][0] == at < 5 and r.info.status == "FINISHED"
            assert "pruned by the search after epoch" in r.data.tags[C.TAG_NOTE]
        elif r.data.tags[C.TAG_SEARCH_STATE] == C.SEARCH_COMPLETE:
            assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == history[-1][1]
            assert history[-1][0] == 5
    # The parent: the settings, and the best trial's run, recomputed here from the runs' own histories.
    parent = [r for r in all_runs(uri, "search") if r.data.tags.get(C.TAG_SEARCH_PARENT) == C.TRUE]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert parent[0].data.params[C.PARAM_SEARCH_SAMPLER] == "tpe" and parent[0].data.params[C.PARAM_SEARCH_TRIALS] == "12"
    complete = [r for r in children if r.data.tags[C.TAG_SEARCH_STATE] == C.SEARCH_COMPLETE]
    best = max(complete, key=lambda r: c.get_metric_history(r.info.run_id, C.VAL_ACC)[-1].value)
    assert parent[0].data.tags[C.TAG_SEARCH_BEST_RUN] == best.info.run_id
    # MLflow's own filter syntax finds exactly the pruned trials.
    pruned = c.search_runs([parent[0].info.experiment_id], f"tags.`{C.TAG_SEARCH_STATE}` = '{C.SEARCH_PRUNED}'")
    assert {r.info.run_id for r in pruned} == {r.info.run_id for r in children
                                               if r.data.tags[C.TAG_SEARCH_STATE] == C.SEARCH_PRUNED}


def _start(tmp_path, path, *args):
    uri = os.environ["MLFLOW_TRACKING_URI"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    MlflowClient(uri).search_experiments()  # create the schema first: two processes migrating one file race
    err = tmp_path / f"search{len(list(tmp_path.glob('search*.err')))}.err"
    with open(tmp_path / "search.out", "a") as out_f, open(err, "w") as err_f:
        return subprocess.Popen([sys.executable, "-m", "training.grid", str(path), *args], cwd=REPO, env=env,
                                stdout=out_f, stderr=err_f, text=True), err


def test_ctrl_c_mid_search_then_the_same_command_reaches_the_count_and_trains_no_trial_twice(tmp_path):
    uri = os.environ["MLFLOW_TRACKING_URI"]
    store_dir = uri[len("sqlite:///"):].split("?")[0].rsplit("/", 1)[0]
    path = write_search(tmp_path, trials=16, epochs=6, pruner="median", train_size=6000)
    proc, err = _start(tmp_path, path)
    deadline = time.time() + 300
    while time.time() < deadline:  # some trials ended (pruned or complete) and others are training
        runs = trials_of(uri)
        ended = [r for r in runs if C.TAG_SEARCH_STATE in r.data.tags]
        if len(ended) >= 3 and any(r.info.status == "RUNNING" for r in runs):
            break
        assert proc.poll() is None, err.read_text()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    assert proc.returncode == 130, err.read_text()[-2000:]
    assert "Traceback" not in err.read_text() and "rerun" in err.read_text()
    before = {r.info.run_id: r for r in trials_of(uri)}
    pruned_before = {rid for rid, r in before.items() if r.data.tags.get(C.TAG_SEARCH_STATE) == C.SEARCH_PRUNED}
    # Every run it made ended: FINISHED (complete or pruned) or KILLED (cut off; when the signal lands between
    # epochs of a fast trial, the trials it cut off are only those of cohorts not yet started, with no run).
    assert before and all(r.info.status in ("FINISHED", "KILLED") for r in before.values())

    proc, err = _start(tmp_path, path)
    assert proc.wait(timeout=600) == 0, err.read_text()[-2000:]
    after = trials_of(uri)
    counted = [r for r in after if r.data.tags.get(C.TAG_SEARCH_STATE)]
    assert len(counted) == 16  # the study reached its count
    numbers = [r.data.tags[C.TAG_SEARCH_TRIAL] for r in after]
    assert len(numbers) == len(set(numbers))  # each trial trained once: no trial number has two runs
    assert all(r.data.tags.get(C.TAG_SEARCH_STATE) == C.SEARCH_PRUNED for r in after if r.info.run_id in pruned_before)
    study = study_of(store_dir)
    counted_trials = [t for t in study.trials if UNCOUNTED_ATTR not in t.user_attrs]
    assert len(counted_trials) == 16 and all(t.state.is_finished() for t in counted_trials)
    assert [t for t in study.trials if t.user_attrs.get(UNCOUNTED_ATTR) == "interrupted"]  # the cut-off ones
    parents = [r for r in all_runs(uri, "search") if r.data.tags.get(C.TAG_SEARCH_PARENT) == C.TRUE]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # one parent, reopened by the rerun
    assert {r.data.tags[C.TAG_PARENT_RUN_ID] for r in after} == {parents[0].info.run_id}


def test_two_worker_processes_on_one_study_train_exactly_its_trials(tmp_path):
    uri = os.environ["MLFLOW_TRACKING_URI"]
    path = write_search(tmp_path, trials=10, epochs=3)
    proc, err = _start(tmp_path, path, "--workers", "2")
    assert proc.wait(timeout=600) == 0, err.read_text()[-2000:]
    children = trials_of(uri)
    assert len(children) == 10 and all(C.TAG_SEARCH_STATE in r.data.tags for r in children)
    assert len({r.data.tags[C.TAG_SEARCH_TRIAL] for r in children}) == 10
