"""Sweep review maths against references computed here: scipy, statsmodels, sklearn or the formula."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar

from dashboard.analytics import image_diff as D
from dashboard.analytics import replicates as R
from dashboard.analytics import significance as S
from dashboard.views import runs_view
from dashboard.views.sweep import sweep_select as SEL


def _params(lr, seed, **kw):
    return {"lr": str(lr), "seed": str(seed), "batch_size": "10", "run_name": f"r{lr}-{seed}", "experiment": "x",
            "sha256.a": "ff", "n_params": "7", **kw}


def test_runs_that_differ_only_in_seed_are_one_config_named_by_the_params_that_differ():
    groups = R.group_runs({"a": _params(1, 0), "b": _params(3, 0), "c": _params(1, 1), "d": _params(3, 2)})
    assert [(g.label, g.run_ids) for g in groups] == [("lr=1", ("a", "c")), ("lr=3", ("b", "d"))]
    assert R.has_replicates(groups)
    single = R.group_runs({"a": _params(1, 0), "b": _params(1, 0, activation="relu")})
    assert [g.label for g in single] == ["activation=—", "activation=relu"] and not R.has_replicates(single)


def test_a_config_curve_is_the_mean_and_sd_over_its_seeds_and_the_ci_is_students_t():
    rng = np.random.default_rng(1)
    values = rng.normal(0.9, 0.02, size=(4, 3))  # 4 seeds x 3 epochs
    hist = pd.DataFrame([{"run_id": f"r{s}", "key": "test_acc", "step": e, "value": values[s, e]}
                         for s in range(4) for e in range(3)])
    agg = R.aggregate_curve(hist, [f"r{s}" for s in range(4)], "test_acc")
    assert np.allclose(agg["mean"], values.mean(0)) and np.allclose(agg["sd"], values.std(0, ddof=1))
    assert list(agg["n"]) == [4, 4, 4]
    lo, hi = stats.t.interval(0.95, 3, loc=values.mean(0), scale=stats.sem(values, axis=0))
    assert np.allclose(R.half_width(agg["sd"], agg["n"], "ci"), (hi - lo) / 2)
    assert np.allclose(R.half_width(agg["sd"], agg["n"], "sd"), values.std(0, ddof=1))


def test_exact_mcnemar_equals_statsmodels_and_the_two_sided_binomial_test_on_the_same_counts():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 10_000)
    pred_a = np.where(rng.random(10_000) < 0.9, labels, (labels + 1) % 10)
    pred_b = np.where(rng.random(10_000) < 0.91, labels, (labels + 2) % 10)
    t = S.mcnemar_pair(pred_a, pred_b, labels)
    a_right, b_right = pred_a == labels, pred_b == labels
    fixed, broken = int(np.sum(~a_right & b_right)), int(np.sum(a_right & ~b_right))
    assert (t.fixed, t.broken) == (fixed, broken)
    assert t.both_right == int(np.sum(a_right & b_right)) and t.both_wrong == int(np.sum(~a_right & ~b_right))
    table = [[t.both_right, broken], [fixed, t.both_wrong]]
    assert t.p_value == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-12)
    assert t.p_value == pytest.approx(stats.binomtest(fixed, fixed + broken, 0.5).pvalue, rel=1e-9)


def test_welch_and_the_bootstrap_interval_equal_scipy_called_directly():
    a, b = [0.90, 0.91, 0.905], [0.95, 0.94, 0.945, 0.952]
    t = S.config_test(a, b)
    assert t.p_value == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue)
    ref = stats.bootstrap((np.array(b), np.array(a)), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis),
                          n_resamples=9999, method="percentile", rng=np.random.default_rng(0))
    assert (t.ci_low, t.ci_high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    assert t.diff == pytest.approx(np.mean(b) - np.mean(a)) and t.ci_low < t.diff < t.ci_high
    assert "lr=3 is better than lr=1 by 4.18 points" in S.config_verdict(t, "lr=1", "lr=3")


def test_overlapping_seeds_are_called_seed_noise():
    t = S.config_test([0.90, 0.92, 0.91], [0.905, 0.915, 0.91])
    assert "within seed noise" in S.config_verdict(t, "A", "B")


def test_fixed_and_broken_images_and_the_confusion_difference_match_loops():
    rng = np.random.default_rng(3)
    labels, pa, pb = rng.integers(0, 10, 500), rng.integers(0, 10, 500), rng.integers(0, 10, 500)
    conf = rng.random(500)
    d = D.image_diff(labels, pa, pb, conf)
    assert sorted(d.fixed) == [i for i in range(500) if pa[i] != labels[i] and pb[i] == labels[i]]
    assert sorted(d.broken) == [i for i in range(500) if pa[i] == labels[i] and pb[i] != labels[i]]
    assert all(conf[d.fixed[i]] >= conf[d.fixed[i + 1]] for i in range(len(d.fixed) - 1))
    ref = np.zeros((10, 10), int)
    for t, a, b in zip(labels, pa, pb):
        ref[t, b] += 1
        ref[t, a] -= 1
    assert (d.confusion_delta == ref).all()


def test_a_heatmap_cell_shows_mean_plus_minus_sd_and_n_and_holds_its_runs():
    frame = pd.DataFrame({"run_id": list("abcd"), "params.lr": ["1", "1", "1", "3"], "params.seed": list("0120"),
                          "params.batch_size": ["10"] * 4, "final_test_acc": [0.90, 0.92, 0.94, 0.80]})
    fig = runs_view.heatmap_figure(frame, "lr", "batch_size")
    text = dict(zip(fig.data[0].x, fig.data[0].text[0]))
    assert text["1"] == f"92.00% ± {np.std([0.90, 0.92, 0.94], ddof=1) * 100:.2f}<br>n=3"
    assert text["3"] == "80.00%"
    assert dict(zip(fig.data[0].x, fig.data[0].customdata[0])) == {"1": "a,b,c", "3": "d"}


def test_a_click_on_a_cell_opens_its_run_or_the_comparison_of_its_runs():
    assert SEL.cell_href({"points": [{"customdata": "a" * 32}]}) == f"/runs/{'a' * 32}"
    assert SEL.cell_href({"points": [{"customdata": "a,b"}]}) == "/compare?runs=a,b"
    assert SEL.cell_href({"points": [{}]}) is None and SEL.cell_href(None) is None


def test_parallel_coordinate_brushes_keep_the_runs_whose_lines_pass_every_axis():
    frame = pd.DataFrame({"run_id": list("abcd"), "params.lr": ["0.5", "1", "3", "3"], "params.seed": list("0101"),
                          "final_test_acc": [0.6, 0.8, 0.88, 0.9], "status": ["FINISHED"] * 4})
    kept = SEL.merge_constraints({}, [{"dimensions[0].constraintrange": [[2.5, 3.5]]}, [0]])
    assert SEL.selected_runs(frame, ["lr", "seed"], kept) == ["c", "d"]
    kept = SEL.merge_constraints(kept, [{"dimensions[2].constraintrange": [0.895, 1.0]}, [0]])
    assert SEL.selected_runs(frame, ["lr", "seed"], kept) == ["d"]
    kept = SEL.merge_constraints(kept, [{"dimensions[0].constraintrange": None}, [0]])
    assert kept == {"2": [[0.895, 1.0]]}
    assert SEL.selected_runs(frame, ["lr", "seed"], {}) is None
