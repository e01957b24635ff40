"""Why an image got its label: integrated gradients (Sundararajan et al. 2017) with Captum.

The attribution of pixel i is (x_i − x'_i) ∫₀¹ ∂f(x' + α(x − x'))/∂x_i dα, with the black image as
the baseline x' (no ink).  The attributions sum to f(x) − f(x') (completeness), which Captum
reports as the convergence delta; f is the class's logit (the network's output before softmax or
sigmoid), so the sum is in logit units.
"""
import numpy as np
import torch

# Gauss-Legendre points, more until the completeness gap is within GAP.  A sigmoid MLP is smooth along the
# path and meets it at 64; a ReLU CNN with max pooling is piecewise linear, converges slowly and may end a few
# per cent off at 256 (1024 would cost seconds a class on 2 cores), so the page prints the gap beside the map.
STEPS = (64, 256)
GAP = 0.005  # |sum of attributions − logit change| as a share of |logit change|


def integrated_gradients(model: torch.nn.Module, x: np.ndarray, target: int,
                         steps: tuple = STEPS) -> tuple[np.ndarray, float, float]:
    """(28, 28) attributions of `model`'s logit for `target` on one image x (784 floats in [0, 1]),
    the logit difference f(x) − f(black) and Captum's convergence delta (sum − difference).

    Tries each number of steps in turn and stops at the first whose gap is within GAP.
    """
    inp = torch.as_tensor(np.asarray(x, dtype=np.float32).reshape(1, 784))
    base = torch.zeros_like(inp)
    from captum.attr import IntegratedGradients  # here: a second of import every dashboard worker would pay
    ig = IntegratedGradients(model)
    with torch.no_grad():
        diff = float(model(inp)[0, target] - model(base)[0, target])
    for n in steps:
        attr, delta = ig.attribute(inp, baselines=base, target=int(target), n_steps=n,
                                   return_convergence_delta=True, internal_batch_size=256)
        if abs(float(delta[0])) <= GAP * abs(diff):
            break
    return attr.detach().numpy().reshape(28, 28), diff, float(delta[0])
