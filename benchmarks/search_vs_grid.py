"""A search against the exhaustive grid on write-up C's space: best test accuracy, model-epochs, wall time.

    .venv/bin/python benchmarks/search_vs_grid.py [--seeds 3] [--trials 60] [--epochs 30] [--scale 1.0]

Both sides run the whole command a user runs, `python -m training.grid FILE`, in-process, each into its own
fresh SQLite store (training, evaluation and MLflow logging included), from write-up C's base:
Nielsen's [784,n,10] sigmoid net, quadratic cost, N(0,1) init, 50,000 training and 10,000 validation images.

  grid     lr in {0.3, 1, 2, 3, 5} x batch in {10, 20, 50} x hidden in {10, 20, 30, 50, 100}: 75 configs
  search   TPE + Hyperband, `trials` trials over lr log-uniform [0.1, 10] and the same batch sizes and nets,
           once per search seed

Each side's best is the config with the highest final validation accuracy (the test set chooses nothing);
its test accuracy is what is printed.  Goals (issue #26): on every seed the search's best is within 0.3 pp of
the grid's, with at most 40 % of the grid's model-epochs; its model-epochs per second at least 0.7x the grid's.
--scale < 1 shrinks the training set (and the validation set with it) for a quick look; the goals are for 1.0.
"""
import argparse
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training import contract as C  # noqa: E402

LRS, BATCHES = (0.3, 1, 2, 3, 5), (10, 20, 50)
SIZES = ([784, 10, 10], [784, 20, 10], [784, 30, 10], [784, 50, 10], [784, 100, 10])
GOAL_PP, GOAL_SHARE, GOAL_RATE = 0.3, 0.40, 0.7


def base(epochs: int, scale: float) -> str:
    val = int(10_000 * scale)
    return (f"{{activation: sigmoid, loss: mse, init: nielsen, epochs: {epochs}, val_size: {val}, "
            f"train_size: {int(50_000 * scale)}}}")


def grid_file(epochs: int, scale: float) -> str:
    return textwrap.dedent(f"""\
        experiment: grid
        base: {base(epochs, scale)}
        grid: {{lr: {list(LRS)}, batch_size: {list(BATCHES)}, sizes: {[list(s) for s in SIZES]}}}
        """)


def search_file(epochs: int, scale: float, trials: int, seed: int) -> str:
    return textwrap.dedent(f"""\
        experiment: search
        base: {base(epochs, scale)}
        search:
          trials: {trials}
          sampler: tpe
          pruner: hyperband
          metric: val_acc
          seed: {seed}
          space:
            lr: {{log_uniform: [0.1, 10]}}
            batch_size: {{choice: {list(BATCHES)}}}
            sizes: {{choice: {[list(s) for s in SIZES]}}}
        """)


def run(text: str, name: str) -> tuple[float, list]:
    """Run one grid file as a user does, into a fresh store.  Returns its wall seconds and its child runs."""
    from mlflow.tracking import MlflowClient
    from training.grid import main
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db?timeout=60"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        MlflowClient(uri).search_experiments()  # the store's schema, as an existing store has it: not timed
        path = Path(tmp) / f"{name}.yaml"
        path.write_text(text)
        start = time.perf_counter()
        code = main([str(path)])
        seconds = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"{name}: exit {code}")
        c = MlflowClient(uri)
        runs = [r for r in c.search_runs([e.experiment_id for e in c.search_experiments()], max_results=5000)
                if r.data.tags.get(C.TAG_PARENT_RUN_ID)]
        return seconds, [(r, [m.value for m in sorted(c.get_metric_history(r.info.run_id, C.VAL_ACC),
                                                          key=lambda m: m.step)]) for r in runs]


def summarise(runs: list) -> tuple[float, float, int]:
    """(best final val_acc, that run's test accuracy, model-epochs trained), over runs that reached the end."""
    epochs = sum(len(history) - 1 for _, history in runs)  # step 0 is the untrained net
    done = [(r, h) for r, h in runs if r.data.tags.get(C.TAG_SEARCH_STATE, C.SEARCH_COMPLETE) == C.SEARCH_COMPLETE
            and r.info.status == "FINISHED"]
    best, history = max(done, key=lambda p: p[1][-1])
    return history[-1], best.data.metrics[C.TEST_ACC], epochs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--trials", type=int, default=60)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the 50,000/10,000 images (default 1)")
    args = p.parse_args()
    print(f"machine: {os.cpu_count()} cores; {args.epochs} epochs, {int(50_000 * args.scale)} training images")
    g_seconds, g_runs = run(grid_file(args.epochs, args.scale), "grid")
    g_val, g_test, g_epochs = summarise(g_runs)
    g_rate = g_epochs / g_seconds
    print(f"grid    75 configs: best test {g_test:.2%} (val {g_val:.2%}), {g_epochs} model-epochs, {g_seconds:.0f} s, "
          f"{g_rate:.2f} model-epochs/s")
    met = True
    for seed in range(args.seeds):
        s_seconds, s_runs = run(search_file(args.epochs, args.scale, args.trials, seed), "search")
        s_val, s_test, s_epochs = summarise(s_runs)
        s_rate, share, gap = s_epochs / s_seconds, s_epochs / g_epochs, (g_test - s_test) * 100
        ok = gap <= GOAL_PP and share <= GOAL_SHARE and s_rate >= GOAL_RATE * g_rate
        met &= ok
        print(f"search seed {seed}, {args.trials} trials: best test {s_test:.2%} (val {s_val:.2%}; {gap:+.2f} pp "
              f"below the grid's), {s_epochs} model-epochs ({share:.0%} of the grid's), {s_seconds:.0f} s, "
              f"{s_rate:.2f} model-epochs/s ({s_rate / g_rate:.2f}x the grid's)  {'ok' if ok else 'MISSED'}")
    print(f"goals (within {GOAL_PP} pp, at most {GOAL_SHARE:.0%} of the model-epochs, at least {GOAL_RATE}x the rate, "
          f"on every seed): {'met' if met else 'missed'}")


if __name__ == "__main__":
    main()
