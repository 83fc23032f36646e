"""A sharpness-aware gradient (HarmoFL's weight perturbation, ALGORITHMS.md 3.2; SAM).

For a step at weights w: the gradient g = grad L(w); a perturbation
delta = alpha g / (||g||_2 + 1e-12) with the global L2 norm over all parameters; the
gradient g~ = grad L(w + delta); w restored; the base optimiser then steps at w with g~.
Two forward/backward passes per step, no extra communication.

It plugs into :class:`engine.training.trainer.LocalTrainer` as its ``gradient`` function.
The weights are restored from a copy, not by subtracting delta, so they come back
bitwise. Under AMP the first gradient carries the loss scale, which the normalisation
divides out; if it overflowed, the step is not perturbed (the GradScaler then skips it).
"""

from __future__ import annotations

import torch
from torch import nn

from engine.training.trainer import Closure, GradientFn

NORM_EPS = 1e-12


@torch.no_grad()
def perturb(network: nn.Module, alpha: float) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Move every parameter that has a gradient by alpha g / ||g||; return (parameter,
    its weights before the move) to restore, or [] when the norm is not finite."""
    params = [p for p in network.parameters() if p.grad is not None]
    if not params:
        return []
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.float()) for p in params]))
    if not bool(torch.isfinite(norm)):
        return []
    scale = alpha / (norm + NORM_EPS)
    saved = []
    for p in params:
        saved.append((p, p.detach().clone()))
        p.add_(p.grad * scale.to(p.dtype))
    return saved


def sharpness_aware(alpha: float) -> GradientFn:
    """The ``gradient`` function of a perturbed step with radius ``alpha``."""

    def gradient(network: nn.Module, closure: Closure) -> float:
        loss = closure()  # g at w: the loss reported is the one at the unperturbed weights
        saved = perturb(network, alpha)
        if saved:
            closure()  # g~ at w + delta
            with torch.no_grad():
                for p, before in saved:
                    p.copy_(before)
        return loss

    return gradient
