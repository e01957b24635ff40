"""Many runs' metrics, or params, in one transaction, when the store is MLflow's own SQL store (SQLite,
PostgreSQL, MySQL).

MlflowClient.log_batch spends about 9 ms of CPU per run and call on this machine: four sessions, a
query that reads the whole run back, and an ORM object for every value.  A grid writes each epoch of
each of its K runs, and on 2 cores that CPU is taken from the training threads.  Here the writes of
all K runs are one transaction of a few bulk statements.

What is written is checked by MLflow's own validation and goes into MLflow's own tables, through its
ORM models (mlflow.store.tracking.dbmodels), as its SqlAlchemyStore writes them: every metric value
into `metrics`, NaN as 0 with is_nan set, ±inf as ±the largest float; `latest_metrics` keeps, per run
and key, the value with the greatest (step, timestamp, value).  tests/test_sql_batch.py checks that
MLflow reads back the same as after its own log_batch.

Both writers return False, having written nothing, when they cannot take this path (a run that is not
active; rows that collide with rows already there, such as a param logged before).  The caller then
writes through MlflowClient, which raises MLflow's own error, or drops repeated values as MLflow does.
"""
import math

from mlflow.entities import LifecycleStage, Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import _validate_batch_log_data

LARGEST = 1.7976931348623157e308  # what MLflow stores for ±inf: SQL has no infinity


def sql_store(client: MlflowClient):
    """The client's SqlAlchemyStore, or None when it talks to a tracking server or another kind of store."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    return store if isinstance(store, SqlAlchemyStore) else None


def _metric_row(run_id: str, metric: Metric) -> dict:
    value = float(metric.value)
    is_nan = math.isnan(value)
    if is_nan:
        value = 0.0
    elif math.isinf(value):
        value = LARGEST if value > 0 else -LARGEST
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


def _in_one_transaction(store, write) -> bool:
    """Run write(session) in one transaction; False when it says so or collides with rows already there."""
    import sqlalchemy as sa
    try:
        with store.ManagedSessionMaker(read_only=False) as session:
            return write(session)  # on False nothing has been written: the session commits nothing
    except MlflowException as e:
        if isinstance(e.__cause__, sa.exc.IntegrityError):  # rolled back
            return False
        raise


def log_metrics(store, metrics_per_run: dict[str, list[Metric]]) -> bool:
    """Write every run's metrics in one transaction; False (nothing written) when MLflow's own path must."""
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric

    for metrics in metrics_per_run.values():
        _validate_batch_log_data(metrics, [], [])
    # Identical values once, as MLflow keeps them.
    rows = list({tuple(r.values()): r for run_id, metrics in metrics_per_run.items()
                 for r in (_metric_row(run_id, m) for m in metrics)}.values())
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
    return _in_one_transaction(store, write)


def log_params(store, params_per_run: dict[str, list[Param]]) -> bool:
    """Write every run's params in one transaction; False (nothing written) when MLflow's own path must,
    as when a run already has one of the keys."""
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlParam

    rows = []
    for run_id, params in params_per_run.items():
        _, params, _ = _validate_batch_log_data([], params, [])
        rows += [{"run_uuid": run_id, "key": p.key, "value": p.value} for p in params]
    if not rows:
        return True
    run_ids = sorted(params_per_run)

    def write(session) -> bool:
        if not _active(session, run_ids):
            return False
        session.execute(sa.insert(SqlParam.__table__), rows)  # a key already there: IntegrityError
        return True
    return _in_one_transaction(store, write)
