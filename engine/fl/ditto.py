"""Ditto (Li, Hu, Beirami, Smith; ICML 2021; ALGORITHMS.md section 9).

Besides the global model, trained and aggregated exactly as in FedAvg, each site k keeps
a personal model v_k that minimises

    F_k(v) + (lambda / 2) * ||v - w^t||^2

against the global model w^t it received this round. A site's round, in FL-MedSegBench's
order: (1) E local steps on v_k with the proximal term to w^t and v_k's own optimiser
(Adam, ``lr_per``, ``weight_decay_per``); (2) E steps on its copy of w^t without it, as
FedAvg does; (3) upload that copy. v_k never leaves the site; validation and test use it.

Choices [I]:

- v_k starts as the first received global model (the common initial model);
- E is ``train.local_steps`` for both models, and v_k draws its own patches (its own
  random stream, phase 2 of the site's generator), like the benchmark's second pass over
  the loader;
- v_k's Adam is fresh every round, as the global copy's is (rounds are the unit of
  resumption; ``engine.training.trainer``), with the run's ``train.betas``;
- lambda = 0 trains v_k without a proximal term (local training on the side);
- the proximal term runs over trainable parameters only (``fedprox.proximal_term``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import ConfigError
from engine.fl.fedavg import FedAvg
from engine.fl.fedprox import proximal_term
from engine.fl.personal import PersonalisedSite
from engine.fl.protocol import ArrayDict, Message, Reply
from engine.fl.registry import register

KEPT = "personal"  # the site-store key of v_k
PERSONAL_PHASE = 2  # random-stream phase of v_k's patches (0: local training, 1: Auto-FedAvg's beta steps)


@dataclass(frozen=True)
class DittoParams:
    """FL-MedSegBench's values (ALGORITHMS.md 9 and 13.3)."""

    lam: float = 0.001  # lambda, the benchmark's ``mu``
    lr_per: float = 1e-4
    weight_decay_per: float = 5e-4

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise ConfigError(f"strategy.params.lam: must be >= 0, got {self.lam}")
        if self.lr_per <= 0:
            raise ConfigError(f"strategy.params.lr_per: must be > 0, got {self.lr_per}")
        if self.weight_decay_per < 0:
            raise ConfigError(f"strategy.params.weight_decay_per: must be >= 0, got {self.weight_decay_per}")


class DittoSite(PersonalisedSite):
    """Trains v_k, then the global copy; uploads the global copy only."""

    def personal_weights(self, shared: ArrayDict, upto: int) -> ArrayDict:
        own = self.kept(KEPT, upto)
        return shared if own is None else own

    def on_train(self, message: Message) -> Reply:
        personal_loss = self.train_personal(message)
        reply = super().on_train(message)  # the global copy: FedAvg's local training
        reply.metrics["personal_train_loss"] = personal_loss
        return reply

    def train_personal(self, message: Message) -> float:
        """E steps of v_k with (lambda / 2)||v - w^t||^2; saves v_k; returns the mean loss."""
        rt, rnd, p = self.runtime, message.round, self.params
        shared = message.arrays["global"]
        rt.set_weights(self.personal_weights(shared, rnd - 1))
        reference = {k: v.detach().clone() for k, v in shared.items()}
        extra = None if p.lam == 0 else (lambda network: proximal_term(network, reference, p.lam))
        optimizer = torch.optim.Adam(
            rt.network.parameters(), lr=p.lr_per, betas=rt.config.train.betas, weight_decay=p.weight_decay_per
        )
        stats = rt.train(rnd, extra_loss=extra, optimizer=optimizer, phase=PERSONAL_PHASE)
        rt.store.save(KEPT, rnd, rt.weights())
        return stats.mean_loss


@register
class Ditto(FedAvg):
    name = "ditto"
    summary = "Ditto: FedAvg plus a personal model per site, kept near the global one by (lambda/2)||v - w||^2"
    Params = DittoParams
    site_logic = DittoSite
    personalised = True
