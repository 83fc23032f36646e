"""Phantom volumes and real Qt mouse/wheel events for the viewer tests."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QApplication

from app.viewer.model import ViewerModel
from app.viewer.widget import ViewerWidget
from engine.io.volume import SourceGeometry, Volume

#: (X, Y, Z) of the phantom: small, and anisotropic like a thick-slice CT.
SHAPE = (40, 30, 20)
SPACING = (0.8, 0.8, 2.5)


def make_volume(array: np.ndarray, spacing=SPACING, origin=(0.0, 0.0, 0.0), path="phantom.nii.gz") -> Volume:
    """A RAS canonical Volume with a diagonal affine."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    ornt = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
    source = SourceGeometry(path, "nifti", tuple(array.shape), affine, ornt)
    return Volume(array=array, affine=affine, source=source)


def ramp_array(shape=SHAPE) -> np.ndarray:
    """HU = -500 + 40 k + 3 j + i: every voxel's value names its index."""
    i, j, k = np.indices(shape)
    return (-500.0 + 40 * k + 3 * j + i).astype(np.float32)


@pytest.fixture(name="make_volume")
def make_volume_fixture():
    """The :func:`make_volume` factory (test modules cannot import conftest)."""
    return make_volume


@pytest.fixture
def ramp_volume() -> Volume:
    return make_volume(ramp_array(), origin=(-10.0, 20.0, 30.0))


@pytest.fixture
def model(qtbot, ramp_volume) -> ViewerModel:
    viewer_model = ViewerModel()
    viewer_model.set_volume(ramp_volume)
    return viewer_model


@pytest.fixture
def viewer(qtbot, ramp_volume) -> ViewerWidget:
    widget = ViewerWidget()
    qtbot.addWidget(widget)
    widget.resize(900, 800)
    widget.show()
    qtbot.waitExposed(widget)
    widget.set_volume(ramp_volume)
    QApplication.processEvents()
    return widget


class Mouse:
    """Sends real QMouseEvent/QWheelEvent to a slice view's viewport at view positions (mm).

    pyqtgraph drops move events closer than 10 ms (``mouseRateLimit``), so moves wait.
    """

    def __init__(self, qtbot) -> None:
        self.qtbot = qtbot

    @staticmethod
    def pixel(view, view_pos: QPointF) -> QPoint:
        return view.mapFromScene(view.view_box.mapViewToScene(view_pos))

    def _send(self, view, kind, pixel: QPoint, button, buttons, modifiers=Qt.KeyboardModifier.NoModifier):
        viewport = view.viewport()
        event = QMouseEvent(
            kind, QPointF(pixel), QPointF(viewport.mapToGlobal(pixel)), button, buttons, modifiers
        )
        QApplication.sendEvent(viewport, event)

    def move(self, view, pixel: QPoint, buttons=Qt.MouseButton.NoButton) -> None:
        self.qtbot.wait(15)
        self._send(view, QEvent.Type.MouseMove, pixel, Qt.MouseButton.NoButton, buttons)

    def click(self, view, pixel: QPoint, button=Qt.MouseButton.LeftButton) -> None:
        self._send(view, QEvent.Type.MouseButtonPress, pixel, button, button)
        self._send(view, QEvent.Type.MouseButtonRelease, pixel, button, Qt.MouseButton.NoButton)

    def drag(self, view, start: QPoint, end: QPoint, button, steps: int = 4) -> None:
        self._send(view, QEvent.Type.MouseButtonPress, start, button, button)
        for n in range(1, steps + 1):
            point = start + (end - start) * (n / steps)
            self.move(view, point, buttons=button)
        self._send(view, QEvent.Type.MouseButtonRelease, end, button, Qt.MouseButton.NoButton)

    def wheel(self, view, pixel: QPoint, notches: int, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
        viewport = view.viewport()
        event = QWheelEvent(
            QPointF(pixel),
            QPointF(viewport.mapToGlobal(pixel)),
            QPoint(0, 0),
            QPoint(0, 120 * notches),
            Qt.MouseButton.NoButton,
            modifiers,
            Qt.ScrollPhase.NoScrollPhase,
            False,
        )
        QApplication.sendEvent(viewport, event)


@pytest.fixture
def mouse(qtbot) -> Mouse:
    return Mouse(qtbot)
