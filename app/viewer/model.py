"""State of the CT viewer: volume, cursor, window/level, overlays. No widgets.

Following napari's split, :class:`ViewerModel` holds the state and announces every change
with a Qt signal; the slice views and controls (``slice_view.py``, ``controls.py``) only
subscribe and call its methods, so tests drive the model and check the widgets.

Geometry: the volume is in RAS canonical orientation (:mod:`engine.io.volume`), array axis
0 towards the patient's Right, 1 Anterior, 2 Superior. The cursor is a voxel index
``(i, j, k)``; each orientation shows the plane through the cursor normal to one axis.

Memory layout: the CT's (X, Y, Z) C-order array makes an axial plane a strided gather
(every value ``Z`` elements apart), which took ~2 ms to copy and ~6 ms to render for a
512 x 512 slice. The model therefore keeps a (Z, Y, X) C-contiguous copy of the CT for
display (one extra CT in memory; ~0.6 s to build for 512 x 512 x 300) and stores masks
(Z, Y, X) only, handing out (X, Y, Z) views. Axial planes are then contiguous, coronal
planes contiguous row by row, and each plane comes out as image rows (screen vertical
axis) by columns (screen horizontal axis), the order Qt draws.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from app.viewer.measurements import Measurements, measure
from app.viewer.overlay import OverlaySettings
from app.viewer.presets import default_presets_path, load_window_presets
from engine.errors import VolumeError
from engine.io.volume import Volume
from engine.registry import did_you_mean

__all__ = ["ORIENTATIONS", "ROLES", "SLICE_AXIS", "ViewerModel"]

#: Overlay roles, bottom to top.
ROLES = ("truth", "prediction")
#: The array axis each orientation's slice is normal to.
SLICE_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}
ORIENTATIONS = tuple(SLICE_AXIS)

DEFAULT_OVERLAYS = {
    "truth": OverlaySettings(colour=(0, 200, 80), opacity=0.4, style="fill"),
    "prediction": OverlaySettings(colour=(255, 60, 60), opacity=1.0, style="outline"),
}
_DEFAULT_PRESET = "soft tissue"
_MIN_WIDTH = 1.0


def _unknown(kind: str, name: str, allowed: tuple[str, ...] | list[str]) -> ValueError:
    hint = did_you_mean(name, list(allowed))
    return ValueError(f"unknown {kind} '{name}'{hint}; known: {', '.join(allowed)}")


class ViewerModel(QObject):
    """The CT viewer's state, with one signal per kind of change.

    Parameters
    ----------
    presets_path:
        TOML file of window/level presets; default ``resources/window_presets.toml``.
    parent:
        Qt parent.
    """

    volume_changed = Signal()
    #: (i, j, k) of the new cursor voxel.
    cursor_changed = Signal(int, int, int)
    #: (width, level) in HU.
    window_changed = Signal(float, float)
    #: role whose mask was set or cleared.
    mask_changed = Signal(str)
    #: role whose colour, opacity, style or visibility changed.
    overlay_changed = Signal(str)
    difference_mode_changed = Signal(bool)

    def __init__(self, presets_path: str | Path | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self._presets = load_window_presets(presets_path or default_presets_path())
        first = _DEFAULT_PRESET if _DEFAULT_PRESET in self._presets else next(iter(self._presets))
        self._window = self._presets[first]
        self._volume: Volume | None = None
        self._display: np.ndarray | None = None  # CT as (Z, Y, X), C-contiguous
        self._cursor = (0, 0, 0)
        self._masks: dict[str, np.ndarray | None] = dict.fromkeys(ROLES)
        self._overlays = dict(DEFAULT_OVERLAYS)
        self._difference_mode = False
        self._measurements = Measurements({}, None)

    # --- volume and cursor -------------------------------------------------------------
    @property
    def volume(self) -> Volume | None:
        return self._volume

    def set_volume(self, volume: Volume) -> None:
        """Show ``volume``; the cursor goes to its centre and masks of the old CT are dropped."""
        if volume.array.ndim != 3:
            raise VolumeError(volume.source.path, f"is not a 3D volume (shape {volume.array.shape})")
        self._volume = volume
        self._display = np.ascontiguousarray(volume.array.transpose(2, 1, 0))
        self._masks = dict.fromkeys(ROLES)
        self._measurements = Measurements({}, None)
        self._cursor = tuple(n // 2 for n in volume.shape)  # type: ignore[assignment]
        self.volume_changed.emit()
        self.cursor_changed.emit(*self._cursor)

    @property
    def cursor(self) -> tuple[int, int, int]:
        return self._cursor

    def set_cursor(self, i: int, j: int, k: int) -> None:
        """Move the cursor to voxel ``(i, j, k)``, clamped into the volume."""
        if self._volume is None:
            return
        cursor = tuple(int(np.clip(v, 0, n - 1)) for v, n in zip((i, j, k), self._volume.shape))
        if cursor != self._cursor:
            self._cursor = cursor  # type: ignore[assignment]
            self.cursor_changed.emit(*cursor)

    def slice_index(self, orientation: str) -> int:
        """Index of the slice ``orientation`` shows (the cursor's coordinate on its normal)."""
        return self._cursor[self._axis(orientation)]

    def slice_count(self, orientation: str) -> int:
        return 0 if self._volume is None else self._volume.shape[self._axis(orientation)]

    def scroll(self, orientation: str, steps: int) -> None:
        """Move ``orientation``'s slice by ``steps`` (+: towards Superior/Anterior/Right)."""
        cursor = list(self._cursor)
        cursor[self._axis(orientation)] += int(steps)
        self.set_cursor(*cursor)

    # --- window / level ----------------------------------------------------------------
    @property
    def window(self) -> tuple[float, float]:
        """(width, level) in HU."""
        return self._window

    @property
    def presets(self) -> dict[str, tuple[float, float]]:
        """Preset name -> (width, level), in menu/shortcut order."""
        return dict(self._presets)

    def set_window(self, width: float, level: float) -> None:
        window = (max(float(width), _MIN_WIDTH), float(level))
        if window != self._window:
            self._window = window
            self.window_changed.emit(*window)

    def adjust_window(self, d_width: float, d_level: float) -> None:
        self.set_window(self._window[0] + d_width, self._window[1] + d_level)

    def apply_preset(self, name: str) -> None:
        """Set the window to preset ``name``; ValueError with a suggestion if unknown."""
        if name not in self._presets:
            raise _unknown("window preset", name, list(self._presets))
        self.set_window(*self._presets[name])

    def preset_name(self) -> str | None:
        """Name of the preset equal to the current window, or ``None`` (custom window)."""
        return next((n for n, wl in self._presets.items() if wl == self._window), None)

    # --- masks and overlays ------------------------------------------------------------
    def mask(self, role: str) -> np.ndarray | None:
        """Boolean (X, Y, Z) mask of ``role`` on the CT grid (a read-only view), or ``None``."""
        mask = self._masks[self._check_role(role)]
        return None if mask is None else mask.transpose(2, 1, 0)

    def set_mask(self, role: str, mask: Volume | np.ndarray | None) -> None:
        """Set (or clear, with ``None``) the mask of ``role``.

        Integer/boolean masks count voxels ``> 0``, float masks (probabilities) ``>= 0.5``.

        Raises
        ------
        VolumeError
            When no CT is loaded or the mask's shape differs from the CT's.
        """
        self._check_role(role)
        name = mask.source.path if isinstance(mask, Volume) else f"{role} mask"
        array = mask.array if isinstance(mask, Volume) else mask
        if array is not None:
            if self._volume is None:
                raise VolumeError(name, "no CT is loaded to put the mask on")
            array = np.asarray(array)
            if array.shape != self._volume.shape:
                raise VolumeError(
                    name,
                    f"mask shape {tuple(array.shape)} does not match the CT shape "
                    f"{self._volume.shape}",
                )
            array = array >= 0.5 if array.dtype.kind == "f" else array > 0
            array = np.ascontiguousarray(array.transpose(2, 1, 0))  # (Z, Y, X): see module doc
            array.flags.writeable = False
        self._masks[role] = array
        self._measurements = measure(self._masks, self._volume.voxel_volume_ml if self._volume else 0)
        self.mask_changed.emit(role)

    def overlay(self, role: str) -> OverlaySettings:
        return self._overlays[self._check_role(role)]

    def set_overlay(self, role: str, **changes: object) -> None:
        """Change ``colour``, ``opacity``, ``style`` and/or ``visible`` of ``role``'s overlay."""
        settings = dataclasses.replace(self._overlays[self._check_role(role)], **changes)
        if settings != self._overlays[role]:
            self._overlays[role] = settings
            self.overlay_changed.emit(role)

    def toggle_overlay(self, role: str) -> None:
        self.set_overlay(role, visible=not self.overlay(role).visible)

    def toggle_all_overlays(self) -> None:
        """Hide every overlay if any is shown, else show them all (the H key)."""
        show = not any(s.visible for s in self._overlays.values())
        for role in ROLES:
            self.set_overlay(role, visible=show)

    @property
    def difference_mode(self) -> bool:
        return self._difference_mode

    def set_difference_mode(self, on: bool) -> None:
        if bool(on) != self._difference_mode:
            self._difference_mode = bool(on)
            self.difference_mode_changed.emit(self._difference_mode)

    def toggle_difference_mode(self) -> None:
        self.set_difference_mode(not self._difference_mode)

    @property
    def difference_active(self) -> bool:
        """Difference colours are drawn: the mode is on and both masks exist and are shown."""
        return self._difference_mode and all(
            self._masks[r] is not None and self._overlays[r].visible for r in ROLES
        )

    # --- slices, measurements, readout -------------------------------------------------
    def ct_slice(self, orientation: str) -> np.ndarray:
        """The CT plane through the cursor as image (rows, columns), C-contiguous.

        Rows run along the screen's vertical axis, columns along its horizontal one:
        axial (Y, X), coronal (Z, X), sagittal (Z, Y); indices increase towards R/A/S.
        """
        return self._plane(self._display, orientation)  # type: ignore[arg-type]

    def mask_slice(self, role: str, orientation: str) -> np.ndarray | None:
        """Boolean plane of ``role``'s mask, laid out as :meth:`ct_slice`; ``None`` if unset."""
        mask = self._masks[self._check_role(role)]
        return None if mask is None else self._plane(mask, orientation)

    def measurements(self) -> Measurements:
        """Lesion volume (mL) of each mask and the Dice of truth vs prediction."""
        return self._measurements

    def world_position(self, i: int, j: int, k: int) -> np.ndarray:
        """RAS+ world position (mm) of voxel ``(i, j, k)``'s centre."""
        return (self._volume.affine @ np.array([i, j, k, 1.0]))[:3]  # type: ignore[union-attr]

    def readout(self, i: int, j: int, k: int) -> str:
        """``"x, y, z mm | voxel i, j, k | HU"`` for the status bar."""
        x, y, z = self.world_position(i, j, k)
        value = float(self._volume.array[i, j, k])  # type: ignore[union-attr]
        return f"{x:.1f}, {y:.1f}, {z:.1f} mm | voxel {i}, {j}, {k} | {value:.0f} HU"

    # --- helpers -----------------------------------------------------------------------
    def _plane(self, zyx: np.ndarray, orientation: str) -> np.ndarray:
        index: list[object] = [slice(None)] * 3
        axis = self._axis(orientation)
        index[2 - axis] = self._cursor[axis]  # (X, Y, Z) axis n is (Z, Y, X) axis 2 - n
        return np.ascontiguousarray(zyx[tuple(index)])

    @staticmethod
    def _axis(orientation: str) -> int:
        if orientation not in SLICE_AXIS:
            raise _unknown("orientation", orientation, ORIENTATIONS)
        return SLICE_AXIS[orientation]

    @staticmethod
    def _check_role(role: str) -> str:
        if role not in ROLES:
            raise _unknown("overlay role", role, ROLES)
        return role

