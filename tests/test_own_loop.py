"""Logging your own training loop (training.own_loop): what it logs equals what the model computes, and bad
use is one line that loses nothing.  A few real MNIST steps, a real SQLite store, no mocks."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient
from torch import nn

from dashboard.loaders import logged_activations, neuron_stats, neuron_target
from dashboard.read import cache, store
from tests.conftest import all_runs
from training import contract as C
from training.errors import UserError
from training.nets.data import load, load_test_images
from training.own_loop import logged_grid, logged_run
from training.own_loop.layer_capture import ModelError


class OddNet(nn.Module):
    """Odd module names, a nested ModuleDict, functional activations, a BatchNorm, a Dropout, a bare layer."""

    def __init__(self):
        super().__init__()
        self.add_module("Stem-Conv", nn.Conv2d(1, 4, 3))
        self.blocks = nn.ModuleDict({"a_1": nn.ModuleDict({"lin 0": nn.Linear(4 * 13 * 13, 12),
                                                           "norm": nn.BatchNorm1d(12)}),
                                     "b": nn.Linear(12, 8)})
        self.drop = nn.Dropout(0.5)
        self.proj = nn.Linear(8, 6)
        self.head_ = nn.Linear(6, 10)

    def forward(self, x):
        x = F.leaky_relu(getattr(self, "Stem-Conv")(x), 0.1)
        x = F.max_pool2d(x, 2).flatten(1)
        x = torch.tanh(self.blocks["a_1"]["norm"](self.blocks["a_1"]["lin 0"](x)))
        x = self.drop(F.gelu(self.blocks["b"](x)))
        return self.head_(self.proj(x))

    def expected_units(self, x):
        """Every hidden layer's units, computed directly (eval mode): conv channels by their spatial max."""
        conv = F.leaky_relu(getattr(self, "Stem-Conv")(x), 0.1)
        a = torch.tanh(self.blocks["a_1"]["norm"](self.blocks["a_1"]["lin 0"](F.max_pool2d(conv, 2).flatten(1))))
        b = F.gelu(self.blocks["b"](a))
        return [conv.amax(dim=(-2, -1)), a, b, self.proj(b)]


def _train_steps(model, steps=20, lr=0.05):
    data = load(train_size=64 * steps)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for i in range(steps):
        x, y = data.train_x[i * 64:(i + 1) * 64].reshape(-1, 1, 28, 28), data.train_y[i * 64:(i + 1) * 64]
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def test_an_odd_model_logs_units_equal_to_its_intermediate_outputs():
    torch.manual_seed(0)
    model = OddNet()
    with logged_run(model, params={"lr": 0.05}, run_name="odd") as run:
        run.log_epoch(0)
        _train_steps(model)
        run.log_epoch(1, train_loss=1.0)
    assert model.training, "logging must leave the model in the mode it found it"
    got = store.get_run(run.run_id)
    assert got.info.status == C.STATUS_FINISHED
    layers = store.layers(got).layers
    assert [l.name for l in layers] == ["Stem-Conv", "blocks.a_1.lin 0", "blocks.b", "proj", "head_"]
    assert [l.activation for l in layers] == ["leaky_relu", "tanh", "gelu", "none", "none"]
    assert layers[0].out_shape == (4, 26, 26)

    images, _ = load_test_images()
    x = images.float().div(255).unsqueeze(1)
    model.eval()
    with torch.no_grad():
        expected = model.expected_units(x)
    logged = logged_activations.hidden_units(neuron_target.resolve(run.run_id, 1, 1))  # through the dashboard's checked reader
    assert [a.shape for a in logged] == [(10_000, 4), (10_000, 12), (10_000, 8), (10_000, 6)]
    for want, have in zip(expected, logged):
        np.testing.assert_allclose(have, want.numpy(), rtol=2e-3, atol=2e-3)  # float16: 11 bits of mantissa

    metrics = MlflowClient().get_run(run.run_id).data.metrics
    pred = model(x).argmax(1)
    assert metrics[C.TEST_ACC] == pytest.approx(float((pred == load_test_images()[1]).double().mean()))
    accs = sorted((m.step, m.value) for m in MlflowClient().get_metric_history(run.run_id, C.TEST_ACC))
    best_epoch, best = max(accs, key=lambda sv: (sv[1], -sv[0]))  # the highest, the first epoch on a tie
    assert (metrics[C.BEST_TEST_ACC], metrics[C.BEST_EPOCH]) == (pytest.approx(best), best_epoch)
    for name in ("Stem-Conv", "blocks.a_1.lin 0", "blocks.b", "proj", "head_"):
        assert metrics[C.grad_norm_key(name)] > 0
    assert C.dead_fraction_key("blocks.a_1.lin 0") in metrics  # tanh: saturation has a meaning
    snap = store.load_snapshot(run.run_id, 1)
    np.testing.assert_array_equal(snap[C.weight_key("blocks.b")], model.blocks["b"].weight.detach().numpy())
    np.testing.assert_array_equal(snap[C.PRED_CLASS], pred.numpy())


