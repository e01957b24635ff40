"""The read side: batched metric reads, run lookups by id, and filter errors, against a real MLflow store."""
import pytest
from mlflow.tracking import MlflowClient

from dashboard.read import store
from training.tracking.mlflow_sink import tracking_uri

pytestmark = pytest.mark.usefixtures("use_module_store")  # one store for the module: creating one costs seconds


def test_metric_histories_reads_several_runs_and_keys_into_one_long_frame(log_run):
    a = log_run("a", curves={"test_acc": [0.1, 0.5, 0.7], "test_loss": [2.0, 1.0, 0.5]})
    b = log_run("b", curves={"test_acc": [0.1, 0.9]})
    runs, _ = store.get_runs([a, b])
    df = store.metric_histories(runs, ["test_acc", "test_loss"])
    assert list(df.columns) == ["run_id", "key", "step", "value"]
    assert len(df) == 3 + 3 + 2  # b never logged test_loss: skipped, not an error
    assert df[(df.run_id == a) & (df.key == "test_acc")]["value"].tolist() == [0.1, 0.5, 0.7]
    assert df[(df.run_id == b)]["step"].tolist() == [0, 1]


def test_metric_histories_of_more_runs_than_are_read_at_once_put_each_value_under_its_own_run(log_run):
    """The runs' histories are read several at a time: each run's frame is exactly the curve it logged
    (±inf read back as ±inf), whether it is finished or still running, however the reads interleave."""
    n = 2 * store.READ_THREADS + 3
    curves = {f"r{i}": [i / 100, 1 + i / 100, float("inf") if i % 5 == 0 else -i, 3 + i / 1000][: 2 + i % 3]
              for i in range(n)}
    ids = {log_run(name, curves={"val_loss": curve}, status="RUNNING" if i % 4 == 0 else "FINISHED"): name
           for i, (name, curve) in enumerate(curves.items())}
    runs, _ = store.get_runs(list(ids))
    df = store.metric_histories(runs, ["val_loss"])
    assert set(df.run_id) == set(ids)
    for rid, name in ids.items():
        mine = df[df.run_id == rid]
        assert mine["step"].tolist() == list(range(len(curves[name])))
        assert mine["value"].tolist() == [float(v) for v in curves[name]], name


def test_metric_histories_of_nothing_is_an_empty_frame_with_the_same_columns():
    df = store.metric_histories([], ["test_acc"])
    assert df.empty and list(df.columns) == ["run_id", "key", "step", "value"]


def test_a_finished_runs_history_is_cached_but_a_running_runs_is_read_fresh(log_run):
    done = log_run("done", curves={"test_acc": [0.1, 0.2]})
    live = log_run("live", curves={"test_acc": [0.1, 0.2]}, status="RUNNING")
    runs, _ = store.get_runs([done, live])
    store.metric_histories(runs, ["test_acc"])
    client = MlflowClient(tracking_uri())
    for rid in (done, live):  # a third epoch arrives after the first read
        client.log_metric(rid, "test_acc", 0.3, step=2)
    df = store.metric_histories(runs, ["test_acc"])
    assert df[df.run_id == done]["step"].max() == 1  # finished: served from the cache
    assert df[df.run_id == live]["step"].max() == 2  # running: fresh


def test_get_runs_keeps_the_asked_order_and_names_each_id_it_cannot_show(log_run):
    a, b = log_run("a"), log_run("b")
    unknown = "0" * 32
    runs, problems = store.get_runs([b, "not-an-id", a, unknown, b])
    assert [r.info.run_id for r in runs] == [b, a]
    assert len(problems) == 2
    assert "not a run id" in problems[0]
    assert unknown in problems[1] and "not in the store" in problems[1]


def test_a_bad_filter_raises_store_error_with_mlflows_message(log_run):
    log_run("a", experiment="filters")
    exp = MlflowClient(tracking_uri()).get_experiment_by_name("filters").experiment_id
    with pytest.raises(store.StoreError, match="bad filter"):
        store.search_runs([exp], "metrics.test_acc >")
    assert len(store.search_runs([exp], "metrics.test_acc > 0.5")) == 0  # a good filter matching nothing is fine


def test_a_search_of_finished_runs_sees_a_new_run_at_once(log_run):
    log_run("first", experiment="searched")
    exp = MlflowClient(tracking_uri()).get_experiment_by_name("searched").experiment_id
    assert [r.info.run_name for r in store.search_runs([exp])] == ["first"]
    log_run("second", experiment="searched")
    assert {r.info.run_name for r in store.search_runs([exp])} == {"first", "second"}


def test_a_search_with_a_running_run_is_read_fresh_every_time(log_run):
    rid = log_run("training", experiment="live-search", status="RUNNING")
    exp = MlflowClient(tracking_uri()).get_experiment_by_name("live-search").experiment_id
    assert store.search_runs([exp])[0].info.status == "RUNNING"
    MlflowClient(tracking_uri()).set_terminated(rid, "FINISHED")
    assert store.search_runs([exp])[0].info.status == "FINISHED"


