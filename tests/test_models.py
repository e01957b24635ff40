"""Stacked models compute exactly what plain PyTorch modules and optimizers compute."""
import pytest
import torch

from training.config import RunConfig
from training.engine import native_kernel
from training.nets.models import (StackedNet, init_params, layers_of, mlp_grads, n_params, output_probs,
                            per_model_loss, to_module)
from training.engine.optim import StackedAdam, StackedSGD
from training.engine.steps import FusedSgdStep, GradientStep, make_stepper

CONFIGS = {
    "nielsen": RunConfig(sizes=(784, 30, 10), activation="sigmoid", loss="mse"),
    "deep-relu": RunConfig(sizes=(784, 16, 16, 10), activation="relu", loss="cross_entropy"),
    "tanh-normal": RunConfig(sizes=(784, 20, 10), activation="tanh", loss="cross_entropy", init_std=0.01),
    "cnn": RunConfig(arch="cnn", activation="relu", loss="cross_entropy"),
}


def _stack(config, seeds):
    return StackedNet(config, [init_params(config, torch.Generator().manual_seed(s)) for s in seeds])


@pytest.mark.parametrize("name", ["nielsen", "deep-relu"])
def test_shared_images_take_the_one_gemm_first_layer_and_give_the_same_outputs(name):
    net = _stack(CONFIGS[name], [0, 1, 2])
    x = torch.rand(5, 784)
    shared = x.unsqueeze(0).expand(3, *x.shape)  # as evaluation passes its images: stride 0 over models
    logits, hidden = net.forward(shared, keep_hidden=True)
    ref_logits, ref_hidden = net.forward(shared.contiguous(), keep_hidden=True)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-6)
    for h, r in zip(hidden, ref_hidden):
        torch.testing.assert_close(h, r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CONFIGS)
def test_each_slice_of_a_stack_matches_its_plain_module(name):
    config = CONFIGS[name]
    net = _stack(config, [0, 1, 2])
    x = torch.rand(3, 5, 784)
    logits, hidden = net.forward(x, keep_hidden=True)
    assert logits.shape == (3, 5, 10)
    assert len(hidden) == len(layers_of(config)) - 1
    for k in range(3):
        module = to_module(config, net.model_params(k))
        torch.testing.assert_close(logits[k], module(x[k]), rtol=1e-5, atol=1e-5)


def test_parameter_counts_match_pytorch():
    for config in CONFIGS.values():
        module = to_module(config, init_params(config, torch.Generator().manual_seed(0)))
        assert n_params(config) == sum(p.numel() for p in module.parameters())
    assert n_params(CONFIGS["nielsen"]) == 784 * 30 + 30 + 30 * 10 + 10


def test_default_init_matches_pytorch_bounds_and_normal_init_uses_the_std():
    p = init_params(CONFIGS["nielsen"], torch.Generator().manual_seed(0))
    bound = 1 / 784 ** 0.5
    assert p["fc1.weight"].abs().max() <= bound and p["fc1.weight"].abs().max() > 0.9 * bound
    q = init_params(CONFIGS["tanh-normal"], torch.Generator().manual_seed(0))
    assert abs(float(q["fc1.weight"].std()) - 0.01) < 0.001 and float(q["fc1.bias"].abs().sum()) == 0


def test_same_seed_same_init_different_seed_different_init():
    a = init_params(CONFIGS["nielsen"], torch.Generator().manual_seed(5))
    b = init_params(CONFIGS["nielsen"], torch.Generator().manual_seed(5))
    c = init_params(CONFIGS["nielsen"], torch.Generator().manual_seed(6))
    assert torch.equal(a["fc1.weight"], b["fc1.weight"]) and not torch.equal(a["fc1.weight"], c["fc1.weight"])


