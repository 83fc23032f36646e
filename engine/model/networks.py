"""Network factory: MONAI networks by name, with validated arguments.

Every network maps a 1-channel CT patch to 2-channel logits (background, lesion). The
default is MONAI's residual 3D U-Net sized for a CPU workstation; the Auto-FedAvg paper
used a 3D U-Net of the same family with Dice loss.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch.nn as nn
from monai.networks.nets import BasicUNet, SegResNet, UNet

from engine.errors import ConfigError
from engine.registry import Registry, did_you_mean

NETWORKS: Registry[Callable[..., nn.Module]] = Registry("network")

IN_CHANNELS = 1
OUT_CHANNELS = 2  # background, lesion


@NETWORKS.register("unet", summary="MONAI residual 3D U-Net (default: 8-16-32-64 channels, InstanceNorm)")
def _unet(
    channels: tuple[int, ...] = (8, 16, 32, 64),
    strides: tuple[int, ...] = (2, 2, 2),
    num_res_units: int = 1,
    norm: str = "instance",
    dropout: float = 0.0,
) -> nn.Module:
    if len(strides) != len(channels) - 1:
        raise ConfigError(
            f"model.args.strides: needs len(channels) - 1 = {len(channels) - 1} values, got {len(strides)}"
        )
    return UNet(
        spatial_dims=3,
        in_channels=IN_CHANNELS,
        out_channels=OUT_CHANNELS,
        channels=tuple(channels),
        strides=tuple(strides),
        num_res_units=num_res_units,
        norm=norm,
        dropout=dropout,
    )


@NETWORKS.register("basicunet", summary="MONAI BasicUNet (6 feature sizes)")
def _basicunet(features: tuple[int, ...] = (8, 8, 16, 32, 64, 8), norm: str = "instance") -> nn.Module:
    return BasicUNet(spatial_dims=3, in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, features=tuple(features), norm=norm)


@NETWORKS.register("segresnet", summary="MONAI SegResNet")
def _segresnet(init_filters: int = 8, blocks_down: tuple[int, ...] = (1, 2, 2), norm: str = "instance") -> nn.Module:
    return SegResNet(
        spatial_dims=3,
        in_channels=IN_CHANNELS,
        out_channels=OUT_CHANNELS,
        init_filters=init_filters,
        blocks_down=tuple(blocks_down),
        blocks_up=(1,) * (len(blocks_down) - 1),  # one up-stage per down-sampling
        norm=norm,
    )


def network_args(name: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """Complete ``args`` with the factory's defaults; reject unknown argument names."""
    factory = NETWORKS.get(name)
    params = inspect.signature(factory).parameters
    for key in args:
        if key not in params:
            raise ConfigError(
                f"model.args.{key}: not an argument of network '{name}'{did_you_mean(key, list(params))}; "
                f"known: {', '.join(params)}"
            )
    full = {k: p.default for k, p in params.items()}
    full.update({k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})
    return {k: list(v) if isinstance(v, tuple) else v for k, v in full.items()}


def build_network(name: str, args: Mapping[str, Any] | None = None) -> nn.Module:
    """Instantiate the registered network ``name`` with ``args`` (validated)."""
    full = network_args(name, args or {})
    factory = NETWORKS.get(name)
    try:
        return factory(**{k: tuple(v) if isinstance(v, list) else v for k, v in full.items()})
    except (TypeError, ValueError, AssertionError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"model: network '{name}' rejects its arguments ({exc})") from None


def total_stride(name: str, args: Mapping[str, Any] | None = None) -> int:
    """Product of the down-sampling strides: patch sides must be multiples of it."""
    full = network_args(name, args or {})
    if "strides" in full:
        out = 1
        for s in full["strides"]:
            out *= int(s)
        return out
    if "features" in full:
        return 16
    if "blocks_down" in full:
        return 2 ** (len(full["blocks_down"]) - 1)
    return 1
