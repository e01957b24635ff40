"""Add the per-layer unit summaries (training.tracking.layer_summaries) and the running best test accuracy
(training.engine.running_best) to finished runs already in a store.

    python -m training.backfill_summaries [--experiment NAME]

Idempotent: a run that already carries every summary of its hidden layers, or its running best, is
skipped for that part, so running it twice logs no value twice.  The running best is added to any
finished run with a test_acc history, another tool's included.  The store is read and written through
MlflowClient only; a snapshot is untrusted input and is read through training.nets.snapshot_reader, the
checked reader the dashboard uses too (headers before data, shapes from the run's layers, a byte budget).
Runs from the user's own loop (training.own_loop) get the verdict counts from their last logged units; the
critical count needs the model, which such a run does not store.  Runs that are not ours, unfinished, or
without a snapshot are counted and skipped.
"""
import argparse
import os
import sys
import time

from mlflow.entities import Metric, ViewType
from mlflow.tracking import MlflowClient
from tqdm import tqdm

from training import contract as C
from training.config import RunConfig
from training.engine import running_best
from training.errors import UserError
from training.location import tracking_uri
from training.nets import snapshot_reader
from training.nets.architecture import N_TEST, layers_of, logged_structure, run_layers
from training.tracking import layer_summaries
from training.tracking.store_connection import retry


def wanted_keys(config: RunConfig) -> set[str]:
    return {C.unit_summary_key(layer.name, f) for layer in layers_of(config)[:-1] for f in C.UNIT_SUMMARY_FIELDS}


def experiment_ids(client: MlflowClient, name: str | None) -> list[str]:
    if name is None:
        return [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    exp = client.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage != "active":
        raise UserError(f"experiment '{name}' is not in the store at {tracking_uri()}; "
                        f"leave out --experiment to backfill every experiment")
    return [exp.experiment_id]


def backfill_best(client: MlflowClient, run) -> bool:
    """Log the running best of a finished run's test_acc history, at each step; True if anything was logged."""
    logged = run.data.metrics
    if run.info.status != C.STATUS_FINISHED or C.BEST_TEST_ACC in logged or C.TEST_ACC not in logged:
        return False
    history = client.get_metric_history(run.info.run_id, C.TEST_ACC)
    last = {m.step: m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))}  # the last value per step
    steps = running_best.series(sorted(last.items()))
    ts = int(time.time() * 1000)
    metrics = [Metric(k, v, ts, step) for step, values in steps for k, v in values.items()]
    for i in range(0, len(metrics), 1000):  # MLflow's log_batch limit
        retry(client.log_batch, run.info.run_id, metrics=metrics[i:i + 1000])
    return bool(metrics)


def last_snapshot(client: MlflowClient, run) -> tuple[int, dict] | None:
    """The run's last snapshot epoch and its arrays, read through the checked reader; None without a snapshot.
    SnapshotError, one line naming the file, if it cannot be downloaded or is not what the run's layers allow."""
    run_id = run.info.run_id
    try:
        listed = client.list_artifacts(run_id, C.SNAPSHOT_DIR)
    except Exception:  # noqa: BLE001 (no artifact folder, or a store that cannot list it: no snapshot)
        listed = []
    files = {e: f.file_size for f in listed if (e := C.snapshot_epoch(f.path)) is not None}
    if not files:
        return None
    epoch, path = max(files), C.snapshot_path(max(files))
    arch = run_layers(run.data.params, where=f"run {run_id[:8]} params")
    try:
        arrays = snapshot_reader.download_checked(client, run_id, path, files[epoch], arch,
                                                  run.data.params.get(C.PARAM_N_PARAMS))
    except snapshot_reader.SnapshotError as e:
        raise snapshot_reader.SnapshotError(f"{path}: {e}") from None
    return epoch, arrays


