"""Writing runs to MLflow: the store, the experiment, and one MLflow run per model of a cohort.

A cohort of K models logs K runs side by side, by explicit run ids, through MlflowClient's public calls
only (create_run, log_batch, log_inputs, log_artifact), each write retried through a busy or lost store
(training.tracking.store_connection) and each log_batch kept within MLflow's documented limits per call.
Every run is tagged at creation with the code that takes its optimizer steps (C.TAG_STEP_PATH).
MLflow's own per-request retries are kept small (MLFLOW_HTTP_REQUEST_MAX_RETRIES / _BACKOFF_FACTOR /
_TIMEOUT default to 2 / 1 / 30 here, unless set) so that our loop, not MLflow's, bounds the wait.
How the runs end is training.tracking.lifecycle's job; each run's description, written
when it ends, comes from training.tracking.run_description over the epochs logged here.

Epochs are written off the training thread (training.tracking.background_writer), each
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
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, SourceType
from mlflow.tracking import MlflowClient

from training import contract as C
from training.config import N_CLASSES, RunConfig
from training.engine.running_best import RunningBest
from training.engine.steps import step_path
from training.errors import UserError
from training.location import DEFAULT_STORE, sqlite_artifact_root, tracking_uri, uses_default_store
from training.nets.data import Mnist, raw_dir
from training.nets.models import layers_of, n_params
from training.tracking import layer_summaries
from training.tracking.background_writer import BackgroundWriter
from training.tracking.lifecycle import OpenRuns, RunLifecycle
from training.tracking.run_description import History, Predictions, describe
from training.tracking.store_connection import TrackingLostError, check_reachable, retry


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
    # Dataset.to_dict() is MLflow's documented description of a dataset (name, digest, source, source type),
    # exactly the fields of the entity that log_inputs takes.
    return DatasetInput(Dataset(**ds.to_dict()), tags=[InputTag("mlflow.data.context", "train+test")])


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


# MLflow's documented limits on one log_batch call: 1000 metrics, 100 params, 100 tags, 1000 values in all.
MAX_BATCH_METRICS, MAX_BATCH_PARAMS, MAX_BATCH_TAGS = 1000, 100, 100


def log_batch(mlflow_client: MlflowClient, run_id: str, metrics=(), params=(), tags=()) -> None:
    """MlflowClient.log_batch, in one call when MLflow's limits per call allow (each call's cost is mostly the
    call), else in as many as they need; each retried."""
    if len(params) <= MAX_BATCH_PARAMS and len(tags) <= MAX_BATCH_TAGS \
            and len(metrics) + len(params) + len(tags) <= MAX_BATCH_METRICS:
        if metrics or params or tags:
            retry(mlflow_client.log_batch, run_id, metrics=list(metrics), params=list(params), tags=list(tags))
        return
    for i in range(0, len(params), MAX_BATCH_PARAMS):
        retry(mlflow_client.log_batch, run_id, params=list(params[i:i + MAX_BATCH_PARAMS]))
    for i in range(0, len(tags), MAX_BATCH_TAGS):
        retry(mlflow_client.log_batch, run_id, tags=list(tags[i:i + MAX_BATCH_TAGS]))
    for i in range(0, len(metrics), MAX_BATCH_METRICS):
        retry(mlflow_client.log_batch, run_id, metrics=list(metrics[i:i + MAX_BATCH_METRICS]))


@dataclass
class RunStart:
    """A run just created: its params and dataset link, waiting for the writer thread with its first epoch."""
    k: int
    params: list[Param]
    dataset: DatasetInput


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

    `runs` holds the runs not yet ended: wrap the training in `training.tracking.lifecycle.RunLifecycle(sink.runs)`.
    `source` names where the runs come from (see `source_tags`); each run is described when it ends.
    """

    def __init__(self, mlflow_client: MlflowClient, configs: list[RunConfig], data: Mnist,
                 extra_tags: list[dict[str, str]] | None = None, source: str | None = None):
        self.client, self.configs = mlflow_client, configs
        self.run_ids: list[str] = []
        self.writer: BackgroundWriter[RunStart | EpochWrite] = BackgroundWriter(self._write)
        self.runs = RunsFlushedFirst(mlflow_client, self.writer)
        self.last_epoch: dict[int, int] = {}  # k -> last epoch whose metrics reached the store
        self.history: list[History] = [[] for _ in configs]  # what each run logged, for its description
        self.predictions: list[Predictions | None] = [None] * len(configs)  # from each run's last snapshot
        self.best = [RunningBest() for _ in configs]
        self._tmp = tempfile.TemporaryDirectory(prefix="snapshots-")
        tags = [{C.TAG_CONFIG_HASH: config.config_hash, C.TAG_STEP_PATH: step_path(config, configs),
                 **source_tags(source), **(extra_tags[k] if extra_tags else {})} for k, config in enumerate(configs)]
        experiments = {name: experiment_id(mlflow_client, name) for name in dict.fromkeys(c.experiment for c in configs)}
        dataset = _dataset_input(data)
        # Run by run, so a failure part way leaves some created: those end as the lifecycle ends any run
        # (FAILED with the error, KILLED on Ctrl-C, abandoned on a lost server), never left RUNNING.
        try:
            for k, config in enumerate(configs):
                self._create(k, experiments[config.experiment], tags[k], run_params(config, data), dataset)
        except BaseException as e:
            RunLifecycle(self.runs, announce=False).__exit__(type(e), e, e.__traceback__)  # raises, or ends them FAILED
            raise

    def _create(self, k: int, exp_id: str, tags: dict[str, str], params: dict[str, str], dataset: DatasetInput):
        config = self.configs[k]
        run_id = retry(self.client.create_run, exp_id, run_name=config.display_name, tags=tags).info.run_id
        self.run_ids.append(run_id)
        self.runs.add(run_id, partial(self.describe, k))
        # Off the path the user waits on: the writer sends the params in its first log_batch for the run, with
        # the first epoch's metrics, and links the dataset; any end of the run flushes it first.
        self.writer.put(RunStart(k, [Param(key, value) for key, value in params.items()], dataset))

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

    def _write(self, jobs: list[RunStart | EpochWrite]) -> None:
        """On the writer thread: each run's params (once) and queued epochs in as few log_batch calls as MLflow's
        limits allow, its dataset link, then the snapshots."""
        starts = {job.k: job for job in jobs if isinstance(job, RunStart)}
        epochs = [job for job in jobs if isinstance(job, EpochWrite)]
        per_run: dict[int, list[Metric]] = {k: [] for k in starts}
        for job in epochs:
            per_run.setdefault(job.k, []).extend(Metric(key, value, job.timestamp, job.epoch)
                                                 for key, value in job.metrics.items())
        for k, metrics in per_run.items():
            log_batch(self.client, self.run_ids[k], metrics=metrics, params=starts[k].params if k in starts else ())
        for k, start in starts.items():
            log_dataset(self.client, self.run_ids[k], start.dataset)
        for job in epochs:
            self.last_epoch[job.k] = job.epoch
            self.history[job.k].append((job.epoch, job.metrics))
        snapshots: dict[int, list[EpochWrite]] = {}
        for job in epochs:
            if job.snapshot is not None:
                snapshots.setdefault(job.k, []).append(job)
        for k, run_jobs in snapshots.items():
            self._log_snapshots(k, run_jobs)

    def _log_snapshots(self, k: int, jobs: list[EpochWrite]) -> None:
        """Run k's queued snapshots in one log_artifacts call: a call's cost is mostly the call, not its files."""
        rid = self.run_ids[k]
        folder = Path(self._tmp.name) / rid
        folder.mkdir(parents=True, exist_ok=True)
        for job in jobs:
            self.predictions[k] = (job.epoch, np.bincount(job.snapshot[C.PRED_CLASS], minlength=N_CLASSES).tolist())
            np.savez(folder / C.snapshot_path(job.epoch).rsplit("/", 1)[1], **job.snapshot)
        retry(self.client.log_artifacts, rid, str(folder), C.SNAPSHOT_DIR)
        for path in folder.iterdir():
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
                log_model(self.run_ids[k], self.configs[k], params, self.last_epoch.get(k, 0))
                layer_summaries.log_at_end(self.client, self.run_ids[k], self.configs[k], params, self.last_epoch.get(k))
                self.runs.end(self.run_ids[k], C.STATUS_FINISHED)


