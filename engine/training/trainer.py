"""The local-training step: minibatch loss, backward, Adam step (AMP on CUDA).

Strategies change local training only through four generic hooks, so every algorithm
shares this loop and its speed (see benchmarks/train_step.py):

- ``extra_loss``: a term added to the loss (FedProx's proximal term);
- ``input_transform``: applied to every batch of images on the device before the network
  (FedRDN's random intensity normalisation, HarmoFL's amplitude normalisation);
- ``gradient``: how a step computes the gradients the optimiser applies, by calling the
  step's closure (forward, loss, backward) once or more, like ``torch.optim``'s
  ``step(closure)`` (HarmoFL's sharpness-aware weight perturbation calls it twice);
- ``on_update``: told, after every optimiser step, the batch and how much each trainable
  parameter moved (FedGS accumulates a scaled copy of the updates).
"""

from __future__ import annotations

import functools
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
InputTransform = Callable[[torch.Tensor], torch.Tensor]
#: forward + loss + backward of the current batch at the network's current weights; returns the loss
Closure = Callable[[], float]
#: fills the parameters' ``.grad`` for one optimiser step by calling the closure; returns the loss to report
GradientFn = Callable[[nn.Module, Closure], float]
#: ``(images, labels, {parameter name: w_after - w_before})`` after every optimiser step
UpdateHook = Callable[[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]], None]


class DivergedError(FedSegError):
    """The training loss became NaN/Inf (learning rate too high, or corrupt data)."""


def plain_gradient(network: nn.Module, closure: Closure) -> float:
    """One backward pass at the current weights (every strategy but HarmoFL)."""
    return closure()


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
        input_transform: InputTransform | None = None,
        gradient: GradientFn | None = None,
        on_update: UpdateHook | None = None,
    ) -> TrainStats:
        network = self.network.to(self.device)
        network.train()
        optimizer = optimizer or make_optimizer(network, self.cfg)
        scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        gradient = gradient or plain_gradient
        losses: list[float] = []
        for step in range(1, steps + 1):
            image, label = batches(rng)
            image = image.to(self.device, non_blocking=True)
            label = label.to(self.device, non_blocking=True)
            if input_transform is not None:
                image = input_transform(image)
            closure = functools.partial(self._closure, network, optimizer, scaler, image, label, extra_loss, step)
            # only a hook that wants the parameter change pays for a copy of the parameters
            before = {n: p.detach().clone() for n, p in network.named_parameters()} if on_update else None
            value = gradient(network, closure)
            scaler.step(optimizer)
            scaler.update()
            if on_update is not None and before is not None:
                with torch.no_grad():
                    on_update(image, label, {n: p.detach() - before[n] for n, p in network.named_parameters()})
            losses.append(value)
            if on_step is not None:
                on_step(step, steps, value)
        return TrainStats(steps=steps, mean_loss=float(np.mean(losses)), last_loss=losses[-1])

    def _closure(
        self,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        image: torch.Tensor,
        label: torch.Tensor,
        extra_loss: ExtraLoss | None,
        step: int,
    ) -> float:
        """Zero the gradients, then loss and (scaled) backward at the current weights."""
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.use_amp):
            loss = self.loss_fn(network(image), label)
        if extra_loss is not None:
            loss = loss + extra_loss(network)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise DivergedError(f"local training diverged at step {step} (loss {value}); lower train.lr")
        scaler.scale(loss).backward()
        return value
