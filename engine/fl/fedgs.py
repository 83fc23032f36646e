"""FedGS: federated gradient scaling for small lesions (Schutte et al., MICCAI 2024 workshops;
ALGORITHMS.md 2).

Local training is FedAvg's; alongside it each site k accumulates a *scaled* copy of its
updates, G_k = sum_t eta_t (w_{t-1} - w_t) over its tau_k local steps, where a step on a
batch holding small lesions counts more:

    a^-1  = voxels of the patch / lesion voxels of the patch   (3D adaptation, 2.6)
    small = the patch holds lesion and a^-1 >= tau
    delta = tanh((log_l a^-1)^2) for a small patch, else 0
    eta_t = 1 + (2 / B) * sum of delta over the B patches of the batch   (1 <= eta < 3)

The server applies w <- w - sum_k s_k G_k with s_k = tau_k / sum_j tau_j, and averages
the norm-layer buffers with the same s_k (2.4).

How it is sent [I]: a site answers w - G_k, its *scaled local model*, in place of its
local model (the same bytes as G_k). Since sum_k s_k = 1, the server's update is then
exactly FedAvg's weighted average of those models with weights s_k, so the server is
FedAvg with step-count weights and every reply check of a local model applies. The site
computes w - G_k as w_k + sum_t (eta_t - 1)(w_t - w_{t-1}) (the same thing, as the plain
updates sum to w_k - w): with eta = 1 at every step the reply is bitwise the local model
and FedGS is FedAvg with step weights (ALGORITHMS.md 14). The site still validates and
keeps its real local model for local avg / local gen.

Other choices [I]:

- *Optimiser*: the engine's Adam (``train.*``). G_k scales the parameter change of each
  step, i.e. exactly the step the optimiser applied (Adam's bias-corrected step; with SGD
  it is eta_t lr g_t). The reference's AdamW keeps its decoupled weight decay out of G_k;
  the engine's Adam has no decoupled decay (``train.weight_decay`` is a coupled L2 term,
  0 by default), so nothing is left out.
- *tau per patch*: a^-1 is measured on the training patch the network sees (the issue's
  3D definition). ``tau = 0`` (default) takes ``eval.small_lesion_ratio``, the threshold
  by which results.json splits test cases into DiceS / DiceL, so one number says what a
  small lesion is. It is measured on a patch in training and on the whole case in
  testing: a whole lesion of L voxels that is small in a P-voxel patch (L <= P / tau) is
  also small in its V-voxel case (V >= P); the part of a large lesion that a patch cuts
  off can count as small, as a slice through a tumour's edge does in the reference's 2D
  LiTS. ``log_base = 0`` (default) takes l = tau, as LiTS's
  tau = l = 1000: delta(tau) = tanh(1) = 0.76, inside 2.6's 0.75-0.85 rule.
- *Weights*: ``weighting = "steps"`` is the reference's tau_k / sum tau_j. Every site runs
  ``train.local_steps`` steps here, so that is 1/K; ``"cases"`` uses n_k / n like the
  engine's FedAvg.
- Sites keep no state between rounds (G_k and tau_k start at 0 every round, as in the
  reference, which rebuilds its clients and optimisers every round).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.errors import ConfigError
from engine.fl.base import SiteLogic
from engine.fl.fedavg import FedAvg
from engine.fl.protocol import TRAIN, ArrayDict, Message, Reply
from engine.fl.registry import register
from engine.registry import check_choice

STEPS, CASES = "steps", "cases"


@dataclass(frozen=True)
class FedGSParams:
    tau: float = 0.0  # 0: eval.small_lesion_ratio (the DiceS threshold); LiTS 1000, PolypGen 150
    log_base: float = 0.0  # 0: l = tau (LiTS: 1000); PolypGen 100
    weighting: str = STEPS  # the reference's tau_k / sum tau_j; "cases": n_k / n

    def __post_init__(self) -> None:
        if self.tau != 0 and self.tau <= 1:
            raise ConfigError(
                f"strategy.params.tau: must be > 1 (a^-1 >= 1 always) or 0 (eval.small_lesion_ratio); got {self.tau}"
            )
        if self.log_base != 0 and self.log_base <= 1:
            raise ConfigError(f"strategy.params.log_base: must be > 1, or 0 for log base = tau; got {self.log_base}")
        check_choice("strategy.params.weighting", self.weighting, (STEPS, CASES))


def difficulty(inverse_fraction: torch.Tensor | float, log_base: float) -> torch.Tensor:
    """delta = tanh((log_l a^-1)^2) (FedGS's difficulty of a small image)."""
    a = torch.as_tensor(inverse_fraction, dtype=torch.float64)
    return torch.tanh((torch.log(a) / math.log(log_base)) ** 2)


def batch_scale(label: torch.Tensor, tau: float, log_base: float) -> float:
    """eta = 1 + (2 / B) sum_small delta of a (B, 1, X, Y, Z) batch of patch labels."""
    b = label.shape[0]
    lesion = label.reshape(b, -1).double().sum(dim=1)
    inverse = label[0].numel() / lesion.clamp(min=1.0)
    small = (lesion > 0) & (inverse >= tau)
    delta = torch.where(small, difficulty(inverse, log_base), torch.zeros_like(inverse))
    return 1.0 + 2.0 / b * float(delta.sum())


class ScaledUpdates:
    """An ``on_update`` hook: accumulates sum_t (eta_t - 1) (w_t - w_{t-1}) per parameter."""

    def __init__(self, tau: float, log_base: float) -> None:
        self.tau, self.log_base = tau, log_base
        self.extra: ArrayDict = {}
        self.etas: list[float] = []

    def __call__(self, image: torch.Tensor, label: torch.Tensor, delta: dict[str, torch.Tensor]) -> None:
        eta = batch_scale(label, self.tau, self.log_base)
        self.etas.append(eta)
        if eta == 1.0:
            return  # nothing beyond the plain update: no work, and eta = 1 stays exact
        for name, change in delta.items():
            scaled = (eta - 1.0) * change
            self.extra[name] = self.extra[name] + scaled if name in self.extra else scaled

    def scaled_model(self, local: ArrayDict) -> ArrayDict:
        """w - G_k = w_k + sum_t (eta_t - 1) Delta_t for parameters; buffers as trained."""
        extra = self.extra
        return {name: t + extra[name].to(t.device, t.dtype) if name in extra else t for name, t in local.items()}


class FedGSSite(SiteLogic):
    def thresholds(self) -> tuple[float, float]:
        """(tau, l) with the defaults resolved against the run's eval settings."""
        tau = self.params.tau or self.runtime.config.eval.small_lesion_ratio
        log_base = self.params.log_base or tau
        if log_base <= 1:
            raise ConfigError(f"strategy.params.log_base: defaults to tau = {tau}, which is not > 1; set log_base")
        return tau, log_base

    def on_train(self, message: Message) -> Reply:
        updates = ScaledUpdates(*self.thresholds())
        self.runtime.on_update = updates
        try:
            reply = super().on_train(message)  # validates and keeps the real local model
        finally:
            self.runtime.on_update = None
        reply.arrays["local"] = updates.scaled_model(reply.arrays["local"])
        etas = updates.etas
        reply.metrics.update(steps=len(etas), mean_eta=sum(etas) / len(etas), small_steps=sum(e > 1.0 for e in etas))
        return reply


@register
class FedGS(FedAvg):
    name = "fedgs"
    summary = "FedGS: the server applies the sites' updates scaled up on batches with small lesions"
    Params = FedGSParams
    site_logic = FedGSSite

    def aggregation_weights(self, replies: dict[int, Reply]) -> dict[int, float]:
        if self.params.weighting == CASES:
            return super().aggregation_weights(replies)
        return {k: float(r.metrics["steps"]) for k, r in replies.items()}

    def check_reply(self, message: Message, reply: Reply, model: ArrayDict) -> str | None:
        problem = super().check_reply(message, reply, model)
        if problem is not None or message.kind != TRAIN:
            return problem
        steps = reply.metrics.get("steps")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            return f"no local step count (metrics 'steps' = {steps!r})"
        return None
