"""training.sql_batch against its reference, MLflow's own log_batch: the same values written both ways read back
the same through MlflowClient, in SQLite and in PostgreSQL; what it cannot write, it leaves untouched."""
import math
import uuid

import pytest
import sqlalchemy as sa
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import DatasetInput, InputTag, Metric, Param, ViewType
from mlflow.tracking import MlflowClient

from tests.conftest import sqlite_uri
from training import sql_batch

INF = float("inf")
NAN = float("nan")
# Three batches, as a writer sends them: NaN and ±inf; a repeated identical value (kept once); a key logged twice
# at one step; a later batch whose "acc" is older than the latest (the latest stays) and whose "loss" is newer.
BATCHES = [
    [Metric("loss", 2.5, 1000, 0), Metric("acc", 0.1, 1000, 0), Metric("grad", NAN, 1000, 0),
     Metric("big", INF, 1000, 0), Metric("small", -INF, 1000, 0), Metric("loss", 2.5, 1000, 0)],
    [Metric("loss", 1.5, 2000, 1), Metric("loss", 1.25, 2001, 1), Metric("acc", 0.6, 2000, 2),
     Metric("grad", 0.5, 2000, 1), Metric("big", 3.0, 2000, 1), Metric("small", 1.0, 999, 0)],
    [Metric("loss", 0.75, 3000, 2), Metric("acc", 0.4, 3000, 1), Metric("grad", NAN, 3000, 2)],
]
PARAMS = [Param("lr", "0.1"), Param("sizes", "784,30,10"), Param("note", "x" * 10_000)]  # MLflow truncates the last


