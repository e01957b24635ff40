"""Run a hyperparameter grid as one MLflow parent run with a nested child run per config.

    python -m training.grid training/grids/quick.yaml [--workers N | --ray [--ray-address ADDR]] [--dry-run]

Configs that share shapes and step counts train together as one stacked
computation (see training.engine).  Rerunning a file skips configs whose child
already FINISHED and reruns the ones that failed or were cut off.
"""
import argparse
import multiprocessing as mp
import os
import queue
import sys
import time

from tqdm import tqdm

from training import contract as C
from training import data as mnist
from training import interrupt
from training.config import RunConfig
from training.engine import cohort_key, total_steps, train_cohort
from training.errors import exit_on_user_error
from training.gridfile import GridSpec, load_grid
from training.tracking import STOP_BUDGET, MlflowSink, TrackingLostError, client, experiment_id, retry

MAX_COHORT = 24  # more models per stack stop paying off on a CPU and cost memory


def finished_hashes(mlflow_client, exp_id: str, grid_name: str) -> dict[str, str]:
    """config hash -> run id of this grid's children that already FINISHED."""
    runs = mlflow_client.search_runs(
        [exp_id], f"tags.`{C.TAG_GRID_NAME}` = '{grid_name}' and attributes.status = 'FINISHED'", max_results=5000)
    return {r.data.tags[C.TAG_CONFIG_HASH]: r.info.run_id for r in runs
            if C.TAG_CONFIG_HASH in r.data.tags and r.data.tags.get(C.TAG_GRID_PARENT) != "true"}


def make_cohorts(configs: list[RunConfig], workers: int) -> list[list[RunConfig]]:
    """Group configs that can share a stack; split the biggest groups so every worker has work."""
    groups: dict[tuple, list[RunConfig]] = {}
    for c in configs:
        groups.setdefault(cohort_key(c), []).append(c)
    cohorts = []
    for group in groups.values():
        cohorts += [group[i:i + MAX_COHORT] for i in range(0, len(group), MAX_COHORT)]
    while len(cohorts) < workers:
        biggest = max(cohorts, key=len)
        if len(biggest) < 2:
            break
        cohorts.remove(biggest)
        half = len(biggest) // 2
        cohorts += [biggest[:half], biggest[half:]]
    # Longest first, so parallel workers finish close together.
    return sorted(cohorts, key=lambda co: -sum(total_steps(c) for c in co))


def train_one_cohort(configs, data, parent_id: str, grid_name: str, progress=None) -> list[tuple[str, str]]:
    """Train one cohort as child runs of the parent.  Returns (run id, status) per config."""
    mlflow_client = client()
    tags = [{C.TAG_PARENT_RUN_ID: parent_id, C.TAG_GRID_NAME: grid_name} for _ in configs]
    sink = MlflowSink(mlflow_client, configs, data, extra_tags=tags)
    try:
        result = train_cohort(configs, data, sink, progress=progress)
        sink.finish(result.params)
    except KeyboardInterrupt:
        print(f"\nstopping: ending {len(sink.open)} open run(s) KILLED (Ctrl-C again to quit at once)", file=sys.stderr)
        sink.kill_open("interrupted (Ctrl-C or SIGTERM); rerun the grid to redo this config", budget=STOP_BUDGET)
        raise
    except TrackingLostError:  # unlike a crash, this stops the grid: every later cohort would hit it too
        sink.abandon()
        raise
    except Exception as e:  # a crash in one cohort must not take the rest of the grid with it
        sink.kill_open(f"crashed: {type(e).__name__}: {str(e)[:300]}", status="FAILED")
        print(f"cohort of {len(configs)} crashed: {type(e).__name__}: {e}", file=sys.stderr)
    return [(rid, mlflow_client.get_run(rid).info.status) for rid in sink.run_ids]


class _CounterProgress:
    """A tqdm-like `update` that adds to a counter shared with the parent process."""

    def __init__(self, counter):
        self.counter = counter

    def update(self, n):
        with self.counter.get_lock():
            self.counter.value += int(n)


