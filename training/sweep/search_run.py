"""Running a search: an Optuna study proposes the configs, trials train stacked, its pruner stops the losers.

    python -m training.grid FILE      # a grid file with a `search:` section (training.sweep.search_spec)

The study lives in Optuna's RDB storage: `optuna.db` beside a SQLite tracking store, or `--storage URL`
(needed with a tracking server, e.g. a database on the server's PostgreSQL).  Optuna's samplers, pruners
and storage do the searching; training.sweep.search_study claims its trials, and this module trains them.

How the stack and the study meet (docs/architecture.md draws it):
- one claimant per thread claims a few trials at a time (CLAIM per process; TPE's constant liar keeps
  pending trials apart), groups them into cohorts by shape and step count, trains each cohort stacked, and
  claims again the moment its last cohort ends, so no core waits for another's longest trial;
- after each epoch every trial reports the search metric; one its pruner stops leaves the stack at once
  (the kernel skips it) and its run ends FINISHED, tagged pruned, with the rung it lost to in its description;
- a trial that reached the last epoch is told its final metric; one that diverged is told it failed.
Every trial is an MLflow child run of one parent run, kept across reruns (its id is a study attribute).
Claims count the study's trials, so `--workers N` processes sharing one study train exactly `trials`
between them (a claim past the count is told FAILED and marked surplus, and trains nothing).
Ctrl-C or SIGTERM ends the open runs KILLED and their trials FAILED marked interrupted: they don't count,
so the same command again proposes fresh trials until the count is reached.  Pruned trials stay pruned.
"""
import multiprocessing as mp
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from training import contract as C
from training.engine import interrupt
from training.engine.cohorts import make_cohorts
from training.engine.loop import train_cohort
from training.nets import data as mnist
from training.sweep.cohort_runs import ChildOf
from training.sweep.gridfile import GridSpec
from training.sweep.runners import CounterProgress
from training.sweep.search_study import (PARENT_ATTR, RUN_ATTR, claim, counted, experiment, open_study, remaining,
                                         rung_reason, safe_url, storage_url, uncount)
from training.sweep.search_summary import describe_search, print_search_summary
from training.tracking.lifecycle import INTERRUPTED, Interrupted, OpenRuns, RunLifecycle
from training.tracking.mlflow_sink import MlflowSink, client, experiment_id, log_batch, source_tags
from training.tracking.store_connection import TrackingLostError, retry

CLAIM = 6  # trials a process claims at once (split among its claimants): how often TPE learns, against
#            how many trials can share a cohort


class CohortTrials:
    """One cohort's trials: reports each epoch's metric, prunes, and tells the study how each ended."""

    def __init__(self, study, spec: GridSpec, trials: list, sink: MlflowSink, bar):
        self.study, self.search, self.trials, self.sink, self.bar = study, spec.search, trials, sink, bar
        self.last: dict[int, float] = {}  # k -> its metric at the last epoch it reported
        self.reached: dict[int, int] = {}  # k -> that epoch
        self.told: set[int] = set()

    def stop(self, k: int, epoch: int, metrics: dict[str, float]) -> bool:
        """The engine asks after each logged epoch: report it, and prune the trial if its pruner says so."""
        import optuna
        if epoch == 0:
            return False
        trial, value = self.trials[k], metrics[self.search.metric]
        trial.report(value, epoch)
        self.last[k], self.reached[k] = value, epoch
        self.bar.update(1)
        if epoch == self.search.epochs() or not trial.should_prune():
            return False
        reason = rung_reason(self.study, trial, epoch, value, self.search.metric, self.search.direction())
        run_id = self.sink.run_ids[k]
        log_batch(self.sink.client, run_id, tags=_tags({C.TAG_SEARCH_STATE: C.SEARCH_PRUNED,
                                                        C.TAG_SEARCH_PRUNED_AT: str(epoch)}))
        self.sink.runs.end(run_id, C.STATUS_FINISHED, reason)
        self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        self.told.add(k)
        self.bar.update(self.search.epochs() - epoch)  # the epochs it won't train
        return True

    def end(self, params: list) -> None:
        """After training: complete the trials that reached the end, fail the ones that didn't."""
        import optuna
        for k, trial in enumerate(self.trials):
            if k in self.told:
                continue
            done = params[k] is not None and k in self.last
            state = C.SEARCH_COMPLETE if done else C.SEARCH_FAILED
            log_batch(self.sink.client, self.sink.run_ids[k], tags=_tags({C.TAG_SEARCH_STATE: state}))
            if done:
                self.study.tell(trial, self.last[k])
            else:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                self.bar.update(self.search.epochs() - self.reached.get(k, 0))  # the epochs it won't train
            self.told.add(k)

    def interrupted(self) -> None:
        """Ctrl-C, SIGTERM or a lost store: the open trials don't count, so a rerun proposes others."""
        uncount([trial for k, trial in enumerate(self.trials) if k not in self.told], self.study)
        self.told.update(range(len(self.trials)))


