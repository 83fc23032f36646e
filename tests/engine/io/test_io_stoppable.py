"""Reads the caller can stop: NIfTI slab by slab (the same voxels as a whole read), ITK and
DICOM reads given up on while they run."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from engine.errors import Interrupted, VolumeError
from engine.io import stoppable
from engine.io.readers import load_label, load_volume
from engine.io.stoppable import run_stoppable, slab_bounds

AFFINE = np.diag([-0.8, 0.9, 2.5, 1.0])
SHAPE = (24, 20, 30)


@pytest.fixture
def small_slabs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four slices of SHAPE's int16 voxels a slab: 8 slabs for 30 slices."""
    monkeypatch.setattr(stoppable, "SLAB_BYTES", 4 * SHAPE[0] * SHAPE[1] * 2)


def ct_voxels() -> np.ndarray:
    return np.random.default_rng(3).integers(-1000, 2000, SHAPE).astype(np.int16)


def test_slab_bounds_cover_the_last_axis_once_in_order(small_slabs) -> None:
    bounds = slab_bounds(SHAPE, 2)
    assert bounds[0] == (0, 4) and bounds[-1] == (28, 30) and len(bounds) == 8
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert slab_bounds((4096, 4096, 3), 8) == [(0, 1), (1, 2), (2, 3)]  # a slice above the budget: one a slab


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_ct_read_in_slabs_has_the_voxels_of_a_whole_read(tmp_path, write_image, small_slabs, suffix) -> None:
    # scaled int16, as scanners store HU: the slab path must scale exactly as get_fdata
    path = write_image(tmp_path / f"ct{suffix}", ct_voxels(), AFFINE, slope=0.5, inter=-1024.0)
    calls: list[tuple[int, int]] = []
    whole = load_volume(path)
    slabs = load_volume(path, should_stop=lambda: False, progress=lambda done, total: calls.append((done, total)))
    assert slabs.array.dtype == whole.array.dtype == np.float32
    np.testing.assert_array_equal(slabs.array, whole.array)
    np.testing.assert_array_equal(slabs.affine, whole.affine)
    assert calls == [(n, 8) for n in range(1, 9)]


def test_a_label_map_and_a_4d_singleton_file_read_in_slabs(tmp_path, write_image, small_slabs) -> None:
    ct = load_volume(write_image(tmp_path / "ct.nii.gz", ct_voxels(), AFFINE))
    labels = np.random.default_rng(4).integers(0, 3, SHAPE).astype(np.uint8)
    path = write_image(tmp_path / "label.nii.gz", labels[..., None], AFFINE)  # stored as (X, Y, Z, 1)
    whole = load_label(path, ct)
    slabs = load_label(path, ct, should_stop=lambda: False)
    assert slabs.array.dtype == whole.array.dtype == np.uint8
    np.testing.assert_array_equal(slabs.array, whole.array)


def test_should_stop_ends_a_nifti_read_between_slabs(tmp_path, write_image, small_slabs) -> None:
    path = write_image(tmp_path / "ct.nii.gz", ct_voxels(), AFFINE)
    calls: list[tuple[int, int]] = []
    with pytest.raises(Interrupted, match="ct.nii.gz"):
        load_volume(path, should_stop=lambda: len(calls) >= 2, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 8), (2, 8)]  # two slabs read of eight, then stopped


def test_a_truncated_file_is_still_a_volume_error_when_read_in_slabs(tmp_path, write_image, small_slabs) -> None:
    path = write_image(tmp_path / "ct.nii", ct_voxels(), AFFINE)
    path.write_bytes(path.read_bytes()[: 352 + SHAPE[0] * SHAPE[1] * 10 * 2])  # header and 10 slices
    with pytest.raises(VolumeError, match="truncated or corrupt"):
        load_volume(path, should_stop=lambda: False)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_an_itk_read_is_the_same_when_stoppable_and_stops_when_asked(tmp_path, write_image, suffix) -> None:
    path = write_image(tmp_path / f"ct{suffix}", ct_voxels(), AFFINE)
    np.testing.assert_array_equal(load_volume(path, should_stop=lambda: False).array, load_volume(path).array)
    with pytest.raises(Interrupted, match=f"ct{suffix}"):
        load_volume(path, should_stop=lambda: True)


def test_a_dicom_read_stops_when_asked(tmp_path, write_dicom_series) -> None:
    write_dicom_series(tmp_path / "dicom", "1.2.3", "CT", np.zeros((3, 8, 8), np.int16))
    assert load_volume(tmp_path / "dicom", should_stop=lambda: False).shape == (8, 8, 3)
    with pytest.raises(Interrupted):
        load_volume(tmp_path / "dicom", should_stop=lambda: True)


def test_run_stoppable_gives_up_on_a_read_that_is_still_running(tmp_path) -> None:
    release, began = threading.Event(), threading.Event()

    def slow_read() -> str:
        began.set()
        release.wait(60)  # stands for ITK inflating a large file
        return "image"

    with pytest.raises(Interrupted):
        run_stoppable(tmp_path / "big.mha", slow_read, began.is_set)
    # the caller was told while the read still ran; it ends on its own, its result dropped
    (reader,) = [t for t in threading.enumerate() if t.name == "read big.mha"]
    assert reader.is_alive()
    release.set()
    reader.join(60)
    assert not reader.is_alive()


def test_run_stoppable_returns_the_value_or_the_error_of_the_read(tmp_path) -> None:
    assert run_stoppable(tmp_path / "a.mha", lambda: 7, lambda: False) == 7

    def bad() -> None:
        raise VolumeError(tmp_path / "a.mha", "cannot be read")

    with pytest.raises(VolumeError, match="cannot be read"):
        run_stoppable(tmp_path / "a.mha", bad, lambda: False)