def test_the_neuron_explorer_reads_the_logged_units():
    torch.manual_seed(1)
    model = OddNet()
    with logged_run(model) as run:
        run.log_epoch(0)
    cache.clear()
    t = neuron_target.resolve(run.run_id, 2, None, 3)
    assert (t.layer_name, t.units, t.activation, t.first) == ("blocks.a_1.lin 0", 12, "tanh", False)
    assert neuron_target.resolve(run.run_id, 1).first  # a conv over the image: its kernels are image-shaped
    stats = neuron_stats.layer_stats(t)
    acts = logged_activations.hidden_units(t)[1]
    assert stats.top.shape[0] == 12
    np.testing.assert_array_equal(np.sort(np.argsort(-acts[:, 3], kind="stable")[:stats.top.shape[1]]),
                                  np.sort(stats.top[3]))


class NoWeights(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10]


def test_bad_models_are_refused_in_one_line_before_a_run_exists():
    with pytest.raises(ModelError, match="has no nn.Linear or nn.Conv2d") as no_layer:
        logged_run(NoWeights()).__enter__()
    with pytest.raises(ModelError, match="cannot take a batch of 1x28x28 MNIST images") as wrong_input:
        logged_run(nn.Sequential(nn.Linear(100, 10))).__enter__()
    odd = nn.ModuleDict({"flat": nn.Flatten(), "löwe(1)": nn.Linear(784, 10)})
    odd.forward = lambda x: odd["löwe(1)"](odd["flat"](x))
    with pytest.raises(ModelError, match="cannot name an MLflow metric") as bad_name:
        logged_run(odd).__enter__()
    for e in (no_layer, wrong_input, bad_name):
        assert "\n" not in str(e.value)
    assert all_runs() == []


def test_logging_after_the_end_is_one_line_and_keeps_the_run():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.ReLU(), nn.Linear(8, 10))
    with logged_run(model) as run:
        run.log_epoch(0)
        run.log_epoch(1)
    with pytest.raises(UserError, match="already ended FINISHED") as late:
        run.log_epoch(2)
    assert "\n" not in str(late.value)
    history = MlflowClient().get_metric_history(run.run_id, C.TEST_ACC)
    assert [m.step for m in history] == [0, 1]
    assert store.snapshot_epochs(run.run_id) == [0, 1]


def test_a_second_run_inside_the_first_without_nesting_is_refused_and_the_first_goes_on():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.Sigmoid(), nn.Linear(8, 10))
    with logged_run(model) as first:
        first.log_epoch(0)
        with pytest.raises(UserError, match=f"run {first.run_id} is still open"):
            with logged_run(model):
                pass
        first.log_epoch(1)
        with logged_run(model, parent=first) as nested:
            nested.log_epoch(0)
    runs = {r.info.run_id: r for r in all_runs()}
    assert len(runs) == 2 and runs[first.run_id].info.status == C.STATUS_FINISHED
    assert runs[nested.run_id].data.tags[C.TAG_PARENT_RUN_ID] == first.run_id


def test_runs_inside_a_grid_nest_under_its_parent():
    with logged_grid("lrs") as grid:
        for lr in (0.1, 0.01):
            model = nn.Sequential(nn.Flatten(), nn.Linear(784, 4), nn.Tanh(), nn.Linear(4, 10))
            with logged_run(model, params={"lr": lr}) as run:
                run.log_epoch(0)
    runs = all_runs()
    children = [r for r in runs if r.info.run_id != grid.run_id]
    assert len(children) == 2
    assert {r.data.tags[C.TAG_PARENT_RUN_ID] for r in children} == {grid.run_id}
    assert {r.data.tags[C.TAG_GRID_NAME] for r in runs} == {"lrs"}
    assert all(r.info.status == C.STATUS_FINISHED for r in runs)
    assert {r.data.tags[C.TAG_STEP_PATH] for r in children} == {"torch"}  # your loop's steps are PyTorch's


def test_an_exception_in_the_loop_ends_the_run_failed_with_the_error_and_keeps_its_epochs():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.ReLU(), nn.Linear(8, 10))
    with pytest.raises(RuntimeError, match="loss is nan"):
        with logged_run(model) as run:
            run.log_epoch(0)
            raise RuntimeError("loss is nan")
    got = MlflowClient().get_run(run.run_id)
    assert got.info.status == run.status == C.STATUS_FAILED
    assert got.data.tags[C.TAG_FAILURE_REASON] == "crashed: RuntimeError: loss is nan"
    assert store.snapshot_epochs(run.run_id) == [0]
