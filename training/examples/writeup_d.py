"""Write-up D's loop: a DataLoader over MNIST, a [784, 16, 16, 10] sigmoid MLP, cross-entropy, SGD lr 0.01, batch 32.

The lines marked `# log` are all it takes to see the run in the dashboard, down to each unit.

    python -m training.examples.writeup_d --epochs 2 --train-size 2000
"""
import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from training.nets.data import data_root
from training.own_loop import DEFAULT_EXPERIMENT, logged_run, script_main  # log


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 16)
        self.fc2 = nn.Linear(16, 16)
        self.fc3 = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = torch.sigmoid(self.fc1(x))
        x = torch.sigmoid(self.fc2(x))
        return self.fc3(x)


def train(model, loader, optimizer):
    """One epoch; returns the mean training loss and accuracy."""
    model.train()
    total_loss, correct = 0.0, 0
    for x, y in loader:
        optimizer.zero_grad()
        out = model(x)
        loss = nn.functional.cross_entropy(out, y)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(y)
        correct += (out.argmax(1) == y).sum().item()
    return total_loss / len(loader.dataset), correct / len(loader.dataset)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=60_000)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    args = parser.parse_args()
    if not 1 <= args.train_size <= 60_000:
        parser.error(f"--train-size {args.train_size} is out of range: MNIST has 60,000 training images")
    torch.manual_seed(args.seed)
    data = datasets.MNIST(str(data_root()), train=True, download=False, transform=transforms.ToTensor())
    loader = DataLoader(Subset(data, range(args.train_size)), batch_size=args.batch_size,
                        shuffle=True)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    with logged_run(model, params=vars(args), experiment=args.experiment) as run:  # log
        run.log_epoch(0)  # log
        for epoch in range(1, args.epochs + 1):
            loss, acc = train(model, loader, optimizer)
            print(f"epoch {epoch:3d}  train loss {loss:.4f}  train acc {acc:.4f}")
            run.log_epoch(epoch, train_loss=loss, train_acc=acc)  # log
    print(f"run {run.run_id} {run.status}")


if __name__ == "__main__":
    script_main(main)  # log
