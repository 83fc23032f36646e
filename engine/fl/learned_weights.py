"""Aggregation weights alpha = gamma(beta) of Auto-FedAvg (Xia et al. 2021, section 3.3).

beta has shape (K,) for network-wise weights or (K, P) for layer-wise weights (one
simplex per layer p, over the K sites = axis 0).

- softmax (Eq. 4): alpha_k = exp(beta_k) / sum_i exp(beta_i). Deterministic.
- Dirichlet (Eq. 5-6): while learning beta, alpha ~ Dir(beta) drawn with the implicit
  reparameterisation gradient (``torch.distributions.Dirichlet.rsample``, Figurnov et al.
  2018); for the aggregation itself the mode

      alpha_k = (beta_k - 1) / (sum_i beta_i - K).

  The paper does not say what happens when some beta_k <= 1 (Eq. 6 then gives negative
  weights). Following ALGORITHMS.md 1.2 [I] we clamp: c_k = max(beta_k - 1, 0) and
  alpha = c / sum(c); when every beta_k < 1, or sum(c) = 0 (e.g. beta = (1, 1, 1), where
  ``Dirichlet.mode`` returns NaN), we fall back to the mean beta / sum(beta).
  Self-check (paper Fig. 3c): beta = (18.3, 5.3, 6.9) -> alpha = (0.629, 0.156, 0.215).
"""

from __future__ import annotations

import torch
from torch.distributions import Dirichlet

DIRICHLET = "dirichlet"
SOFTMAX = "softmax"
WEIGHT_KINDS = (DIRICHLET, SOFTMAX)


def dirichlet_mode(beta: torch.Tensor) -> torch.Tensor:
    """Safe mode of Dir(beta) along axis 0 (see the module docstring)."""
    beta = beta.to(torch.float64)
    excess = (beta - 1.0).clamp_min(0.0)
    total = excess.sum(dim=0, keepdim=True)
    mean = beta / beta.sum(dim=0, keepdim=True)
    degenerate = (total <= 0) | (beta < 1.0).all(dim=0, keepdim=True)
    mode = excess / torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(degenerate, mean, mode)


def aggregation_weights(beta: torch.Tensor, kind: str) -> torch.Tensor:
    """The alpha used to aggregate: Dirichlet mode or softmax, along the site axis 0."""
    if kind == DIRICHLET:
        return dirichlet_mode(beta)
    if kind == SOFTMAX:
        return torch.softmax(beta.to(torch.float64), dim=0)
    raise ValueError(f"unknown weight kind {kind!r}; expected one of {WEIGHT_KINDS}")


def training_weights(beta: torch.Tensor, kind: str) -> torch.Tensor:
    """The differentiable alpha used while learning beta: an ``rsample`` of Dir(beta)
    (one independent Dirichlet per layer for a (K, P) beta) or the softmax."""
    if kind == SOFTMAX:
        return torch.softmax(beta, dim=0)
    if kind == DIRICHLET:
        # Dirichlet's event dimension is the last one: put the sites there.
        return Dirichlet(concentration=beta.transpose(0, -1)).rsample().transpose(0, -1)
    raise ValueError(f"unknown weight kind {kind!r}; expected one of {WEIGHT_KINDS}")


def extra_communication_ratio(num_sites: int, t0: int) -> float:
    """Auto-FedAvg's extra model transfers over FedAvg: K(K-1) every t0 rounds against
    2K per round = (K - 1) / (2 t0) (paper section 3.4; 0.1 for K = 3, t0 = 10)."""
    return (num_sites - 1) / (2.0 * t0)
