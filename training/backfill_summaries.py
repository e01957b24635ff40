"""Add the per-layer unit summaries (training.layer_summaries) and the running best test accuracy
(training.running_best) to finished runs already in a store.

    python -m training.backfill_summaries [--experiment NAME]

Idempotent: a run that already carries every summary of its hidden layers, or its running best, is
skipped for that part, so running it twice logs no value twice.  The running best is added to any
finished run with a test_acc history, another tool's included.  Snapshots are read through the
dashboard's validated loader (dashboard.store.load_snapshot); runs that are not ours (no config in
their params), unfinished, or without a snapshot are counted and skipped.
"""
import argparse
import os
import sys
import time

from mlflow.entities import Metric, ViewType
from tqdm import tqdm

from dashboard import store
from training import contract as C
from training import layer_summaries, running_best
from training.architecture import layers_of
from training.config import RunConfig
from training.errors import UserError


def wanted_keys(config: RunConfig) -> set[str]:
    return {C.unit_summary_key(layer.name, f) for layer in layers_of(config)[:-1] for f in C.UNIT_SUMMARY_FIELDS}


def experiment_ids(name: str | None) -> list[str]:
    client = store.client()
    if name is None:
        return [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    exp = client.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage != "active":
        raise UserError(f"experiment '{name}' is not in the store at {store.tracking_uri()}; "
                        f"leave out --experiment to backfill every experiment")
    return [exp.experiment_id]


def backfill_best(run) -> bool:
    """Log the running best of a finished run's test_acc history, at each step; True if anything was logged."""
    logged = run.data.metrics
    if run.info.status != C.STATUS_FINISHED or C.BEST_TEST_ACC in logged or C.TEST_ACC not in logged:
        return False
    history = store.metric_history(run.info.run_id, C.TEST_ACC)
    steps = running_best.series(list(zip(history["step"].tolist(), history["value"].tolist())))
    ts = int(time.time() * 1000)
    metrics = [Metric(k, v, ts, step) for step, values in steps for k, v in values.items()]
    for i in range(0, len(metrics), 1000):  # MLflow's log_batch limit
        store.client().log_batch(run.info.run_id, metrics=metrics[i:i + 1000])
    return bool(metrics)


def backfill_run(run) -> str:
    """'added', 'had', or why the run was skipped."""
    if run.info.status != C.STATUS_FINISHED:
        return "not finished"
    try:
        config = RunConfig.from_params(run.data.params)
    except Exception:  # noqa: BLE001 (another tool's run: nothing to summarise)
        return "not a trained model (a grid parent, another tool's run)"
    if wanted_keys(config) <= set(run.data.metrics):
        return "had"
    epochs = store.snapshot_epochs(run.info.run_id)
    if not epochs:
        return "no snapshot"
    snapshot = store.load_snapshot(run.info.run_id, epochs[-1])
    values = {k: v for k, v in layer_summaries.summaries(config, snapshot).items() if k not in run.data.metrics}
    layer_summaries.log(store.client(), run.info.run_id, values, epochs[-1])
    return "added"


def backfill(experiment: str | None = None, progress: bool = True) -> dict[str, int]:
    """Summaries for every finished run of the experiment (default: all); counts per outcome."""
    runs = store.client().search_runs(experiment_ids(experiment), "", ViewType.ACTIVE_ONLY, max_results=50_000)
    counts: dict[str, int] = {}
    for run in tqdm(runs, desc="backfill", unit="run", disable=not progress, file=sys.stderr):
        try:
            if backfill_best(run):
                counts["best"] = counts.get("best", 0) + 1
            outcome = backfill_run(run)
        except store.StoreError as e:
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
