"""Per-epoch cost of logging your own loop (training.own_loop), next to the epoch's training time, for both examples.

Each example trains at its default size (60,000 images) with its own loop; `logged_run` records how long
each `log_epoch` took (the forward pass over the 10,000 test images, the snapshot and the units'
activations, the MLflow writes).  Overhead = logging seconds / training seconds of the same epoch; the
goal is at most 10 %.  Epoch 0 (the untrained model) has no training time, so it is shown apart.
With --train-size below 60,000 (a slow CPU), the last column scales the epoch's training time to 60,000
images (training time grows with the images, logging does not) and the verdict uses it.

    python -m benchmarks.logging_overhead [--epochs 1] [--train-size 60000] [--which writeup_d pytorch_mnist]
"""
import argparse
import os
import tempfile
import time

import torch
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from training.examples import pytorch_mnist, writeup_d
from training.nets.data import data_root
from training.own_loop import logged_run

GOAL = 0.10
FULL = 60_000  # the examples' default training size


def _writeup_d(train_size: int, device):
    data = datasets.MNIST(str(data_root()), train=True, download=False, transform=transforms.ToTensor())
    loader = DataLoader(Subset(data, range(train_size)), batch_size=32, shuffle=True)
    model = writeup_d.Net().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    return model, (lambda: writeup_d.train(model, loader, opt)), {}


def _pytorch_mnist(train_size: int, device):
    normalize = transforms.Normalize((pytorch_mnist.MEAN,), (pytorch_mnist.STD,))
    data = datasets.MNIST(str(data_root()), train=True, download=False,
                          transform=transforms.Compose([transforms.ToTensor(), normalize]))
    loader = DataLoader(Subset(data, range(train_size)), batch_size=64, shuffle=True)
    model = pytorch_mnist.Net().to(device)
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = StepLR(opt, step_size=1, gamma=0.7)

    def epoch():
        loss = pytorch_mnist.train(model, device, loader, opt, 1, 10**9, False)
        scheduler.step()
        return loss
    return model, epoch, {"preprocess": normalize}


def measure(name: str, build, epochs: int, train_size: int, device):
    """Yields (epoch, training seconds, logging seconds) as each epoch is logged, epoch 0 with no training."""
    torch.manual_seed(0)
    model, train_one, options = build(train_size, device)
    with logged_run(model, params={"benchmark": name}, experiment="logging-overhead", **options) as run:
        run.log_epoch(0)
        yield 0, 0.0, run.logging_seconds[0]
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            train_one()
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            run.log_epoch(epoch)
            yield epoch, seconds, run.logging_seconds[epoch]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-size", type=int, default=60_000)
    parser.add_argument("--which", nargs="+", default=["writeup_d", "pytorch_mnist"])
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp(prefix='overhead-')}/mlflow.db")
    print(f"device {device}, {torch.get_num_threads()} CPU threads, store {os.environ['MLFLOW_TRACKING_URI']}")
    scale = FULL / args.train_size  # logging costs the same whatever the training size; training scales with it
    extra = f"{'at 60,000':>11}" if scale != 1 else ""
    print(f"{'example':<15}{'epoch':>6}{'train s':>10}{'logging s':>11}{'overhead':>10}{extra}", flush=True)
    builders = {"writeup_d": _writeup_d, "pytorch_mnist": _pytorch_mnist}
    for name in args.which:
        for epoch, train_s, log_s in measure(name, builders[name], args.epochs, args.train_size, device):
            share = f"{log_s / train_s:9.1%}" if train_s else "  (untrained)"
            full = log_s / (train_s * scale) if train_s else None
            projected = f"{full:10.1%}" if full is not None and scale != 1 else ""
            verdict = "" if full is None else ("  ok" if full <= GOAL else "  over the 10 % goal")
            print(f"{name:<15}{epoch:>6}{train_s:>10.2f}{log_s:>11.2f}{share:>10}{projected}{verdict}", flush=True)


if __name__ == "__main__":
    main()
