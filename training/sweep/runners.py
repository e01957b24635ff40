"""Ways to train a grid's pending configs, behind one interface: `runner.run(pending, data, parent, progress)`.

Each runner groups the configs into cohorts for its own number of workers, trains
each cohort as child runs of the parent (training.sweep.cohort_runs), and returns how
every run ended.  Ctrl-C or SIGTERM raises KeyboardInterrupt once the open runs
have ended KILLED; a lost tracking server raises TrackingLostError.

- SerialRunner: one cohort after another, in this process.
- PoolRunner: N worker processes, each taking cohorts from a queue.
- training.sweep.ray_runner.RayRunner: one Ray task per cohort (imported only with --ray).
"""
import multiprocessing as mp
import os
import queue
from dataclasses import dataclass
from typing import Protocol

from training.config import RunConfig
from training.engine import interrupt
from training.engine.cohorts import make_cohorts
from training.nets import data as mnist
from training.nets.data import Mnist
from training.sweep.cohort_runs import ChildOf, train_one_cohort
from training.tracking.lifecycle import RunOutcome
from training.tracking.store_connection import TrackingLostError

POLL_SECONDS = 0.5  # how often the parent looks at the queue, the progress counter and a stop request


class Runner(Protocol):
    def run(self, pending: list[RunConfig], data: Mnist, parent: ChildOf, progress) -> list[RunOutcome]: ...


def make_runner(workers: int = 1, ray: bool = False, ray_address: str | None = None) -> Runner:
    if ray:
        from training.sweep.ray_runner import RayRunner  # Ray is an optional install
        return RayRunner(ray_address)
    return SerialRunner() if workers == 1 else PoolRunner(workers)


class SerialRunner:
    def run(self, pending, data, parent, progress) -> list[RunOutcome]:
        outcomes = []
        for cohort in make_cohorts(pending, 1):
            interrupt.check()
            outcomes += train_one_cohort(cohort, data, parent, progress=progress)
        return outcomes


@dataclass(frozen=True)
class CohortDone:
    """A worker's report of one cohort: how its runs ended."""
    outcomes: list[RunOutcome]


@dataclass(frozen=True)
class Stopped:
    """A worker's last report when the grid must stop: a person asked, or the store was lost (its error)."""
    lost: str | None = None

    def raise_again(self):
        if self.lost is not None:
            raise TrackingLostError(self.lost)  # the parent stops the grid and prints it as one line
        raise KeyboardInterrupt


class CounterProgress:
    """A tqdm-like `update` that adds to a counter shared with the parent process."""

    def __init__(self, counter):
        self.counter = counter

    def update(self, n):
        with self.counter.get_lock():
            self.counter.value += int(n)


def _worker(tasks, results, counter, data_root, parent: ChildOf, threads: int):
    interrupt.install()
    import torch
    torch.set_num_threads(threads)
    data = mnist.load(data_root)
    try:
        while (configs := tasks.get()) is not None:
            interrupt.check()
            results.put(CohortDone(train_one_cohort(configs, data, parent, CounterProgress(counter))))
    except KeyboardInterrupt:
        results.put(Stopped())
    except TrackingLostError as e:
        results.put(Stopped(lost=str(e)))


class PoolRunner:
    """Cohorts trained in `workers` processes at once, sharing the machine's cores between them."""

    def __init__(self, workers: int):
        self.workers = workers

    def run(self, pending, data, parent, progress) -> list[RunOutcome]:
        cohorts = make_cohorts(pending, self.workers)
        ctx = mp.get_context("spawn")
        tasks, results, counter = ctx.Queue(), ctx.Queue(), ctx.Value("q", 0)
        for cohort in cohorts:
            tasks.put(cohort)
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        procs = [ctx.Process(target=_worker, args=(tasks, results, counter, data.root, parent, threads))
                 for _ in range(self.workers)]
        for p in procs:
            tasks.put(None)
            p.start()
        try:
            outcomes = self._collect(len(cohorts), results, procs, counter, progress)
        except KeyboardInterrupt:
            _end_workers(procs, "terminate", 60)  # SIGTERM: each worker ends its open runs KILLED
            raise
        except TrackingLostError:
            _end_workers(procs, "kill", 10)  # their writes would only wait out their own retries on the dead server
            raise
        for p in procs:
            p.join()
        progress.update(counter.value - progress.n)
        return outcomes

    @staticmethod
    def _collect(n_cohorts, results, procs, counter, progress) -> list[RunOutcome]:
        outcomes, received = [], 0
        while received < n_cohorts:
            try:
                report = results.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    raise RuntimeError("every grid worker exited before the grid finished") from None
            else:
                received += 1
                if isinstance(report, Stopped):
                    report.raise_again()
                outcomes += report.outcomes
            progress.update(counter.value - progress.n)
            interrupt.check()
        return outcomes


def _end_workers(procs, how: str, timeout: float) -> None:
    for p in procs:
        if p.is_alive():
            getattr(p, how)()
    for p in procs:
        p.join(timeout=timeout)
