"""Grids and searches on Ray: each stacked cohort of a grid, or each claimant of a search's trials, is one
Ray task that logs straight to the tracking store.

    python -m training.grid FILE.yaml --ray [--ray-address ADDR]

Imported only with --ray, so Ray stays an optional install (requirements-ray.txt).
Without an address a local Ray starts on this machine and stops with the grid.
Every node needs this repo's environment (`make install`) and MNIST at the
same MNIST_ROOT; the `training` package itself is shipped with the job.
"""
import os
import sys
from pathlib import Path

from training.engine import interrupt
from training.engine.cohorts import make_cohorts, total_steps
from training.errors import UserError
from training.location import tracking_uri
from training.tracking.lifecycle import RunOutcome
from training.tracking.store_connection import RETRY_ENV, TrackingLostError

# A stacked cohort keeps one core busy; more threads per task pay off less than more tasks.
CPUS_PER_TASK = 1
_data = None  # MNIST, loaded once per Ray worker process
LOST = "LOST"  # not an MLflow status: the task's process died, so how its runs ended is unknown here


def import_ray():
    """Ray, or a one-line error saying how to install it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray, which is not installed: pip install -r requirements-ray.txt "
                        "(or make install-ray)") from None
    return ray


def _train_task(configs, parent) -> list[RunOutcome]:
    """One cohort, in a Ray worker process, which loads the trainer and MNIST itself: the grid imports
    this module before it knows Ray is installed, so its top stays light and a missing Ray fails at once."""
    global _data
    import torch

    from training.nets import data as mnist
    from training.sweep.cohort_runs import train_one_cohort
    torch.set_num_threads(CPUS_PER_TASK)
    if _data is None:
        _data = mnist.load()
    return train_one_cohort(configs, _data, parent)


def start(ray, address: str | None) -> bool:
    """Connect to (or start) Ray.  Returns whether this call started it, so the caller shuts it down."""
    if ray.is_initialized():  # e.g. a test or a notebook that chose its own resources
        return False
    import logging
    if not address:  # a local start enables token auth by default and says so on every run
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    # a cluster's workers import training and the torch-free common package it shares with the dashboard
    root = Path(__file__).resolve().parents[2]
    packages = [str(root / "training"), str(root / "common")]
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 configure_logging=True, runtime_env={"py_modules": packages} if address else None)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UserError(f"cannot start or reach Ray at {address or 'a new local instance'}: "
                        f"{str(e).splitlines()[0][:200]}") from None
    return True


class RayRunner:
    """Each cohort one Ray task, as many at once as the cluster has CPUs (see the module docstring)."""

    def __init__(self, address: str | None = None):
        self.address = address

    def run(self, pending, data, parent, progress) -> list[RunOutcome]:
        ray = import_ray()
        uri = tracking_uri()
        if self.address and uri.startswith("sqlite:"):
            print(f"warning: the store {uri} is a local SQLite file that only Ray nodes on this machine can "
                  f"write; set MLFLOW_TRACKING_URI to a tracking server for a cluster", file=sys.stderr)
        started = start(ray, self.address)
        try:
            n_cpus = int(ray.cluster_resources().get("CPU", 1))
            cohorts = make_cohorts(pending, max(1, n_cpus // CPUS_PER_TASK))
            task = ray.remote(num_cpus=CPUS_PER_TASK, max_retries=0,
                              runtime_env={"env_vars": _task_env(data)})(_train_task)
            return _collect(ray, {task.remote(cohort, parent): cohort for cohort in cohorts}, progress)
        finally:
            if started:
                ray.shutdown()


def _search_task(search_loop, spec, url: str, parent, index: int) -> None:
    """One claimant of a search's trials (search_loop: training.sweep.search_run's, handed over so that this
    module does not import the driver that imports it), with its own sampler seed."""
    global _data
    import torch

    from training.nets import data as mnist
    torch.set_num_threads(CPUS_PER_TASK)
    if _data is None:
        _data = mnist.load()
    search_loop(spec, url, _data, parent, _NoProgress(), seed_offset=index)


class _NoProgress:
    """A task's progress is read from the study instead (the study is shared; a counter would not be)."""

    def update(self, n):
        pass


def run_search(search_loop, spec, url: str, data, parent, address: str | None, on_poll) -> None:
    """As many search tasks as the cluster has CPUs, all claiming from the one study; `on_poll()` runs
    twice a second (the caller moves its progress bar from the study)."""
    ray = import_ray()
    started = start(ray, address)
    try:
        n_tasks = max(1, int(ray.cluster_resources().get("CPU", 1)) // CPUS_PER_TASK)
        task = ray.remote(num_cpus=CPUS_PER_TASK, max_retries=0,
                          runtime_env={"env_vars": _task_env(data)})(_search_task)
        refs = [task.remote(search_loop, spec, url, parent, i + 1) for i in range(n_tasks)]
        _collect(ray, {ref: [] for ref in refs}, None, on_poll)
    finally:
        if started:
            ray.shutdown()


def _task_env(data) -> dict[str, str]:
    env = {"MLFLOW_TRACKING_URI": tracking_uri(), "MNIST_ROOT": str(Path(data.root).resolve()),
           "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    if RETRY_ENV in os.environ:
        env[RETRY_ENV] = os.environ[RETRY_ENV]
    return env


def _collect(ray, refs: dict, progress, on_poll=None) -> list[RunOutcome]:
    """Each task's outcomes as it ends; a task lost with its process counts its cohort LOST."""
    outcomes, todo = [], list(refs)
    try:
        while todo:
            done, todo = ray.wait(todo, num_returns=1, timeout=0.5)
            interrupt.check()
            if on_poll is not None:
                on_poll()
            for ref in done:
                cohort = refs[ref]
                try:
                    outcomes += ray.get(ref) or []
                except Exception as e:  # the task's process died (out of memory, a lost node), or a bug
                    cause = getattr(e, "cause", None) or e  # a RayTaskError wraps the task's own exception
                    if isinstance(cause, TrackingLostError):
                        # The store is gone for every task: stop them (their runs can't be ended anyway)
                        # and end as the plain grid does, in one line.
                        for other in todo:
                            ray.cancel(other, force=True)
                        raise TrackingLostError(str(cause)) from None
                    what = f"cohort of {len(cohort)}" if cohort else "search task"
                    print(f"{what} lost on Ray: {type(cause).__name__}: {str(cause).strip()[:500]}", file=sys.stderr)
                    outcomes += [RunOutcome("", LOST)] * len(cohort)
                if progress is not None:
                    progress.update(sum(total_steps(c) for c in cohort))
    except KeyboardInterrupt:
        for ref in todo:
            ray.cancel(ref)  # raises KeyboardInterrupt in the task: its open runs end KILLED
        ray.wait(todo, num_returns=len(todo), timeout=60)
        raise
    return outcomes
