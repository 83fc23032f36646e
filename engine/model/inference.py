"""Whole-volume prediction for a user's CT: preprocess, sliding windows, back to source.

The CT is preprocessed exactly as in training (``engine.data.transforms``), segmented
with MONAI's Gaussian-weighted sliding-window inference, and the lesion probability is
resampled back onto the CT's own canonical grid (MONAI ``ResampleToMatch``) before the
argmax, so the mask has the CT's shape and geometry and can be written back with
:func:`engine.io.writers.save_mask`.

A model whose strategy transformed the network's input (``card.input_transform``) gets
the same transform at every sliding window: FedRDN normalises with the CT's own body
intensity statistics (its test-time rule, the CT standing for its own site); HarmoFL
replaces each window's low-frequency amplitude by the federation's reference amplitude.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from monai.data import MetaTensor
from monai.transforms import ResampleToMatch

from engine.config import DataConfig, EvalConfig
from engine.data.transforms import preprocessing, to_meta
from engine.errors import CheckpointError
from engine.io.volume import Volume
from engine.model.checkpoint import MODEL_CARD, ModelCard
from engine.training.evaluation import sliding_window_logits
from engine.training.fourier import AmplitudeNormalisation
from engine.training.intensity import intensity_stats, normalise

InputTransform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Prediction:
    mask: np.ndarray  # uint8, canonical orientation, same shape as the CT
    lesion_voxels: int
    lesion_ml: float


def predict_volume(
    network: nn.Module,
    card: ModelCard,
    volume: Volume,
    device: torch.device,
    eval_cfg: EvalConfig | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> Prediction:
    """Segment ``volume`` with ``network`` (described by ``card``)."""
    eval_cfg = eval_cfg or EvalConfig()
    data_cfg = DataConfig(
        lesion_label=card.lesion_label,
        target_spacing=tuple(card.target_spacing),
        hu_window=tuple(card.hu_window),
        patch_size=tuple(card.patch_size),
    )
    original = to_meta(volume)
    item = preprocessing(data_cfg, with_label=False)({"image": original})
    image: MetaTensor = item["image"]
    if on_progress:
        on_progress(f"sliding-window inference on {tuple(image.shape[1:])} voxels")
    transform = input_transform_for(card, image.as_tensor())
    logits = sliding_window_logits(network, image.as_tensor(), card.patch_size, eval_cfg, device, transform).cpu()
    probability = torch.softmax(logits[0], dim=0)[1:2]  # (1, X, Y, Z) lesion probability
    probability = MetaTensor(probability, affine=image.affine)
    back = ResampleToMatch(mode="bilinear", padding_mode="zeros")(probability, img_dst=original)
    mask = (back.as_tensor()[0] > 0.5).numpy().astype(np.uint8)
    if mask.shape != volume.shape:  # ResampleToMatch keeps the destination grid; guard anyway
        raise RuntimeError(f"prediction shape {mask.shape} differs from the CT {volume.shape}")
    voxels = int(mask.sum())
    return Prediction(mask=mask, lesion_voxels=voxels, lesion_ml=voxels * volume.voxel_volume_ml)


def input_transform_for(card: ModelCard, image: torch.Tensor) -> InputTransform | None:
    """The input transform ``card`` asks for, for the preprocessed (1, X, Y, Z) ``image``."""
    spec = card.input_transform
    if not spec:
        return None
    kind = spec.get("kind")
    if kind == "fedrdn":
        mean, std = intensity_stats([image], body=spec.get("statistics", "body") == "body")
        return lambda window: normalise(window, mean, std)
    if kind == "harmofl":
        return AmplitudeNormalisation(torch.tensor(spec["reference"], dtype=torch.float32), float(spec["r"]))
    raise CheckpointError(f"{MODEL_CARD}: unknown input_transform kind {kind!r} (written by a newer FedSeg?)")
