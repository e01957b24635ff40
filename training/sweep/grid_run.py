"""Running a loaded grid: its parent run, the configs not yet FINISHED, a runner, and the summary.

Rerunning a file skips configs whose child already FINISHED and reruns the
ones that failed or were cut off.  The parent run ends FINISHED when every
config finished, FAILED when one did not, KILLED on Ctrl-C or SIGTERM.
"""
import sys
import time

from tqdm import tqdm

from training import contract as C
from training.engine import interrupt
from training.engine.cohorts import total_steps
from training.engine.steps import fallback_notice
from training.nets import data as mnist
from training.sweep.cohort_runs import ChildOf, finished_hashes
from training.sweep.grid_summary import print_summary, summary_rows
from training.sweep.gridfile import GridSpec
from training.sweep.runners import Runner
from training.tracking.lifecycle import Interrupted, OpenRuns, RunLifecycle, RunOutcome
from training.tracking.mlflow_sink import client, experiment_id, source_tags
from training.tracking.run_description import describe_grid
from training.tracking.store_connection import retry


def run_grid(spec: GridSpec, runner: Runner, file: str) -> int:
    """Train what the grid file still needs and print the summary.  Returns the exit code."""
    data = mnist.load()  # verified before any run exists
    mlflow_client = client()
    exp_id = experiment_id(mlflow_client, spec.configs[0].experiment)
    done = finished_hashes(mlflow_client, exp_id, spec.name)
    pending = [c for c in spec.configs if c.config_hash not in done]
    if not pending:
        print(f"{spec.path}: all {len(spec.configs)} configs already FINISHED; nothing to train")
        print_summary(summary_rows(spec, mlflow_client, exp_id))
        return 0
    print(f"{spec.path}: {len(pending)} to train, {len(done)} already FINISHED")
    if notice := fallback_notice(pending):  # else a machine without a compiler trains at half speed unsaid
        print(notice, file=sys.stderr)
    rerun = f"rerun `python -m training.grid {file}`"
    parent = OpenRuns(mlflow_client)
    source = str(spec.path)
    parent_id = retry(mlflow_client.create_run, exp_id, run_name=f"grid {spec.name}",
                      tags={C.TAG_GRID_PARENT: C.TRUE, C.TAG_GRID_NAME: spec.name, **source_tags(source)}).info.run_id
    outcomes: list[RunOutcome] = []
    parent.add(parent_id, lambda status, reason: describe_grid(
        spec.name, source, len(spec.configs), len(pending), status, reason,
        sum(o.finished for o in outcomes) if outcomes else None))
    interrupt.install()
    start = time.perf_counter()
    try:
        # The cohorts announce and tag their own runs' ends; the parent just ends with them.
        with RunLifecycle(parent, interrupted=None, announce=False,
                          on_lost=f"{rerun} to train the rest, finished configs are kept"):
            retry(mlflow_client.log_text, parent_id, spec.text, C.GRID_FILE_ARTIFACT)
            retry(mlflow_client.log_param, parent_id, C.PARAM_N_CONFIGS, len(spec.configs))
            with tqdm(total=sum(total_steps(c) for c in pending), unit="step", unit_scale=True,
                      desc=f"grid {spec.name}") as bar:
                outcomes += runner.run(pending, data, ChildOf(parent_id, spec.name, source), bar)
            all_finished = all(o.finished for o in outcomes)
            parent.end(parent_id, C.STATUS_FINISHED if all_finished else C.STATUS_FAILED)
    except Interrupted as stop:
        ended = ("open runs ended KILLED, finished ones kept" if stop.ended else
                 "the tracking store did not answer, so open runs stay RUNNING there with what they logged")
        print(f"interrupted: {ended}; {rerun} to finish the rest", file=sys.stderr)
        return 130
    return report(spec, mlflow_client, exp_id, parent_id, outcomes, time.perf_counter() - start)


def report(spec: GridSpec, mlflow_client, exp_id: str, parent_id: str, outcomes: list[RunOutcome],
           seconds: float) -> int:
    """Print the summary table and a last line; 1 if a config did not finish."""
    rows = summary_rows(spec, mlflow_client, exp_id)
    print_summary(rows)
    print(f"grid {spec.name}: parent run {parent_id}, {len(outcomes)} trained in {seconds:.0f}s")
    failed = [o.run_id for o in outcomes if not o.finished]
    if failed:
        names = [r["config"] for r in rows if r["run_id"] in failed]
        print(f"error: {len(failed)} config(s) did not finish: {'; '.join(names)}", file=sys.stderr)
        return 1
    return 0
