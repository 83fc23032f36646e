"""FedAvg (McMahan et al. 2017) and FedAvg-even: fixed aggregation weights.

w^t = sum_k alpha_k w_k^t with alpha_k = n_k / n (FedAvg) or 1 / K (FedAvg-even),
ALGORITHMS.md section 0. Weights are renormalised over the sites that replied.
"""

from __future__ import annotations

from engine.fl.base import Strategy
from engine.fl.protocol import Reply
from engine.fl.registry import register


@register
class FedAvg(Strategy):
    name = "fedavg"
    summary = "FedAvg: average local models weighted by training cases n_k/n"


@register
class FedAvgEven(FedAvg):
    name = "fedavg-even"
    summary = "FedAvg-even: average local models with equal weights 1/K"

    def aggregation_weights(self, replies: dict[int, Reply]) -> dict[int, float]:
        return {k: 1.0 for k in replies}
