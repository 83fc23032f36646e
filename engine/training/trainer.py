"""The local-training step: minibatch loss, backward, Adam step (AMP on CUDA).

Strategies change local training only through ``extra_loss`` (e.g. FedProx's proximal
term), so every algorithm shares this loop and its speed (see benchmarks/train_step.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from engine.config import TrainConfig
from engine.errors import FedSegError
from engine.training.losses import build_loss

BatchSource = Callable[[np.random.Generator], tuple[torch.Tensor, torch.Tensor]]
ExtraLoss = Callable[[nn.Module], torch.Tensor]
StepCallback = Callable[[int, int, float], None]


class DivergedError(FedSegError):
    """The training loss became NaN/Inf (learning rate too high, or corrupt data)."""


@dataclass(frozen=True)
class TrainStats:
    steps: int
    mean_loss: float
    last_loss: float


def make_optimizer(network: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam with the paper's betas. A fresh optimiser every round [I]: rounds are the
    unit of resumption, and FedGS's reference code also restarts it each round."""
    return torch.optim.Adam(network.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


class LocalTrainer:
    """Runs ``steps`` optimisation steps of ``network`` on batches from ``batches``."""

    def __init__(self, network: nn.Module, cfg: TrainConfig, device: torch.device) -> None:
        self.network = network
        self.cfg = cfg
        self.device = device
        self.loss_fn = build_loss(cfg.loss)
        self.use_amp = bool(cfg.amp and device.type == "cuda")

    def train(
        self,
        batches: BatchSource,
        steps: int,
        rng: np.random.Generator,
        *,
        extra_loss: ExtraLoss | None = None,
        on_step: StepCallback | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> TrainStats:
        network = self.network.to(self.device)
        network.train()
        optimizer = optimizer or make_optimizer(network, self.cfg)
        scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        losses: list[float] = []
        for step in range(1, steps + 1):
            image, label = batches(rng)
            image = image.to(self.device, non_blocking=True)
            label = label.to(self.device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.use_amp):
                loss = self.loss_fn(network(image), label)
            if extra_loss is not None:
                loss = loss + extra_loss(network)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise DivergedError(f"local training diverged at step {step} (loss {value}); lower train.lr")
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(value)
            if on_step is not None:
                on_step(step, steps, value)
        return TrainStats(steps=steps, mean_loss=float(np.mean(losses)), last_loss=losses[-1])
