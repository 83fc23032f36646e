"""LoRA adapters for the convolutions of a MONAI network (ALGORITHMS.md 6.1).

A frozen kernel W0 gets a low-rank update, W = W0 + s * B A, with B (d0 x r) zero at
the start, A (r x d1) Kaiming-uniform and s = alpha / r. Implemented as a
``torch.nn.utils.parametrize`` parametrization of ``weight``: the convolution's own
forward is unchanged, and the state dict of an adapted module holds
``<module>.parametrizations.weight.original`` (W0) and
``<module>.parametrizations.weight.0.lora_A`` / ``.lora_B``.

Choices [I]:

* A kernel of shape (c0, c1, k, k, k) is the matrix (d0, d1) = (c0, c1 k^3): the first
  dimension against the rest, a view of the tensor. For ``Conv3d`` c0 is the output
  channels; ``ConvTranspose3d`` stores (in, out, k, k, k), so there c0 is the input
  channels. One rule for both, and the rank of the update is the same either way.
* Every ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d`` is adapted (in MONAI's U-Net that
  is every layer with weights, residual and output convolutions included).
* The rank is capped per layer at min(r, d0, d1): a first layer with 4 output channels
  gains nothing from r = 8 (B A already reaches full rank at 4), and the cap keeps B^T B
  and A A^T invertible for DEeR's noise regulator. The scale stays s = alpha / r for every
  layer, so one number describes the adapter.
* A is drawn with ``kaiming_uniform_(a=sqrt(5))``, the initialisation of PEFT's LoRA and of
  ``nn.Linear``, from an optional ``torch.Generator`` (the server seeds it so that every
  runner builds the same A).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn.utils import parametrize


ORIGINAL = ".parametrizations.weight.original"
FACTOR_A = ".parametrizations.weight.0.lora_A"
FACTOR_B = ".parametrizations.weight.0.lora_B"
FACTORS = {"lora_A": FACTOR_A, "lora_B": FACTOR_B}
ArrayDict = dict[str, torch.Tensor]
CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def matrix_shape(shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
    """(d0, d1) of a kernel: first dimension against the product of the others."""
    return int(shape[0]), int(math.prod(shape[1:]))


class LoRA(nn.Module):
    """The parametrization W0 -> W0 + scale * (B @ A) reshaped to the kernel."""

    def __init__(self, shape: torch.Size, rank: int, alpha: float, generator: torch.Generator | None = None) -> None:
        super().__init__()
        d0, d1 = matrix_shape(shape)
        r = min(rank, d0, d1)
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(r, d1))
        self.lora_B = nn.Parameter(torch.zeros(d0, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5), generator=generator)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        delta = (self.lora_B @ self.lora_A).reshape(weight.shape)
        return weight + self.scale * delta.to(weight.dtype)


def add_lora(network: nn.Module, rank: int, alpha: float, generator: torch.Generator | None = None) -> int:
    """Adapt every convolution of ``network`` in place (idempotent); return how many."""
    count = 0
    for module in network.modules():
        if isinstance(module, CONVOLUTIONS) and not parametrize.is_parametrized(module, "weight"):
            weight = module.weight
            lora = LoRA(weight.shape, rank, alpha, generator).to(weight.device, weight.dtype)
            parametrize.register_parametrization(module, "weight", lora)
            count += 1
    return count


def is_adapted(network: nn.Module) -> bool:
    return any(isinstance(m, LoRA) for m in network.modules())


def train_only(network: nn.Module, factor: str) -> list[nn.Parameter]:
    """Freeze every parameter except the LoRA factor ``factor`` ("lora_A" or "lora_B");
    return the trainable ones."""
    suffix = FACTORS[factor]
    trainable = []
    for name, param in network.named_parameters():
        param.requires_grad_(name.endswith(suffix))
        if param.requires_grad:
            trainable.append(param)
    return trainable


def factor_names(state: ArrayDict, factor: str) -> list[str]:
    """Names of the tensors of one factor in an adapted state dict."""
    suffix = FACTORS[factor]
    return [name for name in state if name.endswith(suffix)]


def is_adapted_state(state: ArrayDict) -> bool:
    return any(name.endswith(ORIGINAL) for name in state)


def merged_state(state: ArrayDict, scale: float) -> ArrayDict:
    """The plain network's state dict of an adapted one: W = W0 + scale * B A per kernel,
    every other tensor unchanged (loadable by ``build_network`` + ``load_state_dict``)."""
    merged: ArrayDict = {}
    for name, tensor in state.items():
        if name.endswith(ORIGINAL):
            prefix = name[: -len(ORIGINAL)]
            b, a = state[prefix + FACTOR_B].double(), state[prefix + FACTOR_A].double()
            update = scale * (b @ a).reshape(tensor.shape)
            merged[prefix + ".weight"] = (tensor.double() + update).to(tensor.dtype)
        elif not name.endswith((FACTOR_A, FACTOR_B)):
            merged[name] = tensor
    return merged
