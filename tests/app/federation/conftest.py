"""Shared pieces of the federation panel tests: error recorder, tiny run, phantom site."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import DataConfig, ModelConfig, RunConfig, StrategyConfig, TrainConfig


class ErrorRecorder:
    """Stands in for the modal QMessageBox: records (title, message)."""

    def __init__(self) -> None:
        self.shown: list[tuple[str, str]] = []

    def __call__(self, parent, title: str, message: str) -> None:
        self.shown.append((title, message))


@pytest.fixture
def errors() -> ErrorRecorder:
    return ErrorRecorder()


def tiny_config(rounds: int = 2, algorithm: str = "auto-fedavg") -> RunConfig:
    """CPU-sized run (as tests/integration): a 4-8-16 U-Net, 32x32x16 patches, 2 steps."""
    return RunConfig(
        rounds=rounds,
        data=DataConfig(target_spacing=(4.0, 4.0, 6.0), patch_size=(32, 32, 16)),
        model=ModelConfig("unet", {"channels": [4, 8, 16], "strides": [2, 2]}),
        train=TrainConfig(local_steps=2, lr=1e-3, device="cpu"),
        strategy=StrategyConfig(algorithm, {"beta_steps": 2} if algorithm == "auto-fedavg" else {}),
    )


@pytest.fixture(scope="session")
def phantom_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One phantom site (16 cases, 64 x 64 x 40 voxels), written once."""
    from engine.data.phantoms import make_demo_sites

    (site,) = make_demo_sites(tmp_path_factory.mktemp("sites"), sites=1, seed=0)
    return site


@pytest.fixture
def tiny():
    """``tiny(rounds=2, algorithm="auto-fedavg")`` -> the CPU-sized RunConfig."""
    return tiny_config
