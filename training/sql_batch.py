"""A cohort's runs created, and its metrics written, in one transaction each, when the store is MLflow's own
SQL store (SQLite, PostgreSQL, MySQL).

MlflowClient spends about 9 ms of CPU per run and call on this machine (log_batch: four sessions, a
query that reads the whole run back, an ORM object per value; create_run, log_inputs alike).  A grid
creates K runs and writes each epoch of each, and on 2 cores that CPU is taken from the training
threads.  Here all K runs are one transaction of a few bulk statements.

What is written is checked by MLflow's own validation and goes into MLflow's own tables, through its
ORM models (mlflow.store.tracking.dbmodels), as its SqlAlchemyStore writes them: a run as create_run
makes it; every metric value into `metrics`, NaN as 0 with is_nan set, ±inf as ±the largest float;
`latest_metrics` keeping, per run and key, the value with the greatest (step, timestamp, value).
tests/test_sql_batch.py checks that MLflow reads back the same as after its own calls.

Both writers answer falsely, having written nothing, when they cannot take this path (a run or an
experiment that is not active; rows that collide with rows already there).  The caller then writes
through MlflowClient, which raises MLflow's own error, or drops repeated values as MLflow does.
"""
import uuid
from dataclasses import dataclass

from mlflow.entities import DatasetInput, LifecycleStage, Metric, Param, RunStatus, RunTag, SourceType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER
from mlflow.utils.time import get_current_time_millis
from mlflow.utils.uri import append_to_uri_path
from mlflow.utils.validation import _validate_batch_log_data

