"""Logging your own PyTorch training loop: a few lines give any Linear/Conv2d model every view of the dashboard.

    from training.own_loop import logged_run

    with logged_run(model, params=vars(args)) as run:
        run.log_epoch(0)                                  # the untrained model
        for epoch in range(1, args.epochs + 1):
            train(model, loader, optimizer)               # your loop, unchanged
            run.log_epoch(epoch, train_loss=loss)         # test metrics, snapshot and units, on 10,000 test images

The run ends FINISHED when the block ends, FAILED with the error when it raises, and KILLED on Ctrl-C
or SIGTERM, through training.tracking.lifecycle, keeping every epoch already logged.  It logs the same
contract as the built-in trainer (training/contract.py) plus, per epoch, each hidden layer's units on
the test set (training.own_loop.epoch), so the dashboard needs no model code.  A grid of such runs
nests under `logged_grid(name)`; a run nests under another only when given `parent=`.
"""
import hashlib
import json
import re
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from common import mnist_idx
from training import contract as C
from training.config import RunConfig
from training.engine.running_best import RunningBest
from training.errors import UserError
from training.nets.architecture import structure_param
from training.own_loop.epoch import default_loss, epoch_records
from training.own_loop.layer_capture import Capture, ModelError, check_model, find_layers
from training.own_loop.model_graph import ModelGraph
from training.tracking.lifecycle import Interrupted, OpenRuns, RunLifecycle
from training.tracking.run_description import History, outcome
from training.tracking.store_connection import retry

DEFAULT_EXPERIMENT = RunConfig.__dataclass_fields__[C.PARAM_EXPERIMENT].default
PARAM_KEY = re.compile(r"[\w\-. /:]{1,250}")  # what MLflow takes as a param name
MAX_PARAM_VALUE = 6000  # MLflow's limit on a param's value
_open: list = []  # this process's open runs and grids, innermost last


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


class _Opened:
    """One MLflow run this process opened: created, tracked in `_open`, ended through RunLifecycle."""

    kind = "run"

    def _create(self, experiment: str, run_name: str | None, tags: dict[str, str]) -> None:
        self.client, self.run_id = self._open_run(experiment, run_name, tags)
        self.runs = OpenRuns(self.client)
        self.runs.add(self.run_id, self.describe)
        self._life = RunLifecycle(self.runs)
        self._old_term, self.status = None, None
        if threading.current_thread() is threading.main_thread():  # SIGTERM stops the loop as Ctrl-C does
            self._old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
        _open.append(self)

    def _open_run(self, experiment: str, run_name: str | None, tags: dict[str, str]):
        """(client, run id) of the run this object logs into: a new one (training.own_loop.lightning's SharedRun
        logs into one MLFlowLogger opened instead)."""
        from training.tracking.mlflow_sink import client, experiment_id, source_tags
        mlflow_client = client()
        exp = experiment_id(mlflow_client, experiment)
        run = retry(mlflow_client.create_run, exp, run_name=run_name, tags={**source_tags(), **tags})
        return mlflow_client, run.info.run_id

    def describe(self, status: str, reason: str | None) -> str:
        return f"**{status}**" + (f": {reason}." if reason else ".")

    def __exit__(self, kind, error, tb):
        try:
            return self._life.__exit__(kind, error, tb)
        finally:
            if self.run_id not in self.runs:  # ended, as RunLifecycle ends a block that ends this way
                self.status = (C.STATUS_FINISHED if kind is None else
                               C.STATUS_KILLED if issubclass(kind, KeyboardInterrupt) else C.STATUS_FAILED)
            if self._old_term is not None:
                signal.signal(signal.SIGTERM, self._old_term)
            _open.remove(self)


def _parent_of(parent) -> dict[str, str]:
    """The tags that nest a new run: under the parent given, else under an open grid; a second open run
    without nesting is refused (one line) before anything is created."""
    if parent is None and _open and isinstance(_open[-1], LoggedGrid):
        parent = _open[-1]
    if parent is not None:
        tags = {C.TAG_PARENT_RUN_ID: parent if isinstance(parent, str) else parent.run_id}
        return tags | ({C.TAG_GRID_NAME: parent.name} if isinstance(parent, LoggedGrid) else {})
    if not _open:
        return {}
    inner = _open[-1]
    raise UserError(f"run {inner.run_id} is still open: a run started inside it must say so with "
                    f"parent=<that run> (or start after it ends)")


