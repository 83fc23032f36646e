"""The main window: the CT viewer in the centre, the federation panel and the run plots
in docks beside it. The menu bar is built in :mod:`app.menus`, the status bar's job
indicator lives in :mod:`app.job_status`.

The window owns no state of its own beyond what it shows: the viewer's
:class:`~app.viewer.model.ViewerModel` holds the CT and masks, the federation panel's
model the running federation, the plots' model the run. Everything slow (loading,
segmenting, training) runs in :mod:`app.workers`; the window only connects signals, so the
event loop never waits on the engine.
"""

from __future__ import annotations

import functools
import gc
from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QAction, QCloseEvent
from PySide6.QtWidgets import QDockWidget, QFileDialog, QInputDialog, QLabel, QMainWindow, QMessageBox, QWidget

from app.federation.panel import FederationPanel
from app.federation.run_tab import ErrorDialog
from app.help_dialog import ShortcutsDialog
from app.job_status import JobStatus
from app.menus import build_menus, shortcut_rows
from app.plots.run_plots import RunPlotsWidget
from app.recent import RecentFiles
from app.viewer.widget import ViewerWidget
from app.workers import CallWorker, LoadWorker, SegmentWorker, Worker, load_lesion
from engine.errors import FedSegError

VOLUME_FILTER = "CT volumes (*.nii *.nii.gz *.mha *.mhd *.nrrd *.nhdr);;All files (*)"
MASK_FILTER = "Masks (*.nii.gz *.nii *.mha *.nrrd)"
MODEL_FILE = "global_model.safetensors"


@functools.cache
def preload_engine() -> None:
    """Import torch, MONAI and the engine's runners now, in the GUI thread, before the
    window shows. Imported later by a worker thread they would hold the interpreter lock
    for seconds (C extensions initialise without releasing it) and freeze the window the
    moment the user clicks Start or Segment (measured: 1.8 s).

    ``torch._dynamo`` too: the first ``torch.optim`` optimizer imports it (its methods are
    wrapped in dynamo's "disable"), 0.8 s of imports that allocate enough to trigger a
    full garbage collection, which holds the lock while it walks the whole heap (the
    243 ms stall of benchmarks/gui_latency.py, at a demo's first round). Then the heap
    loaded so far is frozen (``gc.freeze``): these modules live as long as the app, and
    later full collections skip them instead of stalling the window again.
    """
    import engine.model.inference  # noqa: F401 - torch, MONAI networks and transforms
    import engine.simulation  # noqa: F401 - the demo's runner and the strategies
    import torch._dynamo  # noqa: F401 - see above

    gc.collect()  # garbage first, so that nothing collectable is frozen
    gc.freeze()


def message_box(parent: QWidget, title: str, message: str) -> None:
    QMessageBox.critical(parent, title, message)


