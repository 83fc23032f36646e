"""Qt tests run offscreen (no display is needed, on CI or here); a phantom CT and a tiny
real model shared by the app's tests, and a CPU-sized run."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from engine.config import DataConfig, ModelConfig, RunConfig, StrategyConfig, TrainConfig
from engine.data.phantoms import generate_phantom_case, phantom_site_params
from engine.model.checkpoint import ModelCard, save_model
from engine.model.networks import build_network, network_args

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

TINY_NET = {"channels": [4, 8], "strides": [2]}


@pytest.fixture(scope="session")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """One phantom CT and its label as NIfTI (64 x 64 x 40 voxels, 2 x 2 x 2.5 mm)."""
    folder = tmp_path_factory.mktemp("phantom")
    image, label, affine = generate_phantom_case(np.random.default_rng([0, 0, 1]), phantom_site_params(0, 0))
    nib.save(nib.Nifti1Image(image, affine), folder / "ct.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), folder / "label.nii.gz")
    return folder / "ct.nii.gz", folder / "label.nii.gz", image, label


@pytest.fixture
def one_slice_slabs(monkeypatch: pytest.MonkeyPatch) -> int:
    """Read NIfTI files one axial slice a slab (engine.io.stoppable): the phantom CT then
    takes 40 slabs, as a large CT would at the real slab size. Returns the slab count."""
    from engine.io import stoppable

    monkeypatch.setattr(stoppable, "SLAB_BYTES", 64 * 64 * 2)  # one int16 slice of the phantom
    return 40


@pytest.fixture
def tiny_model() -> Callable[[Path, list[float]], Path]:
    """``tiny_model(folder, target_spacing)``: an untrained 2-level U-Net saved as a model
    folder (model.json + weights), seeded: real inference, in a fraction of a second."""

    def make(folder: Path, target_spacing: list[float]) -> Path:
        torch.manual_seed(0)
        state = build_network("unet", TINY_NET).state_dict()
        card = ModelCard("unet", network_args("unet", TINY_NET), target_spacing, [-160.0, 240.0], [16, 16, 16], 1)
        return save_model(folder, state, card)

    return make


def tiny_config(rounds: int = 2, algorithm: str = "auto-fedavg") -> RunConfig:
    """CPU-sized run (as tests/integration): a 4-8-16 U-Net, 32x32x16 patches, 2 steps."""
    return RunConfig(
        rounds=rounds,
        data=DataConfig(target_spacing=(4.0, 4.0, 6.0), patch_size=(32, 32, 16)),
        model=ModelConfig("unet", {"channels": [4, 8, 16], "strides": [2, 2]}),
        train=TrainConfig(local_steps=2, lr=1e-3, device="cpu"),
        strategy=StrategyConfig(algorithm, {"beta_steps": 2} if algorithm == "auto-fedavg" else {}),
    )


@pytest.fixture
def tiny():
    """``tiny(rounds=2, algorithm="auto-fedavg")`` -> the CPU-sized RunConfig."""
    return tiny_config