class LoggedGrid(_Opened):
    """A parent run for a sweep of runs from your own loop: runs started inside its block nest under it."""

    kind = "grid"

    def __init__(self, name: str, experiment: str = DEFAULT_EXPERIMENT):
        self.name, self.experiment, self.run_id = name, experiment, None

    def __enter__(self) -> "LoggedGrid":
        _parent_of(None)
        self._create(self.experiment, f"grid {self.name}", {C.TAG_GRID_PARENT: C.TRUE, C.TAG_GRID_NAME: self.name})
        return self


def logged_grid(name: str, experiment: str = DEFAULT_EXPERIMENT) -> LoggedGrid:
    return LoggedGrid(name, experiment)


def _params(user: dict | None) -> dict[str, str]:
    out = {}
    for key, value in (user or {}).items():
        if not PARAM_KEY.fullmatch(str(key)):
            raise UserError(f"param name {str(key)[:60]!r} cannot be logged: MLflow takes letters, digits, "
                            f"_ - . / : and spaces, up to 250 characters")
        out[str(key)] = str(value)[:MAX_PARAM_VALUE]
    return out


def _label(model: torch.nn.Module, layers) -> str:
    """e.g. net-784-16-16-10-sigmoid, net-c32-c64-128-10-relu (c: conv channels)"""
    acts = {l.activation for l in layers[:-1]}
    tail = f"-{acts.pop()}" if len(acts) == 1 else ""
    sizes = ([str(layers[0].fan_in)] if layers[0].kind == "linear" else []) + \
        [f"c{l.units}" if l.kind == "conv" else str(l.units) for l in layers]
    return f"{type(model).__name__.lower()}-" + "-".join(sizes) + tail


