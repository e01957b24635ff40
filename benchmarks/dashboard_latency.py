"""Server-side latency of the dashboard's heaviest reads, on a store of many runs.

    python benchmarks/dashboard_latency.py [--runs 1000] [--epochs 20] [--keep DIR] [--no-server]

It logs contract-shaped runs (params, per-epoch metrics with the running best, per-layer grad_norm and
dead_fraction, and snapshots for the run-detail run) through MlflowClient into a SQLite store (a temporary
one, or DIR, reused when it already holds that many runs), then times, in this process:

  runs page           the page's whole answer: its layout with the table rows, both grid-review figures and
                      the importance section, serialised to JSON as Dash sends it
  filtered runs page  the same with an MLflow filter (params.lr = '3.0': a fifth of the runs)
  compare             10 runs: curves for four metrics, the params and metrics tables
  run detail          one run's metric histories, its snapshot list and every snapshot (the per-epoch views)

Each runs page is set beside MLflow's own `search_runs` returning the same runs (one call), timed in turn
with it: "cold" is the first call of each (the dashboard's caches empty), "warm" the median of the next
five.  The runs pages are timed on the SQLite store and again through `mlflow server` on the same store
(unless --no-server).  Goals: each runs page within 2x of search_runs, cold and warm; compare and run
detail under 1 s warm.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep the printed figures readable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.servers import free_port, stop, wait_http  # noqa: E402

SIZES = (784, 30, 10)
LAYERS = ("fc1", "fc2")
WARM_REPEATS = 5
EXPERIMENT = "latency"
FILTER = "params.lr = '3.0'"


def log_store(n_runs: int, epochs: int, snapshot_runs: int) -> tuple[str, list[str]]:
    """Log the runs; returns the experiment id and the run ids (newest last)."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from training import contract as C
    from training.engine.running_best import RunningBest
    from training.tracking.mlflow_sink import tracking_uri
    client = MlflowClient(tracking_uri())
    artifacts = Path(os.environ["BENCH_ARTIFACTS"])
    exp = client.create_experiment(EXPERIMENT, artifact_location=artifacts.as_uri())
    rng = np.random.default_rng(0)
    grid = [(lr, bs, seed) for lr in (0.1, 0.3, 1.0, 3.0, 10.0) for bs in (10, 20, 50, 100) for seed in range(50)]
    ids, t0 = [], time.perf_counter()
    for i in range(n_runs):
        lr, bs, seed = grid[i % len(grid)]
        run = client.create_run(exp, run_name=f"mlp-784-30-10 sigmoid sgd lr={lr:g} bs={bs} s={seed}")
        rid = run.info.run_id
        params = {"arch": "mlp", "sizes": "784,30,10", "activation": "sigmoid", "loss": "mse", "optimizer": "sgd",
                  "lr": lr, "momentum": 0.0, "batch_size": bs, "epochs": epochs, "seed": seed, "train_size": 60000,
                  "snapshot_every": 1, "experiment": "latency", "init_std": "default",
                  C.PARAM_LAYERS: ",".join(LAYERS), C.PARAM_N_PARAMS: 23860, C.PARAM_DATASET: C.DATASET_NAME,
                  **{f"{C.PARAM_SHA256_PREFIX}{f}": "ab" * 32 for f in ("train-images", "train-labels",
                                                                        "test-images", "test-labels")}}
        ceiling = 0.90 + 0.05 * rng.random()
        metrics, best = [], RunningBest()
        for e in range(epochs + 1):
            acc = ceiling * (1 - np.exp(-(e + 0.1) * lr / 2)) + 0.01 * rng.standard_normal()
            values = {C.TRAIN_LOSS: 1 - acc, C.TEST_LOSS: 1.05 - acc, C.TRAIN_ACC: acc + 0.01, C.TEST_ACC: acc,
                      C.EPOCH_SECONDS: 3.0 + rng.random()}
            for layer in LAYERS:
                values[C.grad_norm_key(layer)] = float(rng.random())
                values[C.dead_fraction_key(layer)] = float(rng.random() * 0.1)
            values |= best.update(e, values)
            metrics += [Metric(k, float(v), 1_700_000_000_000 + e, e) for k, v in values.items()]
        for start in range(0, len(metrics), 1000):  # MLflow's log_batch limit
            client.log_batch(rid, metrics=metrics[start:start + 1000],
                             params=[Param(k, str(v)) for k, v in params.items()] if start == 0 else [],
                             tags=[RunTag(C.TAG_CONFIG_HASH, f"{i:016x}")] if start == 0 else [])
        if i >= n_runs - snapshot_runs:
            log_snapshots(client, rid, epochs, rng)
        client.set_terminated(rid, "FINISHED")
        ids.append(rid)
        if (i + 1) % 100 == 0:
            print(f"  logged {i + 1}/{n_runs} runs ({time.perf_counter() - t0:.0f} s)", flush=True)
    return exp, ids


