"""Loading a CT (and its label map) off the GUI thread.

A large file is read slab by slab (:mod:`engine.io.stoppable`): the progress bar follows the
slabs, and Cancel stops the read at the next slab (NIfTI) or at once (ITK formats, whose
read is abandoned), so no volume is shown.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from app.workers.base import Worker

Progress = Callable[[int, int], None]


class LoadWorker(Worker):
    """Loads a CT and, optionally, its label map on the CT's grid, reduced to the lesion."""

    loaded = Signal(object, object)  # Volume, lesion mask (bool array on its grid) or None

    def __init__(
        self,
        path: str | Path,
        label_path: str | Path | None = None,
        *,
        series_uid: str | None = None,
        lesion_label: int = 1,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.path = Path(path)
        self.label_path = Path(label_path) if label_path else None
        self.lesion_label = lesion_label
        self.series_uid = series_uid

    def work(self) -> None:
        from engine.io.readers import load_volume

        steps = 2 if self.label_path else 1
        self.progress.emit(0, steps, f"reading {self.path.name}")
        volume = load_volume(
            self.path, series_uid=self.series_uid, should_stop=self.token.is_set, progress=self._slabs(self.path)
        )
        label = None
        if self.label_path is not None:
            self.token.check()
            self.progress.emit(1, steps, f"reading {self.label_path.name}")
            label = load_lesion(
                self.label_path, volume, self.lesion_label,
                should_stop=self.token.is_set, progress=self._slabs(self.label_path),
            )
        self.token.check()
        self.progress.emit(steps, steps, f"loaded {self.path.name}")
        self.loaded.emit(volume, label)

    def _slabs(self, path: Path) -> Progress:
        """Slabs of ``path`` read so far, for the progress bar (it restarts per file)."""
        return lambda done, total: self.progress.emit(done, total, f"reading {path.name}")


def load_lesion(
    path: str | Path,
    reference: Any,
    lesion_label: int = 1,
    *,
    should_stop: Callable[[], bool] | None = None,
    progress: Progress | None = None,
) -> Any:
    """A label map on ``reference``'s grid, reduced to its lesion (``lesion_mask``), in the
    worker's thread: the reduction reads every voxel, too slow for the GUI thread.
    ``should_stop``/``progress``: as for :func:`engine.io.readers.load_volume`."""
    from engine.io.readers import load_label

    from app.viewer.measurements import lesion_mask

    label = load_label(path, reference, should_stop=should_stop, progress=progress)
    return lesion_mask(label.array, lesion_label)
