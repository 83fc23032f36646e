"""LoadWorker: the CT and its lesion in RAS, one-line errors, a cancel between slabs."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app.workers import LoadWorker

WAIT_MS = 60_000  # a hang fails the test; nothing here is timed


def test_load_worker_emits_the_ct_and_its_lesion_in_ras(qtbot, phantom) -> None:
    ct, label_path, image, label = phantom
    worker = LoadWorker(ct, label_path)
    steps: list[tuple[int, int, str]] = []
    worker.progress.connect(lambda done, total, text: steps.append((done, total, text)))
    with qtbot.waitSignal(worker.loaded, timeout=WAIT_MS) as blocker:
        worker.start()
    volume, lesion = blocker.args
    # the phantom's affine is diag(-2, -2, 2.5): RAS canonical flips the first two axes
    np.testing.assert_array_equal(volume.array, np.flip(image, (0, 1)).astype(np.float32))
    np.testing.assert_array_equal(lesion, np.flip(label, (0, 1)) == 1)  # the label map's lesion, as a mask
    assert volume.spacing == pytest.approx((2.0, 2.0, 2.5))
    assert steps[-1][:2] == (2, 2)  # CT and label: two steps, both done
    assert worker.wait(5000)


def test_a_corrupt_file_fails_with_one_line_naming_it(qtbot, tmp_path) -> None:
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b this is no gzip stream" * 10)
    worker = LoadWorker(bad)
    loaded: list[object] = []
    worker.loaded.connect(lambda *args: loaded.append(args))
    with qtbot.waitSignal(worker.failed, timeout=WAIT_MS) as blocker:
        worker.start()
    (message,) = blocker.args
    assert "broken.nii.gz" in message
    assert "\n" not in message and "Traceback" not in message
    assert loaded == []


def test_cancelling_a_large_load_stops_it_between_slabs(phantom, one_slice_slabs, run_to_cancel) -> None:
    worker = LoadWorker(phantom[0])
    slabs: list[tuple[int, int]] = []

    def on_progress(done: int, total: int, _text: str) -> None:
        if total > 1:  # a slab of the CT, not the (0 of 1 files) start
            slabs.append((done, total))
            worker.cancel()

    # direct: the slot runs in the worker's thread as the slab is reported, so the cancel
    # lands before the next slab whatever the GUI thread is doing
    worker.progress.connect(on_progress, Qt.ConnectionType.DirectConnection)
    assert run_to_cancel(worker, worker.loaded) == []  # no volume reached the window
    assert slabs == [(1, one_slice_slabs)]  # one slab read of 40, then it stopped
