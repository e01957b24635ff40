"""One snapshot's network as a differentiable torch module, for the views that need gradients or one image.

Feature visualisation and integrated gradients differentiate through the network, and the image
page runs one image: they use training's own nn.Module (models.to_module) loaded from a snapshot,
cached per run and epoch (a logged snapshot never changes).  The config comes with the resolved run
(dashboard.loaders.neuron_target.Target): nothing here looks the run up.  A conv channel's activation is the
spatial max of its feature map, as in training.nets.activations.
"""
import numpy as np
import torch

from dashboard.loaders import own_model
from dashboard.loaders.neuron_target import Target, memoize_by
from dashboard.read import store
from dashboard.read.store import StoreError
from training import contract as C
from training.config import RunConfig
from training.nets.architecture import layers_of
from training.nets.models import ACTIVATION_FNS, output_probs, to_module


def module_at(t: Target) -> tuple[RunConfig | None, torch.nn.Module]:
    """The run's config and its network at t's snapshot epoch (eval mode, parameters frozen).  A run from its own
    loop has no config (None) and its network is its logged graph (dashboard.loaders.own_model); StoreError, one
    line, for a run that logged neither."""
    if t.config is None:
        return None, own_model.module_at(t)
    return _builtin_at(t)


@memoize_by(16, lambda t: (t.run_id, t.epoch))
def _builtin_at(t: Target) -> tuple[RunConfig, torch.nn.Module]:
    if (config := t.config) is None:
        raise StoreError(t.no_config)
    names = [layer.name for layer in layers_of(config)]
    snap = store.complete_weights(t.run_id, t.epoch, names)
    params = {}
    for name in names:
        params[f"{name}.weight"] = torch.from_numpy(np.array(snap[C.weight_key(name)], dtype=np.float32))
        params[f"{name}.bias"] = torch.from_numpy(np.array(snap[C.bias_key(name)], dtype=np.float32))
    module = to_module(config, params)
    for p in module.parameters():
        p.requires_grad_(False)
    return config, module


def hidden_pre(config: RunConfig, module: torch.nn.Module, x: torch.Tensor) -> tuple[list, torch.Tensor]:
    """Each hidden layer's pre-activation for (B, 784) inputs ((B, U) or (B, C, H, W)) and the logits."""
    act = ACTIVATION_FNS[config.activation]
    pres = []
    if config.arch == "cnn":
        h = x.reshape(-1, 1, 28, 28)
        for conv in (module.conv1, module.conv2):
            pres.append(conv(h))
            h = torch.nn.functional.max_pool2d(act(pres[-1]), 2)
        return pres, module.fc(h.flatten(1))
    layers = [getattr(module, f"fc{i}") for i in range(1, module.n_layers + 1)]
    h = x
    for layer in layers[:-1]:
        pres.append(layer(h))
        h = act(pres[-1])
    return pres, layers[-1](h)


def unit_objective(config: RunConfig | None, module: torch.nn.Module, layer: int, unit: int):
    """(B, 784) -> (B,): a unit's pre-activation (a conv channel's: its feature map's mean), differentiable.

    The pre-activation, not the activation, so a saturated sigmoid still has a gradient; it orders
    images as the activation does.  Only the layers up to `layer` are run (a run from its own loop: the whole
    graph, keeping its `layer`-th weight layer's output, as training.own_loop numbers them).
    """
    if config is None:
        return own_model.unit_objective(module, list(module.spec.units)[layer - 1], unit)
    def objective(x: torch.Tensor) -> torch.Tensor:
        pre = _pre_upto(config, module, x, layer)
        return pre[:, unit].mean(dim=(-2, -1)) if pre.dim() == 4 else pre[:, unit]
    return objective


def _pre_upto(config: RunConfig, module: torch.nn.Module, x: torch.Tensor, layer: int) -> torch.Tensor:
    act = ACTIVATION_FNS[config.activation]
    if config.arch == "cnn":
        h = x.reshape(-1, 1, 28, 28)
        pre = module.conv1(h)
        return pre if layer == 1 else module.conv2(torch.nn.functional.max_pool2d(act(pre), 2))
    h = x
    for i in range(1, layer + 1):
        pre = getattr(module, f"fc{i}")(h)
        h = act(pre)
    return pre


def one_image(config: RunConfig | None, module: torch.nn.Module, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Each hidden layer's activations (conv: spatial max per channel) and the class outputs for one image."""
    if config is None:
        return own_model.one_image(module, tuple(module.spec.units)[:-1], x)
    act = ACTIVATION_FNS[config.activation]
    with torch.no_grad():
        pres, logits = hidden_pre(config, module, torch.as_tensor(np.asarray(x, np.float32).reshape(1, 784)))
        acts = [act(p).amax(dim=(-2, -1)) if p.dim() == 4 else act(p) for p in pres]
        probs = output_probs(logits, config.loss)
    return [a[0].numpy() for a in acts], probs[0].numpy()
