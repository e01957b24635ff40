"""The runs table served in blocks: sorted on the server, children under their parents, from a view of the
store that is read once and then kept up to date (dashboard.read.run_index), on a real MLflow store."""
import time

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from dashboard.read import cache, run_index
from dashboard.views import runs_table as T
from dashboard.views import runs_view as V
from tests.conftest import log_contract_run


def params(lr, bs, seed=0):
    return {"lr": lr, "batch_size": bs, "seed": seed, "activation": "sigmoid", "epochs": 2, "loss": "mse",
            "optimizer": "sgd", "arch": "mlp-784-20-10-sigmoid"}


@pytest.fixture(scope="module")
def ids(module_store):
    parent = log_contract_run("grid", tags={"grid.parent": "true"}, experiment="table")
    child = {"mlflow.parentRunId": parent}
    out = {"parent": parent}
    # lr as text sorts 10.0 < 3.0 < 30.0; as numbers 3 < 10 < 30.  Accuracies all differ.
    for name, lr, acc, tags in (("b", 10.0, 0.81, child), ("a", 3.0, 0.93, child), ("c", 30.0, 0.62, child),
                                ("lone", 0.5, 0.88, None), ("zed", 1.0, 0.70, None)):
        out[name] = log_contract_run(name, {"test_acc": [0.1, acc]}, params(lr, 10), tags, experiment="table")
    out["experiment"] = MlflowClient(module_store).get_experiment_by_name("table").experiment_id
    return out


@pytest.fixture
def frame(ids, use_module_store):
    return T.family(V.load_runs(ids["experiment"]))


def reference(frame: pd.DataFrame, key, descending: bool) -> list[str]:
    """The expected order, written out plainly: top-level runs sorted by key (missing last), each followed by
    its children sorted the same way."""
    rows = frame.to_dict("records")
    present = {r["run_id"] for r in rows}

    def ranked(rs):
        have = [r for r in rs if key(r) is not None]
        return sorted(have, key=key, reverse=descending) + [r for r in rs if key(r) is None]
    top = ranked([r for r in rows if r.get("parent_run_id") not in present])
    out = []
    for r in top:
        out.append(r["run_id"])
        out += [c["run_id"] for c in ranked([c for c in rows if c.get("parent_run_id") == r["run_id"]])]
    return out


def _acc(r):
    return None if pd.isna(r["row_best"]) else r["row_best"]


@pytest.mark.parametrize("col_id,key,descending", [
    ("best_test_acc", _acc, True),
    ("best_test_acc", _acc, False),
    ("lr", lambda r: None if pd.isna(r.get("params.lr")) else float(r["params.lr"]), False),  # numbers, not text
    ("name", lambda r: r["name"].lower(), False),
])
def test_blocks_are_sorted_on_the_server_with_children_under_their_parent(frame, col_id, key, descending):
    model = [{"colId": col_id, "sort": "desc" if descending else "asc"}]
    expected = reference(frame, key, descending)
    assert [r["run_id"] for r in T.page_rows(frame, model, 0, 100)] == expected
    # Any block is the same slice of that order.
    assert [r["run_id"] for r in T.page_rows(frame, model, 2, 5)] == expected[2:5]


def test_a_parent_row_counts_its_children_and_shows_their_best(frame, ids):
    rows = {r["run_id"]: r for r in T.page_rows(frame, None, 0, 100)}
    assert rows[ids["parent"]]["n_children"] == 3 and rows[ids["parent"]]["is_parent"]
    assert rows[ids["parent"]]["best_test_acc"] == pytest.approx(0.93)
    assert rows[ids["a"]]["parent"] == ids["parent"] and rows[ids["lone"]]["parent"] is None


