"""Server-side latency of the sweep review on real runs.

    python benchmarks/sweep_latency.py                        # trains 300 small real runs in a temp store
    python benchmarks/sweep_latency.py --keep DIR             # ... in DIR/mlflow.db, kept (ids in DIR/runs-*.txt)
    python benchmarks/sweep_latency.py --store URI --runs ID,ID,...   # times runs of an existing store

The sweep is 30 configs (10 learning rates x 3 batch sizes) x 10 seeds of [784,20,10] sigmoid on 2,000
images for 2 epochs, trained with the grid's own stacked engine and MLflow sink.  Times, in this process,
with the pages' own layout functions, the layout serialised to JSON as the server sends it:

  grouped compare   /compare of 30 runs (3 learning rates x 10 seeds, batch 20), opened grouped by config:
                    cold (empty caches) and warm (median of 5)                               goal < 1 s warm
                    /compare of all 300 runs (30 configs x 10 seeds), the same            goal < 2 s warm
  neurons across    /compare/neurons of 5 of those runs, layer 1: cold (every run's activations,
                    statistics and matches computed) and warm (median of 5)    goal < 2 s cold, 0.3 s warm

With --store, the given runs are the compare (the first 5 the neurons across runs).  The MLflow client and
the 10,000 MNIST test images are loaded once per server process; they are timed apart, before the rest.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL_COMPARE_WARM_S, GOAL_SWEEP_WARM_S, GOAL_NEURONS_COLD_S, GOAL_NEURONS_WARM_S = 1.0, 2.0, 2.0, 0.3
LRS, BATCH_SIZES, SEEDS = (0.1, 0.2, 0.3, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0), (10, 20, 50), tuple(range(10))
SMALL_LRS, SMALL_BATCH = (0.5, 1.0, 3.0), 20  # the 30-run case: the sweep's batch-20 runs at 3 learning rates


def sweep_configs() -> list:
    """300 configs of [784,20,10] sigmoid: 10 learning rates x 3 batch sizes x 10 seeds."""
    from training.config import RunConfig
    return [RunConfig(sizes=(784, 20, 10), activation="sigmoid", loss="mse", lr=lr, batch_size=b, epochs=2,
                      train_size=2000, seed=s, experiment="sweep-latency")
            for b in BATCH_SIZES for lr in LRS for s in SEEDS]


def train_runs() -> dict:
    """Trains the sweep, one stacked cohort per batch size (split as the grid splits them); run id -> config."""
    from training.engine.cohorts import make_cohorts
    from training.engine.loop import train_cohort
    from training.nets.data import load
    from training.tracking.mlflow_sink import MlflowSink, client
    data, runs = load(train_size=2000), {}
    for configs in make_cohorts(sweep_configs(), workers=1):
        sink = MlflowSink(client(), configs, data)
        sink.finish(train_cohort(configs, data, sink).params)
        runs.update(zip(sink.run_ids, configs))
    return runs


def page_module(path: str):
    import dash

    import dashboard.app  # noqa: F401  registers the pages
    for name, page in dash.page_registry.items():
        if page["path"] == path:
            return sys.modules[name]
    raise RuntimeError(f"no page is registered at {path}")


def served(layout, **query) -> int:
    """The layout as the server sends it: built, then serialised; returns its size in bytes."""
    import plotly
    return len(json.dumps(layout(**query), cls=plotly.utils.PlotlyJSONEncoder))


def cold_and_warm(layout, cache_dir: str, repeats: int = 5, **query) -> tuple[float, float, int]:
    """Cold: every in-process cache emptied and a new, empty disk cache (cold means cold: no earlier case's reads)."""
    from dashboard.read import cache
    cache.clear()
    os.environ[cache.ENV_DIR] = tempfile.mkdtemp(dir=cache_dir)
    t0 = time.perf_counter()
    size = served(layout, **query)
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        served(layout, **query)
        warm.append(time.perf_counter() - t0)
    return cold, statistics.median(warm), size


def report(name: str, layout, goal: str, cache_dir: str, **query) -> None:
    cold, warm, size = cold_and_warm(layout, cache_dir, **query)
    print(f"{name:34} cold {cold:6.2f} s   warm {warm:6.3f} s   {goal}   ({size / 1e3:,.0f} kB)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", help="a tracking URI (default: a temp store with 300 freshly trained runs)")
    parser.add_argument("--runs", help="comma-separated run ids to compare (the first 5 for neurons across runs)")
    parser.add_argument("--keep", metavar="DIR", help="train into DIR/mlflow.db and keep it, run ids in DIR/runs-*.txt")
    args = parser.parse_args(argv)
    if args.store and args.keep:
        parser.error("--keep trains a new store; --store times an existing one")
    tmp = tempfile.TemporaryDirectory(prefix="sweep-latency-")
    if args.store:
        os.environ["MLFLOW_TRACKING_URI"] = args.store
        ids = [r for r in (args.runs or "").split(",") if r]
        if not ids:
            print("error: --store needs --runs ID,ID,... (the runs to compare)", file=sys.stderr)
            return 2
        cases = [ids]
    else:
        where = Path(args.keep).resolve() if args.keep else Path(tmp.name)
        where.mkdir(parents=True, exist_ok=True)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{where}/mlflow.db"
        t0 = time.perf_counter()
        runs = train_runs()
        print(f"trained {len(runs)} runs in {time.perf_counter() - t0:.0f} s")
        small = [rid for rid, c in runs.items() if c.batch_size == SMALL_BATCH and c.lr in SMALL_LRS]
        cases = [small, list(runs)]
        if args.keep:
            for case in cases:
                (where / f"runs-{len(case)}.txt").write_text(",".join(case) + "\n")
            print(f"kept: MLFLOW_TRACKING_URI=sqlite:///{where}/mlflow.db, run ids in {where}/runs-*.txt")
    from dashboard.loaders import neuron_stats
    from dashboard.read import store
    t0 = time.perf_counter()
    store.client(), store.test_set(), neuron_stats.test_inputs()
    print(f"{'MLflow client and test set':34} {time.perf_counter() - t0:7.2f} s   (once per server process)")
    compare, neurons = page_module("/compare"), page_module("/compare/neurons")
    for ids in cases:
        goal = GOAL_COMPARE_WARM_S if len(ids) <= 30 else GOAL_SWEEP_WARM_S
        report(f"grouped compare, {len(ids)} runs", compare.layout, f"goal < {goal:g} s warm", tmp.name, runs=",".join(ids))
    report("neurons across runs, 5 runs", neurons.layout,
           f"goal < {GOAL_NEURONS_COLD_S:g} s cold, {GOAL_NEURONS_WARM_S:g} s warm", tmp.name,
           runs=",".join(cases[0][:5]), layer="1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
