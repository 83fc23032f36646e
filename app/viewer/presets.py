"""Window/level presets, read from ``resources/window_presets.toml`` (data, not code)."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from app.resources import resource_path
from engine.errors import ConfigError

__all__ = ["default_presets_path", "load_window_presets"]


def default_presets_path() -> Path:
    """``window_presets.toml`` of this installation's resources."""
    return resource_path("window_presets.toml")


def _number(path: Path, where: str, entry: dict, key: str) -> float:
    value = entry.get(key)
    # bool is an int subclass; `width = true` is a typo, not a width of 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{path}: {where}: '{key}' must be a number (got {value!r})")
    return float(value)


def load_window_presets(path: str | Path) -> dict[str, tuple[float, float]]:
    """Read ``[[preset]]`` tables (``name``, ``width``, ``level`` in HU) in file order.

    Parameters
    ----------
    path:
        The TOML file.

    Returns
    -------
    dict
        Preset name -> ``(width, level)``, in the order of the file (menu and keys 1-9).

    Raises
    ------
    ConfigError
        When the file is missing or malformed, naming the file and the preset.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            document = tomllib.load(fh)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read window presets ({err.strerror})") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from err
    entries = document.get("preset")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: no [[preset]] tables")
    presets: dict[str, tuple[float, float]] = {}
    for number, entry in enumerate(entries, start=1):
        where = f"preset {number}"
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{path}: {where}: 'name' must be a non-empty string")
        if name in presets:
            raise ConfigError(f"{path}: {where}: name '{name}' is used twice")
        width = _number(path, where, entry, "width")
        if width <= 0:
            raise ConfigError(f"{path}: {where} ('{name}'): 'width' must be > 0 (got {width:g})")
        presets[name] = (width, _number(path, where, entry, "level"))
    return presets
