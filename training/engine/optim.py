"""SGD (with momentum) and Adam over stacked parameters, with one learning rate per model.

They follow torch.optim.SGD (dampening 0, no Nesterov) and torch.optim.Adam
(betas 0.9/0.999, eps 1e-8) update rules exactly; tests check that against torch.optim.
"""
import torch


def _per_model(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """(K,) values shaped to broadcast against a (K, ...) parameter."""
    return torch.tensor(values, dtype=like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


class StackedSGD:
    def __init__(self, params: list[torch.Tensor], lrs: list[float], momenta: list[float]):
        self.params = params
        self.lr = [_per_model(lrs, p) for p in params]
        self.use_momentum = any(m > 0 for m in momenta)
        self.momentum = [_per_model(momenta, p) for p in params]
        self.velocity = [torch.zeros_like(p) for p in params] if self.use_momentum else None

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        # One _foreach_ call per update for all parameters: at batch 10 each op's dispatch costs more than its math.
        if self.use_momentum:
            torch._foreach_mul_(self.velocity, self.momentum)
            torch._foreach_add_(self.velocity, grads)
            grads = self.velocity
        torch._foreach_addcmul_(self.params, self.lr, grads, value=-1.0)

    def disable(self, k: int) -> None:
        """Stop updating model k (it diverged); the others carry on untouched."""
        for lr in self.lr:
            lr[k] = 0.0


class StackedAdam:
    def __init__(self, params: list[torch.Tensor], lrs: list[float], betas=(0.9, 0.999), eps=1e-8):
        self.params = params
        self.lr = [_per_model(lrs, p) for p in params]
        self.b1, self.b2, self.eps = betas[0], betas[1], eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        self.t += 1
        c1 = 1 - self.b1 ** self.t
        c2_sqrt = (1 - self.b2 ** self.t) ** 0.5
        for p, g, m, v, lr in zip(self.params, grads, self.m, self.v, self.lr):
            m.lerp_(g, 1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            denom = (v.sqrt() / c2_sqrt).add_(self.eps)
            p.addcdiv_(m * (lr / c1), denom, value=-1.0)

    def disable(self, k: int) -> None:
        for lr in self.lr:
            lr[k] = 0.0


def make_optimizer(name: str, params: list[torch.Tensor], lrs: list[float], momenta: list[float]):
    if name == "adam":
        return StackedAdam(params, lrs)
    return StackedSGD(params, lrs, momenta)
