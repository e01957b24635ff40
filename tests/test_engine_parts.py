"""The engine's small parts, each against an answer worked out another way: the divergence check, the
metric names, the snapshot schedule, the evaluation (against plain nn.Modules), cohort building, and a
whole cohort on synthetic images (no MNIST, no MLflow)."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from training import contract as C
from training.config import RunConfig
from training.engine.cohorts import MAX_COHORT, cohort_key, make_cohorts, total_steps
from training.engine.evaluation import Evaluator
from training.engine.loop import DIVERGENCE_FACTOR, divergence, epoch_metrics, train_cohort, wants_snapshot
from training.nets.data import Mnist
from training.nets.models import StackedNet, init_params, to_module


def test_a_finite_loss_under_the_factor_is_not_divergence_and_one_over_it_is():
    initial = 2.3
    assert divergence(4, 2.0, initial, [2.0, 0.5, 2.1, 0.4, 0.01]) is None
    assert divergence(4, DIVERGENCE_FACTOR * initial, initial, [1.0]) is None  # at the factor: not yet
    over = DIVERGENCE_FACTOR * initial * 1.01
    assert divergence(4, over, initial, [over, 0.1]) == (
        f"diverged at epoch 4: train loss {over:.4g} (over {DIVERGENCE_FACTOR:g}x the untrained loss "
        f"{initial:.3g}); try a smaller lr")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_nan_or_inf_anywhere_is_divergence_even_with_a_small_loss(bad):
    why = divergence(2, 0.5, 2.3, [0.5, 0.9, 0.6, 0.8, bad])
    assert why == "diverged at epoch 2: train loss 0.5 (NaN or inf); try a smaller lr"


def test_epoch_metrics_hold_the_five_epoch_metrics_and_one_name_per_layer():
    norms = {"fc1": 0.3, "fc2": 0.7, "fc3": 1.1}
    dead = {"fc1": 0.25, "fc2": 0.0}  # hidden layers only
    metrics = epoch_metrics((0.4, 0.88), (0.5, 0.86), 12.5, norms, dead)
    expected = {"train_loss": 0.4, "train_acc": 0.88, "test_loss": 0.5, "test_acc": 0.86, "epoch_seconds": 12.5,
                "grad_norm/fc1": 0.3, "grad_norm/fc2": 0.7, "grad_norm/fc3": 1.1,
                "dead_fraction/fc1": 0.25, "dead_fraction/fc2": 0.0}
    assert metrics == expected
    assert set(C.EPOCH_METRICS) <= metrics.keys()


@pytest.mark.parametrize("every, epochs", [(1, 3), (3, 7), (5, 5), (4, 2)])
def test_snapshots_fall_every_k_epochs_from_the_untrained_net_and_on_the_last(every, epochs):
    config = RunConfig(snapshot_every=every, epochs=epochs)
    expected = sorted(set(range(0, epochs + 1, every)) | {epochs})
    assert [e for e in range(epochs + 1) if wants_snapshot(e, config)] == expected


def test_the_evaluation_of_a_stack_matches_each_plain_module():
    config = RunConfig(sizes=(784, 12, 10), activation="relu", loss="cross_entropy")
    per_model = [init_params(config, torch.Generator().manual_seed(s)) for s in (0, 1)]
    per_model[1]["fc1.bias"].fill_(-100.0)  # model 1's hidden units never fire: all dead
    x, y = torch.rand(300, 784), torch.randint(0, 10, (300,))
    ev = Evaluator(StackedNet(config, per_model), config).full(x, y)
    for k, params in enumerate(per_model):
        module = to_module(config, params)
        with torch.no_grad():
            logits, hidden = module(x), torch.relu(x @ params["fc1.weight"].T + params["fc1.bias"])
        probs = torch.softmax(logits, -1)
        torch.testing.assert_close(float(ev.loss[k]), float(torch.nn.functional.cross_entropy(logits, y)),
                                   rtol=1e-5, atol=1e-6)
        assert torch.equal(ev.pred[k], probs.argmax(-1))
        assert float(ev.acc[k]) == pytest.approx(float((probs.argmax(-1) == y).double().mean()))
        torch.testing.assert_close(ev.conf[k], probs.max(-1).values, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ev.hidden[0][k], hidden, rtol=1e-5, atol=1e-5)
        dead = float((hidden.numpy() <= 0).all(axis=0).mean())
        assert float(ev.dead_fractions("relu")[0][k]) == pytest.approx(dead)
    assert float(ev.dead_fractions("relu")[0][1]) == 1.0


def test_cohorts_group_by_shape_cap_at_max_and_split_until_every_worker_has_one():
    a = [RunConfig(lr=0.1 * (i + 1), epochs=2) for i in range(MAX_COHORT + 6)]
    cohorts = make_cohorts(a, workers=1)
    assert [len(c) for c in cohorts] == [MAX_COHORT, 6]
    assert [c for co in cohorts for c in co] == a

    long_ = [RunConfig(seed=s, epochs=4) for s in range(3)]
    short = [RunConfig(epochs=1)]
    cohorts = make_cohorts(long_ + short, workers=4)
    assert len(cohorts) == 4 and all(len({cohort_key(c) for c in co}) == 1 for co in cohorts)
    assert sorted(c.seed for co in cohorts for c in co if c.epochs == 4) == [0, 1, 2]
    work = [sum(total_steps(c) for c in co) for co in cohorts]
    assert work == sorted(work, reverse=True)  # the longest first


class RecordingSink:
    """What the engine reports, kept in memory."""

    def __init__(self):
        self.epochs, self.snapshots, self.failures = {}, {}, {}

    def log_epoch(self, k, epoch, metrics, snapshot):
        self.epochs.setdefault(k, []).append((epoch, metrics))
        if snapshot is not None:
            self.snapshots.setdefault(k, []).append(epoch)

    def fail(self, k, reason):
        self.failures[k] = reason


@pytest.fixture(scope="module")
def synthetic():
    """Learnable synthetic images: the label is the brightest of ten 78-pixel stripes."""
    g = torch.Generator().manual_seed(0)

    def split(n):
        x = torch.rand(n, 784, generator=g) * 0.5
        y = torch.randint(0, 10, (n,), generator=g)
        for i, label in enumerate(y.tolist()):
            x[i, label * 78:(label + 1) * 78] += 0.5
        return x, y
    (train_x, train_y), (test_x, test_y) = split(400), split(200)
    return Mnist(train_x, train_y, test_x, test_y, root=None, sha256={})


def test_a_cohort_reports_every_epoch_snapshots_on_schedule_and_fails_only_the_diverging_model(synthetic):
    common = dict(sizes=(784, 16, 10), activation="relu", loss="cross_entropy", epochs=3, train_size=400,
                  batch_size=20, snapshot_every=2)
    good, bad = RunConfig(lr=0.1, **common), RunConfig(lr=1e6, seed=1, **common)
    alone, both = RecordingSink(), RecordingSink()
    train_cohort([good], synthetic, alone)
    result = train_cohort([bad, good], synthetic, both)

    assert result.params[0] is None and result.params[1] is not None
    assert [e for e, _ in both.epochs[0]] == [0]  # the untrained epoch, then it blew up
    assert both.failures[0].startswith("diverged at epoch 1: train loss") and 1 not in both.failures
    steps = [e for e, _ in both.epochs[1]]
    assert steps == [0, 1, 2, 3] and both.snapshots[1] == [e for e in steps if wants_snapshot(e, good)]
    names = set(epoch_metrics((0, 0), (0, 0), 0, {"fc1": 0, "fc2": 0}, {"fc1": 0}))
    assert all(set(m) == names for _, m in both.epochs[1])
    # The diverging model does not disturb its neighbour: the same curve as trained alone.
    a = [m[C.TEST_ACC] for _, m in alone.epochs[0]]
    b = [m[C.TEST_ACC] for _, m in both.epochs[1]]
    assert np.allclose(a, b, atol=1e-3) and b[-1] > 0.5  # it learned the stripes
    # The last logged accuracy is the final parameters' accuracy, computed here by a plain module.
    with torch.no_grad():
        pred = to_module(good, result.params[1])(synthetic.test_x).argmax(-1)
    assert b[-1] == pytest.approx(float((pred == synthetic.test_y).double().mean()))


def test_a_model_stopped_by_the_caller_leaves_the_stack_and_its_neighbours_train_as_alone(synthetic):
    common = dict(sizes=(784, 16, 10), activation="relu", loss="cross_entropy", epochs=3, train_size=400,
                  batch_size=20)
    first, second = RunConfig(lr=0.1, **common), RunConfig(lr=0.05, seed=1, **common)
    alone, both = RecordingSink(), RecordingSink()
    train_cohort([second], synthetic, alone)
    asked = []

    def stop(k, epoch, metrics):  # as a search's pruner: model 0 goes after its first trained epoch
        asked.append((k, epoch))
        return k == 0 and epoch == 1
    result = train_cohort([first, second], synthetic, both, stop=stop)
    assert result.params[0] is None and result.params[1] is not None and not both.failures
    assert [e for e, _ in both.epochs[0]] == [0, 1] and [e for e, _ in both.epochs[1]] == [0, 1, 2, 3]
    assert asked == [(0, 0), (1, 0), (0, 1), (1, 1), (1, 2), (1, 3)]  # never asked again once stopped
    # Evaluated without the stopped model, the other's numbers are the ones it gets alone.
    for (_, m_alone), (_, m_both) in zip(alone.epochs[0], both.epochs[1]):
        assert m_both[C.TEST_ACC] == pytest.approx(m_alone[C.TEST_ACC], abs=1e-3)
        assert m_both[C.TRAIN_LOSS] == pytest.approx(m_alone[C.TRAIN_LOSS], rel=1e-3)


def test_a_cohort_with_val_size_scores_the_last_images_and_never_trains_on_them(synthetic):
    config = RunConfig(sizes=(784, 16, 10), activation="relu", loss="cross_entropy", epochs=2, train_size=300,
                       val_size=100, batch_size=20, lr=0.1, init="nielsen")
    sink = RecordingSink()
    params = train_cohort([config, replace(config, seed=1)], synthetic, sink).params
    x_val, y_val = synthetic.train_x[300:], synthetic.train_y[300:]
    for k in (0, 1):
        assert [e for e, m in sink.epochs[k] if C.VAL_ACC in m and C.VAL_LOSS in m] == [0, 1, 2]
        with torch.no_grad():
            logits = to_module(config, params[k])(x_val)
        _, last = sink.epochs[k][-1]
        assert last[C.VAL_ACC] == pytest.approx(float((logits.argmax(-1) == y_val).double().mean()))
        assert last[C.VAL_LOSS] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y_val)), rel=1e-5)
    # Scrambling the held-out images changes nothing the models learn: they never train on them.
    scrambled = Mnist(torch.cat([synthetic.train_x[:300], torch.rand(100, 784)]), synthetic.train_y,
                      synthetic.test_x, synthetic.test_y, root=None, sha256={})
    again = train_cohort([config, replace(config, seed=1)], scrambled, RecordingSink()).params
    assert all(torch.equal(again[k][name], params[k][name]) for k in (0, 1) for name in params[k])
