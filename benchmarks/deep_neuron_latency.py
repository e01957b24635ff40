"""Server-side latency of the deeper neuron views (issue #14) on real runs, with the pages' own functions.

    python benchmarks/deep_neuron_latency.py                          # trains small real runs in a temp store
    python benchmarks/deep_neuron_latency.py --store URI --runs A,B   # two runs of an existing store

  feature vis   one unit's activation maximisation, cold (per MLP unit; CNN channels shown too)   goal ≤ 2 s
  CKA           linear CKA of two runs' first layers (10,000 × 30 each), the arrays in hand      goal ≤ 0.5 s
  layer map     the map page's layout (PCA of 10,000 activations, the figure): cold, then warm   goal ≤ 3 s / 0.3 s
  image page    the image page's layout (outputs, hidden units), cold                             goal ≤ 1 s
                and its integrated-gradients maps, which a callback fills in after the first paint
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

GOALS_S = {"fv": 2.0, "cka": 0.5, "map_cold": 3.0, "map_warm": 0.3, "image": 1.0}


def train_runs(root: Path) -> list[str]:
    """Two seeds of [784,30,10] sigmoid and a CNN: short but real training."""
    from training.config import RunConfig
    from training.nets.data import load
    from training.engine.loop import train_cohort
    from training.tracking.mlflow_sink import MlflowSink, client
    mlp = dict(sizes=(784, 30, 10), activation="sigmoid", loss="mse", lr=3.0, batch_size=10, epochs=2,
               train_size=5000, experiment="deep-neurons")
    configs = [RunConfig(**mlp), RunConfig(**mlp, seed=1),
               RunConfig(arch="cnn", activation="relu", loss="cross_entropy", optimizer="adam", lr=0.01,
                         batch_size=32, epochs=1, train_size=2000, experiment="deep-neurons")]
    client().create_experiment("deep-neurons", artifact_location=(root / "artifacts").as_uri())
    ids = []
    for cfg in configs:
        data = load(train_size=cfg.train_size)
        sink = MlflowSink(client(), [cfg], data)
        sink.finish(train_cohort([cfg], data, sink).params)
        ids.append(sink.run_ids[0])
    return ids


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def page_layout(path_template: str):
    """A page's layout function as the server runs it (Dash imports page modules under its own names)."""
    import dash

    import dashboard.app  # noqa: F401  registers the pages
    return next(p["layout"] for p in dash.page_registry.values() if p["path_template"] == path_template)


def map_page(run_id: str, epoch: int) -> int:
    """The layer map's layout, serialised as Dash sends it to the browser."""
    from plotly.io.json import to_json_plotly
    return len(to_json_plotly(page_layout("/runs/<run_id>/neurons/map")(run_id=run_id, layer="1", epoch=str(epoch))))


def image_page(run_id: str, epoch: int) -> int:
    from plotly.io.json import to_json_plotly
    return len(to_json_plotly(page_layout("/runs/<run_id>/images/<index>")(run_id=run_id, index="8", epoch=str(epoch))))


def bench(run_id: str, other: str | None) -> list[tuple]:
    from dashboard.read import cache
    from dashboard.loaders import deep_neurons as D
    from dashboard.loaders import neuron_stats as S
    from dashboard.analytics.cka import linear_cka
    from dashboard.loaders.neuron_target import resolve
    t = resolve(run_id, 1)
    name = f"{t.run_name[:28]} layer 1 ({t.units} units)"
    page_layout("/runs/<run_id>/images/<index>")  # imports the app once, outside the timings
    cache.clear()
    S.test_images()
    map_cold, _ = timed(map_page, run_id, t.epoch)
    map_warm, _ = timed(map_page, run_id, t.epoch)
    fv = [timed(D.feature_vis, run_id, t.epoch, 1, u)[0] for u in range(min(t.units, 10))]
    image, _ = timed(image_page, run_id, t.epoch)
    ig, _ = timed(D.attributions, run_id, t.epoch, 8)
    rows = [(name, "layer map page, cold (activations included)", map_cold, GOALS_S["map_cold"]),
            (name, "layer map page, warm", map_warm, GOALS_S["map_warm"]),
            (name, f"feature vis per unit, cold: median of {len(fv)}", statistics.median(fv), GOALS_S["fv"]),
            (name, "feature vis per unit, cold: worst", max(fv), GOALS_S["fv"]),
            (name, "image page first paint, cold (outputs, units, layout)", image, GOALS_S["image"]),
            (name, "image page attributions, cold (IG, filled in after)", ig, None)]
    if other:
        a, b = S.layer_stats(t).acts, S.layer_stats(resolve(other, 1)).acts
        cka, _ = timed(linear_cka, a, b)
        rows.append((name, f"CKA of two runs' layer 1 ({a.shape[1]} and {b.shape[1]} units)", cka, GOALS_S["cka"]))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", help="MLflow tracking URI (default: a temporary store with freshly trained runs)")
    p.add_argument("--runs", help="with --store: a run id, or two comma-separated (the second for CKA)")
    args = p.parse_args(argv)
    if args.store:
        if not args.runs:
            p.error("--store needs --runs")
        os.environ["MLFLOW_TRACKING_URI"] = args.store
        ids = args.runs.split(",")
        pairs = [(ids[0], ids[1] if len(ids) > 1 else None)]
    else:
        tmp = tempfile.TemporaryDirectory()
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp.name}/mlflow.db?timeout=60"
        os.environ.setdefault("DASHBOARD_CACHE_DIR", os.path.join(tmp.name, "cache"))
        print("training 3 small real runs into a temporary store...", flush=True)
        mlp, mlp_b, cnn = train_runs(Path(tmp.name))
        pairs = [(mlp, mlp_b), (cnn, None)]
    rows = [row for run_id, other in pairs for row in bench(run_id, other)]
    print(f"{'run':<44} {'what':<52} {'seconds':>8}  goal")
    failed = 0
    for run, what, seconds, goal in rows:
        ok = goal is None or seconds <= goal
        failed += not ok
        print(f"{run:<44} {what:<52} {seconds:8.3f}  {'' if goal is None else f'≤ {goal:g} s'}"
              f"{'' if ok else '  MISSED'}")
    print(f"cores: {os.cpu_count()}; {failed} goal(s) missed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
