"""A site's cases, preprocessed once and kept in memory, and its patch batches.

Volumes are small after resampling (a 128^3 OpenKBP CT at 4 mm is ~1 M voxels), so a
site keeps every case of every split in memory; that makes each training step cost one
crop per patch instead of a file read and a resampling.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from engine.config import DataConfig
from engine.data.site import Case, SiteDataset
from engine.data.transforms import patch_sampler, preprocess_case
from engine.io.readers import load_label, load_volume

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class PreparedCase:
    case_id: str
    image: torch.Tensor  # (1, X, Y, Z) float32 in [0, 1]
    label: torch.Tensor  # (1, X, Y, Z) float32 in {0, 1}
    item: dict[str, Any] = field(repr=False)  # the MONAI dict, with fg/bg indices

    @property
    def lesion_voxels(self) -> int:
        return int(self.label.sum().item())


def prepare_case(case: Case, cfg: DataConfig) -> PreparedCase:
    image = load_volume(case.image)
    label = load_label(case.label, image)
    item = preprocess_case(image, label, cfg)
    return PreparedCase(case.case_id, item["image"].as_tensor(), item["label"].as_tensor(), item)


class SiteData:
    """Every case of one site, preprocessed, by split."""

    def __init__(self, dataset: SiteDataset, cfg: DataConfig) -> None:
        self.dataset = dataset
        self.cfg = cfg
        self.splits: dict[str, list[PreparedCase]] = {}
        for split in SPLITS:
            self.splits[split] = [prepare_case(c, cfg) for c in dataset.split(split)]
        log.info(
            "site %s: %s",
            dataset.root.name,
            ", ".join(f"{s} {len(v)}" for s, v in self.splits.items()),
        )
        self._crop = patch_sampler(cfg)

    @property
    def name(self) -> str:
        return self.dataset.root.name

    @property
    def num_train(self) -> int:
        return len(self.splits["train"])

    def batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` random patches from random training cases (seeded by ``rng``)."""
        cases = self.splits["train"]
        images, labels = [], []
        for index in rng.integers(len(cases), size=self.cfg.batch_size):
            self._crop.set_random_state(seed=int(rng.integers(2**31 - 1)))
            patch = self._crop(cases[int(index)].item)[0]
            images.append(patch["image"].as_tensor())
            labels.append(patch["label"].as_tensor())
        return torch.stack(images), torch.stack(labels)
