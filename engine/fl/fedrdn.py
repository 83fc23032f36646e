"""FedRDN: random data normalisation (Yan et al., CVPR 2025; ALGORITHMS.md 10).

Once, before training, every site k computes the per-channel mean mu_k and standard
deviation sigma_k of its training images and shares them; the server keeps all K pairs
and sends the whole set with every ``train`` message. In local training each image is
normalised with a *randomly drawn* site's statistics, x' = (x - mu_j) / (sigma_j + 1e-8),
j ~ U{1..K} (the site's own included): the federation's intensity distributions become
an augmentation. Validation and test normalise with the site's *own* statistics only.
The server is FedAvg (n_k / n): FedRDN is plug-and-play on the input side.

Protocol: round 1 starts with one ``query.intensity_stats`` exchange (a site answers
2 C floats, C = 1 channel for CT); a site that missed it is asked again at the start of
the next round, so every site is asked until it has answered once. The statistics are
server state (checkpointed, so a resumed run does not ask again).

Choices [I]:

- *CT statistics over body voxels* (``statistics = "body"``): the images are the HU
  window mapped to [0, 1], so air, lung and padding are exactly 0; mu and sigma over every
  voxel would mostly measure how much air a scan holds. "body" counts only voxels above 0
  (inside the HU window, ALGORITHMS.md 10 CT note); "all" counts every voxel like
  FL-MedSegBench. The statistics are pooled over all voxels of all training cases (whole
  preprocessed volumes, not patches). The normalisation itself applies to every voxel.
- *A site drawn per image* (``sample = "image"``, the paper); ``"batch"`` draws one per
  batch like FL-MedSegBench. Draws come from the site's seeded generator
  (``SiteRuntime.rng(round, 5)``), so runs are reproducible and independent of patch draws.
- *Input transform at evaluation*: applied to every sliding window (the engine's generic
  ``eval_input`` hook); for this per-voxel affine map that equals normalising the whole image.
- *Inference on a new CT* (``model.json``): a user's CT comes from no federation site,
  so ``engine.model.inference`` applies FedRDN's test-time rule to the CT itself: it is
  normalised with its own body statistics (computed like a site's, over the one case).
  The card also lists every site's (mu, sigma), already known to every site, so a site
  can reproduce its own test-time normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engine.errors import FederationError
from engine.fl.base import SiteLogic
from engine.fl.fedavg import FedAvg
from engine.fl.protocol import ArrayDict, Exchange, Message, Reply
from engine.fl.registry import register
from engine.registry import check_choice
from engine.training.intensity import EPS, intensity_stats, normalise

STATS = "query.intensity_stats"
BODY, ALL = "body", "all"
IMAGE, BATCH = "image", "batch"
DRAW_PHASE = 5  # SiteRuntime.rng phase of the per-image site draws (0: patches, 1: beta steps)


@dataclass(frozen=True)
class FedRDNParams:
    sample: str = IMAGE  # the paper; "batch": FL-MedSegBench
    statistics: str = BODY  # [I] CT; "all": every voxel, like FL-MedSegBench

    def __post_init__(self) -> None:
        check_choice("strategy.params.sample", self.sample, (IMAGE, BATCH))
        check_choice("strategy.params.statistics", self.statistics, (BODY, ALL))


class RandomNormalisation:
    """Training input transform: each image (or the whole batch) normalised with the
    statistics of a site drawn uniformly from ``mean``/``std`` ((K, C) each)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, rng: np.random.Generator, per_image: bool) -> None:
        self.mean, self.std, self.rng, self.per_image = mean, std, rng, per_image
        self.draws: list[int] = []  # which site's statistics each image got (for tests and logs)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        b = image.shape[0]
        drawn = self.rng.integers(self.mean.shape[0], size=b if self.per_image else 1)
        index = torch.as_tensor(np.resize(drawn, b))
        self.draws.extend(int(j) for j in index)
        return normalise(image, self.mean[index], self.std[index])


