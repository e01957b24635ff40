"""Integrated gradients (Captum) against a Riemann sum written here, and completeness within 1 %."""
import numpy as np
import pytest
import torch

from dashboard.analytics.attribution import integrated_gradients
from training.nets.models import CNN, MLP

REFERENCE_STEPS = 4000


def riemann_ig(model, x: np.ndarray, target: int) -> np.ndarray:
    """IG by the definition: (x − 0) times the mean gradient at midpoints of the straight path from black."""
    xt = torch.as_tensor(x.reshape(1, 784), dtype=torch.float32)
    alphas = (torch.arange(REFERENCE_STEPS, dtype=torch.float32) + 0.5) / REFERENCE_STEPS
    path = (alphas[:, None] * xt).requires_grad_()
    model(path)[:, target].sum().backward()
    return (xt * path.grad.mean(0, keepdim=True)).numpy().reshape(28, 28)


@pytest.fixture
def random_net():
    torch.manual_seed(14)
    net = MLP((784, 30, 10), "sigmoid").eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def test_integrated_gradients_match_the_definition_and_are_complete(random_net):
    rng = np.random.default_rng(0)
    for target in (0, 7):
        x = rng.uniform(0, 1, 784).astype(np.float32)
        attr, diff, delta = integrated_gradients(random_net, x, target)
        np.testing.assert_allclose(attr, riemann_ig(random_net, x, target), rtol=1e-2, atol=1e-5)
        assert attr.sum() == pytest.approx(diff, rel=1e-2)  # completeness: sums to f(x) − f(black)
        assert abs(delta) <= 0.01 * abs(diff)


def test_a_relu_cnn_with_max_pooling_reports_its_true_completeness_gap():
    torch.manual_seed(3)
    net = CNN("relu").eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = np.random.default_rng(1).uniform(0, 1, 784).astype(np.float32)
    for target in (0, 7):
        attr, diff, delta = integrated_gradients(net, x, target)
        assert attr.sum() - diff == pytest.approx(delta, abs=1e-4)
        assert abs(delta) <= 0.05 * abs(diff), target  # piecewise linear: a few per cent at most at 256 steps


@pytest.mark.slow
def test_completeness_on_real_digits_for_the_predicted_and_the_true_class():
    from tests.test_feature_vis import quick_mlp
    from training.nets.data import load
    _, net, test_x = quick_mlp()
    labels = load(train_size=1).test_y.numpy()
    for i in range(0, 2000, 100):
        pred = int(net(test_x[i:i + 1]).argmax())
        for target in {pred, int(labels[i])}:
            attr, diff, _ = integrated_gradients(net, test_x[i].numpy(), target)
            assert attr.sum() == pytest.approx(diff, rel=1e-2, abs=1e-3), (i, target)
