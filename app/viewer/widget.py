"""The CT viewer widget the main window embeds: three linked slice views and their controls.

Layout as 3D Slicer's "four-up" without the 3D view: axial top left, sagittal top right,
coronal bottom left, controls bottom right. Before a CT is loaded an empty state tells the
user how to open one. Files dropped on the widget are not loaded here: the main window
receives :attr:`ViewerWidget.files_dropped` and loads them on a worker thread.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QKeyEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import QGridLayout, QLabel, QStackedWidget, QVBoxLayout, QWidget

from app.viewer.controls import ControlPanel
from app.viewer.model import ViewerModel
from app.viewer.slice_view import SliceView
from engine.io.volume import Volume

__all__ = ["EMPTY_TEXT", "ViewerWidget"]

EMPTY_TEXT = "Open a CT (File > Open or drop a file here)"
_ARROW_STEPS = {Qt.Key.Key_Up: 1, Qt.Key.Key_Down: -1, Qt.Key.Key_PageUp: 10, Qt.Key.Key_PageDown: -10}
# grid cell of each view: Slicer's red (axial), yellow (sagittal), green (coronal) positions
_CELLS = {"axial": (0, 0), "sagittal": (0, 1), "coronal": (1, 0)}


class ViewerWidget(QWidget):
    """Axial, sagittal and coronal views of one CT with truth/prediction overlays.

    Parameters
    ----------
    model:
        The state to show; a new :class:`ViewerModel` when ``None``.
    parent:
        Qt parent.

    Keyboard: H hides/shows all overlays, D toggles difference mode, 1-5 apply the W/L
    presets in their menu order, Up/Down/PageUp/PageDown scroll the last used view.
    """

    #: "x, y, z mm | voxel i, j, k | HU" under the mouse ("" off the image): the status bar.
    status_message = Signal(str)
    #: local paths of files or folders dropped on the viewer; the main window loads them.
    files_dropped = Signal(list)

    def __init__(self, model: ViewerModel | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model if model is not None else ViewerModel(parent=self)
        self.views = {name: SliceView(self.model, name) for name in _CELLS}
        self.controls = ControlPanel(self.model)
        self.active_orientation = "axial"

        self.empty_label = QLabel(EMPTY_TEXT)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setToolTip("Supported: NIfTI, MHA/MHD, NRRD files or a DICOM folder")
        views_page = QWidget()
        grid = QGridLayout(views_page)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(2)
        for name, (row, column) in _CELLS.items():
            grid.addWidget(self.views[name], row, column)
        grid.addWidget(self.controls, 1, 1)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty_label)
        self.stack.addWidget(views_page)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.stack)

        self.setAcceptDrops(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._add_shortcuts()
        for view in self.views.values():
            view.hover_readout.connect(self.status_message)
            view.activated.connect(self._set_active)
        self.controls.fit_requested.connect(self.reset_zoom)
        self.model.volume_changed.connect(self._show_page)
        self._show_page()

    # --- API for the main window -------------------------------------------------------
    def set_volume(self, volume: Volume) -> None:
        """Show a CT (RAS canonical :class:`~engine.io.volume.Volume`); masks are cleared."""
        self.model.set_volume(volume)

    def set_mask(self, role: str, mask: Volume | np.ndarray | None) -> None:
        """Overlay a mask (``"truth"`` or ``"prediction"``) given as a Volume or an array.

        Raises
        ------
        engine.errors.VolumeError
            When its shape differs from the CT's (or no CT is loaded).
        """
        self.model.set_mask(role, mask)

    def reset_zoom(self) -> None:
        """Fit the whole slice in every view."""
        for view in self.views.values():
            view.reset_zoom()

    # --- internals ---------------------------------------------------------------------
    def _show_page(self) -> None:
        self.stack.setCurrentIndex(0 if self.model.volume is None else 1)

    def _set_active(self, orientation: str) -> None:
        self.active_orientation = orientation

    def _add_shortcuts(self) -> None:
        # Shortcuts rather than keyPressEvent: they work whichever child has the focus
        # (a combo box would otherwise swallow "1" or "h" for its keyboard search).
        actions = {"H": self.model.toggle_all_overlays, "D": self.model.toggle_difference_mode}
        for number, name in enumerate(list(self.model.presets)[:9], start=1):
            actions[str(number)] = lambda name=name: self.model.apply_preset(name)
        self.shortcuts: dict[str, QShortcut] = {}
        for key, slot in actions.items():
            shortcut = QShortcut(QKeySequence(key), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(slot)
            self.shortcuts[key] = shortcut

    def keyPressEvent(self, ev: QKeyEvent) -> None:  # noqa: N802 - Qt override
        # A focused slice view scrolls itself; arrow keys that reach the widget (focus on
        # a control that ignores them) scroll the last view the user worked in.
        steps = _ARROW_STEPS.get(ev.key())
        if steps is None or self.model.volume is None:
            super().keyPressEvent(ev)
            return
        self.model.scroll(self.active_orientation, steps)
        ev.accept()

    def dragEnterEvent(self, ev: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        if any(url.isLocalFile() for url in ev.mimeData().urls()):
            ev.acceptProposedAction()
        else:
            ev.ignore()

    def dropEvent(self, ev: QDropEvent) -> None:  # noqa: N802 - Qt override
        paths = [url.toLocalFile() for url in ev.mimeData().urls() if url.isLocalFile()]
        if paths:
            ev.acceptProposedAction()
            self.files_dropped.emit(paths)
        else:
            ev.ignore()
