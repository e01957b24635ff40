"""A grid's child runs: which configs already FINISHED, and training one cohort as children of the parent run."""
import sys
from dataclasses import dataclass

from training import contract as C
from training.config import RunConfig
from training.engine.loop import train_cohort
from training.nets.data import Mnist
from training.tracking.lifecycle import INTERRUPTED, RunLifecycle, RunOutcome
from training.tracking.mlflow_sink import MlflowSink, client
from training.tracking.store_connection import TrackingLostError

GRID_INTERRUPTED = f"{INTERRUPTED}; rerun the grid to redo this config"
MAX_RESULTS = 5000  # runs one search may return: more than any grid has


@dataclass(frozen=True)
class ChildOf:
    """Where a grid's child runs belong: the parent run, the grid's name that finds them on a rerun, and
    the grid file they come from (their source)."""
    parent_id: str
    grid_name: str
    source: str | None = None

    def tags(self) -> dict[str, str]:
        return {C.TAG_PARENT_RUN_ID: self.parent_id, C.TAG_GRID_NAME: self.grid_name}


def grid_runs_filter(grid_name: str, status: str | None = None) -> str:
    """An MLflow search filter for the runs of one grid (parent and children), optionally of one status."""
    text = f"tags.`{C.TAG_GRID_NAME}` = '{grid_name}'"
    return f"{text} and attributes.status = '{status}'" if status else text


def is_child(tags: dict[str, str]) -> bool:
    return C.TAG_CONFIG_HASH in tags and tags.get(C.TAG_GRID_PARENT) != C.TRUE


def finished_hashes(mlflow_client, exp_id: str, grid_name: str) -> dict[str, str]:
    """config hash -> run id of this grid's children that already FINISHED."""
    runs = mlflow_client.search_runs([exp_id], grid_runs_filter(grid_name, C.STATUS_FINISHED), max_results=MAX_RESULTS)
    return {r.data.tags[C.TAG_CONFIG_HASH]: r.info.run_id for r in runs if is_child(r.data.tags)}


def train_one_cohort(configs: list[RunConfig], data: Mnist, parent: ChildOf, progress=None) -> list[RunOutcome]:
    """Train one cohort as child runs of the parent.  Returns how each config's run ended.

    A crash ends the cohort's open runs FAILED and the grid goes on; Ctrl-C, SIGTERM and a
    lost tracking server stop it (see training.tracking.lifecycle).
    """
    mlflow_client = client()
    sink = MlflowSink(mlflow_client, configs, data, extra_tags=[parent.tags() for _ in configs], source=parent.source)
    try:
        with RunLifecycle(sink.runs, interrupted=GRID_INTERRUPTED):
            sink.finish(train_cohort(configs, data, sink, progress=progress).params)
    except TrackingLostError:  # unlike a crash, this stops the grid: every later cohort would hit it too
        raise
    except Exception as e:  # a crash in one cohort must not take the rest of the grid with it
        print(f"cohort of {len(configs)} crashed: {type(e).__name__}: {e}", file=sys.stderr)
    return [RunOutcome(rid, mlflow_client.get_run(rid).info.status) for rid in sink.run_ids]