def _tags(tags: dict[str, str]):
    from mlflow.entities import RunTag
    return [RunTag(key, value) for key, value in tags.items()]


def train_claimants(study, spec: GridSpec, data, parent: ChildOf, bar) -> None:
    """Claim and train trials until the study has its count: one claimant per thread this process may use,
    each claiming its next trials the moment its last cohort ends.

    Why a claimant per thread, not generations: the kernel spreads a cohort's models over the threads, so a
    cohort of one model (common while the sampler explores) would leave the other cores idle; and a
    generation waits for its longest trial, while a claimant whose trials were pruned takes new ones at once,
    so the cores stay busy while trials remain.  Each cohort then trains on one torch thread."""
    import torch
    threads = torch.get_num_threads()
    if threads == 1:
        _claimant(study, spec, data, parent, bar, client(), threading.Lock(), threading.Event(), CLAIM)
        return
    lock, stopped, mlflow_client = threading.Lock(), threading.Event(), client()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="claimant") as pool:
            futures = [pool.submit(_claimant, study, spec, data, parent, bar, mlflow_client, lock, stopped,
                                   max(1, CLAIM // threads)) for _ in range(threads)]
        # The first stop (Ctrl-C, a lost store) is raised; the other claimants ended their cohorts too.
        stops = [f.exception() for f in futures if isinstance(f.exception(), (KeyboardInterrupt, TrackingLostError))]
        if stops:
            raise stops[0]
        for f in futures:
            f.result()
    finally:
        torch.set_num_threads(threads)


def _claimant(study, spec: GridSpec, data, parent: ChildOf, bar, mlflow_client, lock, stopped, n: int) -> None:
    """Claim up to n trials, train them as cohorts one after another, and again, until none remain or
    another claimant stopped.  Trials claimed but not started when a stop comes don't count."""
    while not stopped.is_set():
        with lock:  # one ask at a time, so TPE's constant liar sees every pending trial of this process
            claimed = claim(study, spec, min(n, remaining(study, spec.search.trials)))
        if not claimed:
            return
        by_config = {id(config): (trial, config) for trial, config in claimed}
        waiting = [[by_config[id(c)] for c in group] for group in make_cohorts([c for _, c in claimed], 1)]
        try:
            while waiting:
                _train_cohort(study, spec, waiting.pop(0), data, parent, bar, mlflow_client)
        except BaseException:
            stopped.set()
            uncount([t for members in waiting for t, _ in members], study)
            raise


def _train_cohort(study, spec: GridSpec, members: list, data, parent: ChildOf, bar, mlflow_client) -> None:
    trials, configs = [t for t, _ in members], [c for _, c in members]
    try:
        interrupt.check()
        tags = [{**parent.tags(), C.TAG_SEARCH_TRIAL: str(t.number)} for t in trials]
        sink = MlflowSink(mlflow_client, configs, data, extra_tags=tags, source=parent.source)
    except BaseException:
        uncount(trials, study)
        raise
    for trial, run_id in zip(trials, sink.run_ids):
        trial.set_user_attr(RUN_ATTR, run_id)
    cohort = CohortTrials(study, spec, trials, sink, bar)
    try:
        with RunLifecycle(sink.runs, interrupted=f"{INTERRUPTED}; rerun the search to propose another trial"):
            result = train_cohort(configs, data, sink, stop=cohort.stop)
            sink.finish(result.params)
        cohort.end(result.params)
    except (KeyboardInterrupt, TrackingLostError):
        cohort.interrupted()
        raise
    except Exception as e:  # a crash in one cohort must not take the rest of the search with it
        print(f"cohort of {len(configs)} crashed: {type(e).__name__}: {e}", file=sys.stderr)
        cohort.end([None] * len(configs))


def search_loop(spec: GridSpec, url: str, data, parent: ChildOf, bar, seed_offset: int) -> None:
    """Claim and train generations until the study has its trials (in this process; workers run it too)."""
    train_claimants(open_study(spec, url, seed_offset), spec, data, parent, bar)


def run_search(spec: GridSpec, args) -> int:
    """Train the trials the study still needs, then print the summary.  Returns the exit code."""
    url = storage_url(args.storage)
    data = mnist.load()  # verified before any run exists
    mlflow_client = client()
    exp_id = experiment_id(mlflow_client, experiment(spec))
    study = open_study(spec, url)
    left = remaining(study, spec.search.trials)
    print(f"{spec.path}: search of {spec.search.trials} trials, {left} to train "
          f"(study '{study.study_name}' in {safe_url(url)})")
    parent = OpenRuns(mlflow_client)
    parent_id = _parent_run(study, spec, mlflow_client, exp_id)
    child_of = ChildOf(parent_id, spec.name, str(spec.path))
    parent.add(parent_id, lambda status, reason: describe_search(spec, study, status, reason))
    interrupt.install()
    start = time.perf_counter()
    rerun = f"rerun `python -m training.grid {args.file}`"
    try:
        with RunLifecycle(parent, interrupted=None, announce=False,
                          on_lost=f"{rerun} to train the rest; finished trials are kept"):
            with tqdm(total=left * spec.search.epochs(), unit="model-epoch", desc=f"search {spec.name}") as bar:
                if args.ray and left:
                    from training.sweep import ray_runner  # Ray is an optional install
                    follow = _follower(bar, study, spec.search.epochs())
                    ray_runner.run_search(search_loop, spec, url, data, child_of, args.ray_address, on_poll=follow)
                    follow()
                elif args.workers > 1 and left:
                    _run_workers(spec, url, data, child_of, bar, args.workers)
                else:
                    search_loop(spec, url, data, child_of, bar, seed_offset=len(study.trials))
            _tag_best(study, mlflow_client, parent_id)
            parent.end(parent_id, C.STATUS_FINISHED)
    except Interrupted as stop:
        ended = ("open trials ended KILLED and don't count, finished and pruned ones are kept" if stop.ended else
                 "the tracking store did not answer, so open runs stay RUNNING there with what they logged")
        print(f"interrupted: {ended}; {rerun} to finish the search", file=sys.stderr)
        return 130
    print_search_summary(study, spec, parent_id, time.perf_counter() - start)
    return 0


def _follower(bar, study, epochs: int):
    """A function that moves the bar to the model-epochs reached since now."""
    before = _reached(study, epochs)

    def follow():
        bar.update(max(0, min(_reached(study, epochs) - before, bar.total) - bar.n))
    return follow


def _reached(study, epochs: int) -> int:
    """The model-epochs the study's counted trials have reached, a finished one all its epochs: the progress
    of trials trained elsewhere (Ray tasks), read from the study they share."""
    return sum(epochs if t.state.is_finished() else max(t.intermediate_values, default=0) for t in counted(study))


def _parent_run(study, spec: GridSpec, mlflow_client, exp_id: str) -> str:
    """The search's parent run: the one a previous invocation made (reopened), else a new one."""
    known = study.user_attrs.get(PARENT_ATTR)
    if known:
        try:
            retry(mlflow_client.update_run, known, status=C.STATUS_RUNNING)
            return known
        except TrackingLostError:
            raise
        except Exception:
            pass  # deleted from the store: start another parent
    search = spec.search
    tags = {C.TAG_GRID_PARENT: C.TRUE, C.TAG_GRID_NAME: spec.name, C.TAG_SEARCH_PARENT: C.TRUE,
            **source_tags(str(spec.path))}
    parent_id = retry(mlflow_client.create_run, exp_id, run_name=f"search {spec.name}", tags=tags).info.run_id
    from mlflow.entities import Param
    params = {C.PARAM_SEARCH_SAMPLER: search.sampler, C.PARAM_SEARCH_PRUNER: search.pruner,
              C.PARAM_SEARCH_METRIC: search.metric, C.PARAM_SEARCH_TRIALS: str(search.trials),
              C.PARAM_SEARCH_SEED: str(search.seed), C.PARAM_SEARCH_SPACE: search.space_json()}
    log_batch(mlflow_client, parent_id, params=[Param(k, v) for k, v in params.items()])
    retry(mlflow_client.log_text, parent_id, spec.text, C.GRID_FILE_ARTIFACT)
    study.set_user_attr(PARENT_ATTR, parent_id)
    return parent_id


def _tag_best(study, mlflow_client, parent_id: str) -> None:
    complete = [t for t in study.trials if t.state.name == "COMPLETE" and RUN_ATTR in t.user_attrs]
    if complete:
        retry(mlflow_client.set_tag, parent_id, C.TAG_SEARCH_BEST_RUN, study.best_trial.user_attrs[RUN_ATTR])


def _worker(spec, url, data_root, parent, counter, index, threads):
    interrupt.install()
    import torch
    torch.set_num_threads(threads)
    data = mnist.load(root=data_root) if data_root else mnist.load()
    bar = CounterProgress(counter)
    try:
        search_loop(spec, url, data, parent, bar, seed_offset=index)
    except (KeyboardInterrupt, Interrupted):
        sys.exit(130)
    except TrackingLostError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)


def _run_workers(spec, url, data, parent: ChildOf, bar, workers: int) -> None:
    """`workers` processes, each claiming and training generations from the one study."""
    ctx = mp.get_context("spawn")
    counter = ctx.Value("q", 0)
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = [ctx.Process(target=_worker, args=(spec, url, None, parent, counter, i + 1, threads))
             for i in range(workers)]
    for p in procs:
        p.start()
    shown = 0
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(0.5)
            interrupt.check()
            if counter.value > shown:
                bar.update(counter.value - shown)
                shown = counter.value
    except (KeyboardInterrupt, Interrupted):
        for p in procs:
            p.join(timeout=60)
        raise
    for p in procs:
        p.join()
    if counter.value > shown:
        bar.update(counter.value - shown)
    if any(p.exitcode == 3 for p in procs):
        raise TrackingLostError("a worker lost the tracking store")
    if any(p.exitcode == 130 for p in procs):
        raise KeyboardInterrupt
