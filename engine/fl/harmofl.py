"""HarmoFL: harmonising local and global drifts (Jiang, Wang, Dou, AAAI 2022; ALGORITHMS.md 3).

Two parts, both at the sites; the server averages models with weights 1/K (3.3):

- *Amplitude normalisation* (local harmonisation, 3.1): every network input keeps its
  Fourier phase while the low-frequency amplitude window (half-width floor(min size * r))
  is replaced by a reference amplitude common to the federation
  (:mod:`engine.training.fourier`). r = 0, the released code's value, replaces the DC
  amplitude only, i.e. sets each input's mean intensity to the reference mean.
- *Weight perturbation* (global harmonisation, 3.2): every local step is sharpness-aware,
  g~ = grad L(w + alpha g / ||g||), applied by the base optimiser (Adam) at w
  (:mod:`engine.training.sam`): two backward passes per step.

Protocol: round 1 opens with one ``query.amplitude`` exchange. Each site computes the
running mean (momentum 0.1) of the batch-mean amplitude window over ``train.local_steps``
batches of its training patches and answers it; the server averages the answers with
weights 1/K over the sites that answered and keeps that reference fixed for the rest of
the run (server state, checkpointed). It goes with every ``train`` and ``evaluate``
message; a site applies it to every training batch and every evaluation window.

Choices [I]:

- *When the reference is made*: the original updates each site's running amplitude
  during round 1's local training (normalising round 1 with its own, still-moving
  amplitude) and averages it at the first communication. Here the same statistic, over
  the same number of batches, is computed before round 1 in a dedicated exchange (its own
  seeded patch draws, ``SiteRuntime.rng(1, 6)``), so every round, the first included,
  trains with the shared reference, and training stays one code path.
- *Only the window is shared*: sites send the (C, 2b+1, 2b+1, 2b+1) window, not the whole
  spectrum of an average patch (with r = 0: one number per channel). Less to send and
  less said about the site's images; nothing outside the window is ever used.
- *Per input window*: AmpNorm is the first layer of the original network, so it sees
  each training patch and, at evaluation, each sliding window (the engine's ``eval_input``
  hook), never a whole volume; the reference belongs to the patch size it was made at.
- *Model file*: ``model.json`` carries ``input_transform = {"kind": "harmofl", "r",
  "reference"}``, so ``engine.model.inference`` normalises a user's CT window by window
  exactly as in testing.
- *Weights 1/K* for the models too, as in the released code (which also truncates every
  site's training set to the smallest one, making 1/K and n_k / n the same there).
- ``alpha = 0`` turns the perturbation off (one backward pass per step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from engine.errors import ConfigError, FederationError
from engine.fl.base import SiteLogic
from engine.fl.fedavg import FedAvgEven
from engine.fl.protocol import ArrayDict, Exchange, Message, Reply
from engine.fl.registry import register
from engine.training.fourier import AmplitudeNormalisation, RunningAmplitude
from engine.training.sam import sharpness_aware

AMPLITUDE = "query.amplitude"
AMPLITUDE_PHASE = 6  # SiteRuntime.rng phase of the amplitude batches (0: training patches)


@dataclass(frozen=True)
class HarmoFLParams:
    alpha: float = 0.05  # weight-perturbation radius (README default)
    r: float = 0.0  # low-frequency window ratio; 0 = DC only, the released code
    momentum: float = 0.1  # running-amplitude momentum (intended by the released code)

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ConfigError(f"strategy.params.alpha: must be >= 0 (0: no weight perturbation), got {self.alpha}")
        if not 0.0 <= self.r <= 0.5:
            raise ConfigError(f"strategy.params.r: must be in [0, 0.5] (of the shortest patch side), got {self.r}")
        if not 0.0 < self.momentum <= 1.0:
            raise ConfigError(f"strategy.params.momentum: must be in (0, 1], got {self.momentum}")


class HarmoFLSite(SiteLogic):
    def __init__(self, params: HarmoFLParams, runtime: Any) -> None:
        super().__init__(params, runtime)
        if params.alpha > 0:
            runtime.gradient = sharpness_aware(params.alpha)

    def on_query_amplitude(self, message: Message) -> Reply:
        rt = self.runtime
        running = RunningAmplitude(self.params.r, self.params.momentum)
        rng = rt.rng(message.round, AMPLITUDE_PHASE)
        for _ in range(rt.config.train.local_steps):
            images, _ = rt.data.batch(rng)
            running.update(images.to(rt.device))
        assert running.value is not None
        return Reply(
            arrays={"amplitude": {"amplitude": running.value.cpu()}},
            metrics={"batches": running.batches},
            num_examples=rt.data.num_train,
        )

    def _use_reference(self, message: Message) -> None:
        reference = message.arrays.get("amplitude", {}).get("reference")
        if reference is None:
            raise FederationError(f"site {self.runtime.name}: '{message.kind}' message without a reference amplitude")
        transform = AmplitudeNormalisation(reference.to(self.runtime.device), self.params.r)
        self.runtime.train_input = self.runtime.eval_input = transform

    def on_train(self, message: Message) -> Reply:
        self._use_reference(message)
        return super().on_train(message)

    def on_evaluate(self, message: Message) -> Reply:
        self._use_reference(message)
        return super().on_evaluate(message)


@register
class HarmoFL(FedAvgEven):
    name = "harmofl"
    summary = "HarmoFL: Fourier amplitude normalisation of the input + weight-perturbed (sharpness-aware) local steps"
    Params = HarmoFLParams
    site_logic = HarmoFLSite

    def __init__(self, params: HarmoFLParams, sites: list) -> None:
        super().__init__(params, sites)
        self.reference: torch.Tensor | None = None

    def round(self, rnd: int, global_state: ArrayDict) -> Exchange:
        if self.reference is None:  # the first communication: shared once, then fixed
            replies = yield {s.index: Message(AMPLITUDE, rnd) for s in self.sites}
            amplitudes = [r.arrays["amplitude"]["amplitude"] for r in replies.values()]
            if not amplitudes:
                raise FederationError(f"round {rnd}: no site returned its amplitude")
            if len({tuple(a.shape) for a in amplitudes}) > 1:
                shapes = [list(a.shape) for a in amplitudes]
                raise FederationError(f"round {rnd}: the sites' amplitude windows differ in shape ({shapes})")
            self.reference = torch.stack([a.double() for a in amplitudes]).mean(dim=0).float()  # weights 1/K
        return (yield from super().round(rnd, global_state))

    def _with_reference(self, messages: dict[int, Message]) -> dict[int, Message]:
        assert self.reference is not None
        for message in messages.values():
            message.arrays["amplitude"] = {"reference": self.reference}
        return messages

    def train_messages(self, rnd: int, global_state: ArrayDict) -> dict[int, Message]:
        return self._with_reference(super().train_messages(rnd, global_state))

    def evaluate_messages(self, rnd: int, model: ArrayDict, split: str, **options: Any) -> dict[int, Message]:
        return self._with_reference(super().evaluate_messages(rnd, model, split, **options))

    def check_reply(self, message: Message, reply: Reply, model: ArrayDict) -> str | None:
        problem = super().check_reply(message, reply, model)
        if problem is not None or message.kind != AMPLITUDE:
            return problem
        amplitude = reply.arrays.get("amplitude", {}).get("amplitude")
        if amplitude is None:
            return "no amplitude"
        if amplitude.dim() != 4 or not bool((amplitude >= 0).all()):
            return f"an amplitude window is (C, w, w, w) and >= 0, got shape {list(amplitude.shape)}"
        return None

    def model_card_fields(self) -> dict[str, Any]:
        if self.reference is None:
            return {}
        return {"input_transform": {"kind": "harmofl", "r": self.params.r, "reference": self.reference.tolist()}}

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = super().state_dict()
        if self.reference is not None:
            tensors["amplitude_reference"] = self.reference.clone()
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        super().load_state_dict(tensors, meta)
        if "amplitude_reference" in tensors:
            self.reference = tensors["amplitude_reference"].clone()
