"""DEeR: federated LoRA with deviation elimination and regulated DP noise (Zhu et al.,
arXiv 2410.12926; ALGORITHMS.md section 6).

The run starts from a trained global model W0 (``init_model``). Every convolution gets a
LoRA adapter, W = W0 + s B A (:mod:`engine.model.lora`); W0 stays frozen and only the
factors are learned, in rounds of two half-rounds, each with M = ``train.local_steps``
local SGD steps (lr 0.01, momentum 0.9, weight decay 5e-4, a fresh optimiser over the
trained factor only [C]) and its own aggregation (``train.deer`` messages):

1. factor B: the sites train B with A fixed; the server averages the B updates with
   uniform weights 1/K [C]. A is the same at every site, so mean_k(B_k) A =
   mean_k(B_k A): the aggregate is FedAvg of the products, without the deviation
   mean(B) mean(A) - mean(B A) of averaging both factors (6.2);
2. factor A: the sites train A with the averaged B fixed; the server averages A.

Noise regulator (client-level DP, 6.3): a site clips its update Delta = local - global of
the trained factor to ||Delta||_F <= C and adds, per layer, one d0 x d1 Gaussian N of std
sigma C / sqrt(K) mapped into the factor through the other factor's pseudo-inverse
(:mod:`engine.fl.privacy`), so that the noise reaching the weights is a projection of N.
sigma comes from Opacus' RDP accountant for the target (epsilon, delta); ``results.json``
reports it under ``privacy`` with the epsilon the run spends.

What moves: the server sends both factors (small) to every site, and W0 (``base``) only
to a site that does not hold it yet (it keeps W0 in its store; a site that missed a
message gets W0 again). A site answers only the noised update of the trained factor: per
layer r (d0 + d1) numbers go up instead of d0 d1.

The global state is the adapted network's state dict (W0, factors and the other tensors),
so validation and test run the adapted network W0 + s B A; ``global_model.safetensors``
holds the merged plain weights W0 + s B A (:meth:`DEeR.exported_model`) [I], which plain
inference loads with the model card alone.

Choices [I]:

* The site adds the noise, before its update leaves it: the server never sees a clean
  update. The K noises of std sigma C / sqrt(K) sum to std sigma C on the sum of the
  updates, the Gaussian mechanism the accountant assumes for the released global factors
  (distributed DP); a single site's reply, seen alone, carries noise multiplier
  sigma / sqrt(K).
* The clipping bound is on the joint norm of the whole update (all layers together).
* ``accounting = "paper"`` feeds the accountant the reference code's inputs (6.3):
  sample_rate = batch / n with n = sum_k n_k, and steps = sum_k T (2 M), every local step
  of every site in both half-rounds. ``"client"`` is the formal client-level count:
  sample_rate = 1 (every site takes part in every aggregation) and steps = 2 T noisy
  aggregations; it needs far more noise for the same epsilon.
* ``delta = 0`` means delta = 1 / K, the paper's choice.
* ``dp = false`` is the no-DP ablation: no clipping, no noise (the deviation eliminator
  alone).
* Without ``init_model`` the randomly initialised network is adapted, with a logged
  warning: enough for demos and tests, but the method assumes a trained W0.
* The server draws A once (Kaiming-uniform) from a generator seeded with 0, and B = 0:
  every runner and every resume builds the same adapter.
* Only the factors train; biases, PReLU slopes and norm parameters keep W0's values.
* A site's local model (its validation Dice, best local model and row of the local
  matrix) is the one it released: the global factors plus its noised update, validated
  after the A half-round, so the test protocol reveals nothing beyond the DP-protected
  replies (the validation Dice itself is a metric of the site's data, as for every
  strategy).
* A round costs 2 M local steps (the paper: E epochs in each half-round); its reported
  training loss is the mean of the two half-rounds'.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch

from engine.errors import ConfigError, FederationError
from engine.fl import privacy
from engine.fl.aggregate import normalise, weighted_average
from engine.fl.base import RoundOutcome, SiteLogic, Strategy, same_layout
from engine.fl.protocol import ArrayDict, Exchange, Message, Reply
from engine.fl.registry import register
from engine.model import lora
from engine.model.networks import build_network
from engine.registry import check_choice

log = logging.getLogger(__name__)

KIND = "train.deer"
B, A = "lora_B", "lora_A"
OTHER = {A: B, B: A}
PHASE = {B: 0, A: 2}  # rng phases of the half-rounds (Auto-FedAvg's beta steps use 1)
NOISE_PHASE = 5
BASE = "deer-base"  # the site's copy of W0 in its store
A_SEED = 0
ACCOUNTING = ("paper", "client")


@dataclass(frozen=True)
class DEeRParams:
    """The reference code's defaults: r = 8, alpha = 8 (s = 1), SGD lr 0.01, momentum 0.9,
    weight decay 5e-4; (epsilon, C) = (6, 0.6) is its Kvasir row for the loosest budget."""

    rank: int = 8
    lora_alpha: float = 8.0
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    dp: bool = True
    epsilon: float = 6.0
    delta: float = 0.0
    clip: float = 0.6
    accounting: str = "paper"

    def __post_init__(self) -> None:
        check_choice("strategy.params.accounting", self.accounting, ACCOUNTING)
        if self.rank < 1:
            raise ConfigError(f"strategy.params.rank: must be >= 1, got {self.rank}")
        for name in ("lora_alpha", "lr", "epsilon", "clip"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"strategy.params.{name}: must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"strategy.params.momentum: must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ConfigError(f"strategy.params.weight_decay: must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.delta < 1.0:
            raise ConfigError(f"strategy.params.delta: must be in [0, 1) (0 = 1/K), got {self.delta}")

    @property
    def scale(self) -> float:
        return self.lora_alpha / self.rank


def split_factors(state: ArrayDict, factor: str) -> ArrayDict:
    return {name: state[name] for name in lora.factor_names(state, factor)}


class DEeRSite(SiteLogic):
    """Trains one factor of the adapted network per message; adds the regulated noise."""

    def __init__(self, params: DEeRParams, runtime: Any) -> None:
        super().__init__(params, runtime)
        self._base: ArrayDict | None = None

    def _network(self) -> torch.nn.Module:
        network = self.runtime.network
        if not lora.is_adapted(network):  # the first DEeR message since the process started
            # (A is overwritten by the received factors; a private generator leaves torch's global one alone)
            lora.add_lora(network, self.params.rank, self.params.lora_alpha, torch.Generator().manual_seed(A_SEED))
        return network

    def _base_weights(self, message: Message) -> ArrayDict:
        if "base" in message.arrays:
            self._base = message.arrays["base"]
            self.runtime.store.save(BASE, message.round, self._base)
        if self._base is None:
            saved = self.runtime.store.load(BASE)
            if saved is None:
                raise FederationError(f"site {self.runtime.name}: DEeR's base model W0 was never received")
            self._base = saved[0]
        return self._base

    def on_train_deer(self, message: Message) -> Reply:
        rt, p = self.runtime, self.params
        factor, factors, rnd = message.config["factor"], message.arrays["factors"], message.round
        network = self._network()
        rt.set_weights({**self._base_weights(message), **factors})
        trainable = lora.train_only(network, factor)
        optimizer = torch.optim.SGD(trainable, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
        rt.seed_torch(rnd, PHASE[factor])
        stats = rt.trainer.train(
            rt.data.batch,
            rt.config.train.local_steps,
            rt.rng(rnd, PHASE[factor]),
            optimizer=optimizer,
            on_step=lambda s, n, loss: rt.progress(rnd, "train", s, n, loss),
        )
        local = rt.weights()
        update = {name: local[name] - t for name, t in split_factors(factors, factor).items()}
        update = self.privatise(message, update)
        metrics: dict[str, Any] = {"train_loss": stats.mean_loss}
        if factor == A:  # the round's last half: validate the model this site released
            released = {**local, **{name: factors[name] + u for name, u in update.items()}}
            metrics["local_val_dice"] = rt.track_best_local(rnd, released)
        return Reply(arrays={"update": update}, metrics=metrics, num_examples=rt.data.num_train)

    def privatise(self, message: Message, update: ArrayDict) -> ArrayDict:
        """clip(update) + regulated noise, as the message's ``clip``/``noise_std`` ask."""
        clip, std = float(message.config.get("clip", 0.0)), float(message.config.get("noise_std", 0.0))
        if clip > 0:
            update = privacy.clip_update(update, clip)
        if std <= 0:
            return update
        factor, factors = message.config["factor"], message.arrays["factors"]
        seed = int(self.runtime.rng(message.round, NOISE_PHASE, PHASE[factor]).integers(2**62))
        generator = torch.Generator().manual_seed(seed)
        noisy = {}
        for name, delta in update.items():
            prefix = name[: -len(lora.FACTORS[factor])]
            peer = factors[prefix + lora.FACTORS[OTHER[factor]]]
            b, a = (delta, peer) if factor == B else (peer, delta)
            noise = torch.randn(b.shape[0], a.shape[1], generator=generator, dtype=torch.float64) * std
            noisy[name] = delta + privacy.regulated_noise(peer, factor, noise).to(delta.dtype)
        return noisy

    def evaluation_weights(self, message: Message) -> ArrayDict:
        self._network()  # evaluation messages carry the adapted network's state
        return message.arrays["model"]


