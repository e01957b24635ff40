"""Ablating every unit of a layer against one plain evaluation of the same run, in this process.

    python benchmarks/ablation_speed.py [--rounds 5]

Trains two short real runs (no store: the engine's own snapshot of the last epoch is kept): a [784,100,10]
sigmoid MLP and the CNN.  Then times, from that snapshot to the answer, each the median of --rounds:

  evaluation   the network rebuilt from the snapshot (models.to_module) and run on the 10,000 test images,
               right answers per digit counted
  ablation     training.nets.ablation.ablate_units: every unit of the layer (fc1's 100; conv2's 32 channels)
               switched off alone, right answers per digit for each                      goal: at most 5x

and, for the record, the CNN's conv1 and the cumulative curves (12 orders) the ablation page draws.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL_RATIO = 5.0


class LastSnapshot:
    """An engine sink that keeps model 0's latest snapshot and nothing else."""
    snapshot = None

    def log_epoch(self, k, epoch, metrics, snapshot):
        if snapshot is not None and k == 0:
            self.snapshot = snapshot

    def fail(self, k, reason):
        raise RuntimeError(reason)


def trained(config) -> dict:
    from training.engine.loop import train_cohort
    from training.nets.data import load
    sink = LastSnapshot()
    train_cohort([config], load(train_size=config.train_size), sink)
    return sink.snapshot


def evaluate(config, snapshot, x, labels) -> np.ndarray:
    """The plain path: the snapshot's module on every test image, right answers per digit."""
    from training import contract as C
    from training.nets.architecture import layers_of
    from training.nets.models import to_module
    params = {}
    for layer in layers_of(config):
        params[f"{layer.name}.weight"] = torch.as_tensor(np.asarray(snapshot[C.weight_key(layer.name)], np.float32))
        params[f"{layer.name}.bias"] = torch.as_tensor(np.asarray(snapshot[C.bias_key(layer.name)], np.float32))
    with torch.no_grad():
        pred = to_module(config, params)(x).argmax(-1).numpy()
    return np.bincount(labels[pred == labels], minlength=10)


def median_s(fn, rounds: int) -> float:
    fn()  # warm: first-call allocations and kernel choices
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    from common import mnist_idx
    from training.config import RunConfig
    from training.nets import ablation as A
    images, labels = mnist_idx.test_set()
    labels = np.asarray(labels, np.int64)
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    runs = {"[784,100,10] sigmoid": RunConfig(sizes=(784, 100, 10), activation="sigmoid", loss="mse", lr=3.0,
                                              batch_size=10, epochs=1, train_size=10000),
            "CNN": RunConfig(arch="cnn", activation="relu", loss="cross_entropy", optimizer="adam", lr=0.01,
                             batch_size=32, epochs=1, train_size=5000)}
    print(f"torch threads {torch.get_num_threads()}; median of {args.rounds} rounds after one warm-up")
    ok = True
    for name, config in runs.items():
        snap = trained(config)
        ev = median_s(lambda: evaluate(config, snap, x, labels), args.rounds)
        layers = [(0, "fc1")] if config.arch == "mlp" else [(1, "conv2"), (0, "conv1")]
        for layer, lname in layers:
            ab = median_s(lambda: A.ablate_units(config, snap, x, labels, layer), args.rounds)
            goal = lname != "conv1"
            ok &= not goal or ab / ev <= GOAL_RATIO
            print(f"{name} {lname}: evaluation {ev * 1000:.0f} ms, every unit ablated {ab * 1000:.0f} ms, "
                  f"{ab / ev:.2f}x" + (f" (goal at most {GOAL_RATIO:g}x)" if goal else " (no goal)"))
        units = A.ablate_units(config, snap, x, labels, layers[-1][0]).correct.shape[0]
        orders = [np.arange(units)] * 2 + A.random_orders(units)
        cum = median_s(lambda: A.cumulative_accuracy(config, snap, x, labels, layers[-1][0], orders), 1)
        print(f"{name} {layers[-1][1]}: cumulative curves, 12 orders: {cum:.2f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
