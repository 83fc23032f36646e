"""MONAI transform chains: case preprocessing and random patch sampling.

Preprocessing (deterministic, done once per case and cached in memory):
resample to the target spacing (``Spacingd``: bilinear for CT, nearest for labels),
map the HU window to [0, 1] with clipping (``ScaleIntensityRanged``), pad to at least one
patch (``SpatialPadd``) and precompute lesion/background voxel indices
(``FgBgToIndicesd``) so that every random crop is cheap.

Sampling (random, seeded per site/round/step): ``RandCropByPosNegLabeld`` centred on a
lesion voxel with probability ``pos_fraction``, else on a background voxel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    FgBgToIndicesd,
    RandCropByPosNegLabeld,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from engine.config import DataConfig
from engine.io.volume import Volume

KEYS = ("image", "label")


def preprocessing(cfg: DataConfig, *, with_label: bool = True) -> Compose:
    """The deterministic chain applied to every case (and to a CT at inference)."""
    keys = list(KEYS) if with_label else ["image"]
    steps: list[Any] = [
        Spacingd(
            keys=keys,
            pixdim=cfg.target_spacing,
            mode=("bilinear", "nearest") if with_label else "bilinear",
            padding_mode="border",
        ),
        ScaleIntensityRanged(keys="image", a_min=cfg.hu_window[0], a_max=cfg.hu_window[1], b_min=0.0, b_max=1.0, clip=True),
    ]
    if with_label:
        steps += [
            SpatialPadd(keys=keys, spatial_size=cfg.patch_size, mode="constant"),
            FgBgToIndicesd(keys="label", fg_postfix="_fg", bg_postfix="_bg"),
        ]
    return Compose(steps)


def to_meta(volume: Volume, dtype: torch.dtype = torch.float32) -> MetaTensor:
    """A channel-first MetaTensor carrying the volume's RAS affine (what MONAI resamples by)."""
    array = np.ascontiguousarray(volume.array)
    return MetaTensor(torch.as_tensor(array[None]).to(dtype), affine=torch.as_tensor(volume.affine, dtype=torch.float64))


def preprocess_case(image: Volume, label: Volume, cfg: DataConfig) -> dict[str, Any]:
    """Resample, window and index one case; the label becomes binary (lesion vs rest)."""
    lesion = (np.asarray(label.array) == cfg.lesion_label).astype(np.float32)
    item = {
        "image": to_meta(image),
        "label": MetaTensor(torch.from_numpy(lesion[None]), affine=torch.as_tensor(label.affine, dtype=torch.float64)),
    }
    out = preprocessing(cfg)(item)
    out["label"] = out["label"].round()
    return out


def patch_sampler(cfg: DataConfig) -> RandCropByPosNegLabeld:
    """One random crop per call; seed it with ``set_random_state`` before each batch."""
    return RandCropByPosNegLabeld(
        keys=list(KEYS),
        label_key="label",
        spatial_size=cfg.patch_size,
        pos=cfg.pos_fraction,
        neg=1.0 - cfg.pos_fraction,
        num_samples=1,
        fg_indices_key="label_fg",
        bg_indices_key="label_bg",
        allow_smaller=False,
    )
