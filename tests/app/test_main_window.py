"""The main window: opening things, segmenting, saving, the plots fed by the federation
panel, errors as one-line dialogs, and what it keeps in QSettings."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt

from app.main_window import MainWindow
from app.workers import LoadWorker
from engine.events import RoundFinished, RunStarted

WAIT_MS = 60_000  # a hang fails the test; nothing here is timed


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def window(qtbot, settings):
    errors: list[tuple[str, str]] = []
    win = MainWindow(settings, show_error=lambda _parent, title, text: errors.append((title, text)))
    win.errors = errors
    qtbot.addWidget(win)
    return win


def open_and_wait(qtbot, window, worker) -> None:
    """Wait until the window saw ``worker`` end. Not ``waitSignal(worker.ended)``: the job
    runs already, and a signal emitted before the wait connects to it is not delivered to
    it; the window's own slot was connected before the start, and takes the worker off."""
    qtbot.waitUntil(lambda: worker not in window.workers, timeout=WAIT_MS)


def test_opening_a_ct_with_its_label_shows_both_and_remembers_the_file(qtbot, window, phantom) -> None:
    ct, label, image, truth = phantom
    worker = window.open_ct(ct, label)
    open_and_wait(qtbot, window, worker)
    model = window.viewer.model
    assert model.volume is not None and model.volume.shape == image.shape
    assert int(model.mask("truth").sum()) == int((truth > 0).sum())
    assert window.recent.paths == [str(ct)]
    assert "ct.nii.gz" in window.windowTitle()
    assert window.errors == []


def test_a_cancelled_load_shows_nothing_and_no_error(qtbot, window, phantom, one_slice_slabs, monkeypatch) -> None:
    import app.main_window

    class CancelledAtFirstSlab(LoadWorker):
        """A real LoadWorker whose operator presses Cancel once the first slab is read."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.slabs: list[tuple[int, int]] = []
            self.progress.connect(self._first_slab, Qt.ConnectionType.DirectConnection)  # in the worker's thread

        def _first_slab(self, done: int, total: int, _text: str) -> None:
            if total > 1:
                self.slabs.append((done, total))
                self.cancel()

    monkeypatch.setattr(app.main_window, "LoadWorker", CancelledAtFirstSlab)
    worker = window.open_ct(phantom[0])
    open_and_wait(qtbot, window, worker)
    assert worker.slabs == [(1, one_slice_slabs)]  # stopped after one slab of 40
    assert window.viewer.model.volume is None and window.recent.paths == []
    assert window.errors == [] and "cancelled" in window.statusBar().currentMessage()


def test_a_mask_of_another_shape_is_refused_in_one_line(qtbot, window, phantom, tmp_path) -> None:
    ct, _, image, _ = phantom
    open_and_wait(qtbot, window, window.open_ct(ct))
    wrong = tmp_path / "wrong.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)), wrong)
    open_and_wait(qtbot, window, window.open_mask("prediction", wrong))
    assert window.viewer.model.mask("prediction") is None
    assert len(window.errors) == 1
    title, message = window.errors[0]
    assert "\n" not in message and "wrong.nii.gz" in message, message


def test_segment_without_a_model_says_what_to_do(qtbot, window, phantom) -> None:
    open_and_wait(qtbot, window, window.open_ct(phantom[0]))
    assert window.segment() is None
    assert "no model yet" in window.errors[0][1]


def test_segment_then_save_writes_the_prediction_on_the_source_grid(qtbot, window, phantom, tiny_model, tmp_path) -> None:
    ct, _, image, _ = phantom
    open_and_wait(qtbot, window, window.open_ct(ct))
    model = tiny_model(tmp_path / "model", [2.0, 2.0, 2.5])
    open_and_wait(qtbot, window, window.segment(model))
    prediction = window.viewer.model.mask("prediction")
    assert prediction is not None and prediction.shape == image.shape
    saved = window.save_prediction(tmp_path / "out" / "prediction.nii.gz")
    written = nib.load(saved)
    assert written.shape == image.shape
    np.testing.assert_allclose(written.affine, nib.load(ct).affine, atol=1e-5)
    assert int(np.asarray(written.dataobj).astype(bool).sum()) == int(prediction.astype(bool).sum())


def test_federation_events_reach_the_plots_and_a_finished_run_becomes_the_model(window, tmp_path) -> None:
    (tmp_path / "global_model.safetensors").write_bytes(b"")
    window.federation.event.emit(RunStarted("auto-fedavg", ["a", "b", "c"], 2, {}))
    window.federation.event.emit(RoundFinished(1, [0.2, 0.3, 0.5], [2.0, 3.0, 5.0], {"mean_val_dice": 0.4}, 10, 20, 1.0))
    assert [r.round for r in window.plots.history.rounds] == [1]
    window.federation.run_folder.emit(str(tmp_path))
    assert window.model_folder == tmp_path


def test_a_run_folder_replays_into_the_plots(window, tmp_path) -> None:
    lines = [RunStarted("fedavg", ["a", "b"], 2, {}), RoundFinished(1, [0.5, 0.5], None, {}, 1, 1, 1.0), RoundFinished(2, [0.4, 0.6], None, {}, 1, 1, 1.0)]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e.to_dict()) + "\n" for e in lines))
    assert window.open_path(tmp_path) is None  # no worker: a run folder is read at once
    assert [r.round for r in window.plots.history.rounds] == [1, 2]
    assert window.recent.paths == [str(tmp_path)]


def test_the_layout_and_recent_files_survive_a_restart(qtbot, settings, tmp_path) -> None:
    first = MainWindow(settings)
    qtbot.addWidget(first)
    first.show()
    first.plots_dock.hide()
    first.recent.add(str(tmp_path))
    first.close()
    second = MainWindow(settings)
    qtbot.addWidget(second)
    second.show()
    assert not second.plots_dock.isVisible() and second.federation_dock.isVisible()
    assert second.recent.paths == [str(tmp_path)]
    assert [a.toolTip() for a in second.recent.menu.actions()][0] == str(tmp_path)


def test_the_shortcut_list_has_the_menus_and_the_viewer_keys(window) -> None:
    rows = dict((action, keys) for keys, action in window.shortcuts())
    assert rows["Open CT..."] == "Ctrl+O"
    assert rows["Hide or show all overlays"] == "H"
    assert "Segment with the current model" in rows


def test_a_dicom_folder_with_two_series_asks_which_one_and_opens_it(qtbot, window, tmp_path, write_dicom_series) -> None:
    folder = tmp_path / "dicom"
    soft = np.full((4, 8, 8), 40, np.int16)
    bone = np.full((6, 8, 8), 700, np.int16)
    write_dicom_series(folder, "1.2.3.1", "Soft tissue", soft)
    write_dicom_series(folder, "1.2.3.2", "Bone", bone)
    offered: list[list[str]] = []

    def pick_bone(series):
        offered.append(sorted(s.description for s in series))
        return next(s for s in series if s.description == "Bone")

    window.choose_series = pick_bone
    open_and_wait(qtbot, window, window.open_path(folder))
    qtbot.waitUntil(lambda: window.viewer.model.volume is not None, timeout=WAIT_MS)
    assert offered == [["Bone", "Soft tissue"]]
    volume = window.viewer.model.volume
    assert volume.shape[2] == 6 and float(volume.array.mean()) == pytest.approx(700, abs=1)
    assert window.errors == []
