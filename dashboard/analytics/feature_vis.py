"""What a unit wants: the 28×28 input that maximises it, by activation maximisation (no Dash, no store).

As in Olah et al. 2017 ("Feature Visualization", Distill): gradient ascent on the input from a few
random starts, with the usual regularisers so that the result is an image and not adversarial noise:
- L2: a penalty on the ink, so only pixels that raise the unit are drawn (MNIST's empty paper is 0);
- jitter: the image is shifted by up to JITTER_PX pixels at random before every step, so the unit must
  like it at several positions;
- blur: every BLUR_EVERY steps the image is smoothed by a Gaussian (σ = BLUR_SIGMA px).
Pixels stay in [0, 1], the range the network saw.  The best of the starts is kept.  Deterministic:
the starts and jitter come from a seeded generator.  Each step moves every start by LR along its own
gradient normalised to unit RMS, so the step size does not depend on the unit's scale.

Runs on one thread: these are tiny tensors, and on a busy 2-core machine a second torch thread only
waits for a core (measured: 10-20x slower with two).
"""
import contextlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

STARTS, STEPS, LR = 4, 160, 0.03
L2 = 0.01  # per pixel²: a pixel is drawn only if it raises the objective by more than 0.02 per unit of ink
JITTER_PX, BLUR_EVERY, BLUR_SIGMA = 2, 4, 0.5
SEED = 0
HOW = (f"Activation maximisation (Olah et al. 2017): gradient ascent on the input from {STARTS} random starts, "
       f"{STEPS} normalised gradient steps of {LR}, L2 penalty {L2} on the ink, jitter up to {JITTER_PX} px, "
       f"Gaussian blur "
       f"σ {BLUR_SIGMA} px every {BLUR_EVERY} steps, pixels kept in [0, 1]; the best start is shown.")


@dataclass(frozen=True)
class Visualisation:
    image: np.ndarray  # (28, 28) float32 in [0, 1]
    objective: float  # the unit's objective on it (no jitter)
    objectives: np.ndarray  # (STARTS,) the objective each start reached


def _blur_kernel(sigma: float) -> torch.Tensor:
    r = torch.arange(-1, 2, dtype=torch.float32)
    g = torch.exp(-r ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).reshape(1, 1, 3, 3)


@contextlib.contextmanager
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def maximise(objective: Callable[[torch.Tensor], torch.Tensor], starts: int = STARTS, steps: int = STEPS,
             seed: int = SEED) -> Visualisation:
    """Maximise `objective` ((B, 784) images in [0, 1] -> (B,) values, differentiable) over the input."""
    with _one_thread():
        x = _ascend(objective, starts, steps, torch.Generator().manual_seed(seed))
        with torch.no_grad():
            values = objective(x.reshape(starts, 784)).numpy().astype(np.float64)
    best = int(np.argmax(values))
    return Visualisation(image=x[best, 0].numpy().astype(np.float32), objective=float(values[best]),
                         objectives=values)


def _ascend(objective, starts: int, steps: int, gen: torch.Generator) -> torch.Tensor:
    x = 0.1 + 0.2 * torch.rand(starts, 1, 28, 28, generator=gen)
    kernel = _blur_kernel(BLUR_SIGMA)
    for step in range(steps):
        dx, dy = (int(v) for v in torch.randint(-JITTER_PX, JITTER_PX + 1, (2,), generator=gen))
        x.requires_grad_()
        shifted = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        gain = objective(shifted.reshape(starts, 784)).sum() - L2 * (x ** 2).sum()
        (grad,) = torch.autograd.grad(gain, x)
        with torch.no_grad():
            rms = grad.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-12)
            x = x.detach() + LR * grad / rms
            if (step + 1) % BLUR_EVERY == 0:
                x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel)
            x = x.clamp(0.0, 1.0)
    return x
