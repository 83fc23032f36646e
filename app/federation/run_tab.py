"""What the Demo, Join and Host tabs share: the run they start and how it is stopped."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QPushButton, QWidget

from app.workers import RunWorker

#: show_error(parent, title, message): an engine error's one line (a QMessageBox, or a
#: recorder in tests)
ErrorDialog = Callable[[QWidget, str, str], None]


class RunTab(QWidget):
    """A tab that starts one :class:`RunWorker` at a time; the panel listens to
    ``started`` (to follow the run) and ``stopping`` (a line for its log)."""

    started = Signal(object, str, dict, bool)  # RunWorker, mode, site name -> cases, watch silence
    stopping = Signal(str)  # a line for the log when the operator stops

    def __init__(self, show_error: ErrorDialog, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.show_error = show_error
        self.worker: RunWorker | None = None

    def _cancel(self, button: QPushButton, line: str) -> None:
        """Ask the running worker to stop; ``button`` (Stop/Leave) is disabled meanwhile."""
        if self.worker is not None:
            self.worker.cancel()
            button.setEnabled(False)
            self.stopping.emit(line)
