"""The search review's loader and rebuilt study, over a real search (python -m training.grid on a file with a
`search:` section, real MNIST) and over hostile runs written by hand; and the importance panels' R².

References: the driver's own Optuna study (its optuna.db), the running best recomputed here from the MLflow
runs, out-of-bag R² recomputed here from the trees' own bootstrap samples, MLflow's own filter."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.ensemble import RandomForestRegressor

from dashboard.analytics import param_importance as P
from dashboard.analytics import search_study as S
from dashboard.loaders import search_trials as L
from dashboard.read import cache, store
from dashboard.views import runs_table, runs_view
from dashboard.views.sweep import search_review as R
from dashboard.views.sweep import sweep_importance as I
from tests.conftest import REPO, log_contract_run, sqlite_uri
from training import contract as C

SEARCH_YAML = """
    experiment: search-review
    base: {sizes: [784, 16, 10], activation: sigmoid, loss: mse, train_size: 2000, val_size: 1000, epochs: 4}
    search:
      trials: 24            # two generations of the driver's 12: the second one's losers are pruned
      sampler: tpe
      pruner: median
      metric: val_acc
      seed: 0
      space:
        lr: {log_uniform: [0.1, 10]}
        batch_size: {choice: [10, 20]}
"""


def run_real_search(root: Path) -> tuple[str, str]:
    """A real search trained into a SQLite store under root: (tracking URI, parent run id)."""
    (root / "search.yaml").write_text(textwrap.dedent(SEARCH_YAML))
    uri = sqlite_uri(root)
    subprocess.run([sys.executable, "-m", "training.grid", str(root / "search.yaml")], cwd=REPO, check=True,
                   env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)}, capture_output=True,
                   timeout=600)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("search-review").experiment_id
    parent, = client.search_runs([exp], f"tags.`{C.TAG_SEARCH_PARENT}` = '{C.TRUE}'")
    return uri, parent.info.run_id


@pytest.fixture(scope="module")
def real_search(tmp_path_factory):
    root = tmp_path_factory.mktemp("search-store")
    uri, parent = run_real_search(root)
    return root, uri, parent


@pytest.fixture
def loaded(real_search, monkeypatch):
    root, uri, parent = real_search
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cache.clear()
    return L.load(parent)


def finals(uri: str, parent: str) -> dict[int, tuple[str, float | None]]:
    """trial number -> (search state, last val_acc), read straight from MLflow."""
    client = MlflowClient(uri)
    out = {}
    for run in client.search_runs([client.get_run(parent).info.experiment_id],
                                  f"tags.`{C.TAG_PARENT_RUN_ID}` = '{parent}'"):
        hist = sorted(client.get_metric_history(run.info.run_id, C.VAL_ACC), key=lambda m: m.step)
        out[int(run.data.tags[C.TAG_SEARCH_TRIAL])] = (run.data.tags.get(C.TAG_SEARCH_STATE), hist[-1].value)
    return out


def test_the_rebuilt_study_matches_the_drivers_own_optuna_study_trial_by_trial(real_search, loaded):
    root, _, _ = real_search
    storage = f"sqlite:///{root}/optuna.db"
    theirs = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
    ours = loaded.study
    assert ours.direction == theirs.direction == optuna.study.StudyDirection.MAXIMIZE
    assert [t.number for t in ours.trials] == [t.number for t in theirs.trials]
    for a, b in zip(ours.trials, theirs.trials):
        assert a.state == b.state, a.number
        assert a.params == pytest.approx(b.params), a.number
        assert a.distributions == b.distributions
        assert a.intermediate_values == pytest.approx(b.intermediate_values), a.number
        if b.state == optuna.trial.TrialState.COMPLETE:
            assert a.value == pytest.approx(b.value)
    assert {t.state for t in theirs.trials} >= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert ours.best_trial.number == theirs.best_trial.number
    assert loaded.best_run_id == next(t.run_id for t in loaded.trials if t.number == theirs.best_trial.number)
    # fANOVA on our study is fANOVA on theirs: same trials, same distributions, same seed.
    assert optuna.importance.get_param_importances(ours, evaluator=S.fanova_evaluator()) == pytest.approx(
        optuna.importance.get_param_importances(theirs, evaluator=S.fanova_evaluator()))


def test_best_so_far_is_the_running_max_of_the_complete_trials_final_metric_read_from_mlflow(real_search, loaded):
    _, uri, parent = real_search
    running, expected = -np.inf, []
    for number, (state, last) in sorted(finals(uri, parent).items()):
        if state == C.SEARCH_COMPLETE:
            running = max(running, last)
            expected.append((number, running))
    got = S.best_so_far(loaded.study)
    assert [n for n, _ in got] == [n for n, _ in expected]
    assert [v for _, v in got] == pytest.approx([v for _, v in expected])
    best_line = next(t for t in R.history_figure(loaded).data if t.mode == "lines")
    drawn = dict(zip(best_line.x, best_line.y))
    assert [drawn[n] for n, _ in expected] == pytest.approx([v for _, v in expected])


def test_pruned_trials_stop_where_their_tag_says_and_carry_why_and_every_point_names_its_run(real_search, loaded):
    pruned = [t for t in loaded.trials if t.state == C.SEARCH_PRUNED]
    assert pruned and all(t.pruned_at == int(t.steps[-1]) < 4 for t in pruned)
    assert all("pruned" in R.why(t) for t in pruned)
    marks = next(t for t in R.intermediate_figure(loaded).data if t.name == R.PRUNED_TRACE)
    assert sorted(marks.customdata) == sorted(t.run_id for t in pruned)
    assert list(marks.x) == [t.pruned_at for t in sorted(pruned, key=lambda t: t.number)]
    ids = {t.run_id for t in loaded.trials}
    for fig in (R.history_figure(loaded), R.slice_figure(loaded)):
        clickable = [c for trace in fig.data if trace.customdata is not None for c in trace.customdata]
        assert clickable and set(clickable) <= ids


def test_filtering_the_runs_page_on_the_pruned_tag_selects_exactly_the_pruned_trials(real_search, loaded,
                                                                                      monkeypatch):
    _, uri, parent = real_search
    exp = store.get_run(parent).info.experiment_id
    frame = runs_view.load_runs(exp, f"tags.`{C.TAG_SEARCH_STATE}` = '{C.SEARCH_PRUNED}'")
    assert set(frame["run_id"]) == {t.run_id for t in loaded.trials if t.state == C.SEARCH_PRUNED}
    rows = {r["run_id"]: r for r in runs_table.table_rows(runs_view.load_runs(exp))}
    assert rows[parent]["href"] == f"/search/{parent}"  # the runs page opens a search's review
    assert all(rows[t.run_id]["href"] == f"/runs/{t.run_id}" for t in loaded.trials)


def test_importance_panels_state_the_variance_each_model_explains(loaded):
    panels = str(R.importance_panels(loaded))
    assert "fANOVA's forest explains" in panels and "random forest explains" in panels
    frame, params = R.forest_frame(loaded)
    assert len(frame) == sum(t.state == C.SEARCH_COMPLETE for t in loaded.trials) and params == [C.PARAM_LR,
                                                                                               C.PARAM_BATCH_SIZE]


# ---- out-of-bag R², against the trees' own bootstrap samples ----

def oob_r2_by_hand(forest, x, y) -> float:
    """Each sample predicted by the trees whose bootstrap left it out; then R² = 1 - SS_res / SS_tot."""
    total, count = np.zeros(len(y)), np.zeros(len(y))
    for tree, drawn in zip(forest.estimators_, forest.estimators_samples_):
        out = np.setdiff1d(np.arange(len(y)), drawn)
        total[out] += tree.predict(x[out])
        count[out] += 1
    seen = count > 0
    pred = total[seen] / count[seen]
    return 1 - np.sum((y[seen] - pred) ** 2) / np.sum((y[seen] - y[seen].mean()) ** 2)


def test_fanova_r2_is_the_out_of_bag_r2_of_a_forest_built_as_optunas(loaded):
    x, y, labels = S.design_matrix(loaded.study)
    assert "lr" in labels and len(y) == sum(t.state == C.SEARCH_COMPLETE for t in loaded.trials)
    forest = RandomForestRegressor(n_estimators=S.FANOVA_TREES, max_depth=S.FANOVA_DEPTH,
                                   random_state=S.FANOVA_SEED).fit(x, y)
    assert S.fanova_r2(loaded.study) == pytest.approx(oob_r2_by_hand(forest, x, y))


def noisy_runs(n: int, effect: float, seed: int = 0) -> pd.DataFrame:
    """n finished runs over lr x seed whose accuracy is `effect` times a function of lr plus noise."""
    rng = np.random.default_rng(seed)
    lr, s = rng.choice([0.5, 1.0, 3.0, 5.0], n), rng.integers(0, 5, n)
    acc = 0.9 - effect * np.abs(np.log10(lr / 3.0)) + rng.normal(0, 0.01, n)
    return pd.DataFrame({"run_id": [f"r{i}" for i in range(n)], "status": C.STATUS_FINISHED, "final_test_acc": acc,
                         "params.lr": lr.astype(str), "params.seed": s.astype(str)})


def test_the_runs_page_forest_reports_its_out_of_bag_r2_and_warns_when_params_explain_little():
    strong, noise = noisy_runs(16, 0.1), noisy_runs(16, 0.0)
    result = P.importance(strong, ["lr", "seed"], "final_test_acc")
    x = np.column_stack([strong["params.lr"].astype(float), strong["params.seed"].astype(float)])
    forest = RandomForestRegressor(n_estimators=P.N_TREES, random_state=P.SEED, max_samples=16).fit(
        x, strong["final_test_acc"].to_numpy())
    assert result.oob_r2 == pytest.approx(oob_r2_by_hand(forest, x, strong["final_test_acc"].to_numpy()))
    assert result.oob_r2 > P.MIN_R2 and "too little" not in str(I.section(strong, "final_test_acc"))
    assert P.importance(noise, ["lr", "seed"], "final_test_acc").oob_r2 < P.MIN_R2
    warned = str(I.section(noise, "final_test_acc"))
    assert "too little to rank anything" in warned and "message-warn" in warned


# ---- untrusted runs: one line, never a traceback ----

SPACE = '{"lr": {"log_uniform": [0.1, 10]}, "sizes": {"choice": [[784, 10, 10], [784, 30, 10]]}}'
SETTINGS = {C.PARAM_SEARCH_SAMPLER: "tpe", C.PARAM_SEARCH_PRUNER: "median", C.PARAM_SEARCH_METRIC: C.VAL_ACC,
            C.PARAM_SEARCH_TRIALS: "3", C.PARAM_SEARCH_SEED: "0", C.PARAM_SEARCH_SPACE: SPACE}
PARENT_TAGS = {C.TAG_GRID_PARENT: C.TRUE, C.TAG_SEARCH_PARENT: C.TRUE, C.TAG_GRID_NAME: "s"}
TRIAL = {C.PARAM_ARCH: "mlp", C.PARAM_ACTIVATION: "sigmoid", C.PARAM_LOSS: "mse", C.PARAM_BATCH_SIZE: "10",
         C.PARAM_EPOCHS: "2"}


def hand_search(settings=None, trials=()) -> str:
    """A search logged through MlflowClient as the contract says; trials: (tags, params, val_acc per epoch)."""
    parent = log_contract_run("search", params={**SETTINGS, **(settings or {})}, tags=PARENT_TAGS)
    for i, (tags, params, curve) in enumerate(trials):
        log_contract_run(f"t{i}", {C.VAL_ACC: curve}, {**TRIAL, **params},
                         {C.TAG_PARENT_RUN_ID: parent, **tags})
    return parent


def complete(number, lr="1.0", sizes="784,10,10", curve=(0.1, 0.5, 0.8)):
    return ({C.TAG_SEARCH_TRIAL: str(number), C.TAG_SEARCH_STATE: C.SEARCH_COMPLETE},
            {C.PARAM_LR: lr, C.PARAM_SIZES: sizes}, list(curve))


@pytest.mark.parametrize("settings, says", [
    ({C.PARAM_SEARCH_SPACE: "{not json"}, "is not JSON"),
    ({C.PARAM_SEARCH_SPACE: '{"lr": {"gaussian": [0, 1]}}'}, "is not a distribution"),
    ({C.PARAM_SEARCH_SPACE: '{"<img src=x>": {"choice": [1, 2]}}'}, "is not a training option"),
    ({C.PARAM_SEARCH_SPACE: '{"activation": {"choice": ["<b>x</b>", "relu"]}}'}, "not a plain value"),
    ({C.PARAM_SEARCH_SPACE: '{"lr": {"log_uniform": [10, 0.1]}}'}, "search.space lr"),
    ({C.PARAM_SEARCH_METRIC: C.TEST_ACC}, "is not one of val_acc, val_loss"),
    ({C.PARAM_SEARCH_TRIALS: "many"}, "is not a trial count"),
])
def test_a_garbled_parent_is_refused_in_one_line(settings, says):
    parent = hand_search(settings)
    with pytest.raises(store.StoreError, match=says) as e:
        L.load(parent)
    assert "\n" not in str(e.value)


def test_a_run_that_is_not_a_search_parent_is_refused(log_run):
    with pytest.raises(store.StoreError, match="not a search's parent run"):
        L.load(log_run("plain", {C.VAL_ACC: [0.1]}))
    with pytest.raises(store.StoreError, match="not a run id"):
        L.load("../etc")


def test_garbled_trials_are_left_out_with_a_note_and_a_missing_number_keeps_the_others_numbered():
    parent = hand_search(trials=[
        complete(0), complete(3, lr="2.0", curve=(0.1, 0.6, 0.9)),
        complete(3, lr="3.0"),  # claims trial 3 again
        ({C.TAG_SEARCH_TRIAL: "x"}, {C.PARAM_LR: "1.0", C.PARAM_SIZES: "784,10,10"}, [0.1]),
        ({C.TAG_SEARCH_TRIAL: "²"}, {C.PARAM_LR: "1.0", C.PARAM_SIZES: "784,10,10"}, [0.1]),  # a digit to isdigit
        ({C.TAG_SEARCH_TRIAL: "4", C.TAG_SEARCH_STATE: "won"}, {C.PARAM_LR: "1.0", C.PARAM_SIZES: "784,10,10"}, [0.1]),
        complete(5, lr="50.0"),  # outside the space
        complete(6, sizes="784,20,10"),  # not one of the choices
        complete(7, curve=(0.1, float("nan"))),  # complete without a finite value: failed
        ({C.TAG_SEARCH_TRIAL: "8", C.TAG_SEARCH_STATE: C.SEARCH_PRUNED, C.TAG_SEARCH_PRUNED_AT: "1"},
         {C.PARAM_LR: "0.2", C.PARAM_SIZES: "784,30,10"}, [0.1, 0.2]),
    ])
    search = L.load(parent)
    assert [t.number for t in search.trials] == [0, 3, 7, 8]
    assert [t.number for t in search.study.trials] == list(range(9))  # 1, 2 and the refused ones: failed fillers
    assert search.study.trials[3].value == pytest.approx(0.9) and search.study.trials[3].params["lr"] == 2.0
    assert search.study.trials[3].params["sizes"] == "[784, 10, 10]"  # search_spec's encoding of a list option
    assert search.study.trials[7].state == optuna.trial.TrialState.FAIL
    assert search.study.trials[8].state == optuna.trial.TrialState.PRUNED and search.trials[3].pruned_at == 1
    notes = " ".join(search.notes)
    for says in ("claims trial 3", "without a trial number", "'won' is not one of", "(trial 5) left out",
                 "(trial 6) left out"):
        assert says in notes
    assert len(search.notes) == 6
    for build in (R.history_figure, R.intermediate_figure, R.slice_figure, R.contour_figure, R.importance_panels,
                  R.trial_table):
        build(search)  # draws (or says why not) without raising
