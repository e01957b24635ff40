"""Start-up: seconds from the command to the first training step of a 1-config grid, and to its end, on a second run.

    .venv/bin/python benchmarks/startup.py [--rounds 5]

Each round times, one after the other so the machine's slow spells fall on both:
  bare   `python -c "import torch, mlflow"`: the floor any trainer that uses both pays;
  grid   `python -m training.grid <a 1-config grid on 100 images>` on a store that already exists, from
         the command until the engine starts its first training epoch (reported by an import hook in
         the child, which then exits: the clock stops at the first step, not at the end of training);
  whole  the same grid under a new name (so it trains) run to its end: training, the final model log
         (training.nets.saved_model's files through MLflow's logged-model API)
         and the summary, all that a user waits on.
A first grid run, not counted, creates the store and the data's digest cache, as on a machine that has
run it before.  Prints each round and the median ratios grid / bare (goal: at most 1.5x) and
whole / bare (goal: at most 1.8x).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

GRID = """experiment: startup
base: {sizes: [784, 30, 10], activation: sigmoid, loss: mse, batch_size: 10, epochs: 1, train_size: 100}
runs: [{lr: 3.0}]
"""

# Runs the grid CLI exactly as `python -m training.grid FILE` would, with one addition: when
# training.engine.loop is imported, its first epoch's start prints the wall clock and ends the process.
CHILD = r"""
import importlib.abc, importlib.machinery, os, sys, time

class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "training.engine.loop":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            def first_step(self, *a, **k):
                print(f"FIRST_STEP {time.time():.6f}", flush=True)
                os._exit(0)
            module._Cohort.train_epoch = first_step
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, Hook())
import runpy
sys.argv = ["python -m training.grid", sys.argv[1]]
runpy.run_module("training.grid", run_name="__main__", alter_sys=True)
"""


def time_bare() -> float:
    start = time.time()
    subprocess.run([sys.executable, "-c", "import torch, mlflow"], check=True, cwd=REPO)
    return time.time() - start


def time_grid(grid: Path, env: dict) -> float:
    start = time.time()
    out = subprocess.run([sys.executable, "-c", CHILD, str(grid)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    stamps = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("FIRST_STEP ")]
    if not stamps:
        sys.exit(f"error: the grid never reached its first step (exit {out.returncode}): "
                 f"{(out.stderr.strip().splitlines() or ['no output'])[-1]}")
    return float(stamps[0]) - start


def time_whole(grid: Path, env: dict) -> float:
    start = time.time()
    out = subprocess.run([sys.executable, "-m", "training.grid", str(grid)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        sys.exit(f"error: the whole grid run failed (exit {out.returncode}): "
                 f"{(out.stderr.strip().splitlines() or ['no output'])[-1]}")
    return time.time() - start


def ratios_line(label: str, times: list[float], bare: list[float], goal: float) -> str:
    ratios = sorted(t / b for t, b in zip(times, bare))
    return (f"{label}: {statistics.median(ratios):.2f}x (median of per-round ratios; lowest {ratios[0]:.2f}x, "
            f"highest {ratios[-1]:.2f}x; goal at most {goal}x)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5,
                   help="interleaved rounds of bare, grid to first step and whole grid (default %(default)s)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        grid = Path(tmp) / "startup.yaml"
        grid.write_text(GRID)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        # The first run creates the store, its tables and the digest cache; a user pays that once.
        first_run = subprocess.run([sys.executable, "-m", "training.grid", str(grid)], cwd=REPO, env=env,
                                   capture_output=True, text=True, timeout=600)
        if first_run.returncode != 0:
            sys.exit(f"error: the first grid run failed: {(first_run.stderr.strip().splitlines() or ['?'])[-1]}")
        (Path(tmp) / "startup.yaml").write_text(GRID.replace("epochs: 1", "epochs: 2"))  # not FINISHED yet
        bare, first, whole = [], [], []
        for r in range(args.rounds):
            bare.append(time_bare())
            first.append(time_grid(grid, env))
            (Path(tmp) / f"whole_{r}.yaml").write_text(GRID)  # a new grid name: its config is not FINISHED
            whole.append(time_whole(Path(tmp) / f"whole_{r}.yaml", env))
            print(f"  round {r + 1}: bare import {bare[-1]:.2f} s   grid to first step {first[-1]:.2f} s   "
                  f"ratio {first[-1] / bare[-1]:.2f}x   whole grid {whole[-1]:.2f} s   "
                  f"ratio {whole[-1] / bare[-1]:.2f}x")
    print(f"bare `python -c \"import torch, mlflow\"`: {statistics.median(bare):.2f} s (median of {args.rounds})")
    print(f"1-config grid, command to first training step: {statistics.median(first):.2f} s (median)")
    print(ratios_line("ratio", first, bare, 1.5))
    print(f"1-config 1-epoch 100-image grid, whole command: {statistics.median(whole):.2f} s (median)")
    print(ratios_line("whole-grid ratio", whole, bare, 1.8))


if __name__ == "__main__":
    main()
