"""One interface for every federated algorithm: a server half and a site half.

Like Flower's ``flwr.serverapp.strategy``, each algorithm is one small class; variants
override one method (FedAvg-even overrides :meth:`Strategy.aggregation_weights`, FedProx
overrides :meth:`SiteLogic.extra_loss`). A strategy's round is a generator of
:class:`~engine.fl.protocol.Message` batches, so a multi-exchange protocol such as
Auto-FedAvg's weight-learning phase is written once and runs unchanged in the in-process
simulation and over Flower.

Personalised strategies (``Strategy.personalised``; site half in :mod:`engine.fl.personal`)
keep part or all of their model at the site. An ``evaluate`` message says which model to
score in ``config["model"]``: absent, the received model as it is (the global model, a
best local model of the K x K matrix); ``PERSONAL``, the site's personal model built
from the received shared one (validation of personalised strategies); ``BEST_PERSONAL``,
the personal model of the site's best validation round (their final test).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from engine.errors import FederationError
from engine.events import Event
from engine.fl.aggregate import normalise, weighted_average
from engine.fl.protocol import EVALUATE, QUERY_BEST_LOCAL, TRAIN, ArrayDict, Exchange, Message, Reply
from engine.fl.site import SiteInfo, SiteRuntime
from engine.training.metrics import mean_or_none
from engine.training.trainer import ExtraLoss

#: values of an ``evaluate`` message's ``config["model"]`` (absent: the received model as it is)
PERSONAL = "personal"
BEST_PERSONAL = "best_personal"


@dataclass(frozen=True)
class NoParams:
    """A strategy without hyperparameters."""


@dataclass
class RoundOutcome:
    """What a round leaves behind: the new global state and the weights it used."""

    global_state: ArrayDict
    alpha: list[float]
    beta: list[Any] | None = None
    local_val_dice: dict[int, float | None] = dataclasses.field(default_factory=dict)
    train_loss: dict[int, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_replies(
        cls, global_state: ArrayDict, alpha: list[float], replies: dict[int, Reply], beta: list[Any] | None = None
    ) -> RoundOutcome:
        """Collect the sites' training metrics from their ``train`` replies."""
        return cls(
            global_state=global_state,
            alpha=alpha,
            beta=beta,
            local_val_dice={k: r.metrics.get("local_val_dice") for k, r in replies.items()},
            train_loss={k: r.metrics["train_loss"] for k, r in replies.items()},
        )


class SiteLogic:
    """What a site does with each message kind (runs where the site's data is).

    ``handle`` dispatches ``message.kind`` to ``on_<kind>`` (dots become underscores), the
    way a Flower ClientApp registers ``@app.train()`` / ``@app.query("...")`` handlers.
    """

    def __init__(self, params: Any, runtime: SiteRuntime) -> None:
        self.params = params
        self.runtime = runtime

    def handle(self, message: Message) -> Reply:
        handler = getattr(self, "on_" + message.kind.replace(".", "_"), None)
        if handler is None:
            raise FederationError(f"site {self.runtime.name}: {type(self).__name__} cannot handle '{message.kind}'")
        self.runtime.round = message.round
        return handler(message)

    # -- local training -------------------------------------------------------------------
    def start_weights(self, message: Message) -> ArrayDict:
        """The model local training starts from (the received global model)."""
        return message.arrays["global"]

    def extra_loss(self, message: Message, start: ArrayDict) -> ExtraLoss | None:
        """A term added to the segmentation loss at every step (FedProx: proximal term)."""
        return None

    def on_train(self, message: Message) -> Reply:
        rt = self.runtime
        start = self.start_weights(message)
        rt.set_weights(start)
        stats = rt.train(message.round, extra_loss=self.extra_loss(message, start))
        local = rt.weights()
        val = rt.track_best_local(message.round, local)
        self.after_train(message, local)
        return Reply(
            arrays={"local": local},
            metrics={"train_loss": stats.mean_loss, "local_val_dice": val},
            num_examples=rt.data.num_train,
        )

    def after_train(self, message: Message, local: ArrayDict) -> None:
        """Hook for strategies that keep something of the local model at the site."""

    # -- evaluation -----------------------------------------------------------------------
    def evaluation_weights(self, message: Message) -> ArrayDict:
        """The model a site evaluates: the received one."""
        return message.arrays["model"]

    def on_evaluate(self, message: Message) -> Reply:
        if message.config.get("model") is not None:
            raise FederationError(
                f"site {self.runtime.name}: {type(self).__name__} keeps no personal model to evaluate "
                f"('{message.config['model']}')"
            )
        return self.evaluate_reply(message.config["split"], self.evaluation_weights(message))

    def evaluate_reply(self, split: str, state: ArrayDict) -> Reply:
        """Per-case Dice of ``state`` on ``split``, as a reply."""
        cases = self.runtime.evaluate(split, state)
        # Case ids can be patient identifiers: only the position in the split leaves the site.
        cases = [dataclasses.replace(c, case_id=f"{split}-{i:03d}") for i, c in enumerate(cases)]
        return Reply(
            metrics={"dice": mean_or_none([c.dice for c in cases]), "cases": [c.to_dict() for c in cases]},
            num_examples=len(cases),
        )

    def on_query_best_local(self, message: Message) -> Reply:
        saved = self.runtime.store.load("best_local")
        if saved is None:
            raise FederationError(f"site {self.runtime.name}: no local model has been validated yet")
        state, meta, _ = saved
        return Reply(arrays={"model": state}, metrics={"val_dice": meta["val_dice"], "round": meta["round"]})


