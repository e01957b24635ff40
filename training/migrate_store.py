"""Copy every run of one MLflow store into another, e.g. the local SQLite store into a team tracking server.

    python -m training.migrate_store --to http://mlflow-host:5000 [--from sqlite:///mlflow_runs/mlflow.db]

Runs keep their params, full metric histories (steps and timestamps), tags,
datasets, status and times, their artifacts (snapshots) and their logged
models; grid children stay nested under their copied parents.  Each copy is
tagged with its source run id, so a second invocation copies only what is new.
Run ids change: links that hold old run ids point at the source store.
"""
import argparse
import os
import tempfile
from pathlib import Path

from mlflow.entities import LoggedModelOutput, Metric, Param, ViewType
from mlflow.tracking import MlflowClient

from training import contract as C
from training.errors import UserError, exit_on_user_error
from training.location import default_tracking_uri, sqlite_artifact_root
from training.tracking.store_connection import check_reachable, retry

BATCH = 1000  # MLflow's log_batch limit for metrics


def _experiment(src_exp, dst: MlflowClient, dst_uri: str) -> str:
    found = dst.get_experiment_by_name(src_exp.name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise UserError(f"experiment '{src_exp.name}' is deleted in {dst_uri}; restore it there first")
        return found.experiment_id
    tags = {k: v for k, v in src_exp.tags.items() if not k.startswith("mlflow.")}
    return dst.create_experiment(src_exp.name, artifact_location=sqlite_artifact_root(dst_uri), tags=tags)


def _copy_run(run, src: MlflowClient, dst: MlflowClient, dst_exp: str, id_map: dict[str, str], src_uri: str) -> str:
    tags = dict(run.data.tags)
    if C.TAG_PARENT_RUN_ID in tags:
        tags[C.TAG_PARENT_RUN_ID] = id_map.get(tags[C.TAG_PARENT_RUN_ID], tags[C.TAG_PARENT_RUN_ID])
    tags[C.TAG_SOURCE_RUN] = run.info.run_id
    new = retry(dst.create_run, dst_exp, start_time=run.info.start_time, tags=tags, run_name=run.info.run_name).info
    rid = new.run_id
    params = [Param(k, v) for k, v in run.data.params.items()]
    for i in range(0, len(params), 100):
        retry(dst.log_batch, rid, params=params[i:i + 100])
    for key in run.data.metrics:
        hist = [Metric(m.key, m.value, m.timestamp, m.step) for m in src.get_metric_history(run.info.run_id, key)]
        for i in range(0, len(hist), BATCH):
            retry(dst.log_batch, rid, metrics=hist[i:i + BATCH])
    if run.inputs and run.inputs.dataset_inputs:
        retry(dst.log_inputs, rid, datasets=run.inputs.dataset_inputs)
    with tempfile.TemporaryDirectory(prefix="migrate-") as tmp:
        if src.list_artifacts(run.info.run_id):
            local = src.download_artifacts(run.info.run_id, "", tmp)
            retry(dst.log_artifacts, rid, local)
    _copy_models(run, src, dst, dst_exp, rid, src_uri)
    if run.info.status != C.STATUS_RUNNING:
        retry(dst.set_terminated, rid, run.info.status, end_time=run.info.end_time)
    return rid


def _copy_models(run, src: MlflowClient, dst: MlflowClient, dst_exp: str, new_run_id: str, src_uri: str) -> None:
    """The run's logged models (MLflow 3 keeps them beside the run, not in its artifacts)."""
    import mlflow.artifacts
    models = src.search_logged_models([run.info.experiment_id],
                                      filter_string=f"source_run_id = '{run.info.run_id}'", max_results=100)
    for m in models:
        copy = retry(dst.create_logged_model, dst_exp, name=m.name, source_run_id=new_run_id,
                     tags={k: v for k, v in m.tags.items() if not k.startswith("mlflow.")},
                     params=m.params, model_type=m.model_type)
        with tempfile.TemporaryDirectory(prefix="migrate-model-") as tmp:
            local = mlflow.artifacts.download_artifacts(artifact_uri=m.artifact_location, dst_path=tmp,
                                                        tracking_uri=src_uri)
            retry(dst.log_model_artifacts, copy.model_id, local)
        retry(dst.finalize_logged_model, copy.model_id, str(m.status))
        retry(dst.log_outputs, new_run_id, [LoggedModelOutput(copy.model_id, 0)])


def migrate(src_uri: str, dst_uri: str, log=print) -> dict[str, int]:
    """Copy every active run of src into dst, skipping runs copied before.  Returns experiment name -> runs copied."""
    if src_uri == dst_uri:
        raise UserError(f"--from and --to are the same store ({src_uri})")
    if src_uri.startswith("sqlite:///") and not Path(src_uri[len("sqlite:///"):].split("?", 1)[0]).is_file():
        raise UserError(f"no SQLite store at {src_uri}; pass the store to copy with --from")
    for uri in (src_uri, dst_uri):
        check_reachable(uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per run drowns the report
    src, dst = MlflowClient(src_uri), MlflowClient(dst_uri)
    copied = {}
    for exp in src.search_experiments(view_type=ViewType.ACTIVE_ONLY):
        runs = src.search_runs([exp.experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=50_000)
        if not runs:
            continue
        dst_exp = _experiment(exp, dst, dst_uri)
        before = dst.search_runs([dst_exp], f"tags.`{C.TAG_SOURCE_RUN}` != ''", max_results=50_000)
        id_map = {r.data.tags[C.TAG_SOURCE_RUN]: r.info.run_id for r in before}
        todo = [r for r in runs if r.info.run_id not in id_map]
        # Parents first, so every child's parent id can be rewritten to the parent's copy.
        todo.sort(key=lambda r: (C.TAG_PARENT_RUN_ID in r.data.tags, r.info.start_time or 0))
        for run in todo:
            id_map[run.info.run_id] = _copy_run(run, src, dst, dst_exp, id_map, src_uri)
        copied[exp.name] = len(todo)
        log(f"experiment '{exp.name}': {len(todo)} run(s) copied, {len(runs) - len(todo)} already there")
    return copied


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.migrate_store", description=__doc__.splitlines()[0])
    p.add_argument("--to", required=True, help="destination tracking URI, e.g. http://mlflow-host:5000")
    p.add_argument("--from", dest="src", default=default_tracking_uri(),
                   help="source tracking URI (default: the local store in mlflow_runs/)")
    args = p.parse_args(argv)
    copied = migrate(args.src, args.to)
    print(f"{sum(copied.values())} run(s) copied from {args.src} to {args.to}")
    return 0


if __name__ == "__main__":
    exit_on_user_error(main)
