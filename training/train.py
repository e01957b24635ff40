"""Train one network on MNIST and log it to MLflow.

    python -m training.train --sizes 784,30,10 --activation sigmoid --loss mse \
        --lr 3.0 --batch-size 10 --epochs 30
"""
import argparse
import sys
import time
from dataclasses import fields

from tqdm import tqdm

from training import contract as C
from training.config import ACTIVATIONS, ARCHS, INITS, LOSSES, OPTIMIZERS, RunConfig
from training.engine import interrupt
from training.engine.cohorts import total_steps
from training.engine.loop import train_cohort
from training.engine.steps import fallback_notice
from training.errors import exit_on_user_error
from training.nets import data as mnist
from training.tracking.lifecycle import Interrupted, RunLifecycle
from training.tracking.mlflow_sink import MlflowSink, client

SOURCE = "python -m training.train"  # the runs' source in the MLflow UI


def parse_args(argv=None) -> RunConfig:
    d = RunConfig()
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=",".join(map(str, d.sizes)), help="MLP layer sizes (default %(default)s)")
    p.add_argument("--arch", choices=ARCHS, default=d.arch, help="cnn ignores --sizes")
    p.add_argument("--activation", choices=ACTIVATIONS, default=d.activation)
    p.add_argument("--loss", choices=LOSSES, default=d.loss, help="mse is Nielsen's quadratic cost on a sigmoid output")
    p.add_argument("--init-std", type=float, default=None, help="weights ~ N(0, std), biases 0 (default: PyTorch init)")
    p.add_argument("--init", choices=INITS, default=None,
                   help="nielsen: weights and biases ~ N(0, 1), as Nielsen's network.py (default: PyTorch init)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--train-size", type=int, default=None,
                   help=f"train on the first N images (default: all {d.train_size:,} but the held-out ones)")
    p.add_argument("--val-size", type=int, default=d.val_size,
                   help="hold out the last N training images; val_loss and val_acc are logged each epoch")
    p.add_argument("--snapshot-every", type=int, default=d.snapshot_every, help="weight snapshot every K epochs")
    p.add_argument("--experiment", default=d.experiment)
    p.add_argument("--run-name", default=None)
    args = vars(p.parse_args(argv))
    known = {f.name for f in fields(RunConfig)}
    # An option left out takes the config's default, which for train_size depends on val_size.
    return RunConfig.from_dict({k: v for k, v in args.items() if k in known and v is not None}, where="command line")


def main(argv=None) -> int:
    config = parse_args(argv)
    data = mnist.load()  # verifies first: no run exists until the data is good; the held-out images are its last
    mlflow_client = client()
    sink = MlflowSink(mlflow_client, [config], data, source=SOURCE)
    run_id = sink.run_ids[0]
    held_out = f", {config.val_size} held out" if config.val_size else ""
    print(f"run {run_id}: {config.display_name}, {config.epochs} epochs on {config.train_size} images{held_out}")
    if notice := fallback_notice([config]):  # else a machine without a compiler trains at half speed unsaid
        print(notice, file=sys.stderr)
    interrupt.install()  # Ctrl-C and SIGTERM end the run KILLED, with what it logged kept
    start = time.perf_counter()
    try:
        with RunLifecycle(sink.runs, on_lost="rerun to train it again"):
            with tqdm(total=total_steps(config), unit="step", unit_scale=True, desc="training") as bar:
                result = train_cohort([config], data, sink, progress=bar)
            sink.finish(result.params)
    except Interrupted as stop:
        if stop.ended:
            print(f"interrupted: run {run_id} ended KILLED; what it logged is kept", file=sys.stderr)
        else:
            print(f"interrupted: the tracking store did not answer, so run {run_id} stays RUNNING there "
                  f"with what it logged", file=sys.stderr)
        return 130
    return report(mlflow_client, run_id, time.perf_counter() - start)


def report(mlflow_client, run_id: str, wall: float) -> int:
    """The run's one-line result; 1 with its reason on stderr if it FAILED."""
    run = mlflow_client.get_run(run_id)
    accs = []
    for key in (C.TEST_ACC, C.VAL_ACC):
        history = mlflow_client.get_metric_history(run_id, key)
        if history or key == C.TEST_ACC:
            accs.append(f"{key}={max(history, key=lambda m: m.step).value if history else float('nan'):.4f}")
    print(f"run_id={run_id} status={run.info.status} {' '.join(accs)} wall={wall:.1f}s")
    if run.info.status == C.STATUS_FAILED:
        print(f"error: run FAILED: {run.data.tags.get(C.TAG_FAILURE_REASON, '')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    exit_on_user_error(main)
