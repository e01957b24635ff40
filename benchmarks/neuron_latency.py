"""Server-side latency of the neuron explorer on real runs.

    python benchmarks/neuron_latency.py                       # trains two small real runs in a temp store
    python benchmarks/neuron_latency.py --store URI --run ID  # times a run of an existing store

Times, in this process, with the pages' own functions:

  test set         loading the 10,000 MNIST test images (once per server process)
  first open       a layer's activations and statistics for all 10,000 test images at a snapshot
                   never opened before (cold caches; the snapshot download included)    goal < 2 s
  unit page        one unit's panels (figures serialised as JSON, images as PNG) once
                   its layer is computed: median and 90th percentile over units          goal < 300 ms
  layer view       every tile of the layer, warm
  scrub step       moving the unit page's epoch to a snapshot not yet computed
  match            best match in a second run (cold: its activations too; warm)
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL_FIRST_OPEN_S, GOAL_UNIT_MS = 2.0, 300.0


def train_runs(root: Path) -> dict[str, str]:
    """Two seeds of [784,20,10] sigmoid (write-up C's shape) and a CNN: short but real training."""
    from training.config import RunConfig
    from training.nets.data import load
    from training.engine.loop import train_cohort
    from training.tracking.mlflow_sink import MlflowSink, client
    mlp = dict(sizes=(784, 20, 10), activation="sigmoid", loss="mse", lr=3.0, batch_size=10, epochs=2,
               train_size=5000, experiment="neuron-latency")
    configs = {"mlp": RunConfig(**mlp), "mlp_b": RunConfig(**mlp, seed=1),
               "cnn": RunConfig(arch="cnn", activation="relu", loss="cross_entropy", optimizer="adam", lr=0.01,
                                batch_size=32, epochs=2, train_size=2000, experiment="neuron-latency")}
    client().create_experiment("neuron-latency", artifact_location=(root / "artifacts").as_uri())  # not ./mlruns
    ids = {}
    for key, cfg in configs.items():
        data = load(train_size=cfg.train_size)
        sink = MlflowSink(client(), [cfg], data)
        sink.finish(train_cohort([cfg], data, sink).params)
        ids[key] = sink.run_ids[0]
    return ids


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def page_module(path_template: str):
    """A page module as the server runs it (Dash imports page modules under its own names)."""
    import dash

    import dashboard.app  # noqa: F401  registers the pages
    for name, page in dash.page_registry.items():
        if page["path_template"] == path_template:
            return sys.modules[name]
    raise RuntimeError(f"no page is registered for {path_template}")


def serialised_panels(t, unit: int) -> int:
    from dashboard.loaders.unit_panels import panels
    p = panels(t, unit)
    size = 0
    for value in p.values():
        if hasattr(value, "to_json"):
            size += len(value.to_json())
    return size


def bench_run(label: str, run_id: str, other: str | None, layer_page) -> list[tuple]:
    from dashboard.loaders import neuron_stats as S
    from dashboard.read import store
    from dashboard.loaders.neuron_target import counterpart, hidden_layers, resolve
    rows = []
    run = store.get_run(run_id)
    epochs = store.snapshot_epochs(run_id)
    for layer in range(1, len(hidden_layers(run)) + 1):
        t = resolve(run_id, layer, epochs[-1])
        first, stats = timed(S.layer_stats, t)
        rows.append((label, f"first open, layer {layer} ({t.layer_name}, {t.units} units)", first * 1000,
                     GOAL_FIRST_OPEN_S * 1000))
        times = []
        for u in range(t.units):
            dt, _ = timed(serialised_panels, t, u)
            times.append(dt * 1000)
        p90 = statistics.quantiles(times, n=10)[-1]
        rows.append((label, f"unit page, layer {layer}: median of {t.units}", statistics.median(times), GOAL_UNIT_MS))
        rows.append((label, f"unit page, layer {layer}: 90th percentile", p90, GOAL_UNIT_MS))
        rows.append((label, f"unit page, layer {layer}: worst (a busy CPU shows here)", max(times), None))
        timed(layer_page.tiles, t, "index")
        dt, _ = timed(layer_page.tiles, t, "si")
        rows.append((label, f"layer view, layer {layer} ({t.units} tiles)", dt * 1000, None))
        if len(epochs) > 1:
            t0 = resolve(run_id, layer, epochs[0])
            dt, _ = timed(serialised_panels, t0, 0)
            rows.append((label, f"scrub step to epoch {epochs[0]}, layer {layer} (cold)", dt * 1000, None))
        if other:
            match = lambda u: S.best_match(t, u, counterpart(t, other))  # as the unit page: resolve, then match
            cold, _ = timed(match, 0)
            warm, _ = timed(match, 1)
            rows.append((label, f"match in another run, layer {layer}: cold", cold * 1000, None))
            rows.append((label, f"match in another run, layer {layer}: warm", warm * 1000, None))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", help="MLflow tracking URI (default: a temporary store with freshly trained runs)")
    p.add_argument("--run", help="run id to time (with --store)")
    p.add_argument("--other", help="a second run of the same layers, for matching (with --store)")
    args = p.parse_args(argv)
    tmp = None
    if args.store:
        if not args.run:
            p.error("--store needs --run")
        os.environ["MLFLOW_TRACKING_URI"] = args.store
        runs = {"run": (args.run, args.other)}
    else:
        tmp = tempfile.TemporaryDirectory()
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp.name}/mlflow.db?timeout=60"
        print("training 3 small real runs into a temporary store...", flush=True)
        ids = train_runs(Path(tmp.name))
        runs = {"mlp [784,20,10]": (ids["mlp"], ids["mlp_b"]), "cnn": (ids["cnn"], None)}

    from dashboard.loaders import neuron_stats as S
    from dashboard.read import store
    layer_page = page_module("/runs/<run_id>/neurons")
    dt, _ = timed(store.test_set)
    dt2, _ = timed(S.test_images)
    rows = [("all", "test set load (once per process)", (dt + dt2) * 1000, None)]
    for label, (rid, other) in runs.items():
        rows += bench_run(label, rid, other, layer_page)

    import torch
    print(f"\nneuron explorer latency (server-side, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    print(f"{'run':<18} {'step':<58} {'ms':>9}  goal")
    failed = 0
    for label, step, ms, goal in rows:
        verdict = "" if goal is None else ("ok" if ms < goal else "SLOW")
        failed += verdict == "SLOW"
        print(f"{label:<18} {step:<58} {ms:9.1f}  {'' if goal is None else f'< {goal:.0f} ms {verdict}'}")
    if tmp:
        tmp.cleanup()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