def _worker(tasks, results, counter, parent_id, grid_name, threads):
    interrupt.install()
    import torch
    torch.set_num_threads(threads)
    data = mnist.load()
    try:
        while (configs := tasks.get()) is not None:
            interrupt.check()
            results.put(train_one_cohort(configs, data, parent_id, grid_name, _CounterProgress(counter)))
    except KeyboardInterrupt:
        results.put("interrupted")
    except TrackingLostError as e:
        results.put(("lost", str(e)))  # the parent stops the grid and prints it as one line


def run_parallel(cohorts, workers, parent_id, grid_name, bar) -> list[tuple[str, str]]:
    ctx = mp.get_context("spawn")
    tasks, results, counter = ctx.Queue(), ctx.Queue(), ctx.Value("q", 0)
    for cohort in cohorts:
        tasks.put(cohort)
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = [ctx.Process(target=_worker, args=(tasks, results, counter, parent_id, grid_name, threads))
             for _ in range(workers)]
    for p in procs:
        tasks.put(None)
        p.start()
    outcomes, received = [], 0
    try:
        while received < len(cohorts):
            try:
                item = results.get(timeout=0.5)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    raise RuntimeError("every grid worker exited before the grid finished") from None
            else:
                received += 1
                if item == "interrupted":
                    raise KeyboardInterrupt
                if isinstance(item, tuple) and item[0] == "lost":
                    raise TrackingLostError(item[1])
                outcomes += item
            bar.update(counter.value - bar.n)
            interrupt.check()
    except KeyboardInterrupt:
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: each worker ends its open runs KILLED
        for p in procs:
            p.join(timeout=60)
        raise
    except TrackingLostError:
        for p in procs:
            if p.is_alive():
                p.kill()  # its writes would only wait out their own retries against the dead server
        for p in procs:
            p.join(timeout=10)
        raise
    for p in procs:
        p.join()
    bar.update(counter.value - bar.n)
    return outcomes


def summary_rows(spec: GridSpec, mlflow_client, exp_id: str) -> list[dict]:
    """One row per config of the file, from the store: its latest child run's results."""
    runs = mlflow_client.search_runs([exp_id], f"tags.`{C.TAG_GRID_NAME}` = '{spec.name}'", max_results=5000,
                                     order_by=["attributes.start_time DESC"])
    latest = {}
    for r in runs:
        h = r.data.tags.get(C.TAG_CONFIG_HASH)
        if h and r.data.tags.get(C.TAG_GRID_PARENT) != "true":
            if h not in latest or (latest[h].info.status != "FINISHED" and r.info.status == "FINISHED"):
                latest[h] = r
    varying = [k for k in spec.configs[0].training_dict()
               if len({str(c.training_dict().get(k)) for c in spec.configs}) > 1]
    rows = []
    for c in spec.configs:
        r = latest.get(c.config_hash)
        label = c.run_name or " ".join(f"{k}={c.as_params()[k]}" for k in varying) or c.display_name
        row = {"config": label, "status": "NOT RUN", "final": None, "best": None, "time": None, "run_id": ""}
        if r is not None:
            hist = sorted(mlflow_client.get_metric_history(r.info.run_id, C.TEST_ACC), key=lambda m: m.step)
            row.update(status=r.info.status, run_id=r.info.run_id,
                       final=hist[-1].value if hist else None, best=max(m.value for m in hist) if hist else None,
                       time=(r.info.end_time - r.info.start_time) / 1000 if r.info.end_time else None)
        rows.append(row)
    return sorted(rows, key=lambda row: -(row["final"] if row["final"] is not None else -1))


def print_summary(rows: list[dict]) -> None:
    width = max([len("config")] + [len(r["config"]) for r in rows])
    print(f"\n{'config':<{width}}  {'final':>7}  {'best':>7}  {'status':<9} {'time':>7}  run")
    fmt = lambda v: f"{v:7.2%}" if v is not None else "      -"
    for r in rows:
        t = f"{r['time']:6.0f}s" if r["time"] is not None else "      -"
        print(f"{r['config']:<{width}}  {fmt(r['final'])}  {fmt(r['best'])}  {r['status']:<9} {t}  {r['run_id']}")


