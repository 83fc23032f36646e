"""The site operator's federation panel: Demo / Join / Host tabs above a shared
"round r of R" progress bar, the sites table and the log.

Whatever a tab starts is a :class:`~app.workers.RunWorker`; the panel wires it to the
:class:`~app.federation.model.FederationModel` (which the views follow) and re-emits
every engine event on :attr:`FederationPanel.event`, which the main window gives to the
plots. One federation at a time: while one runs, the other tabs cannot start another.
"""

from __future__ import annotations


from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QFrame, QMessageBox, QProgressBar, QScrollArea, QSplitter, QTabWidget, QVBoxLayout, QWidget

from app.federation.demo_panel import DemoPanel
from app.federation.host_panel import HostPanel
from app.federation.join_panel import JoinPanel
from app.federation.log_view import LogView
from app.federation.model import FederationModel
from app.federation.run_tab import ErrorDialog
from app.federation.sites_table import SitesTable
from app.workers import RunWorker

TICK_MS = 1000  # offline check and "last seen" redraw


def message_box(parent: QWidget, title: str, message: str) -> None:
    """The default error dialog (tests pass a recorder instead: this one blocks)."""
    QMessageBox.critical(parent, title, message)


def progress_text(round_: int, rounds: int, done: int) -> str:
    if rounds <= 0:
        return f"round {round_}" if round_ else "no federation running"
    if done >= rounds:
        return f"round {rounds} of {rounds}: finished"
    return f"round {max(round_, 1)} of {rounds}"


def _scrolling(form: QWidget) -> QScrollArea:
    area = QScrollArea()
    area.setWidget(form)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    return area


class FederationPanel(QWidget):
    """Public API: ``event(object)``, ``run_folder(str)``, :attr:`model`.

    Parameters
    ----------
    show_error:
        ``show_error(parent, title, message)`` shows an engine error's one line;
        a modal :class:`QMessageBox` by default.
    """

    event = Signal(object)  # every engine event of the current federation
    run_folder = Signal(str)  # a run's output folder, once known

    def __init__(self, parent: QWidget | None = None, *, show_error: ErrorDialog | None = None) -> None:
        super().__init__(parent)
        self.show_error: ErrorDialog = show_error or message_box
        self.model = FederationModel(self)
        self.worker: RunWorker | None = None

        self.demo = DemoPanel(self._error)
        self.join = JoinPanel(self._error)
        self.host = HostPanel(self._error)
        self.tabs = QTabWidget()
        for form, title in ((self.demo, "Demo"), (self.join, "Join"), (self.host, "Host")):
            self.tabs.addTab(_scrolling(form), title)  # the tall Host form scrolls, the table keeps its room
        self.tabs.setTabToolTip(0, "Try a federation of synthetic sites on this computer")
        self.tabs.setTabToolTip(1, "Take part in a federation with this hospital's data")
        self.tabs.setTabToolTip(2, "Coordinate a federation of hospitals")
        self.progress = QProgressBar()
        self.progress.setToolTip("Federated rounds finished")
        self.sites_table = SitesTable(self.model)
        self.log_view = LogView(self.model)
        status = QWidget()
        status_layout = QVBoxLayout(status)
        status_layout.setContentsMargins(0, 0, 0, 0)
        status_layout.addWidget(self.progress)
        status_layout.addWidget(self.sites_table, 2)
        status_layout.addWidget(self.log_view, 1)
        # one splitter: the forms (the Host form is tall) must not squeeze the sites table
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(self.tabs)
        self.splitter.addWidget(status)
        self.splitter.setSizes([300, 500])
        layout = QVBoxLayout(self)
        layout.addWidget(self.splitter)

        for tab in self.panels:
            tab.started.connect(lambda worker, mode, sites, watch, tab=tab: self._attach(tab, worker, mode, sites, watch))
            tab.stopping.connect(lambda text: self.model.add_log("info", text))
        self.model.progress_changed.connect(self._show_progress)
        self._show_progress(0, 0, 0)
        self.timer = QTimer(self)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    @property
    def panels(self) -> tuple[DemoPanel, JoinPanel, HostPanel]:
        return (self.demo, self.join, self.host)

    def _error(self, parent: QWidget, title: str, message: str) -> None:
        # looked up at call time, so a recorder set after construction is used
        self.show_error(parent, title, message)

    # -- a started federation ------------------------------------------------------------------
    def _attach(self, owner: QWidget, worker: RunWorker, mode: str, sites: dict, watch_silence: bool) -> None:
        self.worker = worker
        self.model.begin(mode, sites, watch_silence=watch_silence)
        worker.event.connect(self.model.apply)
        worker.event.connect(self.event)
        worker.sites.connect(self.model.set_cases)
        worker.run_folder.connect(self._folder)
        worker.progress.connect(lambda _done, _total, text: self.model.add_log("info", text))
        worker.failed.connect(self._failed)
        worker.cancelled.connect(lambda: self.model.add_log("warning", "stopped; the run folder keeps its last finished round"))
        worker.ended.connect(self._ended)
        for tab in self.panels:
            tab.set_locked(tab is not owner)

    def _folder(self, folder: str) -> None:
        self.model.add_log("info", f"run folder: {folder}")
        self.run_folder.emit(folder)

    def _failed(self, message: str) -> None:
        self.model.add_log("error", message)
        self.show_error(self, "Federation", message)

    def _ended(self) -> None:
        self.worker = None
        self.model.end()
        for tab in self.panels:
            tab.set_locked(False)

    def _tick(self) -> None:
        self.model.check_offline()
        self.sites_table.table_model.refresh_last_seen()

    def _show_progress(self, round_: int, rounds: int, done: int) -> None:
        self.progress.setRange(0, max(rounds, 1))
        self.progress.setValue(min(done, rounds) if rounds else 0)
        self.progress.setFormat(progress_text(round_, rounds, done))
        self.progress.setTextVisible(True)

    def shutdown(self, msecs: int = 5000) -> bool:
        """Cancel what runs and wait for it (the main window calls this on close)."""
        if self.worker is None:
            return True
        self.worker.cancel()
        return self.worker.wait(msecs)
