"""Evaluate a network on preprocessed cases with MONAI sliding-window inference.

Validation and test Dice are computed on the resampled grid (the target spacing) [I]:
every site is then scored on the same voxel size, and no interpolation of the label is
needed. ``engine.model.inference`` resamples predictions back to the source grid for
the masks a user saves.

An ``input_transform`` (FedRDN's or HarmoFL's input normalisation) is applied to every
sliding window just before the network, i.e. to exactly the patch-sized inputs the
network saw in training. That is what HarmoFL's amplitude normalisation needs (it is the
network's first layer in the original, so it sees one input window at a time); for
FedRDN's per-voxel affine normalisation, per window and whole image are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from monai.inferers import sliding_window_inference

from engine.config import EvalConfig
from engine.data.loader import PreparedCase
from engine.training.metrics import CaseResult, case_dice


@torch.no_grad()
def sliding_window_logits(
    network: nn.Module,
    image: torch.Tensor,
    patch_size: Sequence[int],
    cfg: EvalConfig,
    device: torch.device,
    input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Logits (1, 2, X, Y, Z) of one (1, X, Y, Z) image; Gaussian-weighted windows."""
    network.eval()
    predictor = network if input_transform is None else (lambda window: network(input_transform(window)))
    use_amp = device.type == "cuda"
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
        logits = sliding_window_inference(
            image.unsqueeze(0).to(device),
            roi_size=tuple(patch_size),
            sw_batch_size=cfg.sw_batch_size,
            predictor=predictor,
            overlap=cfg.sw_overlap,
            mode="gaussian",
        )
    return logits.float()


def evaluate_cases(
    network: nn.Module,
    cases: Sequence[PreparedCase],
    patch_size: Sequence[int],
    cfg: EvalConfig,
    device: torch.device,
    input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    on_case: Callable[[int, int], None] | None = None,
) -> list[CaseResult]:
    """Per-case Dice of the argmax lesion mask against the label; ``on_case(i, n)`` after
    the i-th of n cases (a site's progress)."""
    network = network.to(device)
    results = []
    for case in cases:
        logits = sliding_window_logits(network, case.image, patch_size, cfg, device, input_transform)
        prediction = logits.argmax(dim=1).cpu().float()  # (1, X, Y, Z)
        results.append(
            CaseResult(
                case_id=case.case_id,
                dice=case_dice(prediction, case.label),
                lesion_voxels=case.lesion_voxels,
                total_voxels=int(case.label.numel()),
            )
        )
        if on_case is not None:
            on_case(len(results), len(cases))
    return results
