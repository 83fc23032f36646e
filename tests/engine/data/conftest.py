"""Fixtures for the site-data tests: tiny MSD sites written in tmp_path, shared OpenKBP data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest

from engine.data.phantoms import make_demo_sites

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
OPENKBP = SHARED / "data" / "openkbp-sites"

AFFINE = np.diag([-2.0, -2.0, 3.0, 1.0])
AFFINE[:3, 3] = [10.0, 12.0, -30.0]


@pytest.fixture
def openkbp() -> Path:
    """The shared OpenKBP multi-site data (read-only); skips when it is absent."""
    if not (OPENKBP / "site-a" / "dataset.json").is_file():
        pytest.skip(f"shared OpenKBP data not found at {OPENKBP} (needs the ../shared checkout)")
    return OPENKBP


def tiny_case(seed: int, shape: tuple[int, int, int] = (12, 12, 6), lesion: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A small int16 HU image (air, body, bright blob) and its uint8 label."""
    rng = np.random.default_rng(seed)
    image = np.full(shape, -1000, dtype=np.int16)
    image[2:-2, 2:-2, :] = 40
    label = np.zeros(shape, dtype=np.uint8)
    if lesion:
        c = rng.integers(4, shape[0] - 5)
        label[c : c + 2, 4:7, 2:4] = 1
        image[label == 1] = 100
    image = (image + rng.normal(0, 5, shape)).astype(np.int16)
    return image, label


def save(array: np.ndarray, path: Path, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


@pytest.fixture
def write_site(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``write_site(name, n=5, splits=None, lesion=True, extra={})`` -> site folder.

    Writes ``n`` tiny valid cases ``case_0 .. case_{n-1}`` and a dataset.json (with
    ``splits`` when given). ``lesion`` may be a bool or a per-case list of bools.
    """

    def _write(
        name: str = "site",
        n: int = 5,
        *,
        splits: dict[str, list[str]] | None = None,
        lesion: bool | list[bool] = True,
        extra: dict | None = None,
    ) -> Path:
        root = tmp_path / name
        training = []
        for i in range(n):
            has = lesion[i] if isinstance(lesion, list) else lesion
            image, label = tiny_case(i, lesion=has)
            save(image, root / "imagesTr" / f"case_{i}.nii.gz")
            save(label, root / "labelsTr" / f"case_{i}.nii.gz")
            training.append({"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"})
        meta = {
            "name": f"tiny-{name}",
            "labels": {"0": "background", "1": "lesion"},
            "modality": {"0": "CT"},
            "numTraining": n,
            "training": training,
        }
        if splits is not None:
            meta["splits"] = splits
        meta.update(extra or {})
        (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
        return root

    return _write


@pytest.fixture(scope="session")
def demo_sites(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three phantom sites, seed 0, written once per test session."""
    return make_demo_sites(tmp_path_factory.mktemp("phantoms"), sites=3, seed=0)
