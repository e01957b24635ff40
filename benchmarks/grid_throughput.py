"""Grid training throughput, seconds per model-epoch, all measured in this one run.

    .venv/bin/python benchmarks/grid_throughput.py [--rounds 5] [--log-rounds 3] [--epochs 3] [--threads N]

(a) the grid engine's training steps: 12 configs of [784,30,10] sigmoid, batch 10, 60,000 images, one stacked
    cohort (the engine's own epoch_seconds, which exclude the per-epoch evaluation; that is reported later)
(b) a plain eager PyTorch loop: nn.Module + torch.optim.SGD, data resident as one tensor
(c) a naive DataLoader loop with ToTensor per sample, as in write-up D (timed on part of an epoch)
(d) the floor: FLOPs per model-epoch / this machine's measured fp32 GEMM rate
and the cost of evaluation and of logging every epoch's metrics and snapshots to MLflow on top of (a).

(a) and (b) alternate, one epoch each per round, so a shared machine's slow spells fall on both; the
ratio is taken per round and the median is printed with the spread.  Unlogged and logged runs alternate
the same way.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import RunConfig  # noqa: E402
from training.data import load  # noqa: E402
from training.engine import train_cohort  # noqa: E402

SIZES = (784, 30, 10)
BATCH = 10
K = 12


class TimingSink:
    """Keeps the engine's own training time per epoch (epoch_seconds excludes evaluation); logs nothing."""

    def __init__(self, inner=None):
        self.inner, self.train_seconds = inner, 0.0

    def log_epoch(self, k, epoch, metrics, snapshot):
        if k == 0 and epoch > 0:
            self.train_seconds += metrics["epoch_seconds"]
        if self.inner is not None:
            self.inner.log_epoch(k, epoch, metrics, snapshot)

    def fail(self, k, reason):
        raise RuntimeError(reason)


def grid_configs(epochs: int) -> list[RunConfig]:
    lrs = [0.5, 1.0, 3.0, 10.0]
    return [RunConfig(sizes=SIZES, activation="sigmoid", loss="mse", lr=lrs[i % 4], seed=i // 4,
                      batch_size=BATCH, epochs=epochs, experiment="bench") for i in range(K)]


def time_engine(data, epochs: int, inner_sink=None):
    """Training seconds per model-epoch, all-in seconds per model-epoch, and the final parameters."""
    sink = TimingSink(inner_sink)
    start = time.perf_counter()
    result = train_cohort(grid_configs(epochs), data, sink)
    total = time.perf_counter() - start
    return sink.train_seconds / (K * epochs), total / (K * epochs), result


def time_eager(data, seed: int = 0, steps: int | None = None) -> float:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(784, 30), torch.nn.Sigmoid(), torch.nn.Linear(30, 10))
    opt = torch.optim.SGD(model.parameters(), lr=3.0)
    x, y = data.train_x, data.train_y
    target = torch.nn.functional.one_hot(y, 10).float()
    perm = torch.randperm(len(x))
    start = time.perf_counter()
    for s in range(0, len(x) if steps is None else steps * BATCH, BATCH):
        idx = perm[s:s + BATCH]
        out = torch.sigmoid(model(x[idx]))
        loss = 0.5 * (out - target[idx]).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def time_dataloader(root: Path, fraction: float) -> float:
    from torchvision import datasets, transforms
    ds = datasets.MNIST(str(root), train=True, download=False, transform=transforms.ToTensor())
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 30), torch.nn.Sigmoid(),
                                torch.nn.Linear(30, 10))
    opt = torch.optim.SGD(model.parameters(), lr=3.0)
    steps = int(len(loader) * fraction)
    start = time.perf_counter()
    for i, (xb, yb) in enumerate(loader):
        if i == steps:
            break
        out = torch.sigmoid(model(xb))
        loss = 0.5 * (out - torch.nn.functional.one_hot(yb, 10).float()).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / fraction


def gemm_gflops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * 2048 ** 3 / (time.perf_counter() - start) / 1e9)
    return best


