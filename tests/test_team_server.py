"""A team store: a real `mlflow server` on a real PostgreSQL, two trainers writing at once, the dashboard reading it.

PostgreSQL is Debian's package, run from a temp data dir on a free loopback port (`.ci/run` installs it).
Artifacts go through the server (`--serve-artifacts`, the default) into a temp destination.
"""
import textwrap

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import all_runs, start_server
from training import contract as C

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def team_server(postgres, tmp_path_factory):
    """`mlflow server` over the PostgreSQL store, 2 workers, artifacts proxied into a temp dir.

    Yields (tracking URI, artifacts destination).
    """
    artifacts = tmp_path_factory.mktemp("artifacts")
    server = start_server(
        ["-m", "mlflow", "server", "--backend-store-uri", postgres, "--artifacts-destination", str(artifacts),
         "--host", "127.0.0.1", "--port", "{port}", "--workers", "2"],
        tmp_path_factory.mktemp("server-log") / "mlflow.log", ready="/health",
        cwd=tmp_path_factory.mktemp("server-cwd"), own_group=True)  # its own group: the uvicorn workers end with it
    try:
        yield server.url, artifacts
    finally:
        server.stop(timeout=20)  # `mlflow server` stops its uvicorn workers and job runner itself
        server.kill()  # anything of its group still there
        if "Traceback" in (text := server.log()):
            print(text[-5000:])


GRID = """
    experiment: team
    base: {sizes: [784, 16, 10], activation: sigmoid, loss: cross_entropy, lr: 0.5, epochs: 2, train_size: 8000}
    grid: {seed: [0, 1], batch_size: [10, 20]}
"""


def test_two_trainers_through_a_postgres_backed_server_lose_nothing_and_the_dashboard_reads_it(
        team_server, tmp_path, monkeypatch):
    from dashboard.read import store
    from training.grid import main as grid_main

    url, artifacts = team_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    path = tmp_path / "team.yaml"
    path.write_text(textwrap.dedent(GRID))
    assert grid_main([str(path), "--workers", "2"]) == 0  # two cohorts (batch 10 and 20), one per worker process

    c = MlflowClient(url)
    exp = c.get_experiment_by_name("team")
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # uploads go through the server
    runs = all_runs(url, "team")
    parent = [r for r in runs if r.data.tags.get(C.TAG_GRID_PARENT) == C.TRUE]
    children = [r for r in runs if r.data.tags.get(C.TAG_PARENT_RUN_ID)]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    assert {r.data.tags[C.TAG_PARENT_RUN_ID] for r in children} == {parent[0].info.run_id}
    # The two cohorts really trained at the same time (8,000 images an epoch: each cohort trains for
    # seconds, longer than one worker process takes to start after the other).
    spans = {bs: [(r.info.start_time, r.info.end_time) for r in children if r.data.params["batch_size"] == bs]
             for bs in ("10", "20")}
    assert min(e for _, e in spans["10"]) > max(s for s, _ in spans["20"])
    assert min(e for _, e in spans["20"]) > max(s for s, _ in spans["10"])

    for r in children:
        rid = r.info.run_id
        for key in C.EPOCH_METRICS:
            assert sorted(m.step for m in c.get_metric_history(rid, key)) == [0, 1, 2], (rid, key)
        snaps = sorted(f.path for f in c.list_artifacts(rid, C.SNAPSHOT_DIR))
        assert snaps == [C.snapshot_path(e) for e in (0, 1, 2)]
        assert len(c.search_logged_models([exp.experiment_id], filter_string=f"source_run_id = '{rid}'")) == 1
    on_disk = [p for p in artifacts.rglob("epoch_*.npz")]
    assert len(on_disk) == 4 * 3  # the server wrote them into its artifacts destination

    # The dashboard's read side, over HTTP.
    found = store.search_runs([exp.experiment_id], f"tags.`{C.TAG_GRID_NAME}` = 'team'")
    frame = store.runs_frame(found)
    assert len(found) == 5 and frame["is_grid_parent"].sum() == 1
    for r in children:
        rid = r.info.run_id
        hist = store.metric_history(rid, C.TEST_ACC)
        assert hist["step"].tolist() == [0, 1, 2]
        assert hist["value"].iloc[-1] == pytest.approx(r.data.metrics[C.TEST_ACC])
        assert store.snapshot_epochs(rid) == [0, 1, 2]
        snap = store.load_snapshot(rid, 2)
        w = snap[C.weight_key(store.layer_names(r)[0])]
        assert w.shape == (16, 784) and np.isfinite(w).all()
    frame = store.metric_histories(children, C.EPOCH_METRICS)
    assert len(frame) == 4 * len(C.EPOCH_METRICS) * 3

    # Neuron names are the dashboard's one write: tags on the run, through the server too.
    rid = children[0].info.run_id
    store.set_neuron_label(rid, 0, 3, name="loop detector", note="fires on 0, 6, 8, 9")
    tags = MlflowClient(url).get_run(rid).data.tags
    assert tags[C.neuron_name_tag(0, 3)] == "loop detector" and tags[C.neuron_note_tag(0, 3)] == "fires on 0, 6, 8, 9"


