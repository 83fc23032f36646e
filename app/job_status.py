"""The window's running jobs (loads, segmentations, DICOM listings) and their status-bar
indicator: a label, a progress bar and a Cancel button, shown while any job runs."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QStatusBar, QWidget

from app.federation.run_tab import ErrorDialog
from app.workers import Worker


class JobStatus:
    """Starts workers for ``parent`` and shows the latest one's progress in ``status``.

    A failure becomes ``show_error(parent, title, line)``; a cancel, a status message.
    """

    def __init__(self, parent: QWidget, status: QStatusBar, show_error: ErrorDialog) -> None:
        self.parent, self.status, self.show_error = parent, status, show_error
        self.workers: list[Worker] = []
        self.label = QLabel()
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(200)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running load or segmentation (Esc)")
        self.cancel_button.clicked.connect(self.cancel_all)
        for widget in (self.label, self.progress, self.cancel_button):
            status.addPermanentWidget(widget)
        self.show(None)

    def start(self, worker: Worker, title: str) -> Worker:
        self.workers.append(worker)
        worker.progress.connect(lambda done, total, text: self.show(title, done, total, text))
        worker.failed.connect(lambda message: self.show_error(self.parent, title, message))
        worker.cancelled.connect(lambda: self.status.showMessage(f"{title}: cancelled", 5000))
        worker.ended.connect(lambda: self._ended(worker))
        worker.start()
        return worker

    def _ended(self, worker: Worker) -> None:
        self.workers.remove(worker)
        if not self.workers:
            self.show(None)

    def show(self, title: str | None, done: int = 0, total: int = 0, text: str = "") -> None:
        running = title is not None
        for widget in (self.label, self.progress, self.cancel_button):
            widget.setVisible(running)
        if running:
            self.label.setText(f"{title}: {text}")
            self.progress.setRange(0, total)  # total 0: a busy indicator
            self.progress.setValue(done)

    def cancel_all(self) -> None:
        for worker in self.workers:
            worker.cancel()

    def wait_all(self, msecs: int) -> None:
        """Block until every job ended (for shutdown), at most ``msecs`` each."""
        for worker in list(self.workers):
            worker.wait(msecs)