def flops_per_model_epoch(n: int) -> float:
    # Forward 2*MACs; backward computes weight grads and (for all but the first layer) input grads: 2x forward.
    macs = sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:]))
    return 6.0 * macs * n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="epochs of (a) and (b), alternating (default %(default)s)")
    p.add_argument("--epochs", type=int, default=3,
                   help="epochs of the runs that measure evaluation and logging; the untrained epoch 0 is "
                        "included and amortised as in a real grid (default %(default)s)")
    p.add_argument("--log-rounds", type=int, default=3,
                   help="pairs of runs, unlogged then logged, that measure evaluation and logging (default %(default)s)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--dataloader-fraction", type=float, default=0.1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load()
    n = len(data.train_x)
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} thread(s); "
          f"[784,30,10] sigmoid, batch {BATCH}, {n} images")
    # Warm-up, not counted: first calls pay for allocations and cold caches that later epochs don't.
    train_cohort([replace(c, train_size=6_000) for c in grid_configs(1)], load(train_size=6_000), TimingSink())
    time_eager(data, steps=600)
    a_rounds, b_rounds = [], []
    for r in range(args.rounds):
        a_rounds.append(time_engine(data, 1)[0])
        b_rounds.append(time_eager(data, seed=r))
        print(f"  round {r + 1}: (a) {a_rounds[-1]:.3f} s   (b) {b_rounds[-1]:.3f} s   "
              f"(b)/(a) = {b_rounds[-1] / a_rounds[-1]:.1f}x")
    a, b = statistics.median(a_rounds), statistics.median(b_rounds)
    ratios = sorted(y / x for x, y in zip(a_rounds, b_rounds))
    print(f"(a) grid engine, {K} configs stacked:      {a:7.3f} s per model-epoch (median; training steps, as in (b))")
    print(f"(b) plain eager loop, resident data:      {b:7.3f} s per model-epoch (median)")
    c = time_dataloader(data.root, args.dataloader_fraction)
    print(f"(c) DataLoader + ToTensor per sample:     {c:7.3f} s per model-epoch "
          f"(timed on {args.dataloader_fraction:.0%} of an epoch)")
    rate = gemm_gflops()
    d = flops_per_model_epoch(n) / (rate * 1e9)
    print(f"(d) floor: {flops_per_model_epoch(n) / 1e9:.2f} GFLOP / {rate:.0f} GFLOP/s = {d:7.3f} s per model-epoch")
    print(f"ratios: (b)/(a) = {statistics.median(ratios):.1f}x (median of {len(ratios)} rounds; "
          f"lowest {ratios[0]:.1f}x, highest {ratios[-1]:.1f}x)   (c)/(a) = {c / a:.1f}x   (a)/(d) = {a / d:.1f}x")

    # Evaluation and logging alternate too: a run unlogged, then the same run logged, per round.
    from training.tracking import MlflowSink, client
    unlogged, logged, finish = [], [], []
    for _ in range(args.log_rounds):
        a_train, a_all = time_engine(data, args.epochs)[:2]
        unlogged.append((a_train, a_all))
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db?timeout=60"
            mlflow_sink = MlflowSink(client(), grid_configs(args.epochs), data)
            _, seconds, result = time_engine(data, args.epochs, mlflow_sink)
            logged.append(seconds)
            start = time.perf_counter()
            mlflow_sink.finish(result.params)
            finish.append(time.perf_counter() - start)
    eval_cost = statistics.median(all_in / train - 1 for train, all_in in unlogged)
    log_cost = statistics.median(lg / all_in - 1 for (_, all_in), lg in zip(unlogged, logged))
    print(f"per-epoch evaluation (20,000 images), diagnostics and snapshot arrays, epoch 0 included: "
          f"{eval_cost:+.0%} over the training steps (median of {args.log_rounds} runs of {args.epochs} epochs)")
    print(f"MLflow logging of every epoch's metrics and snapshots: {log_cost:+.0%} over the same run unlogged "
          f"(median of {args.log_rounds} pairs; each: " +
          ", ".join(f"{lg / all_in - 1:+.0%}" for (_, all_in), lg in zip(unlogged, logged)) +
          f"); then {statistics.median(finish):.1f} s once for the {K} final models")


if __name__ == "__main__":
    main()