def test_two_trainers_straight_into_postgresql_log_every_run_whole(postgres, tmp_path, monkeypatch):
    """No server: each trainer writes the database through MlflowClient, two at once, every run whole."""
    from training.grid import main as grid_main

    c = MlflowClient(postgres)
    c.create_experiment("straight", artifact_location=(tmp_path / "artifacts").as_uri())  # not ./mlruns in the cwd
    monkeypatch.setenv("MLFLOW_TRACKING_URI", postgres)
    path = tmp_path / "straight.yaml"
    path.write_text(textwrap.dedent(GRID.replace("experiment: team", "experiment: straight")))
    assert grid_main([str(path), "--workers", "2"]) == 0
    children = [r for r in all_runs(postgres, "straight") if r.data.tags.get(C.TAG_PARENT_RUN_ID)]
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    for r in children:
        rid = r.info.run_id
        assert r.data.tags[C.TAG_STEP_PATH] in C.STEP_PATHS and r.data.params[C.PARAM_DATASET] == C.DATASET_NAME
        assert [d.dataset.name for d in r.inputs.dataset_inputs] == [C.DATASET_NAME]
        for key in C.EPOCH_METRICS:
            assert sorted(m.step for m in c.get_metric_history(rid, key)) == [0, 1, 2], (rid, key)
        assert sorted(f.path for f in c.list_artifacts(rid, C.SNAPSHOT_DIR)) == [C.snapshot_path(e) for e in (0, 1, 2)]


