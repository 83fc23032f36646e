"""Client-level differential privacy for federated LoRA (DEeR, ALGORITHMS.md 6.3).

* :func:`clip_update`: scale a site's update so that its Frobenius norm, over all the
  tensors it sends in one message together, is at most C [I: one joint norm, as in
  DP-FedAvg; the bound is on what leaves the site, whatever the number of layers].
* :func:`regulated_noise`: DEeR's noise regulator. One Gaussian N (d0 x d1) of std
  sigma C / sqrt(K) per layer, mapped into the factor being trained through the
  pseudo-inverse of the other one: noise_A = B^+ N, noise_B = N A^+, so that
  B noise_A = P_B N and noise_B A = N P_A (orthogonal projections: the noise that reaches
  the weights does not grow with the factors). B^+ = (B^T B)^-1 B^T when B has full column
  rank; ``torch.linalg.pinv`` [I] also covers a rank-deficient factor (B = 0 gives no
  noise, and B noise_A = P_B N still holds). Computed in float64.
* :func:`noise_multiplier` / :func:`spent_epsilon`: sigma for a target (epsilon, delta)
  and the epsilon a sigma spends, both with Opacus' RDP accountant (imported only here).
"""

from __future__ import annotations

import math

import torch

ArrayDict = dict[str, torch.Tensor]


def update_norm(update: ArrayDict) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in update.values()))


def clip_update(update: ArrayDict, bound: float) -> ArrayDict:
    """``update`` scaled by min(1, bound / ||update||_F) (the joint norm of all tensors)."""
    norm = update_norm(update)
    if norm <= bound:
        return dict(update)
    factor = bound / norm
    return {name: t * factor for name, t in update.items()}


def regulated_noise(peer: torch.Tensor, trained: str, noise: torch.Tensor) -> torch.Tensor:
    """DEeR's regulated noise for the factor ``trained`` ("lora_A" or "lora_B") given the
    fixed ``peer`` factor and the full-weight noise ``noise`` (d0 x d1)."""
    n, p = noise.double(), peer.double()
    if trained == "lora_A":  # peer is B (d0 x r): noise_A = B^+ N, r x d1
        return torch.linalg.pinv(p) @ n
    if trained == "lora_B":  # peer is A (r x d1): noise_B = N A^+, d0 x r
        return n @ torch.linalg.pinv(p)
    raise ValueError(f"trained must be 'lora_A' or 'lora_B', got {trained!r}")


def _alphas() -> list[float]:
    """Opacus' RDP orders, extended towards 1 and upwards: with DEeR's large delta (1/K)
    and few releases the optimal order can lie below Opacus' smallest (1.1)."""
    from opacus.accountants import RDPAccountant

    return [1.01, 1.02, 1.05] + list(RDPAccountant.DEFAULT_ALPHAS) + [128, 256, 512]


def noise_multiplier(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """sigma such that ``steps`` Gaussian releases at ``sample_rate`` spend at most
    (epsilon, delta) under the RDP accountant (Opacus' ``get_noise_multiplier``)."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(
            target_epsilon=epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant="rdp",
            alphas=_alphas(),
        )
    )


def spent_epsilon(sigma: float, delta: float, sample_rate: float, steps: int) -> float:
    """The epsilon that ``steps`` releases with noise multiplier ``sigma`` spend (RDP)."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(sigma, sample_rate, steps)]
    return float(accountant.get_epsilon(delta=delta, alphas=_alphas()))
