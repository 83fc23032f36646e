"""Resources (presets, icon, desktop entry) are found in a checkout and in an installed
wheel, and a missing one is one clear error naming where it was looked for."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import app.resources
from app.resources import resource_path
from engine.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
RUNTIME = ["window_presets.toml", "icons/fedseg-studio.svg", "linux/fedseg-studio.desktop"]


def test_a_checkout_finds_its_resources_folder() -> None:
    for name in RUNTIME:
        assert resource_path(name) == REPO / "resources" / name


def test_a_missing_resource_names_every_folder_looked_in() -> None:
    with pytest.raises(ConfigError, match=r"'nope\.toml' not found in .*resources.*share.fedseg-studio.resources"):
        resource_path("nope.toml")


def test_the_wheel_carries_the_resources_and_the_installed_app_finds_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = dict(os.environ, PYTHON=sys.executable, PIP_WHEEL_ARGS="--no-build-isolation")
    subprocess.run(["bash", str(REPO / "packaging" / "project_wheel.sh"), str(tmp_path / "wheels")], env=env, check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "wheels").glob("fedseg_studio-*.whl")
    prefix = tmp_path / "venv"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "app/resources.py" in names and "engine/federation/programs.py" in names
        data = [n for n in names if ".data/data/" in n]
        for name in data:  # what pip does with a wheel's data: <prefix>/<path>
            target = prefix / name.split(".data/data/", 1)[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
    # the installed app module lives in site-packages, with no resources/ beside it
    monkeypatch.setattr(app.resources, "__file__", str(prefix / "lib" / "site-packages" / "app" / "resources.py"))
    monkeypatch.setattr(sys, "prefix", str(prefix))
    for name in RUNTIME:
        found = resource_path(name)
        assert found == prefix / "share" / "fedseg-studio" / "resources" / name
        assert found.read_bytes() == (REPO / "resources" / name).read_bytes()
