"""Writing runs to MLflow: the store, the experiment, and one MLflow run per model of a cohort.

All writes go through MlflowClient with explicit run ids, so a cohort of K
models logs K runs side by side.  SQLite writes retry on "database is locked"
so several trainers can share the default store.

A tracking server that goes away mid-run is retried with backoff for a bounded
time, MNISTLAB_TRACKING_RETRY_SECONDS per write (default 60), and then ends
the trainer with one TrackingLostError line; what the runs logged up to then
stays in the server's store.  MLflow's own per-request retries are kept small
(MLFLOW_HTTP_REQUEST_MAX_RETRIES / _BACKOFF_FACTOR / _TIMEOUT default to 2 /
1 / 30 here, unless set) so that our loop, not MLflow's, bounds the wait.
"""
import os
import random
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np
from mlflow.entities import DatasetInput, InputTag, Metric, Param
from mlflow.tracking import MlflowClient

from training import contract as C
from training import interrupt
from training.config import RunConfig
from training.data import Mnist, raw_dir
from training.errors import UserError
from training.location import DEFAULT_STORE, is_server, sqlite_artifact_root, tracking_uri, uses_default_store
from training.models import layers_of, n_params, to_module

DEFAULT_RETRY_SECONDS = 60.0


class TrackingLostError(UserError):
    """The tracking server stopped answering mid-run and kept not answering for the whole retry budget."""


RETRY_ENV = "MNISTLAB_TRACKING_RETRY_SECONDS"
# After Ctrl-C, ending the open runs waits this long at most on a store that does not answer.
STOP_BUDGET = 5.0


def retry_seconds() -> float:
    """How long one write keeps retrying a store that does not answer: MNISTLAB_TRACKING_RETRY_SECONDS, default 60."""
    raw = os.environ.get(RETRY_ENV, "")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_RETRY_SECONDS
    except ValueError:
        raise UserError(f"MNISTLAB_TRACKING_RETRY_SECONDS must be a number of seconds, not {raw!r}") from None


def check_reachable(uri: str) -> None:
    """Fail in seconds, before any training, when a tracking server is down (MLflow itself retries for minutes)."""
    if not is_server(uri):
        return
    import urllib.error
    import urllib.request
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10)
    except urllib.error.HTTPError:
        return  # it answered: a server is there, even if /health is not its page
    except OSError as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"cannot reach the MLflow tracking server at {uri} ({reason}); start it, "
                        f"or unset MLFLOW_TRACKING_URI to use the local store") from None


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
    # keep them small so retry() below bounds the total wait.  Users can still set their own.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def _lost_connection(e: Exception) -> bool:
    """The server did not answer (refused, reset, timed out, MLflow's own retries exhausted)."""
    text = str(e).lower()
    # A server killed mid-response breaks the connection rather than refusing it (IncompleteRead).
    broken = ("refused", "broken", "reset", "aborted", "remote end closed", "incompleteread")
    return (isinstance(e, (ConnectionError, TimeoutError)) or "Connection" in type(e).__name__
            or "max retries" in text or "timed out" in text
            or "connection" in text and any(word in text for word in broken))


def retry(fn, *args, budget: float | None = None, **kwargs):
    """Call an MLflow write, retrying with backoff on transient store errors (locked SQLite, a lost server).

    Retries for at most `budget` seconds (default retry_seconds()); budget=0 tries once.  A server still
    unreachable after that raises TrackingLostError; other errors propagate as they are.  A write with
    the default budget stops waiting on a lost server as soon as Ctrl-C or SIGTERM asks to stop
    (KeyboardInterrupt); cleanup writes pass their own budget and are not cut short.
    """
    stoppable = budget is None
    budget = retry_seconds() if budget is None else budget
    start, attempt = time.monotonic(), 0
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            locked = "locked" in str(e) or "busy" in str(e) or isinstance(e, sqlite3.OperationalError)
            lost = _lost_connection(e)
            elapsed = time.monotonic() - start
            if lost and stoppable and interrupt.requested():
                raise KeyboardInterrupt
            if not (locked or lost) or elapsed >= budget:
                if lost:
                    raise TrackingLostError(f"lost the MLflow tracking server at {tracking_uri()} mid-run "
                                            f"(retried for {elapsed:.0f} s)") from e
                raise
            pause = min(budget - elapsed, min(10.0, 0.1 * 2 ** attempt) * (0.5 + random.random()))
            end = time.monotonic() + pause
            while time.monotonic() < end and not (stoppable and interrupt.requested()):
                time.sleep(min(0.2, max(0.0, end - time.monotonic())))  # a signal only sets a flag: look often
            attempt += 1


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