def sql_store(client: MlflowClient):
    """The client's SqlAlchemyStore, or None when it talks to a tracking server or another kind of store."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    return store if isinstance(store, SqlAlchemyStore) else None


def _metric_row(store, run_id: str, metric: Metric) -> dict:
    is_nan, value = store.sanitize_metric_value(float(metric.value))  # MLflow's own: NaN as 0, ±inf as ±max
    return {"run_uuid": run_id, "key": metric.key, "value": value, "timestamp": int(metric.timestamp),
            "step": int(metric.step), "is_nan": is_nan}


def _order(m) -> tuple:
    """MLflow's order for a key's latest value: by step, then timestamp, then value."""
    return (m["step"], m["timestamp"], m["value"]) if isinstance(m, dict) else (m.step, m.timestamp, m.value)


def _active(session, run_ids: list[str]) -> bool:
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlRun
    found = session.scalars(sa.select(SqlRun.run_uuid).where(
        SqlRun.run_uuid.in_(run_ids), SqlRun.lifecycle_stage == LifecycleStage.ACTIVE)).all()
    return len(found) == len(run_ids)


def _in_one_transaction(store, write):
    """write(session)'s answer, in one transaction; a false one, or False on colliding with rows already
    there, leaves nothing written."""
    import sqlalchemy as sa
    try:
        with store.ManagedSessionMaker(read_only=False) as session:
            return write(session)  # a false answer has written nothing: the session commits nothing
    except MlflowException as e:
        if isinstance(e.__cause__, sa.exc.IntegrityError):  # rolled back
            return None
        raise


def log_metrics(store, metrics_per_run: dict[str, list[Metric]]) -> bool:
    """Write every run's metrics in one transaction; False (nothing written) when MLflow's own path must."""
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric

    for metrics in metrics_per_run.values():
        _validate_batch_log_data(metrics, [], [])
    # Identical values once, as MLflow keeps them.
    rows = list({tuple(r.values()): r for run_id, metrics in metrics_per_run.items()
                 for r in (_metric_row(store, run_id, m) for m in metrics)}.values())
    if not rows:
        return True
    run_ids = sorted(metrics_per_run)
    latest: dict[tuple[str, str], dict] = {}
    for r in rows:
        key = (r["run_uuid"], r["key"])
        if key not in latest or _order(r) > _order(latest[key]):
            latest[key] = r
    metrics_table, latest_table = SqlMetric.__table__, SqlLatestMetric.__table__

    def write(session) -> bool:
        if not _active(session, run_ids):
            return False
        # Locked in one order (run, key), as MLflow locks them, so that concurrent writers cannot deadlock.
        existing = {(m.run_uuid, m.key): m for m in session.execute(
            sa.select(latest_table).where(latest_table.c.run_uuid.in_(run_ids))
            .order_by(latest_table.c.run_uuid, latest_table.c.key).with_for_update())}
        session.execute(sa.insert(metrics_table), rows)
        inserts = [r for k, r in latest.items() if k not in existing]
        updates = [{"b_run": r["run_uuid"], "b_key": r["key"],
                    **{f: r[f] for f in ("value", "timestamp", "step", "is_nan")}}
                   for k, r in latest.items() if k in existing and _order(r) > _order(existing[k])]
        if inserts:
            session.execute(sa.insert(latest_table), inserts)
        if updates:
            session.execute(sa.update(latest_table).where(latest_table.c.run_uuid == sa.bindparam("b_run"),
                                                          latest_table.c.key == sa.bindparam("b_key")), updates)
        return True
    return bool(_in_one_transaction(store, write))


@dataclass
class NewRun:
    """A run to create: what MlflowClient.create_run, log_batch(params=...) and log_inputs would write."""
    experiment_id: str
    name: str
    tags: dict[str, str]
    params: list[Param]


def create_runs(store, runs: list[NewRun], dataset: DatasetInput | None = None) -> list[tuple[str, str]] | None:
    """Create every run RUNNING, with its tags, params and the dataset as its input, in one transaction.

    Returns each run's (id, artifact URI) in order; None, having written nothing, when MLflow's own path
    must (an experiment that is not active; the dataset's row created meanwhile by another trainer).
    """
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlParam, SqlRun, SqlTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    # MLflow's checks, and its params as it would keep them (a long value truncated); the callers' runs untouched.
    params_of = [_validate_batch_log_data([], run.params, [RunTag(k, v) for k, v in run.tags.items()])[1]
                 for run in runs]
    experiment_ids = sorted({int(run.experiment_id) for run in runs})
    start_time = get_current_time_millis()
    ids = [uuid.uuid4().hex for _ in runs]

    def write(session):
        experiments = {e.experiment_id: e for e in session.scalars(sa.select(SqlExperiment).where(
            SqlExperiment.experiment_id.in_(experiment_ids), SqlExperiment.lifecycle_stage == LifecycleStage.ACTIVE))}
        if len(experiments) != len(experiment_ids):
            return None
        uris, rows, tags, params = [], [], [], []
        for run_id, run, run_params in zip(ids, runs, params_of):
            exp = experiments[int(run.experiment_id)]
            uris.append(append_to_uri_path(exp.artifact_location, run_id, SqlAlchemyStore.ARTIFACTS_FOLDER_NAME))
            # As SqlAlchemyStore.create_run: the source type UNKNOWN (the tags hold the real one), the user
            # from the mlflow.user tag, and the name also as the mlflow.runName tag.
            rows.append({
                "run_uuid": run_id, "name": run.name, "artifact_uri": uris[-1], "experiment_id": exp.experiment_id,
                "source_type": SourceType.to_string(SourceType.UNKNOWN), "source_name": "", "entry_point_name": "",
                "user_id": run.tags.get(MLFLOW_USER, "unknown"), "status": RunStatus.to_string(RunStatus.RUNNING),
                "start_time": start_time, "end_time": None, "deleted_time": None, "source_version": "",
                "lifecycle_stage": LifecycleStage.ACTIVE})
            tags += [{"run_uuid": run_id, "key": k, "value": v}
                     for k, v in {MLFLOW_RUN_NAME: run.name, **run.tags}.items()]
            params += [{"run_uuid": run_id, "key": p.key, "value": p.value} for p in run_params]
        session.execute(sa.insert(SqlRun.__table__), rows)
        session.execute(sa.insert(SqlTag.__table__), tags)
        if params:
            session.execute(sa.insert(SqlParam.__table__), params)
        if dataset is not None:
            _link_dataset(session, dataset, [(experiments[int(run.experiment_id)].experiment_id, run_id)
                                             for run_id, run in zip(ids, runs)])
        return list(zip(ids, uris))

    return _in_one_transaction(store, write)


def _link_dataset(session, dataset: DatasetInput, runs: list[tuple[int, str]]) -> None:
    """As SqlAlchemyStore.log_inputs: the dataset's row once per experiment, an input edge and its tags per run."""
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlDataset, SqlInput, SqlInputTag
    d = dataset.dataset
    found = sa.select(SqlDataset.experiment_id, SqlDataset.dataset_uuid).where(
        SqlDataset.experiment_id.in_({exp for exp, _ in runs}), SqlDataset.name == d.name, SqlDataset.digest == d.digest)
    uuids = {exp: dataset_uuid for exp, dataset_uuid in session.execute(found)}
    for exp in sorted({exp for exp, _ in runs} - set(uuids)):  # a row another trainer adds meanwhile: IntegrityError
        uuids[exp] = uuid.uuid4().hex
        session.execute(sa.insert(SqlDataset.__table__), [{
            "dataset_uuid": uuids[exp], "experiment_id": exp, "name": d.name, "digest": d.digest,
            "dataset_source_type": d.source_type, "dataset_source": d.source, "dataset_schema": d.schema,
            "dataset_profile": d.profile}])
    edges, edge_tags = [], []
    for exp, run_id in runs:
        edge = uuid.uuid4().hex
        edges.append({"input_uuid": edge, "source_type": "DATASET", "source_id": uuids[exp],
                      "destination_type": "RUN", "destination_id": run_id})
        edge_tags += [{"input_uuid": edge, "name": t.key, "value": t.value} for t in dataset.tags]
    session.execute(sa.insert(SqlInput.__table__), edges)
    if edge_tags:
        session.execute(sa.insert(SqlInputTag.__table__), edge_tags)
