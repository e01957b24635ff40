"""Writing runs to MLflow: the store, the experiment, and one MLflow run per model of a cohort.

A cohort of K models logs K runs side by side, by explicit run ids, each write
retried through a busy or lost store (training.store_connection).  Against
MLflow's own SQL store the K runs are created, and each batch of their epochs
written, in one transaction (training.sql_batch); against a tracking server,
through MlflowClient run by run.  MLflow's own per-request retries are kept
small (MLFLOW_HTTP_REQUEST_MAX_RETRIES / _BACKOFF_FACTOR / _TIMEOUT default to
2 / 1 / 30 here, unless set) so that our loop, not MLflow's, bounds the wait.
How the runs end is training.lifecycle's job; each run's description, written
when it ends, comes from training.run_description over the epochs logged here.

Epochs are written off the training thread (training.background_writer), each
write taking every epoch queued until a short pause; every queued write is in
the store before any run ends, however it ends.
"""
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from mlflow.entities import DatasetInput, InputTag, Metric, Param, SourceType
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.tracking import MlflowClient

from training import contract as C
from training import layer_summaries, sql_batch
from training.background_writer import BackgroundWriter
from training.config import N_CLASSES, RunConfig
from training.data import Mnist, raw_dir
from training.errors import UserError
from training.lifecycle import OpenRuns
from training.location import DEFAULT_STORE, sqlite_artifact_root, tracking_uri, uses_default_store
from training.models import layers_of, n_params, to_module
from training.run_description import History, Predictions, describe
from training.running_best import RunningBest
from training.store_connection import TrackingLostError, check_reachable, retry


def client() -> MlflowClient:
    """A client for the configured store, checked to be reachable."""
    import mlflow
    uri = tracking_uri()
    if uses_default_store():
        DEFAULT_STORE.mkdir(parents=True, exist_ok=True)
    check_reachable(uri)
    # Against a server MLflow prints two "View run" links per run ended: noise in the grid's fixed-format output.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # MLflow's defaults (7 retries, factor 2, 120 s timeout) stall a dead server's every request for minutes;
    # keep them small so retry() bounds the total wait.  Users can still set their own.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def experiment_id(mlflow_client: MlflowClient, name: str) -> str:
    """Get or create the experiment; in a SQLite store a new one keeps its artifacts beside the database."""
    try:
        exp = mlflow_client.get_experiment_by_name(name)
    except Exception as e:
        raise UserError(f"cannot reach the MLflow store at {tracking_uri()}: {str(e).splitlines()[0][:200]}") from e
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise UserError(f"experiment '{name}' is deleted in the store; restore it or pick another --experiment")
        return exp.experiment_id
    location = sqlite_artifact_root(tracking_uri())
    try:
        return mlflow_client.create_experiment(name, artifact_location=location,
                                               tags={C.TAG_EXPERIMENT_KIND: C.EXPERIMENT_KIND})
    except Exception:
        exp = mlflow_client.get_experiment_by_name(name)  # another process created it first
        if exp is None:
            raise
        return exp.experiment_id


def source_tags(name: str | None = None) -> dict[str, str]:
    """Where a run came from, in MLflow's own source tags: `name` (the CLI, a grid file), else the script
    that is running, as MLflow's fluent API would record it."""
    if name is None:
        script = Path(sys.argv[0]).resolve()
        name = str(script.relative_to(Path.cwd())) if script.is_relative_to(Path.cwd()) else sys.argv[0]
    return {C.TAG_SOURCE_NAME: name, C.TAG_SOURCE_TYPE: SourceType.to_string(SourceType.LOCAL)}


def run_params(config: RunConfig, data: Mnist) -> dict[str, str]:
    params = config.as_params()
    params[C.PARAM_ARCH_LABEL] = config.arch_name
    params[C.PARAM_N_PARAMS] = str(n_params(config))
    params[C.PARAM_DATASET] = C.DATASET_NAME
    params[C.PARAM_LAYERS] = ",".join(l.name for l in layers_of(config))
    for name, digest in data.sha256.items():
        params[C.PARAM_SHA256_PREFIX + name] = digest
    return params


def _dataset_input(data: Mnist) -> DatasetInput:
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    digest = "".join(d[:2] for d in sorted(data.sha256.values()))
    ds = MetaDataset(LocalArtifactDatasetSource(str(raw_dir(data.root).resolve())), name=C.DATASET_NAME, digest=digest)
    return DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "train+test")])


