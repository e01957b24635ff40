"""Nielsen's network.py, as options: `init: nielsen` (weights and biases from N(0, 1)) and `val_size: N`
(the last N training images held out, val_loss and val_acc logged every epoch), in the config, the CLI,
grid files, the stacked engine and the store."""
import math

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from scipy import stats

from tests.conftest import all_runs
from training import contract as C
from training.config import MNIST_TRAIN_SIZE, ConfigError, RunConfig
from training.engine.cohorts import cohort_key
from training.location import tracking_uri
from training.nets.models import init_params, layers_of
from training.sweep.gridfile import load_grid
from training.train import parse_args

# Hashes computed at the commit before init and val_size existed (dc1563c): grids resume by them, so the
# configs that predate the new options must keep them.
HASHES_BEFORE = {
    RunConfig(): "91c701a61be46897",
    RunConfig(sizes=(784, 20, 10), epochs=25, batch_size=20, lr=3.0): "81ed4d614ac39289",
    RunConfig(arch="cnn", activation="relu", loss="cross_entropy", optimizer="adam", lr=0.001, batch_size=64,
              epochs=3): "fc1ad93c541e3d98",
    RunConfig(sizes=(784, 128, 10), activation="relu", loss="cross_entropy", init_std=0.01, lr=0.1, batch_size=64,
              epochs=5, train_size=2000, seed=3): "a56b58395e3982e8",
}
QUICK_HASHES_BEFORE = ["97889ce07cec43e8", "fa78256ddb289114", "58f7af4f6efd4db7", "615148a72683cdbb"]


def test_configs_that_predate_init_and_val_size_keep_their_hash():
    assert {c: c.config_hash for c in HASHES_BEFORE} == HASHES_BEFORE
    assert [c.config_hash for c in load_grid("training/grids/quick.yaml").configs] == QUICK_HASHES_BEFORE
    nielsen, held_out = RunConfig(init="nielsen"), RunConfig(val_size=10_000)
    assert len({RunConfig().config_hash, nielsen.config_hash, held_out.config_hash}) == 3


def test_val_size_alone_gives_nielsens_50000_10000_split():
    config = RunConfig.from_dict({"val_size": 10_000})
    assert (config.train_size, config.val_size) == (50_000, 10_000)
    assert parse_args(["--val-size", "10000"]) == config
    assert RunConfig.from_dict({"val_size": 10_000, "train_size": 2000}).train_size == 2000
    assert RunConfig.from_params(config.as_params()) == config
    assert cohort_key(config) != cohort_key(RunConfig(train_size=50_000))  # the val set is shared by a cohort


@pytest.mark.parametrize("values, words", [
    ({"val_size": 10_000, "train_size": 60_000}, "train_size=60000 overlaps the 10000 held-out images"),
    ({"val_size": 10_000, "train_size": 50_001}, "use at most 50000, or leave train_size out"),
    ({"val_size": -1}, "val_size=-1 must be between 0 and 59999"),
    ({"val_size": MNIST_TRAIN_SIZE}, "val_size=60000 must be between 0 and 59999"),
    ({"val_size": "many"}, "val_size='many' should be an integer"),
    ({"init": "xavier"}, "init='xavier' is not one of nielsen"),
    ({"init": "nielsen", "init_std": 0.1}, "init_std=0.1 does not combine with init='nielsen'"),
    ({"val_size": 59_990, "batch_size": 20}, "batch_size=20 must be between 1 and train_size (10)"),
])
def test_impossible_splits_and_inits_are_one_line_errors_naming_the_key(values, words):
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(values, where="g.yaml: config 1")
    assert str(e.value).startswith("g.yaml: config 1: ") and words in str(e.value) and "\n" not in str(e.value)


def test_the_cli_takes_init_and_val_size(capsys):
    config = parse_args(["--init", "nielsen", "--val-size", "1000", "--train-size", "2000"])
    assert (config.init, config.val_size, config.train_size) == ("nielsen", 1000, 2000)
    with pytest.raises(SystemExit):
        parse_args(["--init", "xavier"])
    assert "invalid choice: 'xavier'" in capsys.readouterr().err


def within_4_standard_errors_of_n01(values: torch.Tensor) -> bool:
    """The sample mean and variance of n draws are within 4 standard errors of N(0, 1)'s 0 and 1:
    se(mean) = 1/sqrt(n), se(var) = sqrt(2/(n-1)) for normal draws."""
    v, n = values.double().flatten(), values.numel()
    return abs(float(v.mean())) < 4 / math.sqrt(n) and abs(float(v.var()) - 1) < 4 * math.sqrt(2 / (n - 1))


