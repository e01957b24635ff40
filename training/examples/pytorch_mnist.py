"""The pytorch/examples MNIST CNN, written afresh: two convolutions, max-pool, dropout, two linear layers,
log_softmax, Adadelta with StepLR.  The lines marked `# log` send it to the dashboard.

    python -m training.examples.pytorch_mnist --epochs 2 --train-size 2000
"""
import argparse

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from training.nets.data import data_root
from training.own_loop import DEFAULT_EXPERIMENT, logged_run, script_main  # log

MEAN, STD = 0.1307, 0.3081  # MNIST's pixel mean and standard deviation


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return F.log_softmax(self.fc2(self.dropout2(x)), dim=1)


def train(model, device, loader, optimizer, epoch, log_interval, dry_run):
    """One epoch; returns the mean training loss."""
    model.train()
    total = 0.0
    for batch, (x, y) in enumerate(loader):
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = F.nll_loss(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)
        if batch % log_interval == 0:
            print(f"epoch {epoch} [{batch * len(x):5d}/{len(loader.dataset)}]  loss {loss.item():.4f}")
        if dry_run:
            break
    return total / len(loader.dataset)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64, metavar="N", help="training batch size")
    parser.add_argument("--epochs", type=int, default=14, metavar="N", help="epochs to train")
    parser.add_argument("--train-size", type=int, default=60_000, metavar="N", help="the first N training images")
    parser.add_argument("--lr", type=float, default=1.0, metavar="LR", help="Adadelta's learning rate")
    parser.add_argument("--gamma", type=float, default=0.7, metavar="G", help="StepLR's decay per epoch")
    parser.add_argument("--seed", type=int, default=1, metavar="S", help="random seed")
    parser.add_argument("--log-interval", type=int, default=100, metavar="N", help="batches between prints")
    parser.add_argument("--dry-run", action="store_true", help="one batch per epoch, to check the script runs")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    args = parser.parse_args()
    if not 1 <= args.train_size <= 60_000:
        parser.error(f"--train-size {args.train_size} is out of range: MNIST has 60,000 training images")
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    normalize = transforms.Normalize((MEAN,), (STD,))
    data = datasets.MNIST(str(data_root()), train=True, download=False,
                          transform=transforms.Compose([transforms.ToTensor(), normalize]))
    loader = DataLoader(Subset(data, range(args.train_size)), batch_size=args.batch_size,
                        shuffle=True)
    model = Net().to(device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    with logged_run(model, params=vars(args), experiment=args.experiment,  # log
                    preprocess=normalize) as run:  # log
        run.log_epoch(0)  # log
        for epoch in range(1, args.epochs + 1):
            loss = train(model, device, loader, optimizer, epoch, args.log_interval, args.dry_run)
            scheduler.step()
            run.log_epoch(epoch, train_loss=loss)  # log
    print(f"run {run.run_id} {run.status}")


if __name__ == "__main__":
    script_main(main)  # log
