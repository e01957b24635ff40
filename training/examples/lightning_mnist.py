"""Write-up D's net as a LightningModule: [784, 16, 16, 10] sigmoid, cross-entropy, SGD lr 0.01, batch 32.

The lines marked `# log` are all it takes to see the run in the dashboard, down to each unit; with
--mlflow-logger, Lightning's MLFlowLogger logs beside the callback, into the same run.

    python -m training.examples.lightning_mnist --epochs 2 --train-size 2000 [--mlflow-logger]
"""
import argparse
import warnings

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from training.nets.data import data_root
from training.own_loop import DEFAULT_EXPERIMENT, script_main  # log
from training.own_loop.lightning import MnistLabCallback, mlflow_logger  # log

ACC = "acc_epoch"  # what the module logs as its training accuracy (a name of its own: the contract's is the callback's)


class LitNet(L.LightningModule):
    def __init__(self, lr: float = 0.01, batch_size: int = 32, train_size: int = 60_000, seed: int = 1):
        super().__init__()
        self.save_hyperparameters()
        self.fc1 = nn.Linear(784, 16)
        self.fc2 = nn.Linear(16, 16)
        self.fc3 = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = torch.sigmoid(self.fc1(x))
        x = torch.sigmoid(self.fc2(x))
        return self.fc3(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self(x)
        self.log(ACC, (out.argmax(1) == y).float().mean(), on_step=False, on_epoch=True, batch_size=len(y))
        return nn.functional.cross_entropy(out, y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=60_000)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    parser.add_argument("--mlflow-logger", action="store_true", help="log beside Lightning's MLFlowLogger, in its run")
    args = parser.parse_args()
    if not 1 <= args.train_size <= 60_000:
        parser.error(f"--train-size {args.train_size} is out of range: MNIST has 60,000 training images")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")  # a 2,000-image subset needs none
    L.seed_everything(args.seed, verbose=False)
    data = datasets.MNIST(str(data_root()), train=True, download=False, transform=transforms.ToTensor())
    loader = DataLoader(Subset(data, range(args.train_size)), batch_size=args.batch_size, shuffle=True)
    model = LitNet(args.lr, args.batch_size, args.train_size, args.seed)
    logged = MnistLabCallback(params=vars(args), train_acc=ACC, experiment=args.experiment)  # log
    logger = mlflow_logger(args.experiment) if args.mlflow_logger else False  # log
    trainer = L.Trainer(max_epochs=args.epochs, callbacks=[logged], logger=logger, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, loader)
    print(f"run {logged.run.run_id} {logged.run.status}")


if __name__ == "__main__":
    script_main(main)  # log
