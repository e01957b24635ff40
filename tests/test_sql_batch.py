"""training.sql_batch against its reference, MLflow's own log_batch: the same values written both ways read back
the same through MlflowClient, in SQLite and in PostgreSQL; what it cannot write, it leaves untouched."""
import math
import uuid

import pytest
from mlflow.entities import Metric, Param
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


def test_params_of_several_runs_read_back_as_after_mlflows_log_batch(client):
    ref, ours_a, ours_b = new_runs(client, 3)
    store = sql_batch.sql_store(client)
    client.log_batch(ref, params=PARAMS)
    assert sql_batch.log_params(store, {ours_a: PARAMS, ours_b: PARAMS})
    assert as_read(client, ours_a) == as_read(client, ours_b) == as_read(client, ref)
    assert 0 < len(as_read(client, ours_a)[2]["note"]) < 10_000


def test_what_it_cannot_write_it_leaves_untouched_for_mlflows_own_path(client):
    run, other, deleted = new_runs(client, 3)
    store = sql_batch.sql_store(client)
    assert sql_batch.log_metrics(store, {run: BATCHES[0]}) and sql_batch.log_params(store, {run: PARAMS})
    before = as_read(client, run)
    # The same rows again collide with the ones there; a param key again likewise: rolled back, other run too.
    assert not sql_batch.log_metrics(store, {run: BATCHES[0], other: BATCHES[1]})
    assert not sql_batch.log_params(store, {other: PARAMS, run: [Param("lr", "0.2")]})
    client.delete_run(deleted)
    assert not sql_batch.log_metrics(store, {other: BATCHES[1], deleted: BATCHES[1]})
    assert as_read(client, run) == before
    assert as_read(client, other) == ({}, {}, {})
    # MLflow's own path then drops the repeated values, and raises its own error for a changed param.
    client.log_batch(run, metrics=BATCHES[0])
    assert as_read(client, run) == before
    with pytest.raises(Exception, match="Changing param values is not allowed"):
        client.log_batch(run, params=[Param("lr", "0.2")])


def test_invalid_values_are_refused_by_mlflows_own_validation(client):
    (run,) = new_runs(client, 1)
    store = sql_batch.sql_store(client)
    with pytest.raises(Exception, match="Invalid value"):
        sql_batch.log_metrics(store, {run: [Metric("loss", "not a number", 1000, 0)]})
    with pytest.raises(Exception, match="Names may only contain"):
        sql_batch.log_params(store, {run: [Param("lr!", "0.1")]})
    assert as_read(client, run) == ({}, {}, {})


def test_a_tracking_server_is_written_through_mlflows_client():
    assert sql_batch.sql_store(MlflowClient("http://127.0.0.1:9")) is None
