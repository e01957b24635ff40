"""The runs page's data and figures, from a real MLflow store holding a small grid, a lone run and a foreign run."""
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from dashboard.read import store
from dashboard.views import runs_table as T
from dashboard.views import runs_view as V
from tests.conftest import log_contract_run

SHA = {"sha256.train-images-idx3-ubyte.gz": "ab" * 32}


def params(lr, bs, seed=0, activation="sigmoid"):
    return {"lr": lr, "batch_size": bs, "seed": seed, "activation": activation, "epochs": 2, "loss": "mse",
            "optimizer": "sgd", "arch": f"mlp-784-20-10-{activation}", "run_name": f"lr={lr} bs={bs} s={seed}", **SHA}


@pytest.fixture(scope="module")
def ids(module_store):
    parent = log_contract_run("grid C", tags={"grid.parent": "true"})
    child = {"mlflow.parentRunId": parent}
    out = {
        "parent": parent,
        "a0": log_contract_run("lr3 s0", {"test_acc": [0.1, 0.90, 0.92]}, params(3.0, 10, 0), child),
        "a1": log_contract_run("lr3 s1", {"test_acc": [0.1, 0.88, 0.94]}, params(3.0, 10, 1), child),
        "b": log_contract_run("lr1", {"test_acc": [0.1, 0.80, 0.85]}, params(1.0, 10), child),
        "c": log_contract_run("lr3 bs20", {"test_acc": [0.1, 0.70, 0.75]}, params(3.0, 20), child),
        "peaked": log_contract_run("peaked", {"test_acc": [0.1, 0.95, 0.60], "test_loss": [2, 0.3, 0.9]},
                                   params(30.0, 10, activation="relu")),
        "foreign": log_contract_run("plain script", {"accuracy": [0.5]}),
        "running": log_contract_run("still training", {"test_acc": [0.1]}, params(0.1, 10), status="RUNNING"),
    }
    out["experiment"] = MlflowClient(module_store).get_experiment_by_name("runs").experiment_id
    return out


@pytest.fixture
def frame(ids, use_module_store):
    return V.load_runs(ids["experiment"])


def test_load_runs_gives_final_and_best_test_accuracy_per_run(frame, ids):
    peaked = frame.set_index("run_id").loc[ids["peaked"]]
    assert peaked["final_test_acc"] == pytest.approx(0.60)
    assert peaked["best_test_acc"] == pytest.approx(0.95)
    assert peaked["best_epoch"] == 1
    foreign = frame.set_index("run_id").loc[ids["foreign"]]
    assert pd.isna(foreign["final_test_acc"]) and pd.isna(foreign["best_test_acc"])


def test_a_bad_filter_is_a_store_error_carrying_mlflows_message(ids, use_module_store):
    with pytest.raises(store.StoreError, match="bad filter"):
        V.load_runs(ids["experiment"], "params.lr = 3")  # MLflow wants the value quoted


def test_a_filter_in_mlflow_syntax_selects_runs(ids, use_module_store):
    frame = V.load_runs(ids["experiment"], "params.lr = '3.0' and metrics.test_acc > 0.9")
    assert set(frame["run_id"]) == {ids["a0"], ids["a1"]}


def test_table_rows_put_each_child_directly_under_its_grid_parent(frame, ids):
    rows = T.table_rows(frame)
    order = [r["run_id"] for r in rows]
    p = order.index(ids["parent"])
    children = {ids["a0"], ids["a1"], ids["b"], ids["c"]}
    assert set(order[p + 1:p + 5]) == children
    parent = rows[p]
    assert parent["is_parent"] and parent["n_children"] == 4
    assert parent["best_test_acc"] == pytest.approx(0.94)  # the best of its children
    assert all(r["parent"] == ids["parent"] for r in rows if r["run_id"] in children)


def test_table_rows_count_a_running_runs_duration_up_to_now(frame, ids):
    start = frame.set_index("run_id").loc[ids["running"], "start_time"]
    rows = T.table_rows(frame, now=start + pd.Timedelta(seconds=42))
    running = next(r for r in rows if r["run_id"] == ids["running"])
    assert running["status"] == "RUNNING" and running["duration_s"] == pytest.approx(42)
    assert V.any_running(frame)
    assert not V.any_running(frame[frame["status"] != "RUNNING"])


def test_table_rows_carry_the_architecture_label_of_old_and_new_runs(frame, ids, use_module_store):
    new = log_contract_run("new style", {"test_acc": [0.1, 0.5]},
                           {"arch": "mlp", "arch_label": "mlp-784-30-10-relu", "sizes": "784,30,10"}, experiment="labels")
    old = log_contract_run("old style", {"test_acc": [0.1, 0.5]}, {"arch": "mlp-784-20-10-tanh"}, experiment="labels")
    exp = MlflowClient(use_module_store).get_experiment_by_name("labels").experiment_id
    rows = {r["run_id"]: r for r in T.table_rows(V.load_runs(exp))}
    assert rows[new]["arch_label"] == "mlp-784-30-10-relu"
    assert rows[old]["arch_label"] == "mlp-784-20-10-tanh"  # logged before arch_label: the label is in arch
    assert next(r for r in T.table_rows(frame) if r["run_id"] == ids["foreign"])["arch_label"] is None


