"""LoRA adapters on MONAI's convolutions: W = W0 + s B A, merged back to a plain network."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from engine.model import lora
from engine.model.networks import build_network

ARGS = {"channels": [4, 8, 16], "strides": [2, 2]}
X = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(3))


def plain_and_adapted(rank: int = 8, alpha: float = 8.0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    plain = build_network("unet", ARGS).eval()
    adapted = build_network("unet", ARGS).eval()
    adapted.load_state_dict(plain.state_dict())
    lora.add_lora(adapted, rank, alpha, torch.Generator().manual_seed(0))
    return plain, adapted


def randomise_b(network: nn.Module) -> None:
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in network.named_parameters():
            if name.endswith(lora.FACTOR_B):
                param.copy_(0.1 * torch.randn(param.shape, generator=gen))


def test_every_convolution_is_adapted_once() -> None:
    network = build_network("unet", ARGS)
    convs = [m for m in network.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    assert any(isinstance(m, nn.ConvTranspose3d) for m in convs)
    assert lora.add_lora(network, 8, 8.0) == len(convs) > 0
    assert lora.add_lora(network, 8, 8.0) == 0  # idempotent
    assert lora.is_adapted(network)
    state = network.state_dict()
    assert len(lora.factor_names(state, "lora_A")) == len(lora.factor_names(state, "lora_B")) == len(convs)
    assert lora.is_adapted_state(state) and not lora.is_adapted_state(build_network("unet", ARGS).state_dict())


def test_a_fresh_adapter_is_the_identity() -> None:
    plain, adapted = plain_and_adapted()
    with torch.no_grad():
        assert torch.equal(plain(X), adapted(X))  # B = 0
    for name, t in adapted.state_dict().items():
        if name.endswith(lora.FACTOR_B):
            assert not t.any()


def test_shapes_rank_cap_and_kaiming_bound() -> None:
    _, adapted = plain_and_adapted()
    state = adapted.state_dict()
    for name in lora.factor_names(state, "lora_A"):
        prefix = name[: -len(lora.FACTOR_A)]
        d0, d1 = lora.matrix_shape(state[prefix + lora.ORIGINAL].shape)
        a, b = state[name], state[prefix + lora.FACTOR_B]
        r = min(8, d0, d1)
        assert a.shape == (r, d1) and b.shape == (d0, r), name
        # kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(d1), 1/sqrt(d1))
        assert 0.5 / math.sqrt(d1) < float(a.abs().max()) <= 1 / math.sqrt(d1)
    first = "model.0.conv.unit0.conv"  # 4 output channels, 1 x 3^3 inputs: rank capped at 4
    assert state[first + lora.FACTOR_B].shape == (4, 4)


def test_the_same_generator_seed_gives_the_same_a() -> None:
    _, one = plain_and_adapted()
    _, two = plain_and_adapted()
    assert all(torch.equal(t, two.state_dict()[n]) for n, t in one.state_dict().items())


@pytest.mark.parametrize("alpha", [8.0, 16.0])
def test_merged_state_is_the_adapted_network(alpha: float) -> None:
    plain, adapted = plain_and_adapted(alpha=alpha)
    randomise_b(adapted)
    state = adapted.state_dict()
    merged = lora.merged_state(state, alpha / 8)
    assert merged.keys() == plain.state_dict().keys()
    # by hand for a transposed convolution: (in, out, k, k, k) viewed as (in, out k^3)
    name = next(n for n, m in adapted.named_modules() if isinstance(m, nn.ConvTranspose3d))
    w0 = state[name + lora.ORIGINAL]
    expected = w0 + (alpha / 8) * (state[name + lora.FACTOR_B] @ state[name + lora.FACTOR_A]).reshape(w0.shape)
    assert torch.allclose(merged[name + ".weight"], expected, atol=1e-6)
    assert not torch.allclose(merged[name + ".weight"], w0)
    rebuilt = build_network("unet", ARGS).eval()
    rebuilt.load_state_dict(merged, strict=True)
    with torch.no_grad():
        assert torch.allclose(rebuilt(X), adapted(X), atol=1e-5)
        assert not torch.allclose(rebuilt(X), plain(X), atol=1e-3)


def test_train_only_moves_one_factor() -> None:
    _, adapted = plain_and_adapted()
    randomise_b(adapted)  # so that A receives a gradient
    adapted.train()
    before = {n: t.clone() for n, t in adapted.state_dict().items()}
    trainable = lora.train_only(adapted, "lora_A")
    assert len(trainable) == len(lora.factor_names(before, "lora_A"))
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    adapted(X).mean().backward()
    optimizer.step()
    after = adapted.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(n.endswith(lora.FACTOR_A) for n in changed), changed
    assert all(p.grad is None for n, p in adapted.named_parameters() if not n.endswith(lora.FACTOR_A))
