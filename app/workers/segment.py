"""Segmenting a loaded CT with a model folder off the GUI thread."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from app.workers.base import Worker, cancel_at_forward


def window_batches(
    volume_shape: tuple[int, ...], spacing: tuple[float, ...], card: Any, overlap: float, sw_batch_size: int
) -> int:
    """Forward calls a sliding-window inference will make (MONAI's window grid on the
    CT resampled to ``card.target_spacing``); an estimate for the progress bar."""
    windows = 1
    for n, s, t, roi in zip(volume_shape, spacing, card.target_spacing, card.patch_size):
        size = max(int(roi), round(n * s / t))
        step = max(int(roi * (1 - overlap)), 1)
        windows *= math.ceil((size - roi) / step) + 1
    return max(1, math.ceil(windows / sw_batch_size))


class SegmentWorker(Worker):
    """Segments a loaded CT with the model in a model folder (``model.json`` + weights)."""

    segmented = Signal(object)  # engine.model.inference.Prediction

    def __init__(
        self, volume: Any, model_folder: str | Path, *, device: str = "auto", parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.volume = volume
        self.model_folder = Path(model_folder)
        self.device = device

    def work(self) -> None:
        from engine.config import EvalConfig
        from engine.model.checkpoint import load_model
        from engine.model.inference import predict_volume
        from engine.training.device import resolve_device

        self.progress.emit(0, 0, f"loading the model in {self.model_folder}")
        network, card = load_model(self.model_folder)
        device = resolve_device(self.device)
        eval_cfg = EvalConfig()
        total = window_batches(
            self.volume.shape, self.volume.spacing, card, eval_cfg.sw_overlap, eval_cfg.sw_batch_size
        )
        done = 0

        def count(_module: Any, _args: Any) -> None:
            nonlocal done
            done += 1
            self.progress.emit(min(done, total), total, "segmenting")

        handle = network.register_forward_pre_hook(count)
        try:
            with cancel_at_forward(self.token, network):
                prediction = predict_volume(
                    network.to(device), card, self.volume, device, eval_cfg,
                    on_progress=lambda text: self.progress.emit(0, total, text),
                )
        finally:
            handle.remove()
        self.progress.emit(total, total, f"lesion volume {prediction.lesion_ml:.2f} mL")
        self.segmented.emit(prediction)
