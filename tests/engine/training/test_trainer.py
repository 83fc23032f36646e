"""LocalTrainer on a tiny real UNet (CPU): learning, determinism, divergence, extra loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.config import TrainConfig
from engine.errors import FedSegError
from engine.model.networks import build_network
from engine.training.trainer import DivergedError, LocalTrainer, TrainStats, make_optimizer

CPU = torch.device("cpu")
TINY = {"channels": [4, 8], "strides": [2]}



def tiny_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network("unet", TINY)


def fixed_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    label = torch.zeros(2, 1, 8, 8, 8)
    label[0, 0, 2:5, 2:6, 3:6] = 1
    label[1, 0, 4:7, 1:4, 1:4] = 1
    image = 0.3 * torch.rand(2, 1, 8, 8, 8, generator=g) + 0.6 * label
    return image, label


def random_batches(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch drawn from ``rng`` only (the trainer's determinism contract)."""
    image = torch.from_numpy(rng.random((2, 1, 8, 8, 8)).astype(np.float32))
    label = (image > 0.7).float()
    return image, label


def state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_loss_decreases_on_a_fixed_batch():
    net = tiny_net()
    trainer = LocalTrainer(net, TrainConfig(lr=1e-2, device="cpu"), CPU)
    batch = fixed_batch()
    losses: list[float] = []
    stats = trainer.train(lambda rng: batch, 30, np.random.default_rng(0), on_step=lambda s, n, v: losses.append(v))
    assert isinstance(stats, TrainStats)
    assert stats.steps == 30 and len(losses) == 30
    assert stats.last_loss == losses[-1]
    assert stats.mean_loss == pytest.approx(float(np.mean(losses)))
    assert 0.0 <= min(losses) and max(losses) <= 1.0  # soft Dice loss
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1
    # the trained weights really changed and fit better than the initial ones
    loss_fn = trainer.loss_fn
    with torch.no_grad():
        after = float(loss_fn(net(batch[0]), batch[1]))
        before = float(loss_fn(tiny_net()(batch[0]), batch[1]))
    assert after < before - 0.1


def test_on_step_reports_step_and_total():
    net = tiny_net()
    calls = []
    LocalTrainer(net, TrainConfig(device="cpu"), CPU).train(
        random_batches, 3, np.random.default_rng(1), on_step=lambda s, n, v: calls.append((s, n))
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]


def _run(seed_net: int, seed_data: int, steps: int = 4) -> dict[str, torch.Tensor]:
    net = tiny_net(seed_net)
    torch.manual_seed(123)
    LocalTrainer(net, TrainConfig(lr=1e-3, device="cpu"), CPU).train(random_batches, steps, np.random.default_rng(seed_data))
    return state(net)


def test_same_seeds_give_bitwise_identical_weights():
    a = _run(0, 5)
    b = _run(0, 5)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_different_data_seed_gives_different_weights():
    a = _run(0, 5)
    c = _run(0, 6)
    assert any(not torch.equal(a[name], c[name]) for name in a)


def test_nan_batch_raises_diverged_error():
    net = tiny_net()
    before = state(net)
    image, label = fixed_batch()
    image[0, 0, 0, 0, 0] = float("nan")
    trainer = LocalTrainer(net, TrainConfig(device="cpu"), CPU)
    with pytest.raises(DivergedError) as info:
        trainer.train(lambda rng: (image, label), 5, np.random.default_rng(0))
    assert isinstance(info.value, FedSegError)
    assert "step 1" in str(info.value)
    # no step was taken with the NaN loss
    after = state(net)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_nan_extra_loss_raises_diverged_error():
    trainer = LocalTrainer(tiny_net(), TrainConfig(device="cpu"), CPU)
    with pytest.raises(DivergedError):
        trainer.train(random_batches, 2, np.random.default_rng(0), extra_loss=lambda n: torch.tensor(float("inf")))


def test_extra_loss_is_added():
    steps, lr = 5, 1e-3
    plain = tiny_net()
    LocalTrainer(plain, TrainConfig(lr=lr, device="cpu"), CPU).train(random_batches, steps, np.random.default_rng(0))

    net = tiny_net()
    start = state(net)

    def huge(network: torch.nn.Module) -> torch.Tensor:
        # gradient +1e4 for every parameter: Adam then moves each one by ~ -lr per step
        return 1e4 * sum(p.sum() for p in network.parameters())

    losses = []
    stats = LocalTrainer(net, TrainConfig(lr=lr, device="cpu"), CPU).train(
        random_batches, steps, np.random.default_rng(0), extra_loss=huge, on_step=lambda s, n, v: losses.append(v)
    )
    end = state(net)
    assert any(not torch.equal(end[k], state(plain)[k]) for k in end)
    for name, param in net.named_parameters():
        delta = end[name] - start[name]
        assert torch.allclose(delta, torch.full_like(delta, -steps * lr), rtol=0.02, atol=1e-5), name
    # the reported loss includes the extra term (a Dice loss alone is <= 1)
    expected_first = 1e4 * sum(float(t.sum()) for n, t in start.items() if n in dict(net.named_parameters()))
    assert abs(losses[0] - expected_first) <= 1.0 + 1e-3 * abs(expected_first)
    assert stats.last_loss == losses[-1]


def test_make_optimizer_uses_config():
    net = tiny_net()
    cfg = TrainConfig(lr=3e-4, betas=(0.5, 0.99), weight_decay=1e-5, device="cpu")
    opt = make_optimizer(net, cfg)
    assert isinstance(opt, torch.optim.Adam)
    group = opt.param_groups[0]
    assert group["lr"] == 3e-4 and tuple(group["betas"]) == (0.5, 0.99) and group["weight_decay"] == 1e-5


def test_amp_is_off_on_cpu():
    assert LocalTrainer(tiny_net(), TrainConfig(amp=True, device="cpu"), CPU).use_amp is False