def test_a_local_sqlite_store_moves_onto_the_server_and_the_dashboard_reads_it(team_server, tmp_path, monkeypatch):
    from dashboard.read import store
    from tests.conftest import sqlite_uri
    from training.grid import main as grid_main
    from training.migrate_store import migrate

    url, _ = team_server
    local = sqlite_uri(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", local)
    path = tmp_path / "laptop.yaml"
    path.write_text("experiment: laptop\nbase: {sizes: [784, 16, 10], epochs: 1, train_size: 500}\nruns: [{lr: 0.5}]\n")
    assert grid_main([str(path)]) == 0
    assert migrate(local, url) == {"laptop": 2}

    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    c = MlflowClient(url)
    exp = c.get_experiment_by_name("laptop")
    runs = store.search_runs([exp.experiment_id])
    child = next(r for r in runs if r.data.tags.get(C.TAG_PARENT_RUN_ID))
    assert {r.info.run_id for r in runs} >= {child.data.tags[C.TAG_PARENT_RUN_ID]}
    original = MlflowClient(local).get_run(child.data.tags[C.TAG_SOURCE_RUN])
    assert store.metric_history(child.info.run_id, C.TEST_ACC)["value"].tolist() == [
        m.value for m in sorted(MlflowClient(local).get_metric_history(original.info.run_id, C.TEST_ACC),
                                key=lambda m: m.step)]
    assert store.snapshot_epochs(child.info.run_id) == [0, 1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", local)
    want = store.load_snapshot(original.info.run_id, 1)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    got = store.load_snapshot(child.info.run_id, 1)
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in got)
    model = c.search_logged_models([exp.experiment_id], filter_string=f"source_run_id = '{child.info.run_id}'")
    assert len(model) == 1 and model[0].artifact_location.startswith("mlflow-artifacts:")
    # The copied model loads over HTTP and computes the net of the copied last snapshot (sigmoid 784-16-10).
    import mlflow
    import torch
    from training.nets import saved_model
    mlflow.set_tracking_uri(url)  # the grid pointed MLflow's fluent API at the local store
    with torch.no_grad():
        logits = saved_model.load(model[0].model_uri)(torch.ones(2, 784)).numpy()
    hidden = 1 / (1 + np.exp(-(np.ones((2, 784)) @ got[C.weight_key("fc1")].T + got[C.bias_key("fc1")])))
    np.testing.assert_allclose(logits, hidden @ got[C.weight_key("fc2")].T + got[C.bias_key("fc2")], atol=1e-4)


def test_trainers_that_link_the_same_new_dataset_at_once_all_get_it(team_server):
    """MLflow checks for a dataset and then inserts it: the second of two trainers racing there hits the unique key."""
    import threading

    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from training.tracking.mlflow_sink import log_dataset

    url, _ = team_server
    c = MlflowClient(url)
    exp = c.create_experiment("dataset-race")
    n, errors = 8, []
    for trial in range(3):
        ds = MetaDataset(LocalArtifactDatasetSource("/data/mnist"), name="mnist", digest=f"race{trial}")
        dataset = DatasetInput(Dataset(**ds.to_dict()), tags=[InputTag("mlflow.data.context", "train+test")])
        runs = [c.create_run(exp).info.run_id for _ in range(n)]
        barrier = threading.Barrier(n)

        def link(rid):
            barrier.wait()
            try:
                log_dataset(c, rid, dataset)
            except Exception as e:
                errors.append(f"{type(e).__name__}: {str(e)[:200]}")

        threads = [threading.Thread(target=link, args=(rid,)) for rid in runs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert all([d.dataset.digest for d in c.get_run(rid).inputs.dataset_inputs] == [f"race{trial}"] for rid in runs)


def test_a_search_of_two_worker_processes_through_the_server_trains_exactly_its_trials(
        team_server, postgres, tmp_path, monkeypatch):
    """The study in a database on the server's PostgreSQL (--storage), the runs through `mlflow server`."""
    from training.grid import main as grid_main

    url, _ = team_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    path = tmp_path / "team-search.yaml"
    path.write_text(textwrap.dedent("""
        experiment: team-search
        base: {activation: sigmoid, loss: mse, train_size: 1000, val_size: 500, epochs: 3}
        search:
          trials: 8
          pruner: median
          space: {lr: {log_uniform: [0.1, 10]}, batch_size: {choice: [10, 20]}}
    """))
    from training.errors import UserError
    with pytest.raises(UserError, match="needs --storage"):  # a tracking server: nothing trained without it
        grid_main([str(path)])
    assert MlflowClient(url).get_experiment_by_name("team-search") is None
    storage = postgres.rsplit("/", 1)[0] + "/optuna"
    assert grid_main([str(path), "--workers", "2", "--storage", storage]) == 0
    children = [r for r in all_runs(url, "team-search") if r.data.tags.get(C.TAG_PARENT_RUN_ID)]
    assert len(children) == 8 and all(r.data.tags[C.TAG_SEARCH_STATE] in C.SEARCH_STATES for r in children)
    assert len({r.data.tags[C.TAG_SEARCH_TRIAL] for r in children}) == 8  # none duplicated