def log_dataset(mlflow_client: MlflowClient, run_id: str, dataset: DatasetInput) -> None:
    """Link the dataset to a run.

    MLflow looks the dataset up and then inserts it, so two trainers linking the same new dataset at once
    collide on its unique key (SQLite and PostgreSQL alike).  The write is rolled back; a retry finds the row.
    """
    for attempt in range(5):
        try:
            return retry(mlflow_client.log_inputs, run_id, datasets=[dataset])
        except Exception as e:
            duplicate = any(s in str(e) for s in ("UNIQUE constraint", "UniqueViolation", "duplicate key"))
            if not duplicate or attempt == 4:
                raise
            time.sleep(0.05 * (1 + attempt) * (0.5 + random.random()))


MAX_BATCH_METRICS = 1000  # MLflow's limit per log_batch


@dataclass
class EpochWrite:
    """One model's epoch, as the engine reported it, waiting for the writer thread."""
    k: int
    epoch: int
    metrics: dict[str, float]
    timestamp: int
    snapshot: dict[str, np.ndarray] | None


class RunsFlushedFirst(OpenRuns):
    """Open runs whose writer has written everything queued before any of them ends."""

    def __init__(self, mlflow_client: MlflowClient, writer: BackgroundWriter):
        super().__init__(mlflow_client)
        self.writer = writer

    def end(self, run_id, status=C.STATUS_FINISHED, reason=None, budget=None) -> None:
        if run_id in self:
            self.writer.flush(raise_error=False)  # the error, if any, reaches the training thread, not the ending
        super().end(run_id, status, reason, budget)
        if not len(self):
            self.writer.close(raise_error=False)


