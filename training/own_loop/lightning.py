"""Logging a Lightning training: a callback gives any LightningModule what `logged_run` gives your own loop.

    from training.own_loop.lightning import MnistLabCallback, mlflow_logger

    trainer = L.Trainer(max_epochs=2, callbacks=[MnistLabCallback()])                # a run of its own
    trainer = L.Trainer(max_epochs=2, callbacks=[MnistLabCallback()],
                        logger=mlflow_logger())            # or beside MLFlowLogger: one run holds both

Epoch 0 (the untrained model) is logged as fitting starts, then each epoch as it ends: test metrics, snapshot
and units on the 10,000 test images, the epoch's mean loss (as backpropagated) as the train loss, and a train
accuracy when the module logs one (`train_acc=` names its key).  Beside an MLFlowLogger (any: its run is
used, wherever it logs) it logs into the logger's run; the module's own `self.log` names must then differ
from the contract's (training/contract.py), whose curves are one point per epoch.
The run ends FINISHED, FAILED with the error, or KILLED on Ctrl-C or SIGTERM, as `logged_run`'s do.

Lightning is an optional extra (`make install-lightning`, `pip install '.[lightning]'`); without it, using
the callback is a one-line error.
"""

from training.errors import UserError
from training.own_loop import DEFAULT_EXPERIMENT, LoggedRun
from training.tracking.lifecycle import Interrupted
from training.tracking.store_connection import retry

try:
    from lightning.pytorch import Callback
    from lightning.pytorch.loggers import MLFlowLogger
except ImportError:  # the optional extra: the callback says so when it is used
    Callback, MLFlowLogger = object, None

MISSING = "Lightning is not installed: `make install-lightning` (or pip install -r requirements-lightning.txt)"


class SharedRun(LoggedRun):
    """A LoggedRun that logs into a run MLFlowLogger has opened instead of creating one: the logger keeps its
    metrics and params there, this adds the contract's; ending it is still RunLifecycle's job."""

    def __init__(self, model, client, run_id: str, experiment: str, **options):
        super().__init__(model, experiment=experiment, **options)
        self._shared = (client, run_id)

    def _open_run(self, experiment: str, run_name: str | None, tags: dict[str, str]):
        from mlflow.entities import RunTag
        client, run_id = self._shared
        retry(client.log_batch, run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        return client, run_id


def mlflow_logger(experiment: str = DEFAULT_EXPERIMENT, **kwargs):
    """Lightning's MLFlowLogger on the lab's store (MLFLOW_TRACKING_URI, else mlflow_runs/), its experiment made
    as the lab makes one (artifacts beside a SQLite store), so the dashboard reads its runs."""
    if MLFlowLogger is None:
        raise UserError(MISSING)
    from training.location import tracking_uri
    from training.tracking.mlflow_sink import client, experiment_id
    experiment_id(client(), experiment)
    return MLFlowLogger(experiment_name=experiment, tracking_uri=tracking_uri(), **kwargs)


class MnistLabCallback(Callback):
    """See the module docstring.  params: what to log as params (default: the module's hparams, when no
    MLFlowLogger logs them); train_acc: the key of a train accuracy the module logs per epoch; other options
    as logged_run's (experiment, run_name, parent, preprocess, loss_fn, grad_norms, snapshot_every)."""

    def __init__(self, params: dict | None = None, train_acc: str | None = None,
                 experiment: str = DEFAULT_EXPERIMENT, **options):
        if MLFlowLogger is None:
            raise UserError(MISSING)
        self.params, self.train_acc_key, self.experiment, self.options = params, train_acc, experiment, options
        self.run: LoggedRun | None = None
        self._batch, self._loss_sum, self._loss_n = 0, 0.0, 0

    def _logger(self, trainer):
        return next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)

    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.global_rank != 0:
            return
        logger = self._logger(trainer)
        if logger is None:
            params = self.params if self.params is not None else dict(pl_module.hparams)
            run = LoggedRun(pl_module, params, experiment=self.experiment, **self.options)
        else:  # the logger logs the hparams itself, just after this hook
            mlflow_client = logger.experiment
            name = mlflow_client.get_experiment(logger.experiment_id).name
            run = SharedRun(pl_module, mlflow_client, logger.run_id, name, params=self.params, **self.options)
        run.__enter__()  # a model it cannot log is refused here, in one line, before any run is open
        self.run = run
        run.log_epoch(0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch = len(batch[0]) if isinstance(batch, (list, tuple)) else 1  # (x, y): the mean weighs by images

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if self.run is None:
            return
        # Lightning divides the loss by accumulate_grad_batches before the backward pass: undone for the mean.
        step_loss = loss.detach() * trainer.accumulate_grad_batches
        self._loss_sum = self._loss_sum + step_loss * self._batch  # a tensor: no device sync per step
        self._loss_n += self._batch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.run is None:
            return
        loss = float(self._loss_sum) / self._loss_n if self._loss_n else None
        acc = trainer.callback_metrics.get(self.train_acc_key) if self.train_acc_key else None
        self.run.log_epoch(trainer.current_epoch + 1, train_loss=loss, train_acc=None if acc is None else float(acc))
        self._loss_sum, self._loss_n = 0.0, 0

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.run is not None:
            self.run.__exit__(None, None, None)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.run is None or self.run.status is not None:
            return
        try:
            self.run.__exit__(type(exception), exception, exception.__traceback__)
        except Interrupted:
            # Ended KILLED.  Lightning then ends its loggers "failed" and exits 1; a shared run must stay KILLED.
            logger = self._logger(trainer)
            if isinstance(self.run, SharedRun) and logger is not None:
                finalize = logger.finalize
                logger.finalize = lambda status="failed": finalize(self.run.status)
