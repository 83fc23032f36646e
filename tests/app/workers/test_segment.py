"""SegmentWorker: the engine's mask on the CT grid, progress per patch batch, cancel."""

from __future__ import annotations

import numpy as np
import torch

from app.workers import SegmentWorker
from engine.io.readers import load_volume
from engine.model.checkpoint import load_model
from engine.model.inference import predict_volume

WAIT_MS = 60_000  # a hang fails the test; nothing here is timed


def test_segment_worker_gives_the_engine_mask_on_the_ct_grid(qtbot, phantom, tiny_model, tmp_path) -> None:
    ct, _, image, _ = phantom
    model = tiny_model(tmp_path / "model", [2.0, 2.0, 2.5])
    volume = load_volume(ct)
    worker = SegmentWorker(volume, model, device="cpu")
    steps: list[tuple[int, int]] = []
    worker.progress.connect(lambda done, total, text: steps.append((done, total)) if text == "segmenting" else None)
    with qtbot.waitSignal(worker.segmented, timeout=WAIT_MS) as blocker:
        worker.start()
    (prediction,) = blocker.args
    # one step per patch batch: 64x64x40 voxels, 16^3 windows at 25 % overlap, 2 a batch
    assert steps[0] == (1, 38) and steps[-1] == (38, 38) and len(steps) == 38
    assert prediction.mask.shape == image.shape == volume.shape
    assert prediction.mask.dtype == np.uint8 and set(np.unique(prediction.mask)) <= {0, 1}
    network, card = load_model(model)
    expected = predict_volume(network, card, volume, torch.device("cpu"))
    np.testing.assert_array_equal(prediction.mask, expected.mask)
    assert prediction.lesion_voxels == int(expected.mask.sum())


def test_cancelling_a_segmentation_mid_way_stops_it(phantom, tiny_model, tmp_path, run_to_cancel) -> None:
    ct, _, _, _ = phantom
    # 1 mm target spacing: ~500 patch batches, so the cancel lands in the middle
    model = tiny_model(tmp_path / "model", [1.0, 1.0, 1.0])
    worker = SegmentWorker(load_volume(ct), model, device="cpu")
    seen: list[tuple[int, int]] = []

    def on_progress(done: int, total: int, _text: str) -> None:
        seen.append((done, total))
        if done >= 1:
            worker.cancel()

    worker.progress.connect(on_progress)
    assert run_to_cancel(worker, worker.segmented) == []
    done, total = max(seen)
    assert 1 <= done < total  # it stopped part way through the windows
