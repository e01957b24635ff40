"""Build a store of many contract-shaped runs through MLflow's public API, in several processes.

    .venv/bin/python benchmarks/bulk_store.py --store DIR [--runs 10000] [--workers 2] [--experiments 4] [--epochs 5]

Each run is what a grid's run logs, minus the snapshots: every RunConfig param under its contract name
(lr x batch size x seed, a new seed every 20 runs, so each run's config hash is its own), the describing
params (arch_label, n_params, dataset, layers, sha256.*), the config-hash and grid-name tags, and a short
history (steps 0..--epochs) of the epoch metrics, per-layer grad_norm and dead_fraction, and the running best
(training.engine.running_best), so its latest test_acc is its final one.  Calls: MlflowClient's
create_experiment, create_run, log_batch and set_terminated only.

Nine runs in ten go to the first experiment (bulk-0, the one a runs page shows); every tenth is dealt in
turn to the others (bulk-1 .. bulk-K-1): one large sweep beside smaller ones, as a team's store holds.

Resumable: a second call tops DIR up to --runs.  It finds the runs already FINISHED by their config hash and
logs only the missing ones; a run left unfinished by an interrupted call is deleted (MlflowClient.delete_run)
and logged again.  SQLite writers wait on each other through the URI's busy timeout (?timeout=60).
Prints the rate (runs/s) and what 100,000 runs would take at it.
"""
import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training import contract as C  # noqa: E402

PREFIX = "bulk-"
MAIN_SHARE = 10  # of every MAIN_SHARE runs, all but one go to the first experiment
LRS, BATCH_SIZES = (0.1, 0.3, 1.0, 3.0, 10.0), (10, 20, 50, 100)
CHUNK = 50  # runs per task handed to a worker: the progress bar moves by this much
LOG_BATCH_LIMIT = 1000  # MLflow's most metrics per log_batch call
SHA256 = {f: "ab" * 32 for f in ("train-images", "train-labels", "test-images", "test-labels")}
FAKE_CLOCK_MS = 1_700_000_000_000


def sqlite_uri(store: Path) -> str:
    return f"sqlite:///{store.resolve()}/mlflow.db?timeout=60"


def experiment_names(k: int) -> list[str]:
    return [f"{PREFIX}{j}" for j in range(k)]


