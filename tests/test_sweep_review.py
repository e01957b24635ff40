"""The sweep review over real MLflow stores: replicates, the two-run review from logged predictions, and
parameter importance on the configs of training/grids/nielsen.yaml."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.ensemble import RandomForestRegressor
from statsmodels.stats.contingency_tables import mcnemar

from dashboard.analytics import param_importance as P
from dashboard.read import cache, store
from dashboard.views import compare_view as V
from dashboard.views import runs_view
from dashboard.views.sweep import sweep_groups as G
from dashboard.views.sweep import sweep_importance as I
from dashboard.views.sweep import sweep_review as SR
from tests.conftest import REPO, log_contract_run
from training import contract as C
from training.sweep.gridfile import load_grid

FINALS = {"1.0": [0.80, 0.82, 0.81], "3.0": [0.90, 0.93, 0.91]}


@pytest.fixture(scope="module")
def seeded(module_store):
    """3 seeds of lr=1.0 and 3 of lr=3.0, logged without training: {lr: [run ids]}."""
    out = {}
    for lr, finals in FINALS.items():
        out[lr] = [log_contract_run(f"lr{lr}-s{s}", {C.TEST_ACC: [0.1, f - 0.05, f], C.TRAIN_ACC: [0.1, f, f + 0.01],
                                                        C.TEST_LOSS: [2, 1, 0.5], C.TRAIN_LOSS: [2, 1, 0.4]},
                                    {C.PARAM_LR: lr, C.PARAM_SEED: s, C.PARAM_BATCH_SIZE: 10}, experiment="seeded")
                   for s, f in enumerate(finals)]
    return out


def test_seeds_of_one_config_make_one_group_whose_table_row_is_mean_sd_and_n(seeded, use_module_store):
    comp = V.load(",".join(seeded["1.0"] + seeded["3.0"]))
    groups = G.groups_of(comp)
    assert [g.label for g in groups] == ["lr=1.0", "lr=3.0"]
    table = G.grouped_table(comp, groups).set_index("config")
    assert table.loc["lr=3.0", "n"] == 3
    assert table.loc["lr=3.0", f"mean {C.TEST_ACC}"] == pytest.approx(np.mean(FINALS["3.0"]))
    assert table.loc["lr=3.0", f"sd {C.TEST_ACC}"] == pytest.approx(np.std(FINALS["3.0"], ddof=1))
    fig = G.grouped_curve_figure(comp, groups, C.TEST_ACC, "ci")
    band = fig.data[0]  # the first config's band: mean ± t * sd / sqrt(n) at each epoch, out and back
    finals = np.array(FINALS["1.0"])
    half = stats.t.ppf(0.975, 2) * finals.std(ddof=1) / np.sqrt(3)
    assert band.fill == "toself" and band.y[2] == pytest.approx(finals.mean() + half)


def test_two_configs_with_three_seeds_get_welch_and_a_bootstrap_interval_in_one_sentence(seeded, use_module_store):
    comp = V.load(",".join(seeded["1.0"] + seeded["3.0"]))
    review = SR.load_review(comp, G.groups_of(comp))
    assert review.config.p_value == pytest.approx(stats.ttest_ind(FINALS["3.0"], FINALS["1.0"], equal_var=False).pvalue)
    assert review.sentences[0].startswith("lr=3.0 is better than lr=1.0 by 10.33 points")
    assert any("share no snapshot" in n for n in review.notes)  # logged without snapshots: no image-level part


def test_one_seed_per_config_says_replicates_are_needed(seeded, use_module_store):
    comp = V.load(f"{seeded['1.0'][0]},{seeded['3.0'][0]}")
    review = SR.load_review(comp, G.groups_of(comp))
    assert "replicates" in " ".join(review.notes) and review.config is None


def test_two_real_runs_fixed_and_broken_counts_and_mcnemar_equal_a_recount_from_their_predictions(trained_store,
                                                                                                  monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    cache.clear()
    a, b = trained_store.run_ids["sigmoid"], trained_store.run_ids["sigmoid_b"]
    comp = V.load(f"{a},{b}")
    for epoch in (1, None):  # a chosen epoch, and the default: the last common snapshot
        review = SR.load_review(comp, G.groups_of(comp), epoch)
        e = epoch if epoch is not None else max(set(store.snapshot_epochs(a)) & set(store.snapshot_epochs(b)))
        assert review.epoch == e
        labels = store.test_set()[1]
        pa, pb = (store.load_snapshot(r, e)[C.PRED_CLASS] for r in (a, b))
        fixed = int(np.sum((pa != labels) & (pb == labels)))
        broken = int(np.sum((pa == labels) & (pb != labels)))
        assert (review.pair.fixed, review.pair.broken) == (fixed, broken)
        both_right, both_wrong = int(np.sum((pa == labels) & (pb == labels))), int(np.sum((pa != labels) & (pb != labels)))
        ref = mcnemar([[both_right, broken], [fixed, both_wrong]], exact=True).pvalue
        assert review.pair.p_value == pytest.approx(ref, rel=1e-12)
        assert len(review.diff.fixed) == fixed and review.diff.confusion_delta.sum() == 0


def test_an_epoch_the_runs_lack_falls_back_to_the_last_common_one_and_says_so(trained_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    a, b = trained_store.run_ids["sigmoid"], trained_store.run_ids["sigmoid_b"]
    comp = V.load(f"{a},{b}")
    review = SR.load_review(comp, G.groups_of(comp), "999")
    assert review.epoch == review.epochs[-1] and any("Epoch 999" in n for n in review.notes)


@pytest.fixture(scope="module")
def nielsen_runs(module_store):
    """The 12 configs of nielsen.yaml, logged as finished runs (not trained: 30 epochs x 12 on full MNIST),
    each with a final test accuracy that depends on lr strongly and on batch size weakly."""
    spec = load_grid(REPO / "training" / "grids" / "nielsen.yaml")
    rng = np.random.default_rng(7)
    for cfg in spec.configs:
        acc = 0.95 - 0.06 * abs(np.log10(cfg.lr / 3.0)) - 0.0004 * cfg.batch_size + rng.normal(0, 0.002)
        log_contract_run(cfg.display_name, {C.TEST_ACC: [0.1, acc]}, cfg.as_params(), experiment="nielsen-sweep")
    return spec


def test_parameter_importance_on_nielsens_twelve_runs_equals_a_forest_fitted_here(nielsen_runs, use_module_store):
    exp = store.client().get_experiment_by_name("nielsen-sweep").experiment_id
    frame = runs_view.load_runs(exp)
    result = I.compute(frame, "final_test_acc")
    assert result.n_runs == 12 and set(result.table["param"]) == {C.PARAM_LR, C.PARAM_BATCH_SIZE}
    x = np.column_stack([frame[f"params.{p}"].astype(float) for p in (C.PARAM_BATCH_SIZE, C.PARAM_LR)])
    y = frame["final_test_acc"].to_numpy()
    forest = RandomForestRegressor(n_estimators=P.N_TREES, random_state=P.SEED,
                                   max_samples=min(len(y), P.MAX_TREE_SAMPLES)).fit(x, y)
    got = result.table.set_index("param")
    assert got.loc[C.PARAM_BATCH_SIZE, "importance"] == pytest.approx(forest.feature_importances_[0])
    assert got.loc[C.PARAM_LR, "importance"] == pytest.approx(forest.feature_importances_[1])
    assert got.loc[C.PARAM_BATCH_SIZE, "spearman"] == pytest.approx(stats.spearmanr(x[:, 0], y).statistic)
    assert result.table["param"].iloc[0] == C.PARAM_LR  # lr matters most here, by construction


def test_parameter_importance_is_hidden_below_eight_finished_runs_with_the_reason():
    frame = pd.DataFrame({"run_id": list("abc"), "params.lr": ["1", "2", "3"], "final_test_acc": [0.1, 0.2, 0.3],
                          "status": ["FINISHED"] * 3})
    assert "at least 8 finished runs" in I.compute(frame, "final_test_acc") and "has 3" in I.compute(frame, "final_test_acc")


def test_parameter_importance_over_many_runs_uses_a_seeded_sample_and_says_so():
    rng = np.random.default_rng(3)
    n = P.MAX_RUNS + 1000
    lr, bs = rng.choice([0.1, 1.0, 3.0], n), rng.choice([10, 50], n)
    frame = pd.DataFrame({"run_id": [f"r{i}" for i in range(n)], "params.lr": lr.astype(str),
                          "params.batch_size": bs.astype(str), "status": "FINISHED",
                          "final_test_acc": 0.9 - 0.05 * np.abs(np.log10(lr / 3.0)) + rng.normal(0, 0.01, n)})
    result = P.importance(frame, ["lr", "batch_size"], "final_test_acc")
    assert (result.n_runs, result.of_runs) == (P.MAX_RUNS, n)
    assert result.runs_said == f"a sample of {P.MAX_RUNS:,} of {n:,} runs"
    sample = frame.sample(P.MAX_RUNS, random_state=P.SEED)
    x = np.column_stack([sample["params.lr"].astype(float), sample["params.batch_size"].astype(float)])
    y = sample["final_test_acc"].to_numpy()
    forest = RandomForestRegressor(n_estimators=P.N_TREES, random_state=P.SEED,
                                   max_samples=P.MAX_TREE_SAMPLES).fit(x, y)
    got = result.table.set_index("param")
    assert got.loc["lr", "importance"] == pytest.approx(forest.feature_importances_[0])
    assert got.loc["lr", "spearman"] == pytest.approx(stats.spearmanr(x[:, 0], y).statistic)
    assert "a sample of" in I.figure(result, "final test acc").layout.title.text
