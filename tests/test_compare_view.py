"""The compare page's parsing, smoothing, curves and tables, from a real MLflow store."""
import numpy as np
import pytest

from dashboard.views import compare_view as V
from dashboard.views.theme import run_colors
from tests.conftest import log_contract_run

CURVES = {"train_loss": [2.0, 0.6, 0.4], "test_loss": [2.1, 0.7, 0.5],
          "train_acc": [0.1, 0.8, 0.9], "test_acc": [0.1, 0.85, 0.8]}


@pytest.fixture(scope="module")
def ids(module_store):
    return {
        "a": log_contract_run("a", CURVES, {"lr": 3.0, "batch_size": 10, "sha256.x": "ff"}),
        "b": log_contract_run("b", {k: [v * 0.9 for v in vs] for k, vs in CURVES.items()},
                              {"lr": 1.0, "batch_size": 10, "sha256.x": "ff"}),
        "foreign": log_contract_run("plain script", {"accuracy": [0.5]}, experiment="foreign"),
    }


@pytest.fixture
def comp(ids, use_module_store):
    return V.load(f"{ids['a']},{ids['b']}")


def test_parse_run_ids_drops_duplicates_and_names_malformed_ids():
    good = "a" * 32
    ids, problems = V.parse_run_ids(f" {good},../etc/passwd,{good},, ")
    assert ids == [good]
    assert len(problems) == 1 and "../etc/passwd" in problems[0] and "not a run id" in problems[0]


def test_parse_run_ids_accepts_a_repeated_query_key():
    assert V.parse_run_ids(["a" * 32, "b" * 32])[0] == ["a" * 32, "b" * 32]


def test_more_than_three_hundred_runs_keeps_the_first_three_hundred_and_says_so():
    many = [f"{i:032x}" for i in range(305)]
    ids, problems = V.parse_run_ids(",".join(many))
    assert ids == many[:300]
    assert "305 runs" in problems[0] and "first 300" in problems[0]


def test_many_runs_are_fetched_in_one_search_in_the_order_asked_and_unknown_ones_are_named(ids, use_module_store):
    unknown = "0" * 32
    runs, missing = V.fetch_runs([ids["b"], unknown, ids["foreign"], ids["a"]])
    assert [r.info.run_id for r in runs] == [ids["b"], ids["foreign"], ids["a"]]
    assert len(missing) == 1 and unknown in missing[0]


def test_unknown_ids_become_messages_and_the_rest_still_load(ids, use_module_store):
    unknown = "0" * 32
    comp = V.load(f"{ids['a']},{unknown},nonsense")
    assert [r.info.run_id for r in comp.runs] == [ids["a"]]
    assert len(comp.problems) == 2 and any(unknown in p for p in comp.problems)


def test_ema_with_weight_zero_is_the_identity_and_a_constant_stays_constant():
    x = [3.0, 1.0, 2.0]
    assert np.allclose(V.ema(x, 0.0), x)
    assert np.allclose(V.ema([5.0] * 4, 0.9), 5.0)  # debiased: no pull towards 0 at the start


def test_ema_matches_tensorboards_debiased_formula():
    w, x = 0.6, [1.0, 3.0, 2.0]
    s1 = (1 - w) * 1.0
    s2 = w * s1 + (1 - w) * 3.0
    s3 = w * s2 + (1 - w) * 2.0
    assert np.allclose(V.ema(x, w), [s1 / (1 - w), s2 / (1 - w ** 2), s3 / (1 - w ** 3)])


def test_each_run_keeps_one_colour_across_every_curve(comp):
    colors = run_colors([r.info.run_id for r in comp.runs])
    for key in V.CURVES:
        fig = V.curve_figure(comp, key, 0.0, colors)
        assert [t.line.color for t in fig.data] == [colors[r.info.run_id] for r in comp.runs]
        assert fig.layout.xaxis.title.text == "epoch" and fig.layout.yaxis.title.text


def test_smoothing_draws_the_raw_curve_faintly_under_the_smoothed_one(comp):
    fig = V.curve_figure(comp, "test_acc", 0.5)
    assert len(fig.data) == 4  # raw + smoothed per run
    raw, smooth = fig.data[0], fig.data[1]
    assert raw.opacity < 1 and list(raw.y) == CURVES["test_acc"]
    assert np.allclose(smooth.y, V.ema(CURVES["test_acc"], 0.5))
    assert "0.50" in fig.layout.title.text


