"""Segmentation losses by name (MONAI). The Auto-FedAvg paper trains with Dice loss."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn
from monai.losses import DiceCELoss, DiceLoss

from engine.registry import Registry

LOSSES: Registry[Callable[[], nn.Module]] = Registry("loss")


@LOSSES.register("dice", summary="soft Dice on the softmax lesion channel (the paper's loss)")
def _dice() -> nn.Module:
    return DiceLoss(to_onehot_y=True, softmax=True, include_background=False)


@LOSSES.register("dicece", summary="Dice + cross-entropy, equal weights")
def _dicece() -> nn.Module:
    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)


def build_loss(name: str) -> nn.Module:
    return LOSSES.get(name)()