def test_nielsen_init_draws_every_weight_and_bias_from_n01():
    config = RunConfig(sizes=(784, 30, 10), init="nielsen")
    params = init_params(config, torch.Generator().manual_seed(0))
    assert all(within_4_standard_errors_of_n01(p) for p in params.values())
    everything = torch.cat([p.flatten() for p in params.values()]).numpy()
    assert stats.kstest(everything, "norm").pvalue > 1e-3
    # The check can fail: PyTorch's default init (sd 1/sqrt(3*fan_in)) and init_std 0.5 both do.
    default = init_params(RunConfig(sizes=(784, 30, 10)), torch.Generator().manual_seed(0))
    narrow = init_params(RunConfig(sizes=(784, 30, 10), init_std=0.5), torch.Generator().manual_seed(0))
    assert not within_4_standard_errors_of_n01(default["fc1.weight"])
    assert not within_4_standard_errors_of_n01(narrow["fc1.weight"])


def test_nielsen_init_is_seeded_and_covers_the_cnn():
    cnn = RunConfig(arch="cnn", activation="relu", loss="cross_entropy", init="nielsen")
    a, b = (init_params(cnn, torch.Generator().manual_seed(3)) for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a) and within_4_standard_errors_of_n01(a["conv2.weight"])


def _plain_module(snapshot, layers) -> torch.nn.Module:
    """The snapshot's weights in a plain nn.Sequential of Linear + Sigmoid, written here from the contract."""
    mods = []
    for i, layer in enumerate(layers):
        w = torch.from_numpy(snapshot[C.weight_key(layer.name)])
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        lin.weight.data, lin.bias.data = w, torch.from_numpy(snapshot[C.bias_key(layer.name)])
        mods += [lin] + ([torch.nn.Sigmoid()] if i < len(layers) - 1 else [])
    return torch.nn.Sequential(*mods).eval()


@pytest.mark.slow
def test_a_nielsen_grid_with_val_size_logs_val_metrics_every_epoch_from_n01_weights(tmp_path):
    from training.nets.data import load
    from training.grid import main as grid_main
    grid = tmp_path / "nielsen_val.yaml"
    grid.write_text("experiment: nielsen-val\n"
                    "base: {sizes: [784, 20, 10], activation: sigmoid, loss: mse, init: nielsen, val_size: 10000,\n"
                    "       train_size: 2000, epochs: 2, lr: 3.0, batch_size: 10}\n"
                    "grid: {seed: [0, 1]}\n")
    assert grid_main([str(grid)]) == 0
    children = [r for r in all_runs(experiment="nielsen-val") if r.data.tags.get(C.TAG_PARENT_RUN_ID)]
    assert len(children) == 2
    client, data = MlflowClient(tracking_uri()), load()
    x_val, y_val = data.train_x[-10_000:], data.train_y[-10_000:]
    layers = layers_of(RunConfig(sizes=(784, 20, 10)))
    for run in children:
        assert run.data.params[C.PARAM_INIT] == "nielsen" and run.data.params[C.PARAM_VAL_SIZE] == "10000"
        rid = run.info.run_id
        logged = {key: {m.step: m.value for m in client.get_metric_history(rid, key)}
                  for key in (C.VAL_ACC, C.VAL_LOSS)}
        assert sorted(logged[C.VAL_ACC]) == sorted(logged[C.VAL_LOSS]) == [0, 1, 2]
        for epoch in (0, 2):
            with np.load(client.download_artifacts(rid, C.snapshot_path(epoch)), allow_pickle=False) as z:
                snap = {k: z[k] for k in z.files}
            if epoch == 0:
                assert all(within_4_standard_errors_of_n01(torch.from_numpy(snap[key(l.name)]))
                           for l in layers for key in (C.weight_key, C.bias_key))
            with torch.no_grad():
                out = torch.sigmoid(_plain_module(snap, layers)(x_val))
            acc = float((out.argmax(1) == y_val).double().mean())
            loss = float(0.5 * ((out - torch.nn.functional.one_hot(y_val, 10)) ** 2).sum(1).mean())
            assert logged[C.VAL_ACC][epoch] == pytest.approx(acc, abs=1e-6)
            assert logged[C.VAL_LOSS][epoch] == pytest.approx(loss, rel=1e-4)
        assert logged[C.VAL_ACC][2] > max(0.5, logged[C.VAL_ACC][0])  # it learned from its 2,000 images
