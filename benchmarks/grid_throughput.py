"""Grid training throughput, seconds per model-epoch, all measured in this one run.

    .venv/bin/python benchmarks/grid_throughput.py [--rounds 5] [--log-rounds 3] [--epochs 3] [--threads N]

(a) the grid engine's training steps: 12 configs of [784,30,10] sigmoid, batch 10, 60,000 images, one stacked
    cohort (the engine's own epoch_seconds, which exclude the per-epoch evaluation; that is reported later)
(b) a plain eager PyTorch loop: nn.Module + torch.optim.SGD, data resident as one tensor
(c) a naive DataLoader loop with ToTensor per sample, as in write-up D (timed on part of an epoch)
(d) the floor: FLOPs per model-epoch / this machine's measured fp32 GEMM rate
then the grid end to end:
(e) the same 12 configs for --epochs epochs with every per-epoch evaluation, diagnostic and snapshot, logged to
    a fresh SQLite MLflow store (from creating the runs until every epoch is in the store; the untrained
    epoch 0 amortised over the epochs, as in a real grid)
(f) the plain eager loop of (b) doing the same per-epoch evaluation (loss and accuracy on the 10,000 test
    images and the 10,000-image training prefix, from the untrained net on), logging nothing
and, from the same run of (e) unlogged, the cost of evaluation and of logging.

(a) and (b) alternate, one epoch each per round, so a shared machine's slow spells fall on both; the
ratio is taken per round and the median is printed with the spread.  (e) unlogged, (e) logged and (f)
alternate the same way, (e) unlogged before (e) logged in odd rounds and after it in even ones.
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
from training.engine.loop import train_cohort  # noqa: E402
from training.nets.data import load  # noqa: E402

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


def eager_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(784, 30), torch.nn.Sigmoid(), torch.nn.Linear(30, 10))


def eager_epoch(model, opt, data, steps: int | None = None) -> None:
    x, y = data.train_x, data.train_y
    target = torch.nn.functional.one_hot(y, 10).float()
    perm = torch.randperm(len(x))
    for s in range(0, len(x) if steps is None else steps * BATCH, BATCH):
        idx = perm[s:s + BATCH]
        out = torch.sigmoid(model(x[idx]))
        loss = 0.5 * (out - target[idx]).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@torch.no_grad()
def eager_evaluation(model, data) -> list[float]:
    """Loss and accuracy on the test set and the 10,000-image training prefix, as the engine measures them."""
    scores = []
    for x, y in ((data.test_x, data.test_y), (data.train_x[:10_000], data.train_y[:10_000])):
        out = torch.sigmoid(model(x))
        scores += [float(0.5 * (out - torch.nn.functional.one_hot(y, 10).float()).pow(2).sum(1).mean()),
                   float((out.argmax(1) == y).float().mean())]
    return scores


def time_eager(data, seed: int = 0, steps: int | None = None) -> float:
    model = eager_model(seed)
    opt = torch.optim.SGD(model.parameters(), lr=3.0)
    start = time.perf_counter()
    eager_epoch(model, opt, data, steps)
    return time.perf_counter() - start


def time_eager_evaluated(data, epochs: int, seed: int = 0) -> float:
    """(f): seconds per model-epoch of the eager loop with the per-epoch evaluation, epoch 0 included."""
    model = eager_model(seed)
    opt = torch.optim.SGD(model.parameters(), lr=3.0)
    start = time.perf_counter()
    eager_evaluation(model, data)
    for _ in range(epochs):
        eager_epoch(model, opt, data)
        eager_evaluation(model, data)
    return (time.perf_counter() - start) / epochs


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
                   help="rounds of the end-to-end grid, unlogged and logged, and the evaluated eager loop "
                        "(default %(default)s)")
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

    end_to_end(data, args.log_rounds, args.epochs)


def time_logged(data, epochs: int) -> tuple[float, float]:
    """(e): seconds per model-epoch from creating the runs until every epoch is in a fresh store; then the
    seconds that logging the final models takes once."""
    from training.tracking.mlflow_sink import MlflowSink, client
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db?timeout=60"
        mlflow_client = client()
        start = time.perf_counter()
        sink = MlflowSink(mlflow_client, grid_configs(epochs), data)
        result = train_cohort(grid_configs(epochs), data, sink)
        sink.flush()
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        sink.finish(result.params)
        return seconds / (K * epochs), time.perf_counter() - start


def end_to_end(data, rounds: int, epochs: int) -> None:
    """(e) unlogged, (e) logged and (f), alternating per round; the ratios per round, then their medians."""
    unlogged, logged, eager, finish = [], [], [], []
    for r in range(rounds):
        # Unlogged first in odd rounds, logged first in even ones: whatever the order costs falls on both.
        if r % 2 == 0:
            unlogged.append(time_engine(data, epochs)[:2])
        e, once = time_logged(data, epochs)
        if r % 2 == 1:
            unlogged.append(time_engine(data, epochs)[:2])
        logged.append(e)
        finish.append(once)
        eager.append(time_eager_evaluated(data, epochs, seed=r))
        print(f"  round {r + 1}: (e) {e:.3f} s   (e) unlogged {unlogged[-1][1]:.3f} s   (f) {eager[-1]:.3f} s   "
              f"(f)/(e) = {eager[-1] / e:.1f}x")
    ratios = sorted(f / e for e, f in zip(logged, eager))
    print(f"(e) grid end to end, {K} configs, {epochs} epochs, evaluated and logged: "
          f"{statistics.median(logged):7.3f} s per model-epoch (median)")
    print(f"(f) plain eager loop with the same per-epoch evaluation:  {statistics.median(eager):7.3f} s per model-epoch")
    print(f"ratio (f)/(e) = {statistics.median(ratios):.1f}x (median of {rounds} rounds; lowest {ratios[0]:.1f}x, "
          f"highest {ratios[-1]:.1f}x; goal at least 15x)")
    eval_cost = [all_in / train - 1 for train, all_in in unlogged]
    log_cost = [lg / all_in - 1 for (_, all_in), lg in zip(unlogged, logged)]
    print(f"per-epoch evaluation (20,000 images), diagnostics and snapshot arrays, epoch 0 included: "
          f"{statistics.median(eval_cost):+.0%} over the training steps (median of {rounds} runs of {epochs} epochs)")
    print(f"MLflow logging of every epoch's metrics and snapshots (background writer): "
          f"{statistics.median(log_cost):+.0%} over the same run unlogged (median of {rounds} pairs; each: "
          + ", ".join(f"{c:+.0%}" for c in log_cost) + f"; goal at most +10%); then "
          f"{statistics.median(finish):.1f} s once for the {K} final models")


if __name__ == "__main__":
    main()
