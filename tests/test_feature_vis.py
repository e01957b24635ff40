"""Feature visualisation raises a unit far above what the test images do (a real [784,20,10] net)."""
import numpy as np
import pytest
import torch

from dashboard.analytics.feature_vis import maximise
from dashboard.loaders.neuron_forward import unit_objective
from training.config import RunConfig
from training.nets.data import load
from training.nets.models import MLP

pytestmark = pytest.mark.slow  # trains a real net for several seconds

TRAIN_IMAGES, EPOCHS = 10_000, 2


def quick_mlp(activation: str = "sigmoid", seed: int = 0) -> tuple[RunConfig, torch.nn.Module, torch.Tensor]:
    """[784,20,10] trained with Adam on 10,000 real MNIST images (a few seconds), and the (10000, 784) test inputs."""
    torch.manual_seed(seed)
    data = load(train_size=TRAIN_IMAGES)
    x = data.train_x.reshape(len(data.train_x), -1).float()
    x = x / 255.0 if x.max() > 1 else x
    net = MLP((784, 20, 10), activation)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), data.train_y[idx].long()).backward()
            opt.step()
    for p in net.parameters():
        p.requires_grad_(False)
    test_x = data.test_x.reshape(len(data.test_x), -1).float()
    test_x = test_x / 255.0 if test_x.max() > 1 else test_x
    config = RunConfig(sizes=(784, 20, 10), activation=activation, loss="cross_entropy", optimizer="adam")
    return config, net.eval(), test_x


@pytest.fixture(scope="module")
def trained():
    return quick_mlp()


def test_the_quick_net_really_learned(trained):
    _, net, test_x = trained
    data = load(train_size=1)
    assert (net(test_x).argmax(1) == data.test_y.long()).float().mean() > 0.85


def test_feature_visualisation_beats_the_test_mean_always_and_the_top_test_image_mostly(trained):
    config, net, test_x = trained
    beats_top = 0
    for unit in range(20):
        objective = unit_objective(config, net, 1, unit)
        vis = maximise(objective)
        with torch.no_grad():
            on_test = objective(test_x).numpy()
            on_vis = objective(torch.from_numpy(vis.image).reshape(1, 784)).item()
        assert on_vis == pytest.approx(vis.objective, rel=1e-5)
        assert 0.0 <= vis.image.min() and vis.image.max() <= 1.0
        assert on_vis > on_test.mean() + 3 * on_test.std(), unit  # well above what a test image does on average
        beats_top += on_vis > on_test.max()
    assert beats_top >= 15, beats_top  # most units: above even their most exciting test image


def test_feature_visualisation_is_deterministic(trained):
    config, net, _ = trained
    a, b = (maximise(unit_objective(config, net, 1, 3)) for _ in range(2))
    np.testing.assert_array_equal(a.image, b.image)