def test_a_search_of_finished_runs_is_reused_until_the_caches_are_cleared(log_run):
    from dashboard.read import cache
    rid = log_run("before", experiment="renamed")
    exp = MlflowClient(tracking_uri()).get_experiment_by_name("renamed").experiment_id
    assert [r.info.run_name for r in store.search_runs([exp])] == ["before"]
    MlflowClient(tracking_uri()).update_run(rid, name="after")  # a rename: no new run, so within the TTL ...
    assert [r.info.run_name for r in store.search_runs([exp])] == ["before"]  # ... the kept result is served
    cache.clear()
    assert [r.info.run_name for r in store.search_runs([exp])] == ["after"]


def test_an_unreachable_store_is_a_one_line_store_error(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the discard port: nothing answers
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(store.StoreError, match=r"^Cannot read the MLflow store: .*127\.0\.0\.1:9") as e:
        store.experiments()
    assert "\n" not in str(e.value)


def test_the_architecture_label_comes_from_arch_label_or_from_arch_for_older_runs():
    assert store.arch_label({"arch": "mlp", "arch_label": "mlp-784-30-10-sigmoid"}) == "mlp-784-30-10-sigmoid"
    assert store.arch_label({"arch": "mlp-784-20-10-relu"}) == "mlp-784-20-10-relu"
    assert store.arch_label({"accuracy": "0.5"}) is None


# ---- the cache on disk that gunicorn workers share ---------------------------------------------

def _log_snapshot(rid, tmp_path, epoch=0):
    import numpy as np

    from training import contract as C
    folder = tmp_path / f"snap-{rid}"
    folder.mkdir()
    path = folder / C.snapshot_path(epoch).split("/")[-1]
    np.savez(path, **{C.weight_key("fc1"): np.arange(12, dtype=np.float32).reshape(3, 4)})
    client = MlflowClient(tracking_uri())
    client.log_param(rid, C.PARAM_LAYERS, "fc1")  # a layer name without a config: any shape, within the budget
    client.log_artifact(rid, str(path), C.SNAPSHOT_DIR)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DASHBOARD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_finished_runs_reads_go_to_the_shared_cache_but_a_running_runs_never_do(log_run, tmp_path, cache_dir):
    from dashboard.read import cache
    live = log_run("live", curves={"test_acc": [0.1, 0.2]}, status="RUNNING")
    _log_snapshot(live, tmp_path)
    store.load_snapshot(live, 0)
    store.metric_history(live, "test_acc")
    assert (cache.entries(), cache.entries(large=True)) == (0, 0)

    done = log_run("done", curves={"test_acc": [0.1, 0.2]}, status="RUNNING")
    _log_snapshot(done, tmp_path)
    MlflowClient(tracking_uri()).set_terminated(done, "FINISHED")
    store.load_snapshot(done, 0)
    store.metric_history(done, "test_acc")
    assert cache.entries(large=True) == 1  # the snapshot
    assert cache.entries() == 2  # its epoch list and its history
    assert str(cache_dir) in cache.directory()


def test_different_stores_never_share_cache_entries(cache_dir):
    from dashboard.read import cache
    assert cache.directory("sqlite:///a/mlflow.db") != cache.directory("sqlite:///b/mlflow.db")
    assert cache.directory().startswith(str(cache_dir))


def test_a_second_process_reads_a_finished_snapshot_from_the_shared_cache_without_the_store(log_run, tmp_path,
                                                                                             cache_dir):
    """What one gunicorn worker read, another gets from the cache: proven by deleting the artifact in between."""
    import os
    import shutil
    import subprocess
    import sys
    from urllib.parse import urlparse

    from tests.conftest import REPO
    rid = log_run("shared", curves={"test_acc": [0.1, 0.2, 0.3]}, status="RUNNING")
    _log_snapshot(rid, tmp_path)
    MlflowClient(tracking_uri()).set_terminated(rid, "FINISHED")
    first = store.load_snapshot(rid, 0)
    store.metric_history(rid, "test_acc")
    shutil.rmtree(urlparse(store.get_run(rid).info.artifact_uri).path)  # the store can no longer answer

    script = (f"from dashboard.read import store; s = store.load_snapshot({rid!r}, 0); "
              f"h = store.metric_history({rid!r}, 'test_acc'); "
              "print(({k: v.tolist() for k, v in s.items()}, h.value.tolist()))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    second = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.strip() == str(({k: v.tolist() for k, v in first.items()}, [0.1, 0.2, 0.3]))

    env["DASHBOARD_CACHE_DIR"] = str(tmp_path / "empty-cache")  # control: without the cache it must fail
    cold = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    assert cold.returncode != 0