def last_units(client: MlflowClient, run, hidden) -> tuple[int, dict] | None:
    """A run from the user's own loop: its last logged units (epoch, layer -> (10,000, units)), read through
    the checked reader with each layer's exact shape; None when it logged none."""
    run_id = run.info.run_id
    try:
        listed = client.list_artifacts(run_id, C.ACTIVATIONS_DIR)
    except Exception:  # noqa: BLE001 (no artifact folder, or a store that cannot list it: no units)
        listed = []
    epochs = [e for f in listed if (e := C.snapshot_epoch(f.path)) is not None]
    if not epochs:
        return None
    wanted = {C.unit_acts_key(l.name): (N_TEST, l.units) for l in hidden}
    budget = sum(N_TEST * l.units * 8 for l in hidden)  # float64 at most: what any dtype we take can need
    path = C.activations_path(max(epochs))
    try:
        arrays = snapshot_reader.download_and_read(client, run_id, path, wanted, budget)
    except snapshot_reader.SnapshotError as e:
        raise snapshot_reader.SnapshotError(f"{path}: {e}") from None
    return max(epochs), {l.name: arrays[C.unit_acts_key(l.name)] for l in hidden if C.unit_acts_key(l.name) in arrays}


def backfill_own_run(client: MlflowClient, run, logged) -> str:
    """A finished run from the user's own loop: its four verdict counts per hidden layer from its last units."""
    hidden = logged[:-1]
    wanted = {C.unit_summary_key(l.name, f) for l in hidden for f in C.UNIT_SUMMARY_FIELDS if f != "critical"}
    if wanted <= set(run.data.metrics):
        return "had"
    if (last := last_units(client, run, hidden)) is None:
        return "no snapshot"
    epoch, units = last
    summaries = layer_summaries.unit_summaries(units, {l.name: l.activation for l in hidden})
    layer_summaries.log(client, run.info.run_id, {k: v for k, v in summaries.items() if k not in run.data.metrics}, epoch)
    return "added"


def backfill_run(client: MlflowClient, run) -> str:
    """'added', 'had', or why the run was skipped."""
    if run.info.status != C.STATUS_FINISHED:
        return "not finished"
    try:
        config = RunConfig.from_params(run.data.params)
    except Exception:  # noqa: BLE001 (a run from the user's own loop, or another tool's: nothing to rebuild)
        try:
            logged = logged_structure(run.data.params)
        except ValueError:
            logged = None
        if logged:
            return backfill_own_run(client, run, logged)
        return "not a trained model (a grid parent, another tool's run)"
    if wanted_keys(config) <= set(run.data.metrics):
        return "had"
    if (last := last_snapshot(client, run)) is None:
        return "no snapshot"
    epoch, snapshot = last
    values = {k: v for k, v in layer_summaries.summaries(config, snapshot).items() if k not in run.data.metrics}
    layer_summaries.log(client, run.info.run_id, values, epoch)
    return "added"


def backfill(experiment: str | None = None, progress: bool = True) -> dict[str, int]:
    """Summaries for every finished run of the experiment (default: all); counts per outcome."""
    client = MlflowClient(tracking_uri())
    runs = client.search_runs(experiment_ids(client, experiment), "", ViewType.ACTIVE_ONLY, max_results=50_000)
    counts: dict[str, int] = {}
    for run in tqdm(runs, desc="backfill", unit="run", disable=not progress, file=sys.stderr):
        try:
            if backfill_best(client, run):
                counts["best"] = counts.get("best", 0) + 1
            outcome = backfill_run(client, run)
        except snapshot_reader.SnapshotError as e:
            outcome = "unreadable snapshot"
            tqdm.write(f"run {run.info.run_id[:8]}: {e}", file=sys.stderr)
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.backfill_summaries", description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", help="only this experiment (default: every experiment)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar: ours
    try:
        counts = backfill(args.experiment, progress=not args.quiet)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    added, had, best = counts.pop("added", 0), counts.pop("had", 0), counts.pop("best", 0)
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(counts.items()))
    print(f"layer summaries added to {added} runs; {had} already had them" + (f"; skipped: {skipped}" if skipped else ""))
    print(f"running best test accuracy added to {best} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