def same_layout(group: str, got: ArrayDict | None, template: ArrayDict) -> str | None:
    """Why ``got`` is not a model shaped like ``template`` (None when it is)."""
    if got is None:
        return f"no '{group}' model"
    missing = sorted(set(template) - set(got))
    if missing:
        return f"'{group}' lacks tensor {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    extra = sorted(set(got) - set(template))
    if extra:
        return f"'{group}' has unexpected tensor {extra[0]}"
    for name, ref in template.items():
        if tuple(got[name].shape) != tuple(ref.shape):
            return f"'{group}' tensor {name} has shape {list(got[name].shape)}, expected {list(ref.shape)}"
    return None


class Strategy:
    """The server half of an algorithm. Subclasses set ``name``/``summary`` and override
    as little as possible; :attr:`Params` is a frozen dataclass of hyperparameters whose
    defaults are the papers'."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Params: ClassVar[type] = NoParams
    site_logic: ClassVar[type[SiteLogic]] = SiteLogic
    has_global_model: ClassVar[bool] = True
    #: whether the protocol sends a site other sites' models (a site must consent)
    shares_models: ClassVar[bool] = False
    #: whether each site evaluates its own personal model (FedBN, Ditto): validation Dice is
    #: then the personal models', and the final test uses each site's best personal model
    personalised: ClassVar[bool] = False

    def __init__(self, params: Any, sites: list[SiteInfo]) -> None:
        self.params = params
        self.sites = sites
        self.emit: Callable[[Event], None] = lambda event: None
        self.alpha: list[float] = [1.0 / len(sites)] * len(sites)

    @classmethod
    def params_from(cls, values: Mapping[str, Any]) -> Any:
        from engine.config import from_dict

        return from_dict(cls.Params, values, prefix="strategy.params.")

    # -- one round --------------------------------------------------------------------------
    def round(self, rnd: int, global_state: ArrayDict) -> Exchange:
        """Broadcast, train locally, aggregate (FedAvg's skeleton, ALGORITHMS.md 0)."""
        replies = yield self.train_messages(rnd, global_state)
        if not replies:
            raise FederationError(f"round {rnd}: no site returned a model")
        weights = normalise(self.aggregation_weights(replies))
        self.alpha = [weights.get(site.index, 0.0) for site in self.sites]
        locals_ = {k: r.arrays["local"] for k, r in replies.items()}
        return RoundOutcome.from_replies(weighted_average(locals_, weights), self.alpha, replies)

    def train_messages(self, rnd: int, global_state: ArrayDict) -> dict[int, Message]:
        return {s.index: Message(TRAIN, rnd, arrays={"global": global_state}) for s in self.sites}

    def aggregation_weights(self, replies: dict[int, Reply]) -> dict[int, float]:
        """FedAvg: alpha_k = n_k / n over the sites that replied."""
        return {k: float(r.num_examples) for k, r in replies.items()}

    def evaluate_messages(self, rnd: int, model: ArrayDict, split: str, *, use: str | None = None) -> dict[int, Message]:
        """Evaluate ``model`` on ``split``, or (``use``) the sites' ``PERSONAL`` models built from
        it or their ``BEST_PERSONAL`` ones (``model`` still goes along: a site that never
        validated a personal model builds one from it)."""
        config: dict[str, Any] = {"split": split} | ({"model": use} if use is not None else {})
        return {s.index: Message(EVALUATE, rnd, arrays={"model": model}, config=dict(config)) for s in self.sites}

    def best_local_messages(self, rnd: int) -> dict[int, Message]:
        return {s.index: Message(QUERY_BEST_LOCAL, rnd) for s in self.sites}

    # -- what a reply must hold ---------------------------------------------------------------
    def check_reply(self, message: Message, reply: Reply, model: ArrayDict) -> str | None:
        """Why ``reply`` to ``message`` cannot be used, or None when it can.

        A reply that fails is dropped (the round goes on without that site): every
        tensor must be finite, and a returned model must have exactly the names and
        shapes of ``model`` (the current global model). Strategies with other replies
        extend this.
        """
        for group, tensors in reply.arrays.items():
            for name, tensor in tensors.items():
                if torch.is_floating_point(tensor) and not bool(torch.isfinite(tensor).all()):
                    return f"{group}/{name} holds NaN or Inf"
        if message.kind == TRAIN and self.has_global_model:
            return same_layout("local", reply.arrays.get("local"), model)
        if message.kind == QUERY_BEST_LOCAL:
            return same_layout("model", reply.arrays.get("model"), model)
        return None

    # -- checkpoint -------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Server state to checkpoint: tensors and JSON-able values."""
        return {}, {"alpha": self.alpha}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.alpha = list(meta.get("alpha", self.alpha))

    def beta_list(self) -> list[Any] | None:
        return None

    # -- run-level hooks (called by the coordinator, identical in every runner) -----------------
    def configure(self, config: Any) -> None:
        """Told the run's :class:`~engine.config.RunConfig` before the first round, for
        strategies that depend on run settings (DEeR: rounds, local steps, the network)."""

    def exported_model(self, state: ArrayDict) -> ArrayDict:
        """The plain network's weights of a global state: what ``global_model.safetensors``
        holds, loadable from the model card alone (DEeR merges its LoRA factors)."""
        return state

    def report(self) -> dict[str, Any]:
        """Extra top-level entries of ``results.json`` (DEeR: its privacy budget)."""
        return {}

    def model_card_fields(self) -> dict[str, Any]:
        """Extra fields of ``model.json`` (FedRDN, HarmoFL: the ``input_transform`` a user's
        CT needs before the network at inference)."""
        return {}