class MlflowSink:
    """One MLflow run per model of a cohort; receives the engine's epochs.

    `runs` holds the runs not yet ended: wrap the training in `training.lifecycle.RunLifecycle(sink.runs)`.
    `source` names where the runs come from (see `source_tags`); each run is described when it ends.
    """

    def __init__(self, mlflow_client: MlflowClient, configs: list[RunConfig], data: Mnist,
                 extra_tags: list[dict[str, str]] | None = None, source: str | None = None):
        self.client, self.configs = mlflow_client, configs
        self.run_ids: list[str] = []
        self.artifacts: list[ArtifactRepository] = []  # each run's artifact store, in run_ids' order
        self.writer: BackgroundWriter[EpochWrite] = BackgroundWriter(self._write)
        self._sql = sql_batch.sql_store(mlflow_client)  # None: every write goes through MlflowClient
        self.runs = RunsFlushedFirst(mlflow_client, self.writer)
        self.last_epoch: dict[int, int] = {}  # k -> last epoch whose metrics reached the store
        self.history: list[History] = [[] for _ in configs]  # what each run logged, for its description
        self.predictions: list[Predictions | None] = [None] * len(configs)  # from each run's last snapshot
        self.best = [RunningBest() for _ in configs]
        source = source_tags(source)
        self._tmp = tempfile.TemporaryDirectory(prefix="snapshots-")
        dataset = _dataset_input(data)
        experiments = {name: experiment_id(mlflow_client, name) for name in dict.fromkeys(c.experiment for c in configs)}
        extra_tags = extra_tags or [{}] * len(configs)
        new = [sql_batch.NewRun(experiments[config.experiment], config.display_name,
                                {C.TAG_CONFIG_HASH: config.config_hash, **source, **extra_tags[k]},
                                [Param(key, value) for key, value in run_params(config, data).items()])
               for k, config in enumerate(configs)]
        created = retry(sql_batch.create_runs, self._sql, new, dataset) if self._sql is not None else None
        if created is not None:
            for k, (rid, artifact_uri) in enumerate(created):
                self._opened(k, rid, artifact_uri)
            return
        for k, run in enumerate(new):  # through MlflowClient, each run ended however the next one's creation goes
            info = retry(mlflow_client.create_run, run.experiment_id, run_name=run.name, tags=run.tags).info
            self._opened(k, info.run_id, info.artifact_uri)
            retry(mlflow_client.log_batch, info.run_id, params=run.params)
            log_dataset(mlflow_client, info.run_id, dataset)

    def _opened(self, k: int, run_id: str, artifact_uri: str) -> None:
        self.run_ids.append(run_id)
        # Held from here: MlflowClient.log_artifact would read the whole run back (get_run) to find it.
        self.artifacts.append(get_artifact_repository(artifact_uri, tracking_uri=self.client.tracking_uri))
        self.runs.add(run_id, partial(self.describe, k))

    def log_epoch(self, k, epoch, metrics, snapshot):
        """Queue the epoch for the writer thread; raises what an earlier write failed with."""
        metrics = {**metrics, **self.best[k].update(epoch, metrics)}
        try:
            self.writer.put(EpochWrite(k, epoch, metrics, int(time.time() * 1000), snapshot))
        except TrackingLostError as e:
            raise TrackingLostError(f"{e}: {self.kept()}") from e.__cause__

    def flush(self) -> None:
        """Wait until every epoch reported so far is in the store."""
        try:
            self.writer.flush()
        except TrackingLostError as e:
            raise TrackingLostError(f"{e}: {self.kept()}") from e.__cause__

    def _write(self, jobs: list[EpochWrite]) -> None:
        """On the writer thread: every run's metrics in one transaction (a SQL store) or as few log_batch
        calls per run as fit (a server), then the snapshots."""
        per_run: dict[str, list[Metric]] = {}
        for job in jobs:
            per_run.setdefault(self.run_ids[job.k], []).extend(Metric(key, value, job.timestamp, job.epoch)
                                                               for key, value in job.metrics.items())
        if self._sql is None or not retry(sql_batch.log_metrics, self._sql, per_run):
            for run_id, metrics in per_run.items():
                for i in range(0, len(metrics), MAX_BATCH_METRICS):
                    retry(self.client.log_batch, run_id, metrics=metrics[i:i + MAX_BATCH_METRICS])
        for job in jobs:
            self.last_epoch[job.k] = job.epoch
            self.history[job.k].append((job.epoch, job.metrics))
        for job in jobs:
            if job.snapshot is not None:
                self._log_snapshot(job.k, job.epoch, job.snapshot)

    def _log_snapshot(self, k: int, epoch: int, snapshot: dict[str, np.ndarray]) -> None:
        rid, repo = self.run_ids[k], self.artifacts[k]
        self.predictions[k] = (epoch, np.bincount(snapshot[C.PRED_CLASS], minlength=N_CLASSES).tolist())
        name = C.snapshot_path(epoch).rsplit("/", 1)[1]
        write_in_place = getattr(repo, "_write_to_destination_path", None)
        if write_in_place is not None:
            # A local store (SQLite's artifacts beside the database): MLflow's own staged write, straight into
            # the run's folder, where log_artifact would first need a temp file to copy.
            return retry(write_in_place, name, partial(np.savez, **snapshot), C.SNAPSHOT_DIR)
        path = Path(self._tmp.name) / rid / name
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **snapshot)
        retry(repo.log_artifact, str(path), C.SNAPSHOT_DIR)
        path.unlink()

    def kept(self) -> str:
        """What the store keeps of this cohort's runs, for the lost-server message."""
        if len(self.run_ids) == 1:
            rid = self.run_ids[0]
            return (f"run {rid} keeps what it logged up to epoch {self.last_epoch[0]}" if 0 in self.last_epoch
                    else f"run {rid} logged no epoch")
        if not self.last_epoch:
            return f"its {len(self.run_ids)} runs logged no epoch"
        return f"its {len(self.run_ids)} runs keep what they logged up to epoch {max(self.last_epoch.values())}"

    def describe(self, k: int, status: str, reason: str | None) -> str:
        """Run k's description as it ends, from its config and the epochs it logged."""
        return describe(self.configs[k], self.history[k], status, reason, self.predictions[k])

    def fail(self, k, reason):
        self.runs.end(self.run_ids[k], C.STATUS_FAILED, reason)

    def finish(self, params_per_model) -> None:
        """Log each surviving model and end its run FINISHED."""
        self.flush()
        for k, params in enumerate(params_per_model):
            if params is not None and self.run_ids[k] in self.runs:
                log_model(self.run_ids[k], self.configs[k], params)
                layer_summaries.log_at_end(self.client, self.run_ids[k], self.configs[k], params, self.last_epoch.get(k))
                self.runs.end(self.run_ids[k], C.STATUS_FINISHED)


def log_model(run_id: str, config: RunConfig, params) -> None:
    """The final model as an MLflow PyTorch model (safe pt2 format), attached to its run."""
    import mlflow
    import torch
    module = to_module(config, params)
    example = np.zeros((2, 784), dtype=np.float32)  # batch > 1 keeps the exported batch dim dynamic
    with retry(mlflow.start_run, run_id=run_id, log_system_metrics=False):
        retry(mlflow.pytorch.log_model, module, name=C.MODEL_NAME, input_example=example,
              pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