def test_the_first_rows_come_from_one_mlflow_page_in_the_same_order(ids, use_module_store):
    model = [{"colId": "final_test_acc", "sort": "desc"}]
    first, complete = T.first_rows(ids["experiment"], "", model, 3)
    assert not complete and len(first) == 3
    read = T.family(V.load_runs(ids["experiment"]))
    best = sorted(read.dropna(subset=["final_test_acc"]).to_dict("records"), key=lambda r: -r["final_test_acc"])
    assert {r["run_id"] for r in first} == {r["run_id"] for r in best[:3]}  # MLflow ordered them
    every, complete = T.first_rows(ids["experiment"], "", model, 100)
    assert complete and len(every) == len(read)


def test_a_view_is_read_once_then_brought_up_to_date_with_new_and_ending_runs(ids, use_module_store, monkeypatch):
    cache.clear()
    monkeypatch.setattr(run_index, "UPDATE_MIN_S", 0.0)  # each call below updates (the page's burst rule off)
    running = log_contract_run("training", {"test_acc": [0.1]}, params(2.0, 10), experiment="table", status="RUNNING")
    v = V.view(ids["experiment"], "", wait=True)
    assert v.ready and len(v.frame) == 7 and V.any_running(v.frame)
    version = v.version
    assert V.view(ids["experiment"], "", refresh=True).version == version  # nothing changed: same version

    client = MlflowClient(use_module_store)
    client.log_metric(running, "test_acc", 0.77, step=1)
    client.set_terminated(running, "FINISHED")
    time.sleep(0.01)
    new = log_contract_run("new", {"test_acc": [0.1, 0.5]}, params(2.0, 20), experiment="table")
    v = V.view(ids["experiment"], "", refresh=True)
    row = v.frame.set_index("run_id")
    assert v.version > version and len(v.frame) == 8 and new in row.index
    assert row.loc[running, "status"] == "FINISHED" and row.loc[running, "final_test_acc"] == pytest.approx(0.77)
    assert not V.any_running(v.frame)
    # What the incremental update built equals a fresh read of the store.
    fresh = V.load_runs(ids["experiment"]).set_index("run_id").sort_index()
    merged = row.sort_index()[fresh.columns]
    pd.testing.assert_frame_equal(merged[["status", "final_test_acc", "best_test_acc"]],
                                  fresh[["status", "final_test_acc", "best_test_acc"]])

    # A deleted run goes at the next full read, which comes once the frame is older than REREAD_S.
    client.delete_run(new)
    monkeypatch.setattr(run_index, "REREAD_S", 0.0)
    monkeypatch.setattr(run_index, "REREAD_SHARE", 0)
    v = V.view(ids["experiment"], "", refresh=True)
    assert new not in set(v.frame["run_id"]) and len(v.frame) == 7


def test_a_filtered_view_and_a_bad_filter(ids, use_module_store):
    cache.clear()
    v = V.view(ids["experiment"], "metrics.test_acc > 0.8", wait=True)
    assert set(v.frame["run_id"]) == {ids["b"], ids["a"], ids["lone"]}
    bad = V.view(ids["experiment"], "metrics.test_acc >", wait=True)
    assert not bad.ready and "bad filter" in bad.error


def test_the_parallel_coordinates_draw_a_sample_of_a_large_view_and_say_so(frame):
    big = pd.concat([frame] * (2 * V.PARALLEL_MAX // len(frame)), ignore_index=True)  # most have test_acc
    big["run_id"] = [f"{i:032x}" for i in range(len(big))]
    fig = V.parallel_figure(big, ["lr"])
    n = len(V.usable_runs(big, ["lr"])[0])
    assert len(fig.data[0].dimensions[0].values) == V.PARALLEL_MAX
    assert f"a random {V.PARALLEL_MAX:,} of {n:,} runs" in fig.layout.title.text
    cells = V.cell_runs(big, "lr", "batch_size", ["3.0"], ["10"])
    assert len(cells[0][0].split(",")) == min(V.CELL_RUNS_MAX, int((big["params.lr"] == "3.0").sum()))
    assert np.isfinite(V.heatmap_figure(big, "lr", "batch_size").data[0].z.astype(float)).any()