class LoggedRun(_Opened):
    """One run of your own loop (see the module docstring); `logging_seconds[epoch]` is what logging it took."""

    def __init__(self, model: torch.nn.Module, params: dict | None = None, experiment: str = DEFAULT_EXPERIMENT,
                 run_name: str | None = None, parent=None, preprocess=None, loss_fn=None, grad_norms: bool = True,
                 snapshot_every: int = 1):
        self.model, self.experiment, self.run_name, self.parent = model, experiment, run_name, parent
        self.preprocess = preprocess or (lambda x: x)
        self.loss_fn, self.grad_norms, self.snapshot_every = loss_fn or default_loss, grad_norms, snapshot_every
        self.user_params = _params(params)
        self.run_id, self.status, self.history = None, None, []
        self._best = RunningBest()
        self.logging_seconds: dict[int, float] = {}
        self._hooks, self._norm_sums, self._counts = [], {}, {}  # layer -> summed norm, backward passes
        self._last_units = None  # (epoch, hidden layer -> its units on the test set) of the last snapshot

    def __enter__(self) -> "LoggedRun":
        nesting = _parent_of(self.parent)
        found = find_layers(self.model)  # a model without weight layers is refused here, before anything else
        device = next(self.model.parameters()).device
        self.capture = check_model(self.model, Capture(self.model, found), self.preprocess, device)
        self.layers = self.capture.found.layers
        for layer in self.layers:  # its name goes into metric keys (grad_norm/<layer>) and the layers param
            if not PARAM_KEY.fullmatch(C.grad_norm_key(layer.name)):
                raise ModelError(f"layer {layer.name[:60]!r} cannot name an MLflow metric: module names may hold "
                                 f"letters, digits, _ - . / : and spaces; rename it")
        self.x, self.y = _test_set(self.preprocess, device)
        self.graph = ModelGraph(self.model, self.layers, self.preprocess, device)
        digest = hashlib.sha256(json.dumps(self.user_params, sort_keys=True).encode()).hexdigest()[:16]
        # Your loop's steps are PyTorch's: the last of the step paths.
        self._create(self.experiment, self.run_name,
                     {C.TAG_CONFIG_HASH: digest, C.TAG_STEP_PATH: C.STEP_PATHS[-1], **nesting})
        try:
            self._log_params()
            if self.graph.missing:  # said once, on the run and (unless find_layers said it) here
                retry(self.client.set_tag, self.run_id, C.TAG_OWN_MODEL_MISSING, self.graph.missing)
                if self.capture.found.graph is not None:
                    print(f"note: {self.graph.missing}; the dashboard shows this run's logged units, not the views "
                          f"that rerun its model", file=sys.stderr)
        except BaseException as e:
            self.__exit__(type(e), e, e.__traceback__)
            raise
        if self.grad_norms:
            self._watch_gradients()
        self._since = time.perf_counter()
        self._tmp = tempfile.TemporaryDirectory(prefix="own-loop-")
        return self

    def _log_params(self) -> None:
        from mlflow.entities import Param

        from training.tracking.mlflow_sink import log_batch
        ours = {C.PARAM_LAYERS: ",".join(l.name for l in self.layers), C.PARAM_LAYER_STRUCTURE: structure_param(self.layers),
                C.PARAM_ARCH_LABEL: _label(self.model, self.layers), C.PARAM_DATASET: C.DATASET_NAME,
                C.PARAM_N_PARAMS: str(sum(p.numel() for p in self.model.parameters())),
                C.PARAM_EXPERIMENT: self.experiment}
        if len(acts := {l.activation for l in self.layers[:-1]}) == 1:
            ours[C.PARAM_ACTIVATION] = acts.pop()
        params = {**self.user_params, **ours}
        if len(params[C.PARAM_LAYER_STRUCTURE]) > MAX_PARAM_VALUE:
            raise ModelError(f"{type(self.model).__name__} has too many layers to log ({len(self.layers)})")
        log_batch(self.client, self.run_id, params=[Param(k, v) for k, v in params.items()])  # your params: maybe > 100

    def _watch_gradients(self) -> None:
        modules = dict(self.model.named_modules())
        for layer in self.layers:
            weight = modules[layer.name].weight
            self._hooks.append(weight.register_hook(lambda g, name=layer.name: self._add_norm(name, g)))

    def _add_norm(self, name: str, grad: torch.Tensor) -> None:
        norm = grad.detach().float().norm()
        self._norm_sums[name] = self._norm_sums.get(name, 0) + norm  # a tensor: no device sync per step
        self._counts[name] = self._counts.get(name, 0) + 1

    def log_epoch(self, epoch: int, train_loss: float | None = None, train_acc: float | None = None) -> None:
        """Log epoch `epoch` (0: before the first update): test metrics on 10,000 images, train metrics when
        given, mean gradient norms since the last call, and the snapshot with the units' activations."""
        self._check_open(epoch)
        start = time.perf_counter()
        seconds = 0.0 if not self.history else start - self._since
        with_snapshot = epoch % self.snapshot_every == 0
        rec = epoch_records(self.model, self.capture, self.layers, self.x, self.y, self.loss_fn, with_snapshot)
        metrics = {**rec.metrics, C.EPOCH_SECONDS: seconds}
        metrics |= {k: float(v) for k, v in ((C.TRAIN_LOSS, train_loss), (C.TRAIN_ACC, train_acc)) if v is not None}
        metrics |= {C.grad_norm_key(n): float(s) / self._counts[n] for n, s in self._norm_sums.items()}
        metrics |= self._best.update(epoch, metrics)
        self._norm_sums, self._counts = {}, {}
        self._write(epoch, metrics, rec if with_snapshot else None)
        if with_snapshot:
            self.graph.record(epoch)
            self._last_units = (epoch, rec.units)  # the run's layer summaries, as it ends
        self.history.append((epoch, metrics))
        self.logging_seconds[epoch] = time.perf_counter() - start
        self._since = time.perf_counter()

    def show(self, page: str = "run", **options) -> None:
        """This run's dashboard page inline in Jupyter ("run", or a path below it such as "neurons/1/0"), from a
        dashboard found or started over this store (training.own_loop.notebook.show_run)."""
        from training.own_loop.notebook import show_run
        show_run(self.run_id, page, **options)

    def _check_open(self, epoch) -> None:
        if self.run_id is None:
            raise UserError("this run has not started: call log_epoch inside `with logged_run(...) as run:`")
        if self.run_id not in self.runs:
            raise UserError(f"run {self.run_id} already ended {self.status or ''}: log_epoch belongs inside its "
                            f"`with` block; nothing more was logged")
        if not isinstance(epoch, int) or epoch < 0 or (self.history and epoch <= self.history[-1][0]):
            last = self.history[-1][0] if self.history else None
            raise UserError(f"epoch {epoch!r} cannot be logged: epochs are whole numbers from 0, increasing "
                            f"(last logged: {last})")

    def _write(self, epoch: int, metrics: dict[str, float], rec) -> None:
        from mlflow.entities import Metric

        from training.tracking.mlflow_sink import log_batch
        ts = int(time.time() * 1000)
        log_batch(self.client, self.run_id, metrics=[Metric(k, v, ts, epoch) for k, v in metrics.items()])
        if rec is None:
            return
        # Activations first: a snapshot the dashboard lists must already have its units beside it.
        for folder, arrays, rel in ((C.ACTIVATIONS_DIR, {C.unit_acts_key(n): a for n, a in rec.units.items()},
                                     C.activations_path(epoch)), (C.SNAPSHOT_DIR, rec.snapshot, C.snapshot_path(epoch))):
            path = Path(self._tmp.name) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, **arrays)
            retry(self.client.log_artifact, self.run_id, str(path), folder)
            path.unlink()

    def describe(self, status: str, reason: str | None) -> str:
        history: History = self.history
        net = (f"A `{type(self.model).__name__}` logged from its own training loop: "
               + ", ".join(f"{l.name} ({l.kind}, {l.units} units, {l.activation or 'output'})" for l in self.layers))
        return f"{net}.\n\n{outcome(status, reason, history)}"

    def _log_summaries(self) -> None:
        """Each hidden layer's unit counts at the last snapshot, as a built-in run logs them as it ends.  A failure
        must not fail a run that trained: it is reported, and the backfill adds them later."""
        from training.tracking import layer_summaries
        epoch, units = self._last_units
        try:
            values = layer_summaries.unit_summaries(units, {l.name: l.activation for l in self.layers})
            layer_summaries.log(self.client, self.run_id, values, epoch)
        except Exception as e:  # noqa: BLE001 (the run's own result matters more than its summaries)
            print(f"warning: run {self.run_id[:8]}: layer summaries not logged ({str(e).splitlines()[0][:160]}); "
                  f"`python -m training.backfill_summaries` adds them later", file=sys.stderr)

    def _log_model_graph(self) -> None:
        """The model as data (training.own_loop.model_graph), its weights first and its graph last: a run stopped
        in between has no graph, so no model.  A failure is reported and leaves the activation-only views."""
        if self.graph.missing:
            return
        try:
            folder = Path(self._tmp.name) / C.OWN_MODEL_DIR
            folder.mkdir(exist_ok=True)
            for path in self.graph.write(folder):
                retry(self.client.log_artifact, self.run_id, str(path), C.OWN_MODEL_DIR)
        except Exception as e:  # noqa: BLE001 (the run's own result matters more than its model graph)
            print(f"warning: run {self.run_id[:8]}: model graph not logged ({str(e).splitlines()[0][:160]})",
                  file=sys.stderr)

    def __exit__(self, kind, error, tb):
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if kind is None and self._last_units is not None and self.run_id in getattr(self, "runs", ()):
            self._log_summaries()
            self._log_model_graph()
        try:
            return super().__exit__(kind, error, tb)
        finally:
            if hasattr(self, "_tmp"):
                self._tmp.cleanup()


