"""Segmentation metrics and the Auto-FedAvg paper's run metrics.

Per case: Dice (MONAI ``compute_dice``; an empty prediction of an empty lesion counts 1,
as FedGS's ``zero_division=1``) and FedGS's small/large-lesion split adapted to 3D:
``a^-1 = voxels / lesion voxels`` and a case is *small* when ``a^-1 >= tau``
(ALGORITHMS.md 2.2 and 2.6). DiceS averages the small cases, DiceL the non-empty others.

Per run (Auto-FedAvg section 4.2; ALGORITHMS.md 0):
- *global test avg*: the global model with the best mean validation Dice over sites,
  tested on every site's test set, averaged over sites;
- *local avg* / *local gen*: diagonal / off-diagonal mean of the K x K matrix whose entry
  (i, j) is site i's best local model tested on site j.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from monai.metrics import compute_dice
from scipy.stats import wilcoxon


@dataclass(frozen=True)
class CaseResult:
    case_id: str
    dice: float
    lesion_voxels: int
    total_voxels: int

    @property
    def inverse_fraction(self) -> float:
        """FedGS's a^-1 (infinite for an empty lesion)."""
        return math.inf if self.lesion_voxels == 0 else self.total_voxels / self.lesion_voxels

    def is_small(self, ratio: float) -> bool:
        return self.lesion_voxels > 0 and self.inverse_fraction >= ratio

    def to_dict(self) -> dict:
        return asdict(self)


def case_dice(prediction: torch.Tensor, label: torch.Tensor) -> float:
    """Dice of two binary (1, X, Y, Z) masks; 1.0 when both are empty."""
    pred = torch.cat([1 - prediction, prediction]).unsqueeze(0).float()
    true = torch.cat([1 - label, label]).unsqueeze(0).float()
    value = compute_dice(pred, true, include_background=False, ignore_empty=False)
    return float(value.item())


def mean_or_none(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def summarize_cases(cases: Sequence[CaseResult], small_ratio: float) -> dict[str, float | int | None]:
    """Mean Dice, DiceS, DiceL of a list of cases."""
    small = [c.dice for c in cases if c.is_small(small_ratio)]
    large = [c.dice for c in cases if c.lesion_voxels > 0 and not c.is_small(small_ratio)]
    return {
        "dice": mean_or_none([c.dice for c in cases]),
        "dice_small": mean_or_none(small),
        "dice_large": mean_or_none(large),
        "n_small": len(small),
        "n_large": len(large),
    }


def local_matrix_metrics(matrix: Sequence[Sequence[float]]) -> dict[str, float]:
    """``local_avg`` (diagonal mean) and ``local_gen`` (off-diagonal mean) of a K x K matrix.

    NaN cells (a site that could not be tested, e.g. lost in a federation) are left out
    of the means; a mean over no cell is NaN.
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {m.shape}")

    def mean(cells: np.ndarray) -> float:
        cells = cells[np.isfinite(cells)]
        return float(cells.mean()) if cells.size else float("nan")

    return {"local_avg": mean(np.diag(m)), "local_gen": mean(m[~np.eye(m.shape[0], dtype=bool)])}


def wilcoxon_p(dice_a: Sequence[float], dice_b: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired per-case Dice of two runs.

    Returns 1.0 when every pair is equal (no evidence of a difference).
    """
    a, b = np.asarray(dice_a, float), np.asarray(dice_b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    if a.size == 0 or np.array_equal(a, b):
        return 1.0
    return float(wilcoxon(a, b, zero_method="wilcox", alternative="two-sided").pvalue)


def per_site_dice(results: Mapping[str, Sequence[CaseResult]]) -> dict[str, float | None]:
    return {site: mean_or_none([c.dice for c in cases]) for site, cases in results.items()}
