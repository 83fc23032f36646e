"""A site's persistent side of a run: data, network, trainer, and a versioned state store.

One :class:`SiteRuntime` lives as long as the site's process (one per site in the
simulation; one per ClientApp process over Flower), so torch, the network and the
preprocessed cases stay loaded between messages. What must survive a restart (the best
local model, Auto-FedAvg's cached peer models, personal models) goes to the
:class:`SiteStore` on the site's own disk.

A strategy's site logic changes training and evaluation only through the runtime's
generic hooks (``None`` = FedAvg's behaviour), set from what its messages carry:

- ``train_input`` / ``eval_input``: a transform of the network's input, applied to every
  training batch and to every sliding window at evaluation (FedRDN, HarmoFL);
- ``gradient``: how a training step computes its gradients (HarmoFL's perturbed step);
- ``on_update``: told every optimiser step's batch and parameter change (FedGS).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from engine.config import RunConfig
from engine.data.loader import SiteData
from engine.events import Event, SiteProgress
from engine.fl.protocol import ArrayDict
from engine.model.checkpoint import load_tensors, save_tensors
from engine.model.networks import build_network
from engine.training.evaluation import evaluate_cases
from engine.training.metrics import CaseResult, mean_or_none
from engine.training.trainer import (
    ExtraLoss,
    GradientFn,
    InputTransform,
    LocalTrainer,
    TrainStats,
    UpdateHook,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteInfo:
    """What the server knows of a site: its name and number of training cases."""

    index: int
    name: str
    num_train: int


class SiteStore:
    """Safetensors files versioned by round: ``<key>.r<round>.safetensors``.

    ``load(key, before=t)`` returns the newest version written in a round < t, so that
    redoing round t after a crash starts from exactly the state the first attempt saw,
    whatever that attempt had already written. The two newest versions are kept.
    """

    KEEP = 2

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _versions(self, key: str) -> list[tuple[int, Path]]:
        pattern = re.compile(re.escape(key) + r"\.r(\d+)\.safetensors$")
        found = []
        for path in self.root.glob(f"{key}.r*.safetensors"):
            match = pattern.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def save(self, key: str, rnd: int, tensors: ArrayDict, meta: dict[str, Any] | None = None) -> None:
        save_tensors(self.root / f"{key}.r{rnd:05d}.safetensors", tensors, {"meta": json.dumps(meta or {})})
        for _, old in self._versions(key)[: -self.KEEP]:
            old.unlink(missing_ok=True)

    def load(self, key: str, before: int | None = None) -> tuple[ArrayDict, dict[str, Any], int] | None:
        versions = [(r, p) for r, p in self._versions(key) if before is None or r < before]
        if not versions:
            return None
        rnd, path = versions[-1]
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("meta", "{}"))
        return load_tensors(path), meta, rnd


class SiteRuntime:
    """Everything a site needs to answer messages; strategies call it, never the reverse."""

    def __init__(
        self,
        index: int,
        data: SiteData,
        config: RunConfig,
        state_dir: Path,
        device: torch.device,
        emit: Callable[[Event], None] | None = None,
    ) -> None:
        self.index = index
        self.data = data
        self.config = config
        self.device = device
        self.store = SiteStore(state_dir)
        self._emit = emit or (lambda event: None)
        self.round = 0  # the round of the message in hand (SiteLogic.handle sets it), for progress events
        torch.manual_seed(config.seed)
        self.network = build_network(config.model.network, config.model.args).to(device)
        self.trainer = LocalTrainer(self.network, config.train, device)
        self.train_input: InputTransform | None = None
        self.eval_input: InputTransform | None = None
        self.gradient: GradientFn | None = None
        self.on_update: UpdateHook | None = None

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def info(self) -> SiteInfo:
        return SiteInfo(self.index, self.name, self.data.num_train)

    def rng(self, rnd: int, *phase: int) -> np.random.Generator:
        """A generator that depends only on (run seed, site, round, phase): a resumed or
        remote run draws exactly the patches an uninterrupted in-process run draws."""
        return np.random.default_rng([self.config.seed, self.index, rnd, *phase])

    def seed_torch(self, rnd: int, *phase: int) -> None:
        torch.manual_seed(int(self.rng(rnd, 7919, *phase).integers(2**62)))

    def set_weights(self, state: ArrayDict) -> None:
        self.network.load_state_dict(state, strict=True)

    def weights(self) -> ArrayDict:
        return {k: v.detach().to("cpu").clone() for k, v in self.network.state_dict().items()}

    def progress(self, rnd: int, phase: str, step: int, total: int, loss: float | None = None) -> None:
        self._emit(SiteProgress(round=rnd, site=self.name, phase=phase, step=step, total=total, loss=loss, rounds=self.config.rounds))

    def train(
        self,
        rnd: int,
        *,
        extra_loss: ExtraLoss | None = None,
        steps: int | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        phase: int = 0,
    ) -> TrainStats:
        """``steps`` local steps; ``optimizer`` (default: a fresh Adam of ``train``) and the
        random-stream ``phase`` let a strategy train a second model (Ditto's v_k) on its own draws."""
        steps = steps or self.config.train.local_steps
        self.seed_torch(rnd, phase)
        return self.trainer.train(
            self.data.batch,
            steps,
            self.rng(rnd, phase),
            extra_loss=extra_loss,
            on_step=lambda s, n, loss: self.progress(rnd, "train", s, n, loss),
            optimizer=optimizer,
            input_transform=self.train_input,
            gradient=self.gradient,
            on_update=self.on_update,
        )

    def evaluate(self, split: str, state: ArrayDict | None = None) -> list[CaseResult]:
        """Dice per case of ``state`` (or the current weights) on one of the site's splits."""
        if state is not None:
            self.set_weights(state)
        cfg = self.config
        return evaluate_cases(
            self.network,
            self.data.splits[split],
            cfg.data.patch_size,
            cfg.eval,
            self.device,
            self.eval_input,
            on_case=lambda i, n: self.progress(self.round, "evaluate", i, n),
        )

    def track_best_local(self, rnd: int, state: ArrayDict) -> float | None:
        """Validate the local model; keep it as ``best_local`` if it beats every earlier
        round (the paper's per-site model selection for local avg / local gen)."""
        dice = mean_or_none([c.dice for c in self.evaluate("val", state)])
        previous = self.store.load("best_local", before=rnd)
        best = previous[1]["val_dice"] if previous else -1.0
        if dice is not None and dice > best:
            self.store.save("best_local", rnd, state, {"val_dice": dice, "round": rnd})
        return dice