def experiment_of(i: int, k: int) -> int:
    """Which of the k experiments run i goes to: the first, but for every MAIN_SHARE-th run."""
    if k == 1 or i % MAIN_SHARE:
        return 0
    return 1 + (i // MAIN_SHARE) % (k - 1)


def config_of(i: int, experiment: str, epochs: int):
    from training.config import RunConfig
    lr, bs = LRS[i % len(LRS)], BATCH_SIZES[(i // len(LRS)) % len(BATCH_SIZES)]
    return RunConfig(lr=lr, batch_size=bs, seed=i // (len(LRS) * len(BATCH_SIZES)), epochs=epochs,
                     experiment=experiment)


def run_params(config) -> dict[str, str]:
    """What training.tracking.mlflow_sink.run_params logs for this config (without reading MNIST for the digests)."""
    from training.nets.architecture import layers_of, n_params
    return {**config.as_params(), C.PARAM_ARCH_LABEL: config.arch_name, C.PARAM_N_PARAMS: str(n_params(config)),
            C.PARAM_DATASET: C.DATASET_NAME, C.PARAM_LAYERS: ",".join(l.name for l in layers_of(config)),
            **{C.PARAM_SHA256_PREFIX + f: d for f, d in SHA256.items()}}


def history(config, rng) -> list[tuple[int, dict[str, float]]]:
    """(step, metrics) for steps 0..epochs: a saturating test accuracy with noise, and the running best beside it."""
    import numpy as np

    from training.engine.running_best import RunningBest
    from training.nets.architecture import layers_of
    layers = [l.name for l in layers_of(config)]
    ceiling, rate = 0.90 + 0.07 * rng.random(), config.lr / 2
    best, steps = RunningBest(), []
    for e in range(config.epochs + 1):
        acc = float(ceiling * (1 - np.exp(-(e + 0.1) * rate)) + 0.01 * rng.standard_normal())
        values = {C.TRAIN_LOSS: 1 - acc, C.TEST_LOSS: 1.05 - acc, C.TRAIN_ACC: acc + 0.01, C.TEST_ACC: acc,
                  C.EPOCH_SECONDS: 3.0 + rng.random()}
        for layer in layers:
            values[C.grad_norm_key(layer)] = float(rng.random())
            values[C.dead_fraction_key(layer)] = float(rng.random() * 0.1)
        steps.append((e, values | best.update(e, values)))
    return steps


_client, _parent = None, None


def _worker_init(uri: str) -> None:
    global _client, _parent
    from mlflow.tracking import MlflowClient
    _client, _parent = MlflowClient(uri), os.getppid()


def log_runs(indices: list[int], experiments: list[tuple[str, str]], epochs: int) -> int:
    """Log runs `indices` (each fully, then FINISHED) into experiments [(id, name)]; returns how many."""
    import numpy as np
    from mlflow.entities import Metric, Param, RunTag
    for n, i in enumerate(indices):
        if os.getppid() != _parent:  # the main process was killed: stop, or a resumed call would log these twice
            return n
        exp_id, exp_name = experiments[experiment_of(i, len(experiments))]
        config = config_of(i, exp_name, epochs)
        rng = np.random.default_rng(i)
        run = _client.create_run(exp_id, run_name=config.display_name + f" s={config.seed}",
                                 start_time=FAKE_CLOCK_MS + i * 1000)
        rid = run.info.run_id
        metrics = [Metric(k, v, FAKE_CLOCK_MS + i * 1000 + e, e) for e, values in history(config, rng)
                   for k, v in values.items()]
        params = [Param(k, v) for k, v in run_params(config).items()]
        tags = [RunTag(C.TAG_CONFIG_HASH, config.config_hash), RunTag(C.TAG_GRID_NAME, exp_name)]
        for start in range(0, max(len(metrics), 1), LOG_BATCH_LIMIT):
            _client.log_batch(rid, metrics=metrics[start:start + LOG_BATCH_LIMIT],
                              params=params if start == 0 else [], tags=tags if start == 0 else [])
        _client.set_terminated(rid, C.STATUS_FINISHED, end_time=FAKE_CLOCK_MS + i * 1000 + 60_000 * epochs)
    return len(indices)


def open_experiments(client, k: int) -> list[tuple[str, str]]:
    """[(id, name)] of bulk-0 .. bulk-k-1, created where missing (model-training kind, artifacts beside the db)."""
    from training.location import sqlite_artifact_root
    out = []
    for name in experiment_names(k):
        exp = client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp else client.create_experiment(
            name, artifact_location=sqlite_artifact_root(client.tracking_uri),
            tags={C.TAG_EXPERIMENT_KIND: C.EXPERIMENT_KIND})
        out.append((exp_id, name))
    return out


def finished_hashes(client, experiment_ids: list[str]) -> set[str]:
    """Config hashes of the FINISHED runs.  Runs of any other status (an interrupted call's) are deleted, and so
    is a second FINISHED run of one config (a worker that outlived its killed call), so each config counts once."""
    from mlflow.entities import ViewType
    done, token = set(), None
    while True:
        page = client.search_runs(experiment_ids, "", ViewType.ACTIVE_ONLY, max_results=50_000, page_token=token)
        for run in page:
            digest = run.data.tags.get(C.TAG_CONFIG_HASH)
            if run.info.status == C.STATUS_FINISHED and digest not in done:
                done.add(digest)
            else:
                client.delete_run(run.info.run_id)
        token = page.token
        if not token:
            return done


def missing(n_runs: int, experiments: list[tuple[str, str]], epochs: int, done: set[str]) -> list[int]:
    names = [name for _, name in experiments]
    return [i for i in range(n_runs)
            if config_of(i, names[experiment_of(i, len(names))], epochs).config_hash not in done]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True, help="folder of the store (mlflow.db, artifacts/); made if missing")
    p.add_argument("--runs", type=int, default=10_000, help="runs the store should hold (default %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="logging processes (default %(default)s)")
    p.add_argument("--experiments", type=int, default=4, help="experiments to spread them over (default %(default)s)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per run: steps 0..epochs (default %(default)s)")
    args = p.parse_args(argv)
    if args.workers < 1 or args.experiments < 1 or args.runs < 0 or args.epochs < 1:
        p.error("--workers, --experiments and --epochs must be at least 1, --runs at least 0")
    from mlflow.tracking import MlflowClient
    from tqdm import tqdm
    store = Path(args.store)
    store.mkdir(parents=True, exist_ok=True)
    uri = sqlite_uri(store)
    client = MlflowClient(uri)
    experiments = open_experiments(client, args.experiments)
    t0 = time.perf_counter()
    todo = missing(args.runs, experiments, args.epochs, finished_hashes(client, [e for e, _ in experiments]))
    print(f"{store}: {args.runs - len(todo)} of {args.runs} runs there (checked in {time.perf_counter() - t0:.0f} s); "
          f"logging {len(todo)} in {args.workers} processes", flush=True)
    chunks = [todo[s:s + CHUNK] for s in range(0, len(todo), CHUNK)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn"), initializer=_worker_init,
                             initargs=(uri,)) as pool, \
            tqdm(total=args.runs, initial=args.runs - len(todo), unit="run", smoothing=0.05) as bar:
        for done in as_completed([pool.submit(log_runs, c, experiments, args.epochs) for c in chunks]):
            bar.update(done.result())
    seconds = time.perf_counter() - t0
    if todo:
        rate = len(todo) / seconds
        print(f"logged {len(todo)} runs in {seconds:.0f} s: {rate:.1f} runs/s with {args.workers} workers; "
              f"100,000 runs would take {100_000 / rate / 60:.0f} min at this rate")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    sys.exit(main())
