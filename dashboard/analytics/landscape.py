"""The loss landscape on the plane of a run's weight trajectory (Li et al. 2018, "Visualizing the Loss
Landscape of Neural Nets", section 7).

Take the weight snapshots theta_0..theta_n of one run, flatten each to a vector, and run PCA on the
differences theta_i - theta_n.  The first two principal components d1, d2 span the plane in which
the trajectory moved most.  The loss is evaluated at theta_n + a*d1 + b*d2 on a grid of (a, b), on a
fixed subset of the training data, and each snapshot is projected to its (a, b) coordinates.

Grid points are evaluated many at a time as the K models of one `training.nets.models.StackedNet`, so the
forward pass is the training code's own.  Nothing here knows about MLflow or Dash.
"""
import math
from dataclasses import dataclass

import numpy as np
import torch

from training import contract as C
from training.config import RunConfig
from training.nets.architecture import CNN_CHANNELS, layers_of
from training.nets.models import StackedNet, per_model_loss

CNN_FIRST_MAP = (CNN_CHANNELS[0], 26, 26)  # the CNN's largest activation per image: conv1's output

DEFAULT_RESOLUTION = 21  # grid points per axis
DEFAULT_MARGIN = 0.3  # the grid extends 30 % beyond the trajectory on each side
MAX_STACK_PARAMS = 4_000_000  # parameters of all K models in one stacked forward pass (16 MB)
MAX_STACK_ACTIVATIONS = 40_000_000  # K * images * activations per image in one pass (160 MB)


@dataclass
class Landscape:
    alphas: np.ndarray  # (R,) coordinates along d1
    betas: np.ndarray  # (R,) coordinates along d2
    loss: np.ndarray  # (R, R) loss[j, i] at (alphas[i], betas[j]): rows are betas, as Plotly's contour wants
    path: np.ndarray  # (n, 2) each snapshot's (alpha, beta)
    path_loss: np.ndarray  # (n,) the loss at each projected snapshot (on the plane, so it lies on the surface)
    epochs: list[int]
    explained: np.ndarray  # (2,) fraction of the trajectory's variance along d1 and d2
    n_images: int
    loss_name: str


def flatten(snapshot: dict[str, np.ndarray], config: RunConfig) -> np.ndarray:
    """One snapshot's weights and biases as a single float64 vector, layer by layer, input to output."""
    parts = []
    for layer in layers_of(config):
        parts.append(np.asarray(snapshot[C.weight_key(layer.name)], dtype=np.float64).ravel())
        parts.append(np.asarray(snapshot[C.bias_key(layer.name)], dtype=np.float64).ravel())
    return np.concatenate(parts)


def unflatten(vectors: torch.Tensor, config: RunConfig) -> list[dict[str, torch.Tensor]]:
    """(K, P) vectors -> K parameter dicts in PyTorch layout, as StackedNet takes them."""
    out = [{} for _ in range(len(vectors))]
    i = 0
    for layer in layers_of(config):
        n_w = int(np.prod(layer.weight_shape))
        w = vectors[:, i:i + n_w].reshape(len(vectors), *layer.weight_shape)
        i += n_w
        b = vectors[:, i:i + layer.units]
        i += layer.units
        for k in range(len(vectors)):
            out[k][f"{layer.name}.weight"] = w[k]
            out[k][f"{layer.name}.bias"] = b[k]
    return out