def logged_run(model: torch.nn.Module, params: dict | None = None, **options) -> LoggedRun:
    """A run of your own loop, to use as `with logged_run(model, params) as run:`.

    Options: experiment, run_name, parent (a LoggedRun, LoggedGrid or run id), preprocess (what your model
    expects from (B, 1, 28, 28) images in [0, 1], e.g. normalisation), loss_fn (the test loss; default
    cross-entropy on the outputs), grad_norms (default True), snapshot_every (default 1).
    """
    return LoggedRun(model, params, **options)


def script_main(main) -> None:
    """A script's entry point: bad use is one line (exit 2); Ctrl-C or SIGTERM, which ended the run KILLED, one
    line (exit 130)."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as stop:
        print("stopped: the run ended KILLED and keeps the epochs it logged" if stop.ended else
              "stopped: the store did not answer, so the run stays RUNNING there with what it logged", file=sys.stderr)
        sys.exit(130)


def _test_set(preprocess, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The 10,000 verified test images (common.mnist_idx's shared copy) as (N, 1, 28, 28) in [0, 1], preprocessed,
    on the model's device."""
    try:
        images, labels = mnist_idx.test_set()
    except mnist_idx.MnistFileError as e:
        raise UserError(str(e)) from None
    x = torch.tensor(images, dtype=torch.float32).div_(255.0).unsqueeze(1)  # a copy: the shared arrays stay read-only
    with torch.no_grad():
        x = preprocess(x.to(device))
    return x, torch.tensor(labels)