def test_varying_params_are_sweep_axes_only(frame):
    assert V.varying_params(frame) == ["activation", "batch_size", "lr", "seed"]  # not run_name, arch, sha256.*


def test_a_new_runs_arch_and_its_descriptions_are_never_sweep_axes():
    rows = [{"run_id": str(i), "status": "FINISHED", "final_test_acc": 0.9, "params.arch": arch,
             "params.sizes": sizes, "params.arch_label": label, "params.n_params": n, "params.lr": "3.0"}
            for i, (arch, sizes, label, n) in enumerate([("mlp", "784,30,10", "mlp-784-30-10-sigmoid", "23860"),
                                                         ("cnn", "cnn", "cnn-relu", "12810")])]
    assert V.varying_params(pd.DataFrame(rows)) == ["sizes"]


def test_default_heatmap_axes_are_lr_and_batch_size_as_in_write_up_c():
    assert V.default_axes(["activation", "batch_size", "lr", "seed"]) == ("lr", "batch_size")
    assert V.default_axes(["seed"]) == ("seed", None)


def test_heatmap_averages_runs_that_share_a_cell_and_orders_axes_numerically(frame):
    fig = V.heatmap_figure(frame[frame["params.activation"] == "sigmoid"], "lr", "batch_size")
    heat = fig.data[0]
    assert list(heat.x) == ["0.1", "1.0", "3.0"] and list(heat.y) == ["10", "20"]
    z = pd.DataFrame(heat.z, index=heat.y, columns=heat.x)
    assert z.loc["10", "3.0"] == pytest.approx((0.92 + 0.94) / 2)  # two seeds, one cell
    assert "n=2" in heat.text[0][2]
    assert fig.layout.xaxis.title.text == "lr" and fig.layout.yaxis.title.text == "batch_size"


def test_heatmap_with_one_axis_twice_says_so_instead_of_drawing(frame):
    fig = V.heatmap_figure(frame, "lr", "lr")
    assert not fig.data and "two different params" in fig.layout.annotations[0].text


def test_parallel_coordinates_end_at_test_accuracy_with_log_lr_and_labelled_categories(frame):
    fig = V.parallel_figure(frame, V.varying_params(frame))
    dims = {d.label: d for d in fig.data[0].dimensions}
    assert "lr (log)" in dims  # 0.1 .. 30 spans decades
    assert list(dims["activation"].ticktext) == ["relu", "sigmoid"]
    assert list(dims)[-1] == "final test accuracy"
    assert len(dims["final test accuracy"].values) == 6  # runs with a test_acc: not the parent or foreign run


def test_figures_for_runs_without_test_accuracy_say_what_is_missing(frame, ids):
    foreign = frame[frame["run_id"] == ids["foreign"]]
    for fig in (V.parallel_figure(foreign, ["lr"]), V.heatmap_figure(foreign, "lr", "batch_size")):
        assert "test_acc" in fig.layout.annotations[0].text


def test_a_param_that_should_be_a_number_and_a_metric_that_is_not_finite_keep_their_runs_off_the_figures():
    frame = pd.DataFrame({"run_id": list("abcde"), "status": ["FINISHED"] * 5,
                          "params.lr": ["3.0", "1.0", "abc", "0.5", "inf"], "params.activation": ["relu"] * 4 + ["tanh"],
                          "final_test_acc": [0.9, 0.8, 0.7, float("nan"), 0.6]})
    frame.loc[1, "final_test_acc"] = float("inf")
    runs, notes = V.usable_runs(frame, ["lr", "activation"])
    assert list(runs["run_id"]) == ["a"]  # b: inf accuracy, c: lr 'abc', e: lr 'inf'; d has no accuracy yet
    assert notes == ["1 run left out: final test accuracy is not finite (NaN or ±inf).",
                     "2 runs left out: lr should be a number, not 'abc', 'inf'."]
    dims = V.parallel_figure(frame, ["lr", "activation"]).data[0].dimensions
    assert [d.label for d in dims] == ["lr", "activation", "final test accuracy"]
    assert list(dims[0].values) == [3.0]  # a numeric axis: 'abc' never became a category on it
    _, notes = V.usable_runs(frame.assign(**{"params.lr": "default"}), ["lr"])  # PyTorch's init: a value, no error
    assert notes == ["1 run left out: final test accuracy is not finite (NaN or ±inf)."]
