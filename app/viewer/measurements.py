"""Lesion volume (mL) of each mask and the Dice overlap of truth vs prediction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["Measurements", "dice_coefficient", "lesion_mask", "measure"]


def lesion_mask(label: np.ndarray, lesion_label: int = 1) -> np.ndarray:
    """The lesion of a label map, as a boolean mask.

    A multi-label map (OpenKBP: 1 = PTV70 beside the organs at risk 2..10) gives the voxels
    of ``lesion_label``; a binary map (0/1, 0/255, ...) gives every non-zero voxel, so a
    mask saved by another tool is shown whatever value it uses for the lesion.
    """
    nonzero = label[label != 0]
    if nonzero.size and (nonzero != nonzero.flat[0]).any():
        return label == lesion_label
    return label != 0


def dice_coefficient(truth: np.ndarray, prediction: np.ndarray) -> float:
    """Dice = 2 |T ∩ P| / (|T| + |P|) of two boolean masks; 1.0 when both are empty.

    Both-empty counts as full agreement, as in :func:`engine.training.metrics.case_dice`.
    """
    total = int(np.count_nonzero(truth)) + int(np.count_nonzero(prediction))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(truth & prediction)) / total


@dataclass(frozen=True)
class Measurements:
    """What the measurements label shows.

    Attributes
    ----------
    volume_ml:
        Role -> lesion volume in mL (voxel count x voxel volume), for the masks that exist.
    dice:
        Dice of truth vs prediction when both exist, else ``None``.
    """

    volume_ml: dict[str, float]
    dice: float | None

    def text(self) -> str:
        """One line, e.g. ``"truth 12.40 mL | prediction 11.95 mL | Dice 0.912"``."""
        parts = [f"{role} {ml:.2f} mL" for role, ml in self.volume_ml.items()]
        if self.dice is not None:
            parts.append(f"Dice {self.dice:.3f}")
        return " | ".join(parts) if parts else "No mask loaded"


def measure(masks: Mapping[str, np.ndarray | None], voxel_volume_ml: float) -> Measurements:
    """Measure every present mask; Dice needs both ``"truth"`` and ``"prediction"``."""
    volume_ml = {
        role: int(np.count_nonzero(mask)) * voxel_volume_ml
        for role, mask in masks.items()
        if mask is not None
    }
    truth, prediction = masks.get("truth"), masks.get("prediction")
    dice = None if truth is None or prediction is None else dice_coefficient(truth, prediction)
    return Measurements(volume_ml, dice)