class FedRDNSite(SiteLogic):
    def __init__(self, params: FedRDNParams, runtime: Any) -> None:
        super().__init__(params, runtime)
        self._own: tuple[torch.Tensor, torch.Tensor] | None = None
        # test-time rule: the site's own statistics, whatever a message carries
        runtime.eval_input = self.test_input

    def own_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, sigma) of this site's training images, computed once per process."""
        if self._own is None:
            images = (case.image for case in self.runtime.data.splits["train"])
            self._own = intensity_stats(images, body=self.params.statistics == BODY)
        return self._own

    def test_input(self, image: torch.Tensor) -> torch.Tensor:
        return normalise(image, *self.own_stats())

    def on_query_intensity_stats(self, message: Message) -> Reply:
        mean, std = self.own_stats()
        stats = {"mean": mean.clone(), "std": std.clone()}
        return Reply(arrays={"stats": stats}, num_examples=self.runtime.data.num_train)

    def on_train(self, message: Message) -> Reply:
        stats = message.arrays.get("stats")
        if not stats:
            raise FederationError(f"site {self.runtime.name}: the train message carries no intensity statistics")
        rng = self.runtime.rng(message.round, DRAW_PHASE)
        self.runtime.train_input = RandomNormalisation(stats["mean"], stats["std"], rng, self.params.sample == IMAGE)
        try:
            return super().on_train(message)
        finally:
            self.runtime.train_input = None


@register
class FedRDN(FedAvg):
    name = "fedrdn"
    summary = "FedRDN: train on inputs normalised with a random site's intensity statistics (shared once)"
    Params = FedRDNParams
    site_logic = FedRDNSite

    def __init__(self, params: FedRDNParams, sites: list) -> None:
        super().__init__(params, sites)
        self.stats: dict[int, tuple[list[float], list[float]]] = {}  # site index -> (mu, sigma) per channel

    def round(self, rnd: int, global_state: ArrayDict) -> Exchange:
        missing = [s.index for s in self.sites if s.index not in self.stats]
        if missing:  # round 1, or a site that has not answered yet
            replies = yield {k: Message(STATS, rnd) for k in missing}
            for k, reply in replies.items():
                self.stats[k] = (reply.arrays["stats"]["mean"].tolist(), reply.arrays["stats"]["std"].tolist())
        if not self.stats:
            raise FederationError(f"round {rnd}: no site shared its intensity statistics")
        return (yield from super().round(rnd, global_state))

    def stats_arrays(self) -> ArrayDict:
        """Every known site's statistics, (K', C) each, in site order."""
        known = sorted(self.stats)
        return {
            "mean": torch.tensor([self.stats[k][0] for k in known], dtype=torch.float64),
            "std": torch.tensor([self.stats[k][1] for k in known], dtype=torch.float64),
        }

    def train_messages(self, rnd: int, global_state: ArrayDict) -> dict[int, Message]:
        messages = super().train_messages(rnd, global_state)
        for message in messages.values():
            message.arrays["stats"] = self.stats_arrays()
        return messages

    def check_reply(self, message: Message, reply: Reply, model: ArrayDict) -> str | None:
        problem = super().check_reply(message, reply, model)
        if problem is not None or message.kind != STATS:
            return problem
        stats = reply.arrays.get("stats", {})
        mean, std = stats.get("mean"), stats.get("std")
        if mean is None or std is None:
            return "no intensity statistics"
        channels = {len(m) for m, _ in self.stats.values()}
        if mean.dim() != 1 or mean.shape != std.shape or (channels and {mean.numel()} != channels):
            return f"intensity statistics of shape {list(mean.shape)}/{list(std.shape)} do not fit the other sites'"
        if not bool((std > 0).all()):
            return "intensity standard deviation must be > 0 (an image without contrast?)"
        return None

    def model_card_fields(self) -> dict[str, Any]:
        names = {s.index: s.name for s in self.sites}
        per_site = {names[k]: {"mean": m, "std": s} for k, (m, s) in sorted(self.stats.items())}
        transform = {"kind": "fedrdn", "statistics": self.params.statistics, "eps": EPS, "site_stats": per_site}
        return {"input_transform": transform}

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = super().state_dict()
        meta["intensity_stats"] = {str(k): {"mean": m, "std": s} for k, (m, s) in self.stats.items()}
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        super().load_state_dict(tensors, meta)
        saved = meta.get("intensity_stats", {})
        self.stats = {int(k): (list(v["mean"]), list(v["std"])) for k, v in saved.items()}
