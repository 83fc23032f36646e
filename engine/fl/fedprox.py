"""FedProx (Li et al., MLSys 2020; ALGORITHMS.md section 8).

Each site minimises F_k(w) + (mu / 2) * ||w - w^t||^2 where w^t is the global model it
received this round; the server is FedAvg. The term runs over trainable parameters only
(norm-layer buffers are excluded), as in the reference implementations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from engine.errors import ConfigError
from engine.fl.base import SiteLogic
from engine.fl.fedavg import FedAvg
from engine.fl.protocol import ArrayDict, Message
from engine.fl.registry import register
from engine.training.trainer import ExtraLoss


@dataclass(frozen=True)
class FedProxParams:
    mu: float = 0.001  # Auto-FedAvg's and FL-MedSegBench's value

    def __post_init__(self) -> None:
        if self.mu < 0:
            raise ConfigError(f"strategy.params.mu: must be >= 0, got {self.mu}")


def proximal_term(network: nn.Module, reference: ArrayDict, mu: float) -> torch.Tensor:
    """(mu / 2) * sum over parameters of ||w - w_ref||^2 (differentiable in w)."""
    total = None
    for name, param in network.named_parameters():
        ref = reference[name].to(param.device, param.dtype)
        term = (param - ref).pow(2).sum()
        total = term if total is None else total + term
    assert total is not None
    return 0.5 * mu * total


class FedProxSite(SiteLogic):
    def extra_loss(self, message: Message, start: ArrayDict) -> ExtraLoss | None:
        mu = self.params.mu
        if mu == 0:
            return None
        reference = {k: v.detach().clone() for k, v in start.items()}
        return lambda network: proximal_term(network, reference, mu)


@register
class FedProx(FedAvg):
    name = "fedprox"
    summary = "FedProx: FedAvg with a proximal term (mu/2)||w - w_global||^2 in local training"
    Params = FedProxParams
    site_logic = FedProxSite
