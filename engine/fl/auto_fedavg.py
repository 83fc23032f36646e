"""Auto-FedAvg: aggregation weights learned from the sites' data (Xia et al. 2021).

Algorithm 1 of the paper: every round each site trains locally (FedAvg); every ``t0``
rounds a weight-learning phase then fits beta with the sites' models held fixed:

1. ``query.learn_beta_setup`` sends each site the K-1 *other* local models, once per
   phase; the site caches them on its own disk (privacy: see ``docs``; this is the
   protocol's one departure from FedAvg's traffic, (K-1)/(2 t0) extra).
2. ``query.learn_beta_step`` x S: the server sends beta; each site draws alpha from
   gamma(beta) (Dirichlet ``rsample`` or softmax), merges sum_j alpha_j w_j with
   ``torch.func.functional_call`` so that autograd reaches beta only, computes the
   training loss (Dice) on a minibatch of its *own* training patches, and returns
   dL/dbeta. The server averages the sites' steps uniformly.
3. The round aggregates with alpha = mode(Dir(beta)) or softmax(beta).

beta starts at 6.0 (mode: uniform, so Auto-FedAvg starts as FedAvg-even) and each phase
warm-starts from the previous beta. For Dirichlet weights beta is clamped to >= 1 + 1e-3
after every step so that the mode stays interior (ALGORITHMS.md 1.2, point 4).

Choice [I]: the uniform average of the sites' gradient steps is applied with Adam on the
server (a FedOpt-style server optimiser; sites stay stateless). With
``beta_optimizer = "sgd"`` this is exactly the paper's "each site takes one gradient step
on beta, the server averages the beta^{s,k}", since mean_k(beta - lr g_k) = beta - lr
mean_k(g_k). Adam is the default because dL/dbeta has no known scale.

Option [I] ``beta_local_steps`` m (default 1, the paper): each ``learn_beta_step`` message
asks a site for m steps instead of one. The site takes them with plain SGD on its own copy
of beta (lr ``beta_lr``, clamped like the server's beta) and answers the pseudo-gradient
(beta_start - beta_end) / (m lr), the mean gradient along its path; the server averages
and applies that as it applies a gradient. m = 1 is exactly the protocol above; m > 1 is
federated averaging of beta (local steps between syncs, as FedAvg does for the weights)
with S/m messages per phase instead of S. Over a real network each message costs far more
than a step (``docs/federation.md`` §8), so this is the knob for slow links.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.func import functional_call

from engine.errors import ConfigError, FederationError
from engine.events import BetaStep
from engine.fl.aggregate import layer_groups, normalise, weighted_average
from engine.fl.base import RoundOutcome, SiteLogic, Strategy
from engine.fl.learned_weights import DIRICHLET, WEIGHT_KINDS, aggregation_weights, training_weights
from engine.fl.protocol import ArrayDict, Exchange, Message, Reply
from engine.fl.registry import register
from engine.registry import check_choice

SETUP = "query.learn_beta_setup"  # Flower message types are "<category>.<action>"
STEP = "query.learn_beta_step"
NETWORK = "network"
LAYER = "layer"
BETA_FLOOR = 1.0 + 1e-3


@dataclass(frozen=True)
class AutoFedAvgParams:
    """Hyperparameters. Paper: beta init 6; t0 = 1 (Table 2 rows without *) or 10 / 5;
    S and the beta learning rate are not in the main text (ALGORITHMS.md 1.4 [I])."""

    weights: str = DIRICHLET
    aggregation: str = NETWORK
    t0: int = 1
    beta_steps: int = 10
    beta_lr: float = 0.05
    beta_init: float = 6.0
    beta_optimizer: str = "adam"
    beta_local_steps: int = 1

    def __post_init__(self) -> None:
        check_choice("strategy.params.weights", self.weights, WEIGHT_KINDS)
        check_choice("strategy.params.aggregation", self.aggregation, (NETWORK, LAYER))
        check_choice("strategy.params.beta_optimizer", self.beta_optimizer, ("adam", "sgd"))
        if self.t0 < 1:
            raise ConfigError(f"strategy.params.t0: must be >= 1, got {self.t0}")
        if self.beta_steps < 0:
            raise ConfigError(f"strategy.params.beta_steps: must be >= 0, got {self.beta_steps}")
        if self.beta_local_steps < 1:
            raise ConfigError(f"strategy.params.beta_local_steps: must be >= 1, got {self.beta_local_steps}")
        if self.beta_lr <= 0:
            raise ConfigError(f"strategy.params.beta_lr: must be > 0, got {self.beta_lr}")
        if self.weights == DIRICHLET and self.beta_init <= 1.0:
            raise ConfigError(
                f"strategy.params.beta_init: Dirichlet concentrations must start above 1 "
                f"(mode inside the simplex), got {self.beta_init}"
            )


def merge_states(models: list[ArrayDict], alpha: torch.Tensor, groups: list[list[str]] | None) -> dict[str, torch.Tensor]:
    """sum_j alpha_j w_j, differentiable in alpha. ``alpha`` is (n,) network-wise or
    (n, P) layer-wise with ``groups`` giving the tensor names of each layer p."""
    merged: dict[str, torch.Tensor] = {}
    if groups is None:
        column = {name: alpha for name in models[0]}
    else:
        column = {name: alpha[:, p] for p, names in enumerate(groups) for name in names}
    for name, ref in models[0].items():
        if not torch.is_floating_point(ref):
            merged[name] = ref
            continue
        a = column[name].to(ref.dtype)
        merged[name] = sum(a[j] * models[j][name] for j in range(len(models)))
    return merged


class AutoFedAvgSite(SiteLogic):
    """Keeps its own local model and the cached peer models for the beta steps."""

    def __init__(self, params: AutoFedAvgParams, runtime: Any) -> None:
        super().__init__(params, runtime)
        self._cache: dict[tuple[int, int], ArrayDict] = {}

    def after_train(self, message: Message, local: ArrayDict) -> None:
        self.runtime.store.save("local", message.round, local)

    def on_query_learn_beta_setup(self, message: Message) -> Reply:
        store = self.runtime.store
        self._cache.clear()
        for key, state in message.arrays.items():
            peer = int(key.split(".", 1)[1])
            store.save(f"peer-{peer}", message.round, state)
            self._cache[(message.round, peer)] = state
        return Reply(metrics={"cached_models": len(message.arrays)})

    def _model(self, rnd: int, site: int) -> ArrayDict:
        if site == self.runtime.index:
            key = "local"
        elif (rnd, site) in self._cache:
            return self._cache[(rnd, site)]
        else:
            key = f"peer-{site}"  # the process restarted since the setup message
        saved = self.runtime.store.load(key, before=rnd + 1)
        if saved is None or saved[2] != rnd:
            raise FederationError(f"site {self.runtime.name}: model of site {site} for round {rnd} is not cached")
        if site != self.runtime.index:
            self._cache[(rnd, site)] = saved[0]
        return saved[0]

    def on_query_learn_beta_step(self, message: Message) -> Reply:
        """One step (the paper), or ``local_steps`` SGD steps on a local copy of beta
        answered as their mean gradient (``beta_local_steps``, see the module docstring)."""
        rt = self.runtime
        rnd, first = message.round, int(message.config["step"])
        local_steps = int(message.config.get("local_steps", 1))
        sites = [int(s) for s in message.config["sites"]]
        models = [{k: v.to(rt.device) for k, v in self._model(rnd, s).items()} for s in sites]
        groups = layer_groups(list(models[0])) if self.params.aggregation == LAYER else None
        start = message.arrays["beta"]["beta"].to(rt.device, torch.float32)
        beta, losses = start, []
        for step in range(first, first + local_steps):
            grad, loss = self._beta_gradient(rnd, step, models, groups, beta)
            losses.append(loss)
            rt.progress(rnd, "learn_beta", step, int(message.config.get("steps", step)), loss)
            if local_steps == 1:
                return Reply(arrays={"beta": {"grad": grad.cpu()}}, metrics={"loss": loss})
            beta = beta - self.params.beta_lr * grad
            if self.params.weights == DIRICHLET:
                beta = beta.clamp(min=BETA_FLOOR)
        pseudo = (start - beta) / (local_steps * self.params.beta_lr)
        return Reply(arrays={"beta": {"grad": pseudo.cpu()}}, metrics={"loss": sum(losses) / len(losses)})

    def _beta_gradient(
        self, rnd: int, step: int, models: list[ArrayDict], groups: list[list[str]] | None, beta: torch.Tensor
    ) -> tuple[torch.Tensor, float]:
        """dL/dbeta of the merged model on a minibatch of this site's patches (step ``step``
        of the phase: the same draw whatever the message grouping)."""
        rt = self.runtime
        beta = beta.detach().requires_grad_(True)
        rt.seed_torch(rnd, 1, step)
        alpha = training_weights(beta, self.params.weights)
        merged = merge_states(models, alpha, groups)
        image, label = rt.data.batch(rt.rng(rnd, 1, step))
        loss = rt.trainer.loss_fn(functional_call(rt.network.train(), merged, (image.to(rt.device),)), label.to(rt.device))
        (grad,) = torch.autograd.grad(loss, beta)
        return grad.detach(), float(loss.detach())


@register
class AutoFedAvg(Strategy):
    name = "auto-fedavg"
    summary = "Auto-FedAvg: aggregation weights learned by the sites (Dirichlet/softmax, network/layer)"
    Params = AutoFedAvgParams
    site_logic = AutoFedAvgSite
    shares_models = True

    def __init__(self, params: AutoFedAvgParams, sites: list) -> None:
        super().__init__(params, sites)
        self.groups: list[list[str]] | None = None
        self.beta: torch.nn.Parameter | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    # -- beta and its optimiser ----------------------------------------------------------
    def _ensure_beta(self, state: ArrayDict) -> None:
        if self.beta is not None:
            return
        k = len(self.sites)
        if self.params.aggregation == LAYER:
            self.groups = layer_groups(list(state))
            shape: tuple[int, ...] = (k, len(self.groups))
        else:
            shape = (k,)
        self.beta = torch.nn.Parameter(torch.full(shape, self.params.beta_init, dtype=torch.float64))
        if self.params.beta_optimizer == "adam":
            self.optimizer = torch.optim.Adam([self.beta], lr=self.params.beta_lr)
        else:
            self.optimizer = torch.optim.SGD([self.beta], lr=self.params.beta_lr)

    def _apply_step(self, indices: list[int], grads: list[torch.Tensor]) -> None:
        assert self.beta is not None and self.optimizer is not None
        grad = torch.zeros_like(self.beta)
        grad[indices] = torch.stack([g.to(torch.float64) for g in grads]).mean(dim=0)  # uniform over sites
        self.beta.grad = grad
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.params.weights == DIRICHLET:
            with torch.no_grad():
                self.beta.clamp_(min=BETA_FLOOR)

    def current_alpha(self, indices: list[int]) -> torch.Tensor:
        assert self.beta is not None
        return aggregation_weights(self.beta.detach()[indices], self.params.weights)

    # -- the round -------------------------------------------------------------------------
    def round(self, rnd: int, global_state: ArrayDict) -> Exchange:
        self._ensure_beta(global_state)
        replies = yield self.train_messages(rnd, global_state)
        if not replies:
            raise FederationError(f"round {rnd}: no site returned a model")
        locals_ = {k: r.arrays["local"] for k, r in replies.items()}
        indices = sorted(locals_)
        if self.params.beta_steps > 0 and rnd % self.params.t0 == 0 and len(indices) >= 2:
            indices = yield from self._learn_beta(rnd, locals_, indices)
        alpha = self.current_alpha(indices)
        if self.groups is None:
            weights = normalise({k: float(a) for k, a in zip(indices, alpha)})
            new_state = weighted_average({k: locals_[k] for k in indices}, weights)
            reported = weights
        else:
            new_state = self._layerwise_average(locals_, indices, alpha)
            reported = {k: float(a) for k, a in zip(indices, alpha.mean(dim=1))}
        self.alpha = [reported.get(s.index, 0.0) for s in self.sites]
        return RoundOutcome.from_replies(new_state, self.alpha, replies, beta=self.beta_list())

    def _learn_beta(self, rnd: int, locals_: dict[int, ArrayDict], indices: list[int]) -> Exchange:
        setup = yield {
            k: Message(SETUP, rnd, arrays={f"site.{j}": locals_[j] for j in indices if j != k}, config={"sites": indices})
            for k in indices
        }
        indices = [k for k in indices if k in setup]
        steps, per_message = self.params.beta_steps, self.params.beta_local_steps
        for first in range(1, steps + 1, per_message):
            assert self.beta is not None
            beta = self.beta.detach()[indices].to(torch.float32)
            local_steps = min(per_message, steps - first + 1)
            config = {"sites": indices, "step": first, "steps": steps}
            if local_steps > 1:  # absent for one step: the paper's message, unchanged
                config["local_steps"] = local_steps
            started = time.perf_counter()
            replies = yield {k: Message(STEP, rnd, arrays={"beta": {"beta": beta}}, config=config) for k in indices}
            if not replies:
                break
            self._apply_step(indices, [r.arrays["beta"]["grad"] for r in replies.values()])
            last = first + local_steps - 1
            self.emit(BetaStep(round=rnd, step=last, beta=self.beta_list() or [], seconds=time.perf_counter() - started))
        return indices

    def check_reply(self, message: Message, reply: Reply, model: ArrayDict) -> str | None:
        problem = super().check_reply(message, reply, model)
        if problem is not None or message.kind != STEP:
            return problem
        grad = reply.arrays.get("beta", {}).get("grad")
        expected = list(message.arrays["beta"]["beta"].shape)
        if grad is None:
            return "no beta gradient"
        if list(grad.shape) != expected:
            return f"beta gradient has shape {list(grad.shape)}, expected {expected}"
        return None

    def _layerwise_average(self, locals_: dict[int, ArrayDict], indices: list[int], alpha: torch.Tensor) -> ArrayDict:
        assert self.groups is not None
        alpha = alpha / alpha.sum(dim=0, keepdim=True)
        merged = merge_states([locals_[k] for k in indices], alpha.to(torch.float64), self.groups)
        return {name: t.to(locals_[indices[0]][name].dtype) for name, t in merged.items()}

    # -- checkpoint ----------------------------------------------------------------------
    def beta_list(self) -> list[Any] | None:
        return None if self.beta is None else self.beta.detach().tolist()

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = super().state_dict()
        if self.beta is not None and self.optimizer is not None:
            tensors["beta"] = self.beta.detach().clone()
            opt = self.optimizer.state_dict()
            for key, value in opt["state"].get(0, {}).items():
                tensors[f"optimizer.{key}"] = torch.as_tensor(value).clone()
            meta["groups"] = self.groups
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        super().load_state_dict(tensors, meta)
        if "beta" not in tensors:
            return
        self.groups = meta.get("groups")
        self.beta = torch.nn.Parameter(tensors["beta"].to(torch.float64).clone())
        self.optimizer = (
            torch.optim.Adam([self.beta], lr=self.params.beta_lr)
            if self.params.beta_optimizer == "adam"
            else torch.optim.SGD([self.beta], lr=self.params.beta_lr)
        )
        opt_state = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("optimizer.")}
        if opt_state:
            state = self.optimizer.state_dict()
            state["state"] = {0: opt_state}
            self.optimizer.load_state_dict(state)