class MlflowSink:
    """One MLflow run per model of a cohort; receives the engine's epochs."""

    def __init__(self, mlflow_client: MlflowClient, configs: list[RunConfig], data: Mnist,
                 extra_tags: list[dict[str, str]] | None = None):
        self.client, self.configs = mlflow_client, configs
        self.run_ids: list[str] = []
        self.open: set[int] = set()
        self.last_epoch: dict[int, int] = {}  # k -> last epoch whose metrics reached the store
        self._tmp = tempfile.TemporaryDirectory(prefix="snapshots-")
        dataset = _dataset_input(data)
        for k, config in enumerate(configs):
            exp = experiment_id(mlflow_client, config.experiment)
            tags = {C.TAG_CONFIG_HASH: config.config_hash, **((extra_tags or [{}] * len(configs))[k])}
            run = retry(mlflow_client.create_run, exp, run_name=config.display_name, tags=tags)
            rid = run.info.run_id
            self.run_ids.append(rid)
            self.open.add(k)
            params = [Param(key, value) for key, value in run_params(config, data).items()]
            retry(mlflow_client.log_batch, rid, params=params)
            log_dataset(mlflow_client, rid, dataset)

    def log_epoch(self, k, epoch, metrics, snapshot):
        rid = self.run_ids[k]
        ts = int(time.time() * 1000)
        try:
            retry(self.client.log_batch, rid, metrics=[Metric(key, value, ts, epoch) for key, value in metrics.items()])
            self.last_epoch[k] = epoch
            if snapshot is not None:
                path = Path(self._tmp.name) / rid / C.snapshot_path(epoch).rsplit("/", 1)[1]
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path, **snapshot)
                retry(self.client.log_artifact, rid, str(path), C.SNAPSHOT_DIR)
                path.unlink()
        except TrackingLostError as e:
            raise TrackingLostError(f"{e}: {self.kept()}") from e.__cause__

    def kept(self) -> str:
        """What the store keeps of this cohort's runs, for the lost-server message."""
        if len(self.run_ids) == 1:
            rid = self.run_ids[0]
            return (f"run {rid} keeps what it logged up to epoch {self.last_epoch[0]}" if 0 in self.last_epoch
                    else f"run {rid} logged no epoch")
        if not self.last_epoch:
            return f"its {len(self.run_ids)} runs logged no epoch"
        return f"its {len(self.run_ids)} runs keep what they logged up to epoch {max(self.last_epoch.values())}"

    def fail(self, k, reason):
        self._end(k, "FAILED", reason)

    def finish(self, params_per_model) -> None:
        """Log each surviving model and end its run FINISHED."""
        for k, params in enumerate(params_per_model):
            if params is not None and k in self.open:
                log_model(self.run_ids[k], self.configs[k], params)
                self._end(k, "FINISHED")

    def kill_open(self, reason: str, status: str = "KILLED", budget: float | None = None) -> bool:
        """End the open runs; False if the store stopped answering first.

        Once the server is found gone, stop: each further run would wait out the budget.
        """
        for k in sorted(self.open):
            try:
                self._end(k, status, reason, budget=budget)
            except TrackingLostError:
                return False
        return True

    def abandon(self) -> None:
        """After the server was lost: one quick try to end the open runs FAILED, giving up at the first miss.

        If the server is still down they stay RUNNING in its store, with every epoch they logged.
        """
        try:
            self.kill_open("lost the MLflow tracking server mid-run", status="FAILED", budget=0)
        except Exception:
            pass  # already failing with the clearer error

    def _end(self, k, status, reason=None, budget: float | None = None):
        if k not in self.open:
            return
        rid = self.run_ids[k]
        if reason:
            retry(self.client.set_tag, rid, C.TAG_FAILURE_REASON, reason, budget=budget)
        retry(self.client.set_terminated, rid, status, budget=budget)
        self.open.discard(k)


def log_model(run_id: str, config: RunConfig, params) -> None:
    """The final model as an MLflow PyTorch model (safe pt2 format), attached to its run."""
    import mlflow
    import torch
    module = to_module(config, params)
    example = np.zeros((2, 784), dtype=np.float32)  # batch > 1 keeps the exported batch dim dynamic
    with retry(mlflow.start_run, run_id=run_id, log_system_metrics=False):
        retry(mlflow.pytorch.log_model, module, name=C.MODEL_NAME, input_example=example,
              pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
