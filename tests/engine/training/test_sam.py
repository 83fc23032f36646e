"""The sharpness-aware gradient (HarmoFL's weight perturbation, ALGORITHMS.md 3.2 and 14):
the perturbation has norm alpha, a step takes two backward passes, the optimiser steps at
the restored weights with the gradient taken at the perturbed ones."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from engine.config import TrainConfig
from engine.model.networks import build_network
from engine.training.losses import build_loss
from engine.training.sam import perturb, sharpness_aware
from engine.training.trainer import LocalTrainer

CPU = torch.device("cpu")


def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network("unet", {"channels": [4, 8], "strides": [2]})


def batch(rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    label = torch.zeros(2, 1, 8, 8, 8)
    label[:, :, 2:6, 2:6, 2:5] = 1.0
    return 0.4 * torch.rand(2, 1, 8, 8, 8, generator=g) + 0.5 * label, label


def weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in net.named_parameters()}


@pytest.mark.parametrize("alpha", [0.05, 0.5])
def test_perturbation_norm_equals_alpha(alpha):
    net = tiny_net()
    image, label = batch()
    build_loss("dice")(net(image), label).backward()
    before = weights(net)
    saved = perturb(net, alpha)
    after = weights(net)
    norm = torch.sqrt(sum(((after[n] - before[n]) ** 2).sum() for n in before))
    assert norm.item() == pytest.approx(alpha, rel=1e-5)
    # the move is along the gradient
    p = next(net.parameters())
    name = next(n for n, _ in net.named_parameters())
    grad_norm = torch.sqrt(sum((q.grad**2).sum() for q in net.parameters()))
    assert torch.allclose(after[name] - before[name], alpha * p.grad / grad_norm, atol=1e-7)
    assert len(saved) == len([q for q in net.parameters() if q.grad is not None])


def test_two_backward_passes_per_step_and_weights_restored():
    net = tiny_net()
    forwards, backwards = [], []
    net.register_forward_hook(lambda *args: forwards.append(1))
    next(net.parameters()).register_hook(lambda g: backwards.append(1))
    steps = 3
    trainer = LocalTrainer(net, TrainConfig(device="cpu"), CPU)
    stats = trainer.train(batch, steps, np.random.default_rng(0), gradient=sharpness_aware(0.05))
    assert len(forwards) == 2 * steps and len(backwards) == 2 * steps
    assert stats.steps == steps


def test_the_step_is_taken_at_w_with_the_gradient_at_w_plus_delta():
    alpha, lr = 0.05, 0.1
    net = tiny_net()
    reference = copy.deepcopy(net)
    image, label = batch()
    loss_fn = build_loss("dice")
    # by hand: g at w, delta = alpha g / ||g||, g~ at w + delta, w1 = w - lr g~
    loss_fn(reference(image), label).backward()
    g = {n: p.grad.clone() for n, p in reference.named_parameters()}
    norm = torch.sqrt(sum((v**2).sum() for v in g.values()))
    w0 = weights(reference)
    with torch.no_grad():
        for n, p in reference.named_parameters():
            p.add_(alpha * g[n] / norm)
            p.grad = None
    loss_fn(reference(image), label).backward()
    expected = {n: w0[n] - lr * p.grad for n, p in reference.named_parameters()}

    reported = []
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    LocalTrainer(net, TrainConfig(device="cpu"), CPU).train(
        lambda rng: (image, label), 1, np.random.default_rng(0), optimizer=optimizer, gradient=sharpness_aware(alpha),
        on_step=lambda s, n, v: reported.append(v),
    )
    for n, p in net.named_parameters():
        assert torch.allclose(p.detach(), expected[n], atol=1e-6), n
    # the loss reported is the one at the unperturbed weights
    with torch.no_grad():
        assert reported[0] == pytest.approx(float(loss_fn(tiny_net()(image), label)), rel=1e-6)