def print_plan(spec: GridSpec) -> None:
    print(f"{spec.path}: {len(spec.configs)} configs, experiment '{spec.configs[0].experiment}'")
    for i, c in enumerate(spec.configs, 1):
        print(f"{i:3d}. {c.display_name:<48} epochs={c.epochs} seed={c.seed} hash={c.config_hash}")
    n_cohorts = len({cohort_key(c) for c in spec.configs})
    print(f"{n_cohorts} stacked cohort(s); nothing trained (--dry-run)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.grid", description=__doc__.splitlines()[0])
    p.add_argument("file", help="grid YAML file, e.g. training/grids/quick.yaml")
    p.add_argument("--workers", type=int, default=1, help="train cohorts in N processes at once")
    p.add_argument("--dry-run", action="store_true", help="print the expanded configs and train nothing")
    p.add_argument("--ray", action="store_true", help="run each cohort as a Ray task (pip install -r requirements-ray.txt)")
    p.add_argument("--ray-address", help="an existing Ray cluster, e.g. auto or ray://head:10001 (default: start one here)")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    if args.ray_address and not args.ray:
        p.error("--ray-address needs --ray")
    if args.ray and args.workers != 1:
        p.error("--workers and --ray do not mix: Ray places the cohorts")
    if args.ray:
        from training import ray_runner
        ray_runner.import_ray()  # a missing Ray fails here, before any run exists
    spec = load_grid(args.file)
    if args.dry_run:
        print_plan(spec)
        return 0
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
    parent = retry(mlflow_client.create_run, exp_id, run_name=f"grid {spec.name}",
                   tags={C.TAG_GRID_PARENT: "true", C.TAG_GRID_NAME: spec.name})
    parent_id = parent.info.run_id
    retry(mlflow_client.log_text, parent_id, spec.text, "grid.yaml")
    retry(mlflow_client.log_param, parent_id, "n_configs", len(spec.configs))
    interrupt.install()
    cohorts = make_cohorts(pending, args.workers)
    start = time.perf_counter()
    outcomes = []
    try:
        with tqdm(total=sum(total_steps(c) for c in pending), unit="step", unit_scale=True,
                  desc=f"grid {spec.name}") as bar:
            if args.ray:
                outcomes = ray_runner.run_on_ray(pending, data.root, parent_id, spec.name, bar, args.ray_address)
            elif args.workers == 1:
                for cohort in cohorts:
                    interrupt.check()
                    outcomes += train_one_cohort(cohort, data, parent_id, spec.name, progress=bar)
            else:
                outcomes = run_parallel(cohorts, args.workers, parent_id, spec.name, bar)
    except KeyboardInterrupt:
        try:
            retry(mlflow_client.set_terminated, parent_id, "KILLED", budget=STOP_BUDGET)
            ended = "open runs ended KILLED, finished ones kept"
        except TrackingLostError:
            ended = "the tracking store did not answer, so open runs stay RUNNING there with what they logged"
        print(f"interrupted: {ended}; rerun `python -m training.grid {args.file}` to finish the rest",
              file=sys.stderr)
        return 130
    except TrackingLostError as e:
        try:
            retry(mlflow_client.set_terminated, parent_id, "FAILED", budget=0)  # one quick try
        except Exception:
            pass
        raise TrackingLostError(f"{e}; rerun `python -m training.grid {args.file}` to train the rest, "
                                f"finished configs are kept") from None
    failed = [rid for rid, status in outcomes if status != "FINISHED"]
    retry(mlflow_client.set_terminated, parent_id, "FAILED" if failed else "FINISHED")
    rows = summary_rows(spec, mlflow_client, exp_id)
    print_summary(rows)
    print(f"grid {spec.name}: parent run {parent_id}, {len(outcomes)} trained in {time.perf_counter() - start:.0f}s")
    if failed:
        names = [r["config"] for r in rows if r["run_id"] in failed]
        print(f"error: {len(failed)} config(s) did not finish: {'; '.join(names)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    exit_on_user_error(main)