class MainWindow(QMainWindow):
    """FedSeg Studio's window.

    Parameters
    ----------
    settings:
        Where recent files and the window layout are kept (the user's QSettings by
        default; tests pass a file of their own).
    show_error:
        ``show_error(parent, title, message)``: an engine error's one line as a dialog.
    """

    def __init__(self, settings: QSettings | None = None, show_error: ErrorDialog | None = None) -> None:
        super().__init__()
        preload_engine()
        self.setWindowTitle("FedSeg Studio")
        self.settings = settings or QSettings("FedSeg Studio", "FedSeg Studio")
        self.show_error: ErrorDialog = show_error or message_box
        self.model_folder: Path | None = None  # the model "Segment" uses
        self.lesion_label = 1  # the label shown as the lesion in multi-label maps (fedseg gui --lesion-label)

        self.viewer = ViewerWidget()
        self.setCentralWidget(self.viewer)
        self.federation = FederationPanel(show_error=lambda parent, title, text: self.show_error(parent, title, text))
        self.plots = RunPlotsWidget()
        self.federation_dock = self._dock("Federation", self.federation, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.plots_dock = self._dock("Run plots", self.plots, Qt.DockWidgetArea.RightDockWidgetArea)
        self.recent = RecentFiles(self.settings, self.open_path)

        self.readout = QLabel()
        self.statusBar().addWidget(self.readout, 1)
        self.jobs = JobStatus(self, self.statusBar(), lambda parent, title, text: self.show_error(parent, title, text))
        self.save_action: QAction | None = None  # set by build_menus

        self.viewer.status_message.connect(self.readout.setText)
        self.viewer.files_dropped.connect(lambda paths: paths and self.open_path(paths[0]))
        self.federation.event.connect(self.plots.add_event)
        self.federation.event.connect(self._on_event)
        self.federation.run_folder.connect(self._on_run_folder)
        build_menus(self)
        self._restore_layout()

    # -- layout -------------------------------------------------------------------------------
    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title.replace(" ", "_").lower())  # saveState needs stable names
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def shortcuts(self) -> list[tuple[str, str]]:
        """(keys, what they do) for the help dialog: menu actions, then the viewer's keys."""
        return shortcut_rows(self.menuBar())

    def show_shortcuts(self) -> None:
        ShortcutsDialog(self.shortcuts(), self).exec()

    def _restore_layout(self) -> None:
        geometry, state = self.settings.value("window/geometry"), self.settings.value("window/state")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1500, 900)
            # the viewer keeps most of the width; the docks what their forms and plots need
            self.resizeDocks([self.federation_dock, self.plots_dock], [380, 620], Qt.Orientation.Horizontal)
        if state is not None:
            self.restoreState(state)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.cancel_jobs()
        self.federation.shutdown(5000)
        self.jobs.wait_all(2000)
        super().closeEvent(event)

    # -- opening things -----------------------------------------------------------------------
    def choose_ct(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open CT", "", VOLUME_FILTER)
        if path:
            self.open_path(path)

    def choose_dicom(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open DICOM folder")
        if folder:
            self.open_path(folder)

    def choose_mask(self, role: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, f"Open {role}", "", MASK_FILTER)
        if path:
            self.open_mask(role, path)

    def choose_run(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open run folder")
        if folder:
            self.open_path(folder)

    def open_path(self, path: str | Path) -> Worker | None:
        """A CT file, a DICOM folder, or a run folder (it has ``events.jsonl``)."""
        path = Path(path)
        if (path / "events.jsonl").exists():
            self.open_run(path)
            return None
        if path.is_dir():
            return self.open_dicom(path)
        return self.open_ct(path)

    def open_dicom(self, folder: str | Path) -> Worker:
        """List the folder's series first; with several, the user picks one (as in Slicer's
        DICOM browser) instead of getting the command line's "--series UID" message."""
        from engine.io.dicom import list_dicom_series

        worker = CallWorker(list_dicom_series, folder)
        worker.done.connect(lambda series: self._open_series(Path(folder), series))
        return self._start(worker, f"Read {Path(folder).name}")

    def _open_series(self, folder: Path, series: list) -> None:
        if len(series) == 1:
            self.open_ct(folder)
            return
        chosen = self.choose_series(series)
        if chosen is not None:
            self.open_ct(folder, series_uid=chosen.uid)

    def choose_series(self, series: list):
        """Ask which series to open (tests replace this method)."""
        labels = [
            f"{s.modality or '?'}  {s.description or 'no description'}  ({s.num_files} files)  {s.uid}" for s in series
        ]
        label, ok = QInputDialog.getItem(
            self, "Open DICOM folder", "This folder holds several series; open:", labels, 0, False
        )
        return series[labels.index(label)] if ok else None

    def open_ct(self, path: str | Path, label: str | Path | None = None, *, series_uid: str | None = None) -> Worker:
        worker = LoadWorker(path, label, series_uid=series_uid, lesion_label=self.lesion_label)
        worker.loaded.connect(lambda volume, truth: self._show_ct(Path(path), volume, truth))
        return self._start(worker, f"Open {Path(path).name}")

    def _show_ct(self, path: Path, volume, truth) -> None:
        self.viewer.set_volume(volume)
        if truth is not None:
            self.viewer.set_mask("truth", truth)
        self.recent.add(str(path))
        self.setWindowTitle(f"{path.name} - FedSeg Studio")

    def open_mask(self, role: str, path: str | Path) -> Worker | None:
        volume = self.viewer.model.volume
        if volume is None:
            self.show_error(self, "Open mask", "open a CT first: a mask is shown on its CT's grid")
            return None
        worker = CallWorker(load_lesion, path, volume, self.lesion_label)
        worker.kwargs["should_stop"] = worker.token.is_set  # Cancel stops a large mask's read too
        worker.done.connect(lambda mask: self._set_mask(role, mask))
        return self._start(worker, f"Open {Path(path).name}")

    def _set_mask(self, role: str, mask) -> None:
        try:
            self.viewer.set_mask(role, mask)
        except FedSegError as exc:
            self.show_error(self, "Open mask", str(exc))

    def open_run(self, folder: str | Path) -> None:
        try:
            self.plots.load_run(folder)
        except FedSegError as exc:
            self.show_error(self, "Open run", str(exc))
            return
        self.plots_dock.show()
        self.recent.add(str(folder))
        self._on_run_folder(str(folder))

    # -- segmenting ---------------------------------------------------------------------------
    def choose_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder (model.json + weights)")
        if folder:
            self.segment(folder)

    def segment(self, model_folder: str | Path | None = None) -> Worker | None:
        volume = self.viewer.model.volume
        folder = Path(model_folder) if model_folder else self.model_folder
        if volume is None:
            self.show_error(self, "Segment", "open a CT first")
            return None
        if folder is None:
            self.show_error(self, "Segment", "no model yet: finish a run, open a run folder, or choose a model folder")
            return None
        worker = SegmentWorker(volume, folder)
        worker.segmented.connect(lambda prediction: self._set_mask("prediction", prediction.mask))
        return self._start(worker, "Segment")

    def choose_save_prediction(self) -> None:
        if self.viewer.model.mask("prediction") is None:
            self.show_error(self, "Save prediction", "there is no prediction to save")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save prediction", "prediction.nii.gz", MASK_FILTER)
        if path:
            self.save_prediction(path)

    def save_prediction(self, path: str | Path) -> Path | None:
        """Write the prediction on the CT's source grid (format from the suffix)."""
        from engine.io.writers import save_mask

        try:
            return save_mask(self.viewer.model.mask("prediction"), self.viewer.model.volume, path)
        except FedSegError as exc:
            self.show_error(self, "Save prediction", str(exc))
            return None

    # -- workers and runs ---------------------------------------------------------------------
    @property
    def workers(self) -> list[Worker]:
        """The loads and segmentations running now."""
        return self.jobs.workers

    def _start(self, worker: Worker, title: str) -> Worker:
        return self.jobs.start(worker, title)

    def cancel_jobs(self) -> None:
        self.jobs.cancel_all()

    def _on_run_folder(self, folder: str) -> None:
        if (Path(folder) / MODEL_FILE).exists():
            self.model_folder = Path(folder)

    def _on_event(self, event) -> None:
        out_dir = getattr(event, "out_dir", None)  # run_finished: the global model is written
        if out_dir:
            self._on_run_folder(out_dir)
