"""Server-side latency of the sweep review on real runs.

    python benchmarks/sweep_latency.py                        # trains 30 small real runs in a temp store
    python benchmarks/sweep_latency.py --store URI --runs ID,ID,...   # times runs of an existing store

Times, in this process, with the pages' own layout functions, the layout serialised to JSON as the server
sends it:

  grouped compare   /compare of 30 runs (3 learning rates x 10 seeds), opened grouped by config:
                    cold (empty caches) and warm (median of 5)                               goal < 1 s warm
  neurons across    /compare/neurons of 5 of those runs, layer 1: cold (every run's activations,
                    statistics and matches computed) and warm (median of 5)    goal < 2 s cold, 0.3 s warm

The MLflow client and the 10,000 MNIST test images are loaded once per server process; they are timed
apart, before the rest.
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

GOAL_COMPARE_WARM_S, GOAL_NEURONS_COLD_S, GOAL_NEURONS_WARM_S = 1.0, 2.0, 0.3
LRS, SEEDS = (0.5, 1.0, 3.0), tuple(range(10))


def train_runs() -> list[str]:
    """30 runs of [784,20,10] sigmoid, 3 learning rates x 10 seeds, trained as one stacked cohort."""
    from training.config import RunConfig
    from training.nets.data import load
    from training.engine.loop import train_cohort
    from training.tracking.mlflow_sink import MlflowSink, client
    configs = [RunConfig(sizes=(784, 20, 10), activation="sigmoid", loss="mse", lr=lr, batch_size=20, epochs=2,
                         train_size=2000, seed=s, experiment="sweep-latency") for lr in LRS for s in SEEDS]
    data = load(train_size=2000)
    sink = MlflowSink(client(), configs, data)
    sink.finish(train_cohort(configs, data, sink).params)
    return sink.run_ids


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


def cold_and_warm(layout, repeats: int = 5, **query) -> tuple[float, float, int]:
    from dashboard.read import cache
    cache.clear()
    t0 = time.perf_counter()
    size = served(layout, **query)
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        served(layout, **query)
        warm.append(time.perf_counter() - t0)
    return cold, statistics.median(warm), size


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", help="a tracking URI (default: a temp store with 30 freshly trained runs)")
    parser.add_argument("--runs", help="comma-separated run ids to compare (the first 5 for neurons across runs)")
    args = parser.parse_args(argv)
    tmp = tempfile.TemporaryDirectory(prefix="sweep-latency-")
    os.environ["DASHBOARD_CACHE_DIR"] = str(Path(tmp.name) / "cache")  # cold means cold: no earlier disk cache
    if args.store:
        os.environ["MLFLOW_TRACKING_URI"] = args.store
        ids = [r for r in (args.runs or "").split(",") if r]
        if not ids:
            print("error: --store needs --runs ID,ID,... (the runs to compare)", file=sys.stderr)
            return 2
    else:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp.name}/mlflow.db"
        t0 = time.perf_counter()
        ids = train_runs()
        print(f"trained {len(ids)} runs in {time.perf_counter() - t0:.0f} s")
    from dashboard.loaders import neuron_stats
    from dashboard.read import store
    t0 = time.perf_counter()
    store.client(), store.test_set(), neuron_stats.test_inputs()
    print(f"{'MLflow client and test set':34} {time.perf_counter() - t0:7.2f} s   (once per server process)")
    compare, neurons = page_module("/compare"), page_module("/compare/neurons")
    cold, warm, size = cold_and_warm(compare.layout, runs=",".join(ids))
    print(f"{f'grouped compare, {len(ids)} runs':34} cold {cold:6.2f} s   warm {warm:6.3f} s   "
          f"goal < {GOAL_COMPARE_WARM_S:g} s warm   ({size / 1e3:,.0f} kB)")
    cold, warm, size = cold_and_warm(neurons.layout, runs=",".join(ids[:5]), layer="1")
    print(f"{'neurons across runs, 5 runs':34} cold {cold:6.2f} s   warm {warm:6.3f} s   "
          f"goal < {GOAL_NEURONS_COLD_S:g} s cold, {GOAL_NEURONS_WARM_S:g} s warm   ({size / 1e3:,.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
