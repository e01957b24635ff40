"""RunConfig.from_params is the exact inverse of as_params, for every option of MLPs and the CNN."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training import contract as C
from training.config import ACTIVATIONS, INITS, LOSSES, MNIST_TRAIN_SIZE, OPTIMIZERS, ConfigError, RunConfig

sizes = st.lists(st.integers(1, 512), min_size=0, max_size=3).map(lambda hidden: (784, *hidden, 10))
common = dict(
    activation=st.sampled_from(ACTIVATIONS), loss=st.sampled_from(LOSSES), optimizer=st.sampled_from(OPTIMIZERS),
    init_std=st.none() | st.floats(1e-4, 10, allow_nan=False), lr=st.floats(1e-6, 100, allow_nan=False),
    momentum=st.floats(0, 0.999, allow_nan=False), epochs=st.integers(1, 500), seed=st.integers(0, 2**31),
    snapshot_every=st.integers(1, 50), experiment=st.text(min_size=1, max_size=30).filter(str.strip),
    run_name=st.none() | st.text(min_size=1, max_size=40).filter(lambda s: s != C.DEFAULT_VALUE),
)


def configs(arch):
    def build(train_fraction, val_size, batch_fraction, init, init_std, **kw):
        train_size = max(1, int((MNIST_TRAIN_SIZE - val_size) * train_fraction))
        return RunConfig(arch=arch, train_size=train_size, val_size=val_size, init=init,
                         init_std=None if init else init_std, batch_size=max(1, int(train_size * batch_fraction)), **kw)
    extra = {"sizes": sizes} if arch == "mlp" else {}
    return st.builds(build, train_fraction=st.floats(0, 1), val_size=st.just(0) | st.integers(0, MNIST_TRAIN_SIZE - 1),
                     batch_fraction=st.floats(0, 1), init=st.none() | st.sampled_from(INITS), **common, **extra)


@settings(max_examples=150, deadline=None)
@given(configs("mlp") | configs("cnn"))
def test_from_params_inverts_as_params_for_mlp_and_cnn_configs_of_every_option(config):
    config.validate()
    params = config.as_params()
    assert all(isinstance(v, str) for v in params.values())
    assert RunConfig.from_params(params) == config


def test_a_cnn_config_ignores_sizes_so_its_params_round_trip():
    assert RunConfig(arch="cnn", sizes=(784, 20, 10)) == RunConfig(arch="cnn")
    assert RunConfig(arch="cnn").as_params()[C.PARAM_SIZES] == C.CNN_SIZES_VALUE


def test_the_architecture_label_has_its_own_param_and_arch_keeps_the_option():
    from training.tracking.mlflow_sink import run_params  # the params a real run logs
    from training.nets.data import Mnist
    import torch
    empty = torch.zeros(0)
    data = Mnist(empty, empty, empty, empty, root=None, sha256={"f": "0" * 64})
    params = run_params(RunConfig(sizes=(784, 20, 10), activation="relu"), data)
    assert params[C.PARAM_ARCH] == "mlp" and params[C.PARAM_ARCH_LABEL] == "mlp-784-20-10-relu"
    assert RunConfig.from_params(params) == RunConfig(sizes=(784, 20, 10), activation="relu")


def test_runs_logged_before_arch_label_read_their_label_from_arch():
    old = {"arch": "mlp-784-16-16-10-sigmoid", "sizes": "784,16,16,10", "activation": "sigmoid", "loss": "mse",
           "run_name": "mlp-784-16-16-10 sigmoid sgd lr=3 bs=10", "init_std": "default"}
    config = RunConfig.from_params(old)
    assert (config.arch, config.sizes, config.init_std) == ("mlp", (784, 16, 16, 10), None)
    old_cnn = {"arch": "cnn-relu", "sizes": "cnn", "activation": "relu", "loss": "cross_entropy"}
    assert RunConfig.from_params(old_cnn).arch == "cnn"


@pytest.mark.parametrize("params, words", [
    ({"accuracy": "0.5"}, "no arch, sizes, activation, loss param"),
    ({"arch": "mlp", "sizes": "784,x,10", "activation": "relu", "loss": "mse"}, "sizes='784,x,10'"),
    ({"arch": "mlp", "sizes": "784,30,10", "activation": "gelu", "loss": "mse"}, "activation='gelu'"),
    ({"arch": "mlp", "sizes": "784,30,10", "activation": "relu", "loss": "mse", "lr": "abc"}, "lr='abc'"),
])
def test_params_from_another_tool_raise_one_config_error_naming_the_problem(params, words):
    with pytest.raises(ConfigError) as e:
        RunConfig.from_params(params, where="run abc")
    assert str(e.value).startswith("run abc: ") and words in str(e.value)
    assert "\n" not in str(e.value)