def log_snapshots(client, run_id: str, epochs: int, rng) -> None:
    from training import contract as C
    with tempfile.TemporaryDirectory() as tmp:
        for e in range(epochs + 1):
            snap = {}
            for layer, (n_in, n_out) in zip(LAYERS, zip(SIZES[:-1], SIZES[1:])):
                snap[C.weight_key(layer)] = rng.standard_normal((n_out, n_in)).astype(np.float32)
                snap[C.bias_key(layer)] = rng.standard_normal(n_out).astype(np.float32)
                snap[C.act_hist_key(layer)] = rng.integers(0, 1000, 40)
                snap[C.act_edges_key(layer)] = np.linspace(0, 1, 41)
            snap[C.CONF_EDGES] = np.linspace(0, 1, 21)
            snap[C.CONF_HIST_CORRECT] = rng.integers(0, 1000, 20)
            snap[C.CONF_HIST_INCORRECT] = rng.integers(0, 100, 20)
            snap[C.PRED_CLASS] = rng.integers(0, 10, 10000).astype(np.uint8)
            snap[C.PRED_CONFIDENCE] = rng.random(10000).astype(np.float32)
            path = Path(tmp) / C.snapshot_path(e).rsplit("/", 1)[1]
            np.savez(path, **snap)
            client.log_artifact(run_id, str(path), C.SNAPSHOT_DIR)


def runs_page(experiment_id: str, filter_string: str = "") -> int:
    """The runs page's answer as Dash sends it: its layout function, serialised to JSON.  Returns its size."""
    import plotly

    import dashboard.app  # noqa: F401 (the pages register with the app)
    from dashboard.pages import runs
    layout = runs.layout(experiment=experiment_id, filter=filter_string or None)
    return len(json.dumps(layout, cls=plotly.utils.PlotlyJSONEncoder))


def mlflow_search(experiment_id: str, filter_string: str = "") -> int:
    """MLflow's own search for the same runs, in one call, as a script would ask for them."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient
    from training.tracking.mlflow_sink import tracking_uri
    return len(MlflowClient(tracking_uri()).search_runs([experiment_id], filter_string, ViewType.ACTIVE_ONLY,
                                                        max_results=50_000))


def compare(run_ids: list[str]):
    from dashboard.views import compare_view as V
    comp = V.load(",".join(run_ids))
    for key in V.CURVES:
        V.curve_figure(comp, key, 0.6)
    V.params_table(comp.runs)
    V.metrics_table(comp)
    return len(comp.runs)


def run_detail(run_id: str):
    """The reads a run-detail page makes: every contract metric, the snapshot list, and each snapshot."""
    from dashboard.read import store
    from training import contract as C
    run = store.get_run(run_id)
    keys = list(C.EPOCH_METRICS) + [f(layer) for layer in store.layer_names(run)
                                    for f in (C.grad_norm_key, C.dead_fraction_key)]
    for key in keys:
        store.metric_history(run_id, key)
    epochs = store.snapshot_epochs(run_id)
    for e in epochs:
        store.load_snapshot(run_id, e)
    return len(epochs)


def timed(fn, *args) -> tuple[float, float]:
    t0 = time.perf_counter()
    fn(*args)
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(WARM_REPEATS):
        t0 = time.perf_counter()
        fn(*args)
        warm.append(time.perf_counter() - t0)
    return cold, statistics.median(warm)


def _seconds(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def beside_search(experiment_id: str, filter_string: str) -> tuple[float, float, float, float]:
    """(ours cold, search cold, ours warm, search warm): the runs page and MLflow's search for the same runs,
    in turn.  Cold empties the dashboard's in-process caches first; warm is the median of WARM_REPEATS turns."""
    from dashboard.read import cache
    cache.clear()
    search_cold = _seconds(mlflow_search, experiment_id, filter_string)
    cache.clear()
    ours_cold = _seconds(runs_page, experiment_id, filter_string)
    ours, theirs = [], []
    for _ in range(WARM_REPEATS):
        theirs.append(_seconds(mlflow_search, experiment_id, filter_string))
        ours.append(_seconds(runs_page, experiment_id, filter_string))
    return ours_cold, search_cold, statistics.median(ours), statistics.median(theirs)


