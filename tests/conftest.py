"""Settings, test-file writers and a process check shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Run the suite on one intra-op torch thread.

    The tests use tiny networks; on a small shared CPU (CI has two cores) OpenMP's worker
    threads spin against each other and a tiny run takes 5-40 s with two threads instead
    of ~1 s with one. The previous setting is restored at the end.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _write_dicom_series(
    folder: Path,
    uid: str,
    description: str,
    hu: np.ndarray,
    *,
    pixel_spacing: tuple[float, float] = (0.7, 0.8),
    slice_spacing: float = 2.5,
    origin: tuple[float, float, float] = (-30.0, -40.0, 100.0),
    intercept: float = -1024.0,
    slope: float = 1.0,
) -> list[Path]:
    """Write ``hu`` (shape (slices, rows, cols), HU) as an axial int16 CT series.

    ``pixel_spacing`` is (column spacing x, row spacing y) in mm; slices go towards +z
    (superior) in LPS. GDCM stores (HU - intercept) / slope and writes the rescale tags.
    """
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for k, plane in enumerate(hu):
        image = sitk.GetImageFromArray(plane.astype(np.int16))
        image.SetSpacing(pixel_spacing)
        position = (origin[0], origin[1], origin[2] + slice_spacing * k)
        image.SetOrigin(position)
        tags = {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
            "0008|0018": f"{uid}.{k + 1}",
            "0008|0060": "CT",
            "0008|103e": description,
            "0020|000e": uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:g}" for v in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{pixel_spacing[1]:g}\\{pixel_spacing[0]:g}",
            "0028|1052": f"{intercept:g}",
            "0028|1053": f"{slope:g}",
        }
        for key, value in tags.items():
            image.SetMetaData(key, value)
        # Slice files in reverse order on disk, so the reader must sort by position.
        path = folder / f"{uid.replace('.', '_')}_{len(hu) - k:03d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(image)
        files.append(path)
    return files


@pytest.fixture
def write_dicom_series() -> Callable[..., list[Path]]:  # engine.io and the app's DICOM tests
    """Return the DICOM series writer (see ``_write_dicom_series``)."""
    return _write_dicom_series


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs. A zombie (ended, not yet reaped by its parent)
    still answers ``kill(pid, 0)``, so it is looked for in /proc; without /proc (macOS) a
    pid that exists counts as running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # it ended meanwhile, or there is no /proc to ask
        return not Path("/proc/self").exists()


@pytest.fixture
def process_alive() -> Callable[[int], bool]:  # process-group tests and the Flower fault tests
    """Return ``alive(pid) -> bool``, a zombie counting as ended (see ``_process_alive``)."""
    return _process_alive
