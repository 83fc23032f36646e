"""FedBN (Li, Jiang, Zhang, Kamp, Dou; ICLR 2021; ALGORITHMS.md section 7).

Normalisation layers stay at each site: after every aggregation site k replaces the
normalisation tensors of the received model w^t with its own, so its personal model is
(shared weights of w^t, its own norm parameters and statistics), and that is the model it
trains from, validates and tests. Everything else is FedAvg.

Which tensors are "normalisation" is decided by module type over the built network, never
by key name (ALGORITHMS.md 7, note for MONAI): the parameters and buffers of every
``torch.nn`` batch/instance norm (``_NormBase``: BatchNorm*, SyncBatchNorm, InstanceNorm*),
GroupNorm, LayerNorm and RMSNorm module. For BatchNorm these are gamma/beta and the running
statistics; for MONAI's InstanceNorm with ``affine=True`` gamma/beta. MONAI's default
InstanceNorm has ``affine=False`` and no running statistics: the network then has nothing
to keep and FedBN *is* FedAvg; the run's log says so (a warning event). Use
``model.args.norm = ["instance", {"affine": true}]`` (or ``"batch"``) to give FedBN
something to personalise.

Choices [I]:

- sites upload their whole local model, norm tensors included (FedAvg's traffic, nothing
  more leaves a site than under FedAvg), and the server averages everything with n_k / n:
  the norm part of the global model is then the sites' average, which is what
  ``global_model.safetensors`` offers an unseen site (ALGORITHMS.md 7 lists it as one
  policy; test-time statistics would be the other). Participating sites never use it;
- integer buffers (BatchNorm's ``num_batches_tracked``) stay local like the rest of a
  norm layer;
- round 1 starts every site from the common initial model, norm included.
"""

from __future__ import annotations

import logging
from typing import Any

import torch.nn as nn

from engine.fl.fedavg import FedAvg
from engine.fl.personal import PersonalisedSite
from engine.events import RunWarning
from engine.fl.protocol import ArrayDict, Exchange, Message
from engine.fl.registry import register
from engine.fl.site import SiteRuntime
from engine.model.networks import build_network

log = logging.getLogger(__name__)

NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)
KEPT = "norm"  # the site-store key of the site's own normalisation tensors
NOTHING_TO_KEEP = (
    "fedbn: the network has no normalisation parameters or statistics (MONAI's instance norm has affine=False "
    'unless asked), so every tensor is shared and this run is FedAvg; set model.args.norm = ["instance", '
    '{"affine": true}] or "batch"'
)


def norm_state_names(network: nn.Module) -> list[str]:
    """State-dict names of the parameters and buffers of ``network``'s normalisation layers."""
    in_state = set(network.state_dict())
    names = []
    for prefix, module in network.named_modules():
        if not isinstance(module, NORM_TYPES):
            continue
        own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        names += [name for name in (f"{prefix}.{n}" if prefix else n for n, _ in own) if name in in_state]
    return names


class FedBNSite(PersonalisedSite):
    """Keeps its normalisation tensors; trains and evaluates shared weights + its own norms."""

    def __init__(self, params: Any, runtime: SiteRuntime) -> None:
        super().__init__(params, runtime)
        self.local_names = norm_state_names(self.runtime.network)
        if not self.local_names:
            log.warning("site %s: %s", self.runtime.name, NOTHING_TO_KEEP)

    def personal_weights(self, shared: ArrayDict, upto: int) -> ArrayDict:
        own = self.kept(KEPT, upto)
        return shared if own is None else shared | own

    def start_weights(self, message: Message) -> ArrayDict:
        return self.personal_weights(message.arrays["global"], message.round - 1)

    def after_train(self, message: Message, local: ArrayDict) -> None:
        if self.local_names:
            self.runtime.store.save(KEPT, message.round, {name: local[name] for name in self.local_names})


@register
class FedBN(FedAvg):
    name = "fedbn"
    summary = "FedBN: FedAvg whose normalisation layers stay at each site (personalised evaluation)"
    site_logic = FedBNSite
    personalised = True

    def configure(self, config: Any) -> None:
        network = build_network(config.model.network, config.model.args)
        self.warning = None if norm_state_names(network) else NOTHING_TO_KEEP
        self.warned = False

    def round(self, rnd: int, global_state: ArrayDict) -> Exchange:
        # the operator must see it in the run's log, not only in each site's Python log
        if getattr(self, "warning", None) and not self.warned:
            self.emit(RunWarning(message=self.warning))
            self.warned = True
        return (yield from super().round(rnd, global_state))
