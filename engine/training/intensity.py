"""Intensity statistics of CT images and the normalisation with them (FedRDN, ALGORITHMS.md 10).

The images here are preprocessed CT: the HU window mapped to [0, 1] and clipped
(:mod:`engine.data.transforms`), so air, lung and the padding around a case all sit at
exactly 0. Statistics over every voxel would then mostly describe how much air a scan
holds. ``body=True`` [I] counts only the voxels above that floor, i.e. the body inside
the HU window (ALGORITHMS.md 10, CT note); a site or image without such voxels falls
back to all voxels.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

EPS = 1e-8  # FedRDN's (x - mu) / (sigma + eps)


def body_mask(image: torch.Tensor) -> torch.Tensor:
    """Voxels above the lower end of the HU window (``image > 0``)."""
    return image > 0


def intensity_stats(images: Iterable[torch.Tensor], *, body: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) standard deviation pooled over every voxel of
    ``images`` (each (C, X, Y, Z) or (B, C, X, Y, Z)); float64, shape (C,).

    Pooled, not a mean of per-image statistics: a site's mu and sigma are those of all its
    training voxels together, like a data loader's running statistics over every batch.
    """
    count = total = squares = None
    for image in images:
        x = image.detach().double()
        x = x.unsqueeze(0) if x.dim() == 4 else x
        x = x.transpose(0, 1).reshape(x.shape[1], -1)  # (C, voxels)
        mask = body_mask(x) if body else torch.ones_like(x, dtype=torch.bool)
        mask = torch.where(mask.any(dim=1, keepdim=True), mask, torch.ones_like(mask))  # no body: all voxels
        w = mask.double()
        n, s, q = w.sum(dim=1), (w * x).sum(dim=1), (w * x * x).sum(dim=1)
        count, total, squares = (n, s, q) if count is None else (count + n, total + s, squares + q)
    if count is None:
        raise ValueError("intensity_stats: no images")
    mean = total / count
    std = (squares / count - mean * mean).clamp(min=0.0).sqrt()
    return mean, std


def normalise(image: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x - mu) / (sigma + eps) for a batch (B, C, X, Y, Z); ``mean``/``std`` are (C,) for
    every image, or (B, C) for one set per image."""
    shape = (-1, image.shape[1]) + (1,) * (image.dim() - 2)
    mean = mean.to(image.device, image.dtype).reshape(shape)
    std = std.to(image.device, image.dtype).reshape(shape)
    return (image - mean) / (std + EPS)