def log_model(run_id: str, config: RunConfig, params, step: int = 0) -> None:
    """The final model, after `step` epochs, as an MLflow logged model of its run, through MLflow's
    logged-model API: the weights as a plain .npz, the config as JSON and a python_function flavor
    (training.nets.saved_model), no pickle.

    MLflow's PyTorch flavor cost the first log in a process 2.5 s (torch.export's imports and a scan of
    every installed package), more than a 100-image run trains; this costs a few store calls.
    A second Ctrl-C part-way (the first only asks to stop after it) marks the begun model FAILED instead
    of leaving it PENDING, and goes on up for the run to end KILLED.
    """
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model
    from training.nets import saved_model
    mlflow_client = MlflowClient(tracking_uri())
    run = retry(mlflow_client.get_run, run_id)
    experiment = run.info.experiment_id
    try:
        # The run's params on the model too, as MLflow's log_model puts them, so its models page compares them.
        model = retry(mlflow_client.create_logged_model, experiment, name=C.MODEL_NAME, source_run_id=run_id,
                      params=run.data.params, model_type=config.arch)
        retry(mlflow_client.log_outputs, run_id, [LoggedModelOutput(model.model_id, step)])
        with tempfile.TemporaryDirectory(prefix="model-") as tmp:
            saved_model.write(Path(tmp), config, params, Model(artifact_path=model.artifact_location, run_id=run_id,
                                                              model_uuid=model.model_id, model_id=model.model_id))
            retry(mlflow_client.log_model_artifacts, model.model_id, tmp)
        retry(mlflow_client.finalize_logged_model, model.model_id, LoggedModelStatus.READY)
    except KeyboardInterrupt:
        _fail_unfinished_models(experiment, run_id)
        raise


def _fail_unfinished_models(experiment: str, run_id: str) -> None:
    """Mark FAILED the run's logged models still PENDING; one quick try each, as the store may be gone."""
    from mlflow.entities import LoggedModelStatus
    mlflow_client = MlflowClient(tracking_uri())
    try:
        for model in retry(mlflow_client.search_logged_models, [experiment], budget=0,
                           filter_string=f"source_run_id = '{run_id}'"):
            if model.status == LoggedModelStatus.PENDING:
                retry(mlflow_client.finalize_logged_model, model.model_id, LoggedModelStatus.FAILED, budget=0)
    except Exception as e:  # noqa: BLE001 (the run still ends KILLED; the stop must not fail on this)
        print(f"warning: run {run_id[:8]}: its unfinished model stays PENDING ({str(e).splitlines()[0][:160]})",
              file=sys.stderr)