def start_mlflow_server(root: Path, backend_uri: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([mlflow, "server", "--backend-store-uri", backend_uri, "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "2"], stdout=log, stderr=log, start_new_session=True,
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", proc, timeout=180)
    return proc, url


def existing(n_runs: int) -> tuple[str, list[str]] | None:
    """The experiment and run ids of a kept store that already holds n_runs finished runs, else None."""
    from mlflow.tracking import MlflowClient
    from training.tracking.mlflow_sink import tracking_uri
    client = MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], max_results=50_000, order_by=["attributes.start_time ASC"])
    return (exp.experiment_id, [r.info.run_id for r in runs]) if len(runs) == n_runs else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--keep", help="build the store in this folder and leave it, or reuse the one there "
                                  "(default: a temp folder, removed)")
    p.add_argument("--no-server", action="store_true", help="time the SQLite store only, not through mlflow server")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dash-latency-") as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        backend = f"sqlite:///{root}/mlflow.db?timeout=60"
        os.environ["MLFLOW_TRACKING_URI"] = backend
        os.environ["BENCH_ARTIFACTS"] = str(root / "artifacts")
        os.environ["DASHBOARD_CACHE_DIR"] = str(Path(tmp) / "cache")
        found = existing(args.runs) if args.keep else None
        if found:
            exp, ids = found
            print(f"reusing the {args.runs} runs in {root}\n", flush=True)
        else:
            print(f"logging {args.runs} runs x {args.epochs + 1} epochs into {root} ...", flush=True)
            t0 = time.perf_counter()
            exp, ids = log_store(args.runs, args.epochs, snapshot_runs=1)
            print(f"logged in {time.perf_counter() - t0:.0f} s\n", flush=True)
        from dashboard.read import store
        store.experiments()  # open the client and its DB connection: "cold" measures the reads, not start-up
        pages = [("sqlite", "runs page", "", beside_search(exp, "")),
                 ("sqlite", "filtered", FILTER, beside_search(exp, FILTER))]
        results = [("compare", "10 runs", timed(compare, ids[:10])),
                   ("run detail", f"{args.epochs + 1} snapshots", timed(run_detail, ids[-1]))]
        if not args.no_server:
            server, url = start_mlflow_server(root, backend)
            try:
                os.environ["MLFLOW_TRACKING_URI"] = url
                pages += [("server", "runs page", "", beside_search(exp, "")),
                          ("server", "filtered", FILTER, beside_search(exp, FILTER))]
            finally:
                stop([server])
    print(f"{args.runs} runs; each runs page beside MLflow's search_runs returning the same runs (goal: at most 2x)")
    print(f"{'store':<7} {'page':<10} {'cold s':>7} {'search':>7} {'ratio':>6}   {'warm s':>7} {'search':>7} {'ratio':>6}")
    for backend_name, name, filter_string, (oc, sc, ow, sw) in pages:
        print(f"{backend_name:<7} {name:<10} {oc:7.2f} {sc:7.2f} {oc / sc:5.2f}x   {ow:7.2f} {sw:7.2f} {ow / sw:5.2f}x"
              + (f"   ({filter_string})" if filter_string else ""))
    print(f"\n{'view':<12} {'size':<14} {'cold s':>8} {'warm s':>8} {'cold/warm':>10}  goal: warm < 1 s")
    for name, size, (cold, warm) in results:
        ok = "ok" if warm < 1 else "SLOW"
        print(f"{name:<12} {size:<14} {cold:8.3f} {warm:8.3f} {cold / warm:10.1f}  {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