@register
class DEeR(Strategy):
    name = "deer"
    summary = "DEeR: federated LoRA on a trained model (--init-model), alternating factors, regulated DP noise"
    Params = DEeRParams
    site_logic = DEeRSite

    def __init__(self, params: DEeRParams, sites: list) -> None:
        super().__init__(params, sites)
        self.config: Any = None
        self.privacy: dict[str, Any] = {"dp": False}
        self.has_base: set[int] = set()

    # -- run settings and the privacy budget ------------------------------------------------
    def configure(self, config: Any) -> None:
        self.config = config
        if config.init_model is None:
            log.warning("deer: no init_model; LoRA adapts the randomly initialised network (it expects a trained one)")
        if self.params.dp:
            self.privacy = self.privacy_budget(config.rounds, config.train.local_steps, config.data.batch_size)

    def privacy_budget(self, rounds: int, local_steps: int, batch_size: int) -> dict[str, Any]:
        p, k = self.params, len(self.sites)
        delta = p.delta or 1.0 / k
        if p.accounting == "client":
            sample_rate, steps = 1.0, 2 * rounds
        else:
            n = max(1, sum(s.num_train for s in self.sites))
            sample_rate, steps = min(1.0, batch_size / n), k * rounds * 2 * local_steps
        sigma = privacy.noise_multiplier(p.epsilon, delta, sample_rate, steps)
        return {
            "dp": True,
            "epsilon": privacy.spent_epsilon(sigma, delta, sample_rate, steps),
            "target_epsilon": p.epsilon,
            "delta": delta,
            "noise_multiplier": sigma,
            "clip": p.clip,
            "noise_std_per_site": sigma * p.clip / math.sqrt(k),
            "accounting": p.accounting,
            "sample_rate": sample_rate,
            "steps": steps,
            "accountant": "opacus rdp",
        }

    def report(self) -> dict[str, Any]:
        return {"privacy": dict(self.privacy), "lora": {"rank": self.params.rank, "alpha": self.params.lora_alpha}}

    # -- the adapter ------------------------------------------------------------------------
    def adapted(self, state: ArrayDict) -> ArrayDict:
        """The round-0 plain state with adapters: W0 renamed, A drawn (seed 0), B = 0."""
        if lora.is_adapted_state(state):
            return state
        if self.config is None:
            raise FederationError("deer: configure(config) must be called before the first round")
        network = build_network(self.config.model.network, self.config.model.args)
        network.load_state_dict(state, strict=True)
        lora.add_lora(network, self.params.rank, self.params.lora_alpha, torch.Generator().manual_seed(A_SEED))
        return {name: t.detach().clone() for name, t in network.state_dict().items()}

    def exported_model(self, state: ArrayDict) -> ArrayDict:
        return lora.merged_state(state, self.params.scale) if lora.is_adapted_state(state) else state

    # -- the round --------------------------------------------------------------------------
    def round(self, rnd: int, global_state: ArrayDict) -> Exchange:
        state = self.adapted(global_state)
        losses: dict[int, list[float]] = {}
        for factor in (B, A):
            replies = yield from self._half_round(rnd, state, factor)
            if not replies:
                raise FederationError(f"round {rnd}: no site returned a DEeR update")
            weights = normalise({k: 1.0 for k in replies})  # uniform 1/K over the sites that replied [C]
            state = {**state, **self.aggregate(split_factors(state, factor), replies, weights)}
            for k, reply in replies.items():
                losses.setdefault(k, []).append(float(reply.metrics["train_loss"]))
        self.alpha = [weights.get(s.index, 0.0) for s in self.sites]
        return RoundOutcome(
            global_state=state,
            alpha=self.alpha,
            local_val_dice={k: r.metrics.get("local_val_dice") for k, r in replies.items()},
            train_loss={k: sum(v) / len(v) for k, v in losses.items()},
        )

    def _half_round(self, rnd: int, state: ArrayDict, factor: str) -> Exchange:
        factors = {**split_factors(state, A), **split_factors(state, B)}
        base = {name: t for name, t in state.items() if name not in factors}
        config = {"factor": factor, "clip": 0.0, "noise_std": 0.0}
        if self.params.dp:
            config.update(clip=self.params.clip, noise_std=float(self.privacy["noise_std_per_site"]))
        messages = {}
        for s in self.sites:
            arrays = {"factors": factors} if s.index in self.has_base else {"factors": factors, "base": base}
            messages[s.index] = Message(KIND, rnd, arrays=arrays, config=dict(config))
        replies = yield messages
        for k in messages:  # a site that missed a message may have lost W0: send it again
            (self.has_base.add if k in replies else self.has_base.discard)(k)
        return replies

    @staticmethod
    def aggregate(global_factor: ArrayDict, replies: dict[int, Reply], weights: dict[int, float]) -> ArrayDict:
        """sum_k w_k (global + update_k), the paper's server step, in float64."""
        states = {
            k: {name: t.double() + r.arrays["update"][name].double() for name, t in global_factor.items()}
            for k, r in replies.items()
        }
        return {name: t.to(global_factor[name].dtype) for name, t in weighted_average(states, weights).items()}

    def check_reply(self, message: Message, reply: Reply, model: ArrayDict) -> str | None:
        problem = super().check_reply(message, reply, model)
        if problem is not None or message.kind != KIND:
            return problem
        extra = sorted(set(reply.arrays) - {"update"})
        if extra:
            return f"unexpected array group '{extra[0]}' (a DEeR site sends only its update)"
        expected = split_factors(message.arrays["factors"], message.config["factor"])
        problem = same_layout("update", reply.arrays.get("update"), expected)
        if problem is not None:
            return problem
        if not isinstance(reply.metrics.get("train_loss"), (int, float)):
            return "no train_loss"
        return None

    # -- checkpoint ---------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = super().state_dict()
        meta["has_base"] = sorted(self.has_base)
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        super().load_state_dict(tensors, meta)
        self.has_base = set(meta.get("has_base", []))
