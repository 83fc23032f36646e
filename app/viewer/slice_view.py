"""One orthogonal slice of the CT (axial, coronal or sagittal) with overlays and crosshair.

Display convention (radiological, as 3D Slicer's default): in RAS+ the voxel axes increase
towards the patient's Right, Anterior, Superior. Axial and coronal views put the patient's
Right on the screen's left; axial puts Anterior at the top, coronal and sagittal put
Superior at the top; sagittal puts Anterior on the screen's left. Every view therefore
shows its horizontal array axis increasing to the screen's LEFT (``ViewBox.invertX``) and
its vertical axis increasing upwards (pyqtgraph's default). View coordinates are mm from
the grid corner (voxel ``n`` spans ``[n * spacing, (n + 1) * spacing)``) with the aspect
locked, so anisotropic CT keeps its true proportions.

Mouse: left click/drag moves the cursor; wheel scrolls slices; Ctrl+wheel zooms; middle
drag pans; right drag sets window (horizontal) and level (vertical). Keys: Up/Down one
slice, PageUp/PageDown ten.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QKeyEvent

from app.viewer.model import SLICE_AXIS, ViewerModel
from app.viewer.overlay import difference_rgba, overlay_rgba

__all__ = ["DISPLAY_AXES", "EDGE_LABELS", "SliceView", "SliceViewBox"]

#: (horizontal, vertical) array axes of each orientation's image.
DISPLAY_AXES = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}
#: Patient direction at the screen's (left, right, top, bottom) edge.
EDGE_LABELS = {
    "axial": ("R", "L", "A", "P"),
    "coronal": ("R", "L", "S", "I"),
    "sagittal": ("A", "P", "S", "I"),
}
_KEY_STEPS = {Qt.Key.Key_Up: 1, Qt.Key.Key_Down: -1, Qt.Key.Key_PageUp: 10, Qt.Key.Key_PageDown: -10}
_WHEEL_NOTCH = 120  # angleDelta units of one wheel notch (Qt documentation)
_CROSSHAIR_PEN = pg.mkPen((255, 220, 0, 170), width=1)


class SliceViewBox(pg.ViewBox):
    """A ViewBox whose mouse gestures drive the viewer instead of pyqtgraph's defaults."""

    #: view position (mm) under a left click or left drag.
    pointed = Signal(QPointF)
    #: whole slices to scroll (+ = wheel away from the user).
    wheel_scrolled = Signal(int)
    #: screen pixels moved with the right button held (dx, dy; y down).
    window_dragged = Signal(float, float)

    def __init__(self) -> None:
        super().__init__(lockAspect=True, invertX=True, enableMenu=False, defaultPadding=0.0)
        self._wheel_rest = 0

    def mouseClickEvent(self, ev) -> None:  # noqa: N802 - pyqtgraph override
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            self.pointed.emit(self.mapSceneToView(ev.scenePos()))
        else:
            ev.ignore()

    def mouseDragEvent(self, ev, axis=None) -> None:  # noqa: N802 - pyqtgraph override
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            self.pointed.emit(self.mapSceneToView(ev.scenePos()))
        elif ev.button() == Qt.MouseButton.RightButton:
            ev.accept()
            moved = ev.screenPos() - ev.lastScreenPos()
            self.window_dragged.emit(float(moved.x()), float(moved.y()))
        else:  # middle button: pyqtgraph's pan
            super().mouseDragEvent(ev, axis)

    def wheelEvent(self, ev, axis=None) -> None:  # noqa: N802 - pyqtgraph override
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev, axis)
            return
        ev.accept()
        # Touchpads send fractions of a notch: keep the remainder for the next event.
        self._wheel_rest += ev.delta()
        steps = int(self._wheel_rest / _WHEEL_NOTCH)
        self._wheel_rest -= steps * _WHEEL_NOTCH
        if steps:
            self.wheel_scrolled.emit(steps)