@pytest.fixture(params=["sqlite", "postgresql"])
def client(request, tmp_path) -> MlflowClient:
    uri = sqlite_uri(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres")
    return MlflowClient(uri)


def new_runs(client: MlflowClient, n: int) -> list[str]:
    exp = client.create_experiment(f"sql-batch-{uuid.uuid4().hex}")
    return [client.create_run(exp).info.run_id for _ in range(n)]


def as_read(client: MlflowClient, run_id: str) -> tuple:
    """Everything MLflow reads back of a run's metrics and params; repr() so that NaN equals NaN."""
    data = client.get_run(run_id).data
    history = {key: sorted((m.step, m.timestamp, repr(m.value)) for m in client.get_metric_history(run_id, key))
               for key in data.metrics}
    return {k: repr(v) for k, v in data.metrics.items()}, history, data.params


def test_metrics_of_several_runs_read_back_as_after_mlflows_log_batch(client):
    ref_a, ref_b, ours_a, ours_b = new_runs(client, 4)
    store = sql_batch.sql_store(client)
    assert store is not None
    for batch in BATCHES:
        client.log_batch(ref_a, metrics=batch)
        client.log_batch(ref_b, metrics=batch[::-1])
        assert sql_batch.log_metrics(store, {ours_a: batch, ours_b: batch[::-1]})
    for ref, ours in ((ref_a, ours_a), (ref_b, ours_b)):
        expected = as_read(client, ref)
        assert as_read(client, ours) == expected
    latest = client.get_run(ours_a).data.metrics
    assert latest["loss"] == 0.75 and latest["acc"] == 0.6 and math.isnan(latest["grad"])
    assert len(client.get_metric_history(ours_a, "loss")) == 4  # the repeated identical value kept once


def dataset() -> DatasetInput:
    source = LocalArtifactDatasetSource("/data/MNIST/raw")
    entity = MetaDataset(source, name="mnist", digest="ab12cd34")._to_mlflow_entity()
    return DatasetInput(entity, tags=[InputTag("mlflow.data.context", "train+test")])


def created_as_read(client: MlflowClient, run_id: str) -> tuple:
    """What MLflow reads back of a new run, its id and start time aside."""
    run = client.get_run(run_id)
    info = run.info
    inputs = [(d.dataset.name, d.dataset.digest, d.dataset.source_type, d.dataset.source, d.dataset.schema,
               d.dataset.profile, sorted((t.key, t.value) for t in d.tags)) for d in run.inputs.dataset_inputs]
    return ((info.status, info.lifecycle_stage, info.user_id, info.run_name, info.experiment_id, info.end_time,
             info.artifact_uri.replace(run_id, "<id>")), run.data.tags, run.data.params, run.data.metrics, inputs)


def test_runs_created_in_one_transaction_read_back_as_mlflows_own(client):
    first, second = (client.create_experiment(f"sql-batch-{uuid.uuid4().hex}") for _ in range(2))
    tags = {"mlflow.source.name": "grid.yaml", "mlflow.source.type": "LOCAL", "mlflow.user": "ada", "cfg": "9f"}
    refs = {}
    for exp in (first, second):  # the reference: MLflow's own calls, one run per experiment
        refs[exp] = client.create_run(exp, run_name="lr=0.1", tags=tags).info.run_id
        client.log_batch(refs[exp], params=PARAMS)
        client.log_inputs(refs[exp], datasets=[dataset()])
    store = sql_batch.sql_store(client)
    experiments = (first, second, first)
    created = sql_batch.create_runs(store, [sql_batch.NewRun(exp, "lr=0.1", tags, PARAMS) for exp in experiments],
                                    dataset())
    for (rid, artifact_uri), exp in zip(created, experiments):
        assert created_as_read(client, rid) == created_as_read(client, refs[exp])
        assert artifact_uri == client.get_run(rid).info.artifact_uri
        assert abs(client.get_run(rid).info.start_time - client.get_run(refs[exp]).info.start_time) < 60_000
    # MLflow's search finds them as its own: by param, by tag and by name.
    found = client.search_runs([first, second],
                               "params.lr = '0.1' and tags.cfg = '9f' and attributes.run_name = 'lr=0.1'")
    assert sorted(r.info.run_id for r in found) == sorted([*refs.values(), *(rid for rid, _ in created)])
    # A long param value is truncated as MLflow truncates it.
    assert 0 < len(client.get_run(created[0][0]).data.params["note"]) < 10_000


def test_a_new_experiments_dataset_row_is_made_once(client):
    exp = client.create_experiment(f"sql-batch-{uuid.uuid4().hex}")
    store = sql_batch.sql_store(client)
    created = sql_batch.create_runs(store, [sql_batch.NewRun(exp, f"r{i}", {}, []) for i in range(3)], dataset())
    ref = client.create_run(exp).info.run_id
    client.log_inputs(ref, datasets=[dataset()])  # MLflow finds the row made above and links to it
    assert len({d.dataset.digest for rid in [ref, *(r for r, _ in created)]
                for d in client.get_run(rid).inputs.dataset_inputs}) == 1
    with store.engine.connect() as db:  # MLflow's experiment-datasets listing, one query down
        rows = db.execute(sa.text("select count(*) from datasets where experiment_id = :e"), {"e": int(exp)})
        assert rows.scalar() == 1


def test_what_it_cannot_write_it_leaves_untouched_for_mlflows_own_path(client):
    run, other, deleted = new_runs(client, 3)
    store = sql_batch.sql_store(client)
    assert sql_batch.log_metrics(store, {run: BATCHES[0]})
    before = as_read(client, run)
    # The same rows again collide with the ones there: rolled back, the other run's rows too.
    assert not sql_batch.log_metrics(store, {run: BATCHES[0], other: BATCHES[1]})
    client.delete_run(deleted)
    assert not sql_batch.log_metrics(store, {other: BATCHES[1], deleted: BATCHES[1]})
    assert as_read(client, run) == before
    assert as_read(client, other) == ({}, {}, {})
    # MLflow's own path then drops the repeated values.
    client.log_batch(run, metrics=BATCHES[0])
    assert as_read(client, run) == before
    # No run is created when one of the experiments is deleted: MLflow's create_run says why.
    live, gone = (client.create_experiment(f"sql-batch-{uuid.uuid4().hex}") for _ in range(2))
    client.delete_experiment(gone)
    assert sql_batch.create_runs(store, [sql_batch.NewRun(e, "r", {}, PARAMS) for e in (live, gone)], dataset()) is None
    assert client.search_runs([live, gone], run_view_type=ViewType.ALL) == []


def test_invalid_values_are_refused_by_mlflows_own_validation(client):
    (run,) = new_runs(client, 1)
    exp = client.get_run(run).info.experiment_id
    store = sql_batch.sql_store(client)
    with pytest.raises(Exception, match="Invalid value"):
        sql_batch.log_metrics(store, {run: [Metric("loss", "not a number", 1000, 0)]})
    with pytest.raises(Exception, match="Names may only contain"):
        sql_batch.create_runs(store, [sql_batch.NewRun(exp, "ok", {}, PARAMS),
                                      sql_batch.NewRun(exp, "bad", {}, [Param("lr!", "0.1")])])
    with pytest.raises(Exception, match="Names may only contain"):
        sql_batch.create_runs(store, [sql_batch.NewRun(exp, "bad", {"tag?": "1"}, [])])
    assert as_read(client, run) == ({}, {}, {})
    assert [r.info.run_id for r in client.search_runs([exp])] == [run]


def test_a_tracking_server_is_written_through_mlflows_client():
    assert sql_batch.sql_store(MlflowClient("http://127.0.0.1:9")) is None