def test_accuracy_axes_are_percentages(comp):
    assert V.curve_figure(comp, "test_acc").layout.yaxis.tickformat == ".0%"


def test_params_table_shows_only_differing_params_unless_asked_for_all(comp):
    assert list(V.params_table(comp.runs).index) == ["lr"]
    every = V.params_table(comp.runs, show_all=True)
    assert {"lr", "batch_size", "sha256.x"} <= set(every.index)
    assert list(every.columns) == [r.info.run_id for r in comp.runs]


def test_only_hyperparameters_count_as_differences_and_names_are_never_rows(ids, use_module_store):
    # Same hyperparameters, different names, layer lists, sizes of the logged model and data checksums.
    a = log_contract_run("x", CURVES, {"lr": 3.0, "run_name": "x", "experiment": "e1", "n_params": 10,
                                        "arch_label": "mlp-784-8-10-sigmoid", "sha256.x": "ff"})
    b = log_contract_run("y", CURVES, {"lr": 3.0, "run_name": "y", "experiment": "e2", "n_params": 20,
                                        "arch_label": "mlp-784-9-10-sigmoid", "sha256.x": "ee"})
    comp = V.load(f"{a},{b}")
    assert V.params_table(comp.runs).empty
    every = V.params_table(comp.runs, show_all=True)
    assert set(every.index) == {"lr", "n_params", "arch_label", "sha256.x"}  # never run_name or experiment


def test_a_param_one_run_lacks_shows_as_a_dash_and_counts_as_different(ids, use_module_store):
    comp = V.load(f"{ids['a']},{ids['foreign']}")
    table = V.params_table(comp.runs)
    assert table.loc["lr", ids["foreign"]] == "—"


def test_metrics_table_has_final_and_best_with_loss_minimised_and_accuracy_maximised(comp, ids):
    row = V.metrics_table(comp).set_index("run_id").loc[ids["a"]]
    assert row["final test_acc"] == pytest.approx(0.8) and row["best test_acc"] == pytest.approx(0.85)
    assert row["final test_loss"] == pytest.approx(0.5) and row["best test_loss"] == pytest.approx(0.5)
    assert row[V.EPOCHS_TRAINED] == 2


def test_a_foreign_run_says_which_curves_are_missing_and_what_it_has(ids, use_module_store):
    comp = V.load(ids["foreign"])
    message = V.missing_message(comp.runs[0])
    assert "train_loss" in message and "test_acc" in message and "accuracy" in message
    fig = V.curve_figure(comp, "test_acc")
    assert not fig.data and "test_acc" in fig.layout.annotations[0].text
    assert V.metrics_table(comp)["final test_acc"].isna().all()


def test_ema_skips_nan_and_inf_leaving_gaps_and_the_rest_as_if_they_were_never_logged():
    clean = V.ema([1.0, 2.0, 3.0], 0.6)
    got = V.ema([1.0, float("nan"), 2.0, float("inf"), 3.0], 0.6)
    np.testing.assert_allclose(got[[0, 2, 4]], clean)
    assert np.isnan(got[1]) and np.isnan(got[3])


def test_the_curve_note_counts_each_runs_nan_and_inf_and_a_clean_curve_has_none(ids, use_module_store):
    nan, inf = float("nan"), float("inf")
    bad = log_contract_run("bad", {**CURVES, "test_loss": [2.1, nan, inf], "test_acc": [0.1, nan, 0.8]})
    worse = log_contract_run("worse", {**CURVES, "test_loss": [nan, nan, -inf]})
    comp = V.load(f"{ids['a']},{bad},{worse}")
    assert V.curve_note(comp, "test_loss") == ("5 logged values are not finite (NaN or ±inf), drawn as gaps "
                                                "(bad: 2; worse: 3).")
    assert V.curve_note(comp, "test_acc") == "1 logged value is not finite (NaN or ±inf), drawn as gaps (bad: 1)."
    assert V.curve_note(comp, "train_loss") == ""