def pca_directions(thetas: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two orthonormal directions for the trajectory `thetas` (n, P), the path's coordinates, and explained variance.

    As Li et al.: PCA (centred) of the matrix of theta_i - theta_n for i < n; the path coordinates are
    the projections of theta_i - theta_n, so the final snapshot sits at (0, 0).  With too few snapshots
    for two components, the missing directions come from the displacements themselves (Gram-Schmidt),
    then from a seeded random direction; their explained variance is reported as NaN.
    Returns directions (2, P), path (n, 2), explained (2,).
    """
    thetas = np.asarray(thetas, dtype=np.float64)
    final = thetas[-1]
    diffs = thetas[:-1] - final
    dirs, explained = [], [np.nan, np.nan]
    if len(diffs) >= 2:
        centred = diffs - diffs.mean(0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        var = s ** 2
        total = var.sum()
        for i in range(min(2, len(s))):
            if s[i] > 1e-12 * max(s[0], 1e-300):
                dirs.append(vt[i])
                explained[i] = var[i] / total if total > 0 else np.nan
    for d in diffs:  # too few snapshots for two components: take the displacements themselves
        if len(dirs) == 2:
            break
        r = d - sum((d @ u) * u for u in dirs) if dirs else d.copy()
        if np.linalg.norm(r) > 1e-9 * max(np.linalg.norm(d), 1e-300):
            dirs.append(r / np.linalg.norm(r))
    rng = np.random.default_rng(seed)
    while len(dirs) < 2:
        r = rng.standard_normal(thetas.shape[1])
        for d in dirs:
            r -= (r @ d) * d
        dirs.append(r / np.linalg.norm(r))
    directions = np.stack(dirs)
    path = (thetas - final) @ directions.T
    return directions, path, np.asarray(explained)


def grid_axes(path: np.ndarray, resolution: int = DEFAULT_RESOLUTION,
              margin: float = DEFAULT_MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """Grid coordinates covering the path plus `margin` of its extent on each side (a square grid if it is flat)."""
    lo, hi = path.min(0), path.max(0)
    span = hi - lo
    scale = max(span.max(), 1e-3)
    span = np.where(span < 1e-3 * scale, scale * 0.5, span)  # a flat axis gets half the other's extent
    centre = (lo + hi) / 2
    lo, hi = centre - span * (0.5 + margin), centre + span * (0.5 + margin)
    return np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution)


@torch.no_grad()
def losses_at(config: RunConfig, points: np.ndarray, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Mean loss on (x, y) of each parameter vector in `points` (K, P), evaluated as stacked models."""
    points = torch.as_tensor(points, dtype=torch.float32)
    per_image = x.shape[1] + (math.prod(CNN_FIRST_MAP) if config.arch == "cnn" else sum(config.sizes[1:]))
    chunk = max(1, min(MAX_STACK_PARAMS // points.shape[1], MAX_STACK_ACTIVATIONS // (len(x) * per_image)))
    out = []
    for i in range(0, len(points), chunk):
        part = points[i:i + chunk]
        net = StackedNet(config, unflatten(part, config))
        k = len(part)
        logits, _ = net.forward(x.unsqueeze(0).expand(k, *x.shape))
        out.append(per_model_loss(logits, y.unsqueeze(0).expand(k, *y.shape), config.loss).double())
    return torch.cat(out).numpy()


def loss_landscape(config: RunConfig, snapshots: list[dict[str, np.ndarray]], epochs: list[int],
                   x: torch.Tensor, y: torch.Tensor, resolution: int = DEFAULT_RESOLUTION,
                   margin: float = DEFAULT_MARGIN, progress=None) -> Landscape:
    """The loss surface on the trajectory's PCA plane.  `snapshots` in epoch order; x (N, 784), y (N,).

    `progress(done, total)` is called after each row of the grid, for a progress bar.
    """
    if len(snapshots) < 2:
        raise ValueError("the loss landscape needs at least two weight snapshots")
    thetas = np.stack([flatten(s, config) for s in snapshots])
    return plane_landscape(thetas, lambda points: losses_at(config, points, x, y), epochs, len(x), config.loss,
                           resolution, margin, progress)


def plane_landscape(thetas: np.ndarray, losses, epochs: list[int], n_images: int, loss_name: str,
                    resolution: int = DEFAULT_RESOLUTION, margin: float = DEFAULT_MARGIN, progress=None) -> Landscape:
    """The surface for a trajectory `thetas` (n, P), with `losses(points (K, P)) -> (K,)` evaluating the network."""
    directions, path, explained = pca_directions(thetas)
    alphas, betas = grid_axes(path, resolution, margin)
    final = thetas[-1]
    loss = np.empty((len(betas), len(alphas)))
    for j, b in enumerate(betas):
        row = final + alphas[:, None] * directions[0] + b * directions[1]
        loss[j] = losses(row)
        if progress is not None:
            progress(j + 1, len(betas))
    path_points = final + path @ directions
    path_loss = losses(path_points)
    return Landscape(alphas, betas, loss, path, path_loss, list(epochs), explained, n_images, loss_name)


def flatten_layers(snapshot: dict[str, np.ndarray], names) -> np.ndarray:
    """As flatten, for any weight layers by name (a run from its own loop)."""
    return np.concatenate([np.asarray(snapshot[k(n)], dtype=np.float64).ravel()
                           for n in names for k in (C.weight_key, C.bias_key)])


@torch.no_grad()
def module_losses(module: torch.nn.Module, shapes: dict[str, tuple[int, ...]], points: np.ndarray,
                  x: torch.Tensor, y: torch.Tensor, activations_per_image: int) -> np.ndarray:
    """Mean cross-entropy on (x, y) of `module` with its weight layers' parameters set to each of `points` (K, P),
    cut into `shapes` (parameter name -> shape, flatten_layers' order; a name the module lacks, such as the
    bias of a layer without one, is skipped).  Many points per pass (torch.func.vmap over functional_call),
    as many as MAX_STACK_ACTIVATIONS allows.  Cross-entropy reads the outputs as logits, as the run's own test
    loss does (log-probabilities give the same value: log_softmax is idempotent)."""
    own = dict(module.named_parameters())

    def loss(point: torch.Tensor) -> torch.Tensor:
        params, i = {}, 0
        for name, shape in shapes.items():
            n = math.prod(shape)
            if name in own:
                params[name] = point[i:i + n].reshape(shape)
            i += n
        return torch.nn.functional.cross_entropy(torch.func.functional_call(module, params, (x,)), y)

    points = torch.as_tensor(points, dtype=torch.float32)
    # The layers' outputs, times 3 for what lies between them (activations, pooling, sums).
    chunk = max(1, MAX_STACK_ACTIVATIONS // (len(x) * max(activations_per_image, 1) * 3))
    try:
        parts = [torch.func.vmap(loss)(points[i:i + chunk]) for i in range(0, len(points), chunk)]
    except RuntimeError:  # an op vmap has no batching rule for: one point at a time, the same values
        parts = [torch.stack([loss(p) for p in points])]
    return torch.cat(parts).double().numpy()
