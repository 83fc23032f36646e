"""Where FedSeg Studio's resources are (window/level presets, icons), however it was installed.

``resources/`` sits beside ``app/`` in a checkout, an editable install and a PyInstaller
folder (the spec copies it there, and frozen modules' ``__file__`` point into that folder).
A wheel installs it as data under ``<prefix>/share/fedseg-studio/resources`` (pyproject's
``data-files``): the environment's prefix, or the user base for ``pip install --user``.
"""

from __future__ import annotations

import site
import sys
from pathlib import Path

from engine.errors import ConfigError

__all__ = ["resource_dirs", "resource_path"]


def resource_dirs() -> list[Path]:
    """The folders looked in, in order."""
    beside_app = Path(__file__).resolve().parents[1] / "resources"
    installed = [Path(base) / "share" / "fedseg-studio" / "resources" for base in (sys.prefix, site.USER_BASE) if base]
    return [beside_app, *installed]


def resource_path(relative: str) -> Path:
    """The file ``relative`` (e.g. ``"icons/fedseg-studio.svg"``) of the first folder that has it.

    Raises :class:`ConfigError` naming every folder looked in: an installation without its
    resources is broken, and the message says where they were expected.
    """
    folders = resource_dirs()
    for folder in folders:
        if (folder / relative).is_file():
            return folder / relative
    raise ConfigError(f"resource {relative!r} not found in {', '.join(str(f) for f in folders)}: the installation is incomplete")
