"""Shared pieces of the federation panel tests: error recorder, phantom site (the tiny run
is in tests/app/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


class ErrorRecorder:
    """Stands in for the modal QMessageBox: records (title, message)."""

    def __init__(self) -> None:
        self.shown: list[tuple[str, str]] = []

    def __call__(self, parent, title: str, message: str) -> None:
        self.shown.append((title, message))


@pytest.fixture
def errors() -> ErrorRecorder:
    return ErrorRecorder()


@pytest.fixture(scope="session")
def phantom_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One phantom site (16 cases, 64 x 64 x 40 voxels), written once."""
    from engine.data.phantoms import make_demo_sites

    (site,) = make_demo_sites(tmp_path_factory.mktemp("sites"), sites=1, seed=0)
    return site