class SliceView(pg.GraphicsView):
    """One orientation of :class:`ViewerModel`'s volume.

    Parameters
    ----------
    model:
        The viewer state it shows and changes.
    orientation:
        ``"axial"``, ``"coronal"`` or ``"sagittal"``.
    """

    #: "x, y, z mm | voxel i, j, k | HU" under the mouse, or "" off the image.
    hover_readout = Signal(str)
    #: emitted when the user interacts with this view (the widget's arrow keys follow it).
    activated = Signal(str)

    def __init__(self, model: ViewerModel, orientation: str, parent=None) -> None:
        super().__init__(parent)
        self.model = model
        self.orientation = orientation
        self._slice_axis = SLICE_AXIS[orientation]
        self._h_axis, self._v_axis = DISPLAY_AXES[orientation]
        self._spacing = (1.0, 1.0)

        self.view_box = SliceViewBox()
        self.setCentralItem(self.view_box)
        # row-major: the model hands out (rows = vertical, columns = horizontal) planes
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.overlay_item = pg.ImageItem(axisOrder="row-major")
        self.overlay_item.setZValue(10)
        self.h_line = pg.InfiniteLine(angle=0, pen=_CROSSHAIR_PEN)
        self.v_line = pg.InfiniteLine(angle=90, pen=_CROSSHAIR_PEN)
        for item in (self.image_item, self.overlay_item, self.h_line, self.v_line):
            self.view_box.addItem(item, ignoreBounds=item in (self.h_line, self.v_line))
        for line in (self.h_line, self.v_line):
            line.setZValue(20)
        self.slice_label = pg.TextItem(color=(230, 230, 230), anchor=(0, 0))
        self.slice_label.setParentItem(self.view_box)
        self.edge_labels = [pg.TextItem(t, color=(255, 200, 0)) for t in EDGE_LABELS[orientation]]
        for label in self.edge_labels:
            label.setParentItem(self.view_box)
        self.view_box.sigResized.connect(self._place_labels)

        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAcceptDrops(False)  # dropped files go to the ViewerWidget
        self.view_box.pointed.connect(self._on_pointed)
        self.view_box.wheel_scrolled.connect(self._on_wheel)
        self.view_box.window_dragged.connect(self._on_window_drag)
        self.scene().sigMouseMoved.connect(self._on_mouse_moved)
        model.volume_changed.connect(self._on_volume_changed)
        model.cursor_changed.connect(self._on_cursor_changed)
        model.window_changed.connect(self._apply_levels)
        model.mask_changed.connect(self.refresh_overlay)
        model.overlay_changed.connect(self.refresh_overlay)
        model.difference_mode_changed.connect(self.refresh_overlay)
        self._shown_index: int | None = None
        if model.volume is not None:
            self._on_volume_changed()

    # --- model -> view -----------------------------------------------------------------
    def _on_volume_changed(self) -> None:
        volume = self.model.volume
        spacing = volume.spacing
        self._spacing = (spacing[self._h_axis], spacing[self._v_axis])
        width = volume.shape[self._h_axis] * self._spacing[0]
        height = volume.shape[self._v_axis] * self._spacing[1]
        self._shown_index = None
        self._on_cursor_changed(*self.model.cursor)
        for item in (self.image_item, self.overlay_item):
            item.setRect(QRectF(0.0, 0.0, width, height))
        self.reset_zoom()

    def reset_zoom(self) -> None:
        """Fit the whole slice in the view."""
        if self.model.volume is not None:
            self.view_box.autoRange(padding=0.0)

    def _on_cursor_changed(self, i: int, j: int, k: int) -> None:
        cursor = (i, j, k)
        index = cursor[self._slice_axis]
        if index != self._shown_index:
            self._shown_index = index
            self.refresh_image()
            self.refresh_overlay()
            count = self.model.slice_count(self.orientation)
            self.slice_label.setText(f"{self.orientation.capitalize()}  {index + 1}/{count}")
        self.v_line.setPos((cursor[self._h_axis] + 0.5) * self._spacing[0])
        self.h_line.setPos((cursor[self._v_axis] + 0.5) * self._spacing[1])

    def refresh_image(self) -> None:
        """Show the CT plane through the cursor with the model's window/level."""
        if self.model.volume is None:
            return
        self.image_item.setImage(self.model.ct_slice(self.orientation), levels=self._levels())

    def refresh_overlay(self, *_: object) -> None:
        """Recompose the overlay RGBA of the current slice (masks, styles, difference mode)."""
        model = self.model
        if model.volume is None:
            return
        truth = model.mask_slice("truth", self.orientation)
        prediction = model.mask_slice("prediction", self.orientation)
        if model.difference_active:
            settings = model.overlay("prediction")
            rgba = difference_rgba(truth, prediction, settings.opacity, settings.style)
        else:
            shape = (model.volume.shape[self._v_axis], model.volume.shape[self._h_axis])
            layers = [(truth, model.overlay("truth")), (prediction, model.overlay("prediction"))]
            rgba = overlay_rgba(layers, shape)
        self.overlay_item.setImage(rgba, levels=None)

    def _levels(self) -> tuple[float, float]:
        width, level = self.model.window
        return level - width / 2.0, level + width / 2.0

    def _apply_levels(self, *_: float) -> None:
        if self.image_item.image is not None:
            self.image_item.setLevels(self._levels())

    def _place_labels(self) -> None:
        rect = self.view_box.boundingRect()
        w, h, m = rect.width(), rect.height(), 2.0
        places = ((m, h / 2, (0, 0.5)), (w - m, h / 2, (1, 0.5)), (w / 2, m, (0.5, 0)), (w / 2, h - m, (0.5, 1)))
        for label, (x, y, anchor) in zip(self.edge_labels, places):
            label.setAnchor(anchor)
            label.setPos(x, y)
        self.slice_label.setPos(m, m)

    # --- user -> model -----------------------------------------------------------------
    def _voxel_unclamped(self, view_pos: QPointF) -> list[int]:
        voxel = list(self.model.cursor)  # the slice axis keeps the cursor's index
        voxel[self._h_axis] = math.floor(view_pos.x() / self._spacing[0])
        voxel[self._v_axis] = math.floor(view_pos.y() / self._spacing[1])
        return voxel

    def voxel_at(self, view_pos: QPointF) -> tuple[int, int, int] | None:
        """Voxel under a view position (mm) on this slice, or ``None`` outside the volume."""
        if self.model.volume is None:
            return None
        voxel = self._voxel_unclamped(view_pos)
        if not all(0 <= v < n for v, n in zip(voxel, self.model.volume.shape)):
            return None
        return tuple(voxel)  # type: ignore[return-value]

    def view_position(self, voxel: tuple[int, int, int]) -> QPointF:
        """View position (mm) of the centre of ``voxel``'s in-plane square."""
        return QPointF(
            (voxel[self._h_axis] + 0.5) * self._spacing[0],
            (voxel[self._v_axis] + 0.5) * self._spacing[1],
        )

    def _on_pointed(self, view_pos: QPointF) -> None:
        if self.model.volume is None:
            return
        self.activated.emit(self.orientation)
        self.model.set_cursor(*self._voxel_unclamped(view_pos))  # clamps a drag off the image

    def _on_wheel(self, steps: int) -> None:
        self.activated.emit(self.orientation)
        self.model.scroll(self.orientation, steps)

    def _on_window_drag(self, dx: float, dy: float) -> None:
        # One screen pixel changes W or L by 0.5 % of the width (at least 1 HU), so the
        # gesture feels the same for a brain window (80) and a bone window (2500).
        step = max(1.0, self.model.window[0] / 200.0)
        self.model.adjust_window(dx * step, -dy * step)  # drag up raises the level

    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        voxel = None
        if self.view_box.sceneBoundingRect().contains(scene_pos):
            voxel = self.voxel_at(self.view_box.mapSceneToView(scene_pos))
        self.hover_readout.emit("" if voxel is None else self.model.readout(*voxel))

    def leaveEvent(self, ev: QEvent) -> None:  # noqa: N802 - Qt override
        self.hover_readout.emit("")  # the status bar must not keep a stale position
        super().leaveEvent(ev)

    def keyPressEvent(self, ev: QKeyEvent) -> None:  # noqa: N802 - Qt override
        steps = _KEY_STEPS.get(ev.key())
        if steps is None:
            ev.ignore()  # H, D, 1-5 ... reach the ViewerWidget
            return
        self.activated.emit(self.orientation)
        self.model.scroll(self.orientation, steps)
        ev.accept()

    def rendered_image(self) -> np.ndarray:
        """The view as shown on screen, (rows, columns, RGB) uint8 — for tests and checks."""
        image = self.grab().toImage().convertToFormat(pg.QtGui.QImage.Format.Format_RGB888)
        array = pg.functions.ndarray_from_qimage(image)
        return np.array(array[..., :3], copy=True)
