"""A snapshot's hidden activations over a batch of images, with training's own forward pass (no store).

The same StackedNet the run trained with, loaded from one snapshot's weights, so the
pages show exactly what the network computed.  A conv channel's activation on an image
is the spatial max of its feature map.
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from training import contract as C
from training.config import RunConfig
from training.nets.architecture import layers_of
from training.nets.models import ACTIVATION_FNS, StackedNet

FORWARD_CHUNK = 2000  # images per forward pass: bounds memory for conv feature maps (2000 x 16 x 26 x 26)


@dataclass(frozen=True)
class Activations:
    """One hidden layer's per-unit activations over the test set, and what orders their ties."""
    acts: np.ndarray  # (N, units) float32; conv: the spatial max of each channel's feature map
    pre: np.ndarray | None  # (N, units) pre-activations for linear layers; None for conv


def _snapshot_params(config: RunConfig, snapshot: dict) -> dict[str, torch.Tensor]:
    params = {}
    for layer in layers_of(config):
        params[f"{layer.name}.weight"] = torch.from_numpy(np.asarray(snapshot[C.weight_key(layer.name)]))
        params[f"{layer.name}.bias"] = torch.from_numpy(np.asarray(snapshot[C.bias_key(layer.name)]))
    return params


def _first_conv(config: RunConfig, params: dict, x: torch.Tensor) -> Activations:
    act = ACTIVATION_FNS[config.activation]
    w, b = params["conv1.weight"], params["conv1.bias"]
    with torch.no_grad():
        acts = [act(F.conv2d(x[i:i + FORWARD_CHUNK].reshape(-1, 1, 28, 28), w, b)).amax(dim=(-2, -1))
                for i in range(0, len(x), FORWARD_CHUNK)]
    return Activations(torch.cat(acts).numpy(), None)


def compute_activations(config: RunConfig, snapshot: dict, x: torch.Tensor,
                        upto: int | None = None) -> list[Activations]:
    """Hidden layers 1..upto (default: all) for inputs x (N, 784), with training's own forward pass.

    A CNN's first layer alone is one convolution; its second costs five times more, so `upto=1`
    skips it.  MLP layers are cheap and always come together.
    """
    params = _snapshot_params(config, snapshot)
    if config.arch == "cnn" and upto == 1:
        return [_first_conv(config, params, x)]
    layers = layers_of(config)
    net = StackedNet(config, [params])
    chunks = []
    with torch.no_grad():
        for i in range(0, len(x), FORWARD_CHUNK):
            xb = x[i:i + FORWARD_CHUNK]
            _, hidden = net.forward(xb.unsqueeze(0), keep_hidden=True)
            parts, prev = [], xb
            for layer, h in zip(layers, hidden):
                h = h[0]
                if h.dim() == 4:
                    parts.append((h.amax(dim=(-2, -1)), None))
                else:
                    pre = torch.addmm(params[f"{layer.name}.bias"], prev, params[f"{layer.name}.weight"].t())
                    parts.append((h, pre))
                    prev = h
            chunks.append(parts)
    out = []
    for layer_parts in zip(*chunks):
        acts = torch.cat([a for a, _ in layer_parts]).numpy()
        pre = None if layer_parts[0][1] is None else torch.cat([p for _, p in layer_parts]).numpy()
        out.append(Activations(acts, pre))
    return out[:upto]