def test_output_ranges_and_losses_match_their_definitions():
    logits = torch.randn(2, 4, 10) * 3
    y = torch.randint(0, 10, (2, 4))
    probs = output_probs(logits, "cross_entropy")
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4))
    sig = output_probs(logits, "mse")
    assert ((sig > 0) & (sig < 1)).all()
    ce = per_model_loss(logits, y, "cross_entropy")
    torch.testing.assert_close(ce[0], torch.nn.functional.cross_entropy(logits[0], y[0]))
    quad = per_model_loss(logits, y, "mse")
    onehot = torch.nn.functional.one_hot(y[1], 10).float()
    torch.testing.assert_close(quad[1], 0.5 * ((torch.sigmoid(logits[1]) - onehot) ** 2).sum(-1).mean())


@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam"])
def test_stacked_optimizers_follow_torch_optim(opt):
    config = CONFIGS["deep-relu"]
    lrs = [0.05, 0.2]
    net = _stack(config, [0, 1])
    params = list(net.params.values())
    if opt == "adam":
        mine = StackedAdam(params, lrs)
    else:
        mine = StackedSGD(params, lrs, [0.9 if opt == "momentum" else 0.0] * 2)
    refs = []
    for k in range(2):
        module = to_module(config, net.model_params(k)).train()
        if opt == "adam":
            refs.append((module, torch.optim.Adam(module.parameters(), lr=lrs[k])))
        else:
            refs.append((module, torch.optim.SGD(module.parameters(), lr=lrs[k],
                                                 momentum=0.9 if opt == "momentum" else 0.0)))
    torch.manual_seed(0)
    for _ in range(5):
        x, y = torch.rand(2, 8, 784), torch.randint(0, 10, (2, 8))
        logits, _ = net.forward(x)
        grads = torch.autograd.grad(per_model_loss(logits, y, config.loss).sum(), params)
        mine.step(list(grads))
        for k, (module, ref) in enumerate(refs):
            ref.zero_grad()
            torch.nn.functional.cross_entropy(module(x[k]), y[k]).backward()
            ref.step()
    for k, (module, _) in enumerate(refs):
        for name, value in net.model_params(k).items():
            torch.testing.assert_close(value, module.state_dict()[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["nielsen", "deep-relu", "tanh-normal"])
def test_hand_written_mlp_backprop_matches_autograd(name):
    config = CONFIGS[name]
    net = _stack(config, [0, 1, 2])
    x, y = torch.rand(3, 7, 784), torch.randint(0, 10, (3, 7))
    grads = mlp_grads(net, x, torch.nn.functional.one_hot(y, 10).float())
    logits, _ = net.forward(x)
    ref = torch.autograd.grad(per_model_loss(logits, y, config.loss).sum(), list(net.params.values()))
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


@pytest.fixture
def two_threads():
    """The kernel's two threads claim the three models between them, whatever the machine's core count."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("backend", ["kernel", "torch"])
@pytest.mark.parametrize("b", [10, 64])  # torch path: at 10 the first layer's norm takes the Gram route, at 64 the gradient
@pytest.mark.parametrize("name", ["nielsen", "deep-relu", "tanh-normal"])
def test_the_fused_sgd_step_follows_torch_optim_and_reports_autograds_gradient_norms(name, b, backend, two_threads):
    config = CONFIGS[name]
    lrs, k = [3.0, 0.5, 0.05], 3
    net = _stack(config, [0, 1, 2])
    # Fixed data: at lr 3 the ReLU net amplifies float32 rounding, so a rare draw puts a unit on the kink.
    data_gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(400, 784, generator=data_gen), torch.randint(0, 10, (400,), generator=data_gen)
    stepper = make_stepper([RunConfig(**{**config.__dict__, "lr": lr, "batch_size": b}) for lr in lrs], net, x, y)
    assert isinstance(stepper, FusedSgdStep)
    assert stepper.gram[0] == (b == 10)
    if backend == "torch":
        stepper.kernel = None
    elif native_kernel.compiler():  # with a compiler, the kernel is built and taken
        assert stepper.kernel is not None
    else:
        pytest.skip("no C compiler: the kernel is not built")
    refs = []
    for i in range(k):
        module = to_module(config, net.model_params(i)).train()
        refs.append((module, torch.optim.SGD(module.parameters(), lr=lrs[i])))
    gen = torch.Generator().manual_seed(0)
    batches = [torch.stack([torch.randperm(400, generator=gen)[:size] for _ in range(k)]) for size in (b, b, b, 7)]
    # Three full steps as one chunk, then a last, short batch alone.
    chunk = torch.stack([idx.reshape(-1) for idx in batches[:3]])
    norms = torch.empty(3, len(net.layers), k)
    stepper.steps(chunk, norms)
    last = torch.empty(len(net.layers), k)
    stepper.step(batches[3].reshape(-1), last)
    norms = stepper.grad_norms(torch.cat([norms, last.unsqueeze(0)]))
    for step, idx in enumerate(batches):
        for i, (module, opt) in enumerate(refs):
            opt.zero_grad()
            per_model_loss(module(x[idx[i]]).unsqueeze(0), y[idx[i]].unsqueeze(0), config.loss).sum().backward()
            expected = [module.state_dict(keep_vars=True)[f"{l.name}.weight"].grad.norm() for l in net.layers]
            torch.testing.assert_close(norms[step, :, i], torch.stack(expected), rtol=1e-4, atol=1e-6)
            opt.step()
    # atol 1e-5: the fused step adds each bias inside its layer's GEMM, a float32 summation order of its own.
    for i, (module, _) in enumerate(refs):
        for key, value in net.model_params(i).items():
            torch.testing.assert_close(value, module.state_dict()[key], rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not native_kernel.compiler(), reason="no C compiler: the kernel is not built")
@pytest.mark.parametrize("name", ["nielsen", "deep-relu", "tanh-normal"])
def test_the_kernel_is_as_close_to_float64_as_the_torch_path(name):
    """Both float32 paths against the torch path in float64, over seeds: the kernel's own summation
    order (register blocks, FMA) must not cost accuracy."""
    config, lrs = CONFIGS[name], [3.0, 0.5, 0.05]
    configs = [RunConfig(**{**config.__dict__, "lr": lr, "batch_size": 10}) for lr in lrs]
    worst = {"kernel": 0.0, "torch": 0.0}
    for seed in range(8):
        gen = torch.Generator().manual_seed(seed)
        x, y = torch.rand(400, 784, generator=gen), torch.randint(0, 10, (400,), generator=gen)
        idx = torch.randint(0, 400, (4, 30), generator=gen)
        params = {}
        for backend in ("kernel", "torch", "float64"):
            net = _stack(config, [0, 1, 2])
            xs = x
            if backend == "float64":
                net.params, xs = {key: v.double() for key, v in net.params.items()}, x.double()
            stepper = make_stepper(configs, net, xs, y)
            assert (stepper.kernel is None) == (backend == "float64")  # float32 takes the kernel until told not to
            if backend == "torch":
                stepper.kernel = None
            stepper.steps(idx, torch.empty(4, len(net.layers), 3, dtype=xs.dtype))
            params[backend] = {key: v.double() for key, v in net.model_params(0).items()}
        for backend in ("kernel", "torch"):
            error = max(float((params[backend][key] - params["float64"][key]).abs().max()) for key in params["float64"])
            worst[backend] = max(worst[backend], error)
    assert worst["kernel"] <= 2 * worst["torch"] + 1e-6, worst


def test_momentum_adam_and_the_cnn_take_the_gradient_route():
    x, y = torch.rand(50, 784), torch.randint(0, 10, (50,))
    nielsen = CONFIGS["nielsen"]
    for config in (RunConfig(**{**nielsen.__dict__, "momentum": 0.9}), RunConfig(**{**nielsen.__dict__, "optimizer": "adam"}),
                   CONFIGS["cnn"]):
        assert isinstance(make_stepper([config], _stack(config, [0]), x, y), GradientStep)
