"""Background workers: results, one-line errors and cancellation, on real engine code."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from app.federation import jobs
from app.workers import CancellableBus, CancelToken, Cancelled, LoadWorker, RunWorker, SegmentWorker
from engine.config import DataConfig, ModelConfig, RunConfig, StrategyConfig, TrainConfig
from engine.events import RoundStarted, RunFailed, read_events
from engine.model.checkpoint import load_model
from engine.model.inference import predict_volume

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


def test_segment_worker_gives_the_engine_mask_on_the_ct_grid(qtbot, phantom, tiny_model, tmp_path) -> None:
    ct, _, image, _ = phantom
    model = tiny_model(tmp_path / "model", [2.0, 2.0, 2.5])
    from engine.io.readers import load_volume

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


def test_cancelling_a_segmentation_mid_way_stops_it(qtbot, phantom, tiny_model, tmp_path) -> None:
    ct, _, _, _ = phantom
    # 1 mm target spacing: ~500 patch batches, so the cancel lands in the middle
    model = tiny_model(tmp_path / "model", [1.0, 1.0, 1.0])
    from engine.io.readers import load_volume

    worker = SegmentWorker(load_volume(ct), model, device="cpu")
    seen: list[tuple[int, int]] = []
    results: list[object] = []

    def on_progress(done: int, total: int, _text: str) -> None:
        seen.append((done, total))
        if done >= 1:
            worker.cancel()

    worker.progress.connect(on_progress)
    worker.segmented.connect(results.append)
    with qtbot.waitSignal(worker.cancelled, timeout=WAIT_MS):
        worker.start()
    assert worker.wait(5000)
    assert results == []
    done, total = max(seen)
    assert 1 <= done < total  # it stopped part way through the windows


def tiny_config(rounds: int = 2) -> RunConfig:
    return RunConfig(
        rounds=rounds,
        data=DataConfig(target_spacing=(4.0, 4.0, 6.0), patch_size=(32, 32, 16)),
        model=ModelConfig("unet", {"channels": [4, 8, 16], "strides": [2, 2]}),
        train=TrainConfig(local_steps=2, lr=1e-3, device="cpu"),
        strategy=StrategyConfig("auto-fedavg", {"beta_steps": 2}),
    )


def test_cancelling_a_simulation_stops_it_and_records_why(qtbot, tmp_path) -> None:
    out = tmp_path / "run"
    worker = RunWorker(jobs.simulation_demo(tiny_config(rounds=50), out))
    types: list[str] = []
    finished: list[dict] = []
    threads: set[int] = set()

    def on_event(event) -> None:
        types.append(event.type)
        threads.add(threading.get_ident())
        if event.type == "site_progress":
            worker.cancel()

    worker.event.connect(on_event)
    worker.finished.connect(finished.append)
    with qtbot.waitSignal(worker.cancelled, timeout=WAIT_MS):
        worker.start()
    assert worker.wait(5000)
    assert finished == []
    assert "site_progress" in types and "round_finished" not in types
    assert threads == {threading.get_ident()}  # events reach slots in the GUI thread
    last = read_events(out / "events.jsonl")[-1]
    assert last["type"] == "run_failed" and "cancelled" in last["error"]
    assert not (out / "results.json").exists()


def test_an_unexpected_error_gives_its_type_and_message_and_a_logged_traceback(qtbot, caplog) -> None:
    def job(ctx):
        ctx.bus.emit(RoundStarted(round=1, rounds=1))
        return {"value": 1 / 0}

    worker = RunWorker(job)
    events: list[object] = []
    worker.event.connect(events.append)
    with caplog.at_level(logging.ERROR, logger="app.workers"):
        with qtbot.waitSignal(worker.failed, timeout=WAIT_MS) as blocker:
            worker.start()
    assert blocker.args == ["ZeroDivisionError: division by zero"]
    assert [type(e).__name__ for e in events] == ["RoundStarted"]
    assert any(record.exc_info and record.exc_info[0] is ZeroDivisionError for record in caplog.records)


def test_the_cancellable_bus_stops_at_the_next_event_but_lets_the_failure_through() -> None:
    token = CancelToken()
    bus = CancellableBus(token)
    got: list[str] = []
    bus.subscribe(lambda event: got.append(event.type))
    bus.emit(RoundStarted(round=1, rounds=2))
    token.set()
    with pytest.raises(Cancelled):
        bus.emit(RoundStarted(round=2, rounds=2))
    bus.emit(RunFailed(error="cancelled by the operator"))
    assert got == ["round_started", "run_failed"]
