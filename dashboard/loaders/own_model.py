"""A run from the user's own loop as a network the views can rerun: its logged graph (training.nets.graph_model)
with one snapshot's weights.

Feature visualisation, integrated gradients, the image page and the loss landscape need the network
itself, not only its logged units.  A run from its own loop logs its model as data as it ends
(training.own_loop.model_graph); here the files are listed, their sizes checked against the format's
ceilings before they are fetched, and the graph rebuilt with nothing from them imported, evaluated or
unpickled.  A run without one (logged before the format existed, stopped before its end, or with a model
the format cannot describe, which the run's tag says and the resolved Target carries) raises StoreError with
that reason, in one line.
"""
import tempfile
from pathlib import Path

import numpy as np
import torch

from dashboard.loaders.neuron_target import Target, memoize_by
from dashboard.read import store
from dashboard.read.store import StoreError
from training import contract as C
from training.nets import graph_model as G
from training.own_loop.layer_capture import per_unit

FILES = (C.OWN_MODEL_GRAPH_FILE, C.MODEL_WEIGHTS_FILE)


def _fetch(t: Target, name: str, size: int | None, ceiling: int, tmp: str) -> Path:
    where = f"{C.own_model_path(name)} of run {t.run_id[:8]}"
    if size is not None and size > ceiling:
        raise StoreError(f"{where} is {size:,} bytes, more than it can hold ({ceiling:,}): refused before reading")
    try:
        return Path(store.client().download_artifacts(t.run_id, C.own_model_path(name), tmp))
    except Exception as e:  # noqa: BLE001 (listed but gone, or the server failed: one line)
        raise StoreError(f"{where} cannot be downloaded ({str(e).splitlines()[0][:120]})") from None


@memoize_by(16, lambda t: (t.run_id, t.epoch))
def module_at(t: Target) -> G.GraphNet:
    """The run's network at t's snapshot epoch, eval mode, parameters frozen; StoreError in one line if there is
    none or its files are not what the format allows."""
    try:
        listed = {Path(f.path).name: f.file_size for f in store.client().list_artifacts(t.run_id, C.OWN_MODEL_DIR)}
    except Exception:  # noqa: BLE001 (no folder, or a store that cannot list it: no model graph)
        listed = {}
    if not all(name in listed for name in FILES):
        raise StoreError(t.no_config)  # why, as the run's tag says, or that it logged no graph
    weights = store.complete_weights(t.run_id, t.epoch, t.names)
    with tempfile.TemporaryDirectory(prefix="own-model-") as tmp:
        try:
            spec = G.parse_graph(_fetch(t, C.OWN_MODEL_GRAPH_FILE, listed[C.OWN_MODEL_GRAPH_FILE],
                                        G.MAX_GRAPH_BYTES, tmp))
            path = _fetch(t, C.MODEL_WEIGHTS_FILE, listed[C.MODEL_WEIGHTS_FILE], G.state_budget(spec), tmp)
            net = G.build(spec, t.specs, weights, G.read_state(path, spec, t.epoch), t.epoch)
        except G.GraphModelError as e:
            raise StoreError(f"the model graph of run {t.run_id[:8]} is refused: {e}") from None
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def layer_node(net: G.GraphNet, layer_name: str) -> str:
    """The graph node whose output is the weight layer's own (its pre-activation)."""
    return next(n for n, op, target, _, _ in net.spec.nodes if op == "call_module" and target == layer_name)


def unit_objective(net: G.GraphNet, layer_name: str, unit: int):
    """(B, 784) -> (B,): a unit's pre-activation (a conv channel's: its feature map's mean), differentiable,
    as neuron_forward.unit_objective gives it for a built-in run."""
    node = layer_node(net, layer_name)

    def objective(x: torch.Tensor) -> torch.Tensor:
        pre = net.run(x, (node,))[1][node]
        return pre[:, unit].mean(dim=(-2, -1)) if pre.dim() == 4 else pre[:, unit]
    return objective


def output_probs(out: torch.Tensor) -> torch.Tensor:
    """Class probabilities from the model's outputs, read as training.own_loop.epoch reads them: logits and
    log-probabilities through softmax, probabilities as they are."""
    return out.softmax(-1) if (out.min() < 0 or (out.sum(-1) - 1).abs().max() > 1e-3) else out


def one_image(net: G.GraphNet, hidden: tuple[str, ...], x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Each hidden layer's units on one image, as the run logged them (after its activation; conv: spatial
    max per channel), and the class probabilities."""
    nodes = [net.spec.units[name] for name in hidden]
    with torch.no_grad():
        out, kept = net.run(torch.as_tensor(np.asarray(x, np.float32).reshape(1, -1)), nodes)
        probs = output_probs(out)
    return [per_unit(kept[n])[0].numpy() for n in nodes], probs[0].numpy()
