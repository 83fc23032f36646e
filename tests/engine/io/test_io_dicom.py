"""DICOM series: listing, choosing a series, geometry and HU of a generated CT series."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from engine.errors import VolumeError
from engine.io import DicomSeries, list_dicom_series, load_volume, save_mask

UID_A = "1.2.826.0.1.3680043.2.1125.1.11"
UID_B = "1.2.826.0.1.3680043.2.1125.1.22"
SLICES, ROWS, COLS = 4, 5, 6
PIXEL_SPACING = (0.7, 0.8)  # x (along a row), y (down a column)
SLICE_SPACING = 2.5
ORIGIN_LPS = (-30.0, -40.0, 100.0)


def _hu(seed: int, slices: int = SLICES) -> np.ndarray:
    """HU in (slice, row, col) order, covering air to bone."""
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 2000, size=(slices, ROWS, COLS)).astype(np.int16)


@pytest.fixture
def one_series(tmp_path: Path, write_dicom_series) -> tuple[Path, np.ndarray]:
    hu = _hu(0)
    folder = tmp_path / "ct"
    write_dicom_series(
        folder, UID_A, "Head 2.5mm", hu, pixel_spacing=PIXEL_SPACING,
        slice_spacing=SLICE_SPACING, origin=ORIGIN_LPS,
    )
    return folder, hu


@pytest.fixture
def two_series(tmp_path: Path, write_dicom_series) -> tuple[Path, np.ndarray, np.ndarray]:
    folder = tmp_path / "study"
    hu_a, hu_b = _hu(1), _hu(2, slices=3)
    write_dicom_series(folder, UID_A, "Soft tissue", hu_a)
    write_dicom_series(folder, UID_B, "Bone", hu_b)
    return folder, hu_a, hu_b


def test_one_series_loads_with_hu_spacing_orientation(one_series) -> None:
    folder, hu = one_series
    volume = load_volume(folder)

    assert volume.source.format == "dicom"
    assert volume.source.series_uid == UID_A
    assert volume.source.shape == (COLS, ROWS, SLICES)
    assert volume.array.dtype == np.float32
    # LPS axial: column index -> patient's Left, row index -> Posterior, slices -> Superior.
    # RAS canonical therefore flips the first two axes and keeps the slice axis.
    expected = hu.astype(np.float32).transpose(2, 1, 0)[::-1, ::-1, :]
    np.testing.assert_array_equal(volume.array, expected)  # rescale (-1024) applied
    assert volume.spacing == pytest.approx((0.7, 0.8, 2.5))
    np.testing.assert_allclose(volume.affine[:3, :3], np.diag([0.7, 0.8, 2.5]), atol=1e-6)
    # Canonical voxel (0, 0, 0) is the source's last column and last row of the first slice.
    corner_lps = np.array(ORIGIN_LPS) + [(COLS - 1) * 0.7, (ROWS - 1) * 0.8, 0.0]
    np.testing.assert_allclose(volume.affine[:3, 3], corner_lps * [-1, -1, 1], atol=1e-4)
    assert nib.aff2axcodes(volume.source.affine) == ("L", "P", "S")


def test_list_series_reports_uid_description_files_modality(two_series) -> None:
    folder, _, _ = two_series
    series = sorted(list_dicom_series(folder), key=lambda s: s.uid)
    assert series == [
        DicomSeries(UID_A, "Soft tissue", SLICES, "CT"),
        DicomSeries(UID_B, "Bone", 3, "CT"),
    ]


def test_several_series_without_uid_lists_them(two_series) -> None:
    folder, _, _ = two_series
    with pytest.raises(VolumeError) as info:
        load_volume(folder)
    message = str(info.value)
    assert message.startswith(str(folder))
    assert f"{UID_A} (Soft tissue, {SLICES} files)" in message
    assert f"{UID_B} (Bone, 3 files)" in message
    assert "--series UID" in message
    assert "\n" not in message


def test_series_uid_picks_the_right_series(two_series) -> None:
    folder, hu_a, hu_b = two_series
    volume_b = load_volume(folder, series_uid=UID_B)
    assert volume_b.source.series_uid == UID_B
    np.testing.assert_array_equal(
        volume_b.array, hu_b.astype(np.float32).transpose(2, 1, 0)[::-1, ::-1, :]
    )
    volume_a = load_volume(folder, series_uid=UID_A)
    assert volume_a.shape == (COLS, ROWS, SLICES)
    np.testing.assert_array_equal(
        volume_a.array, hu_a.astype(np.float32).transpose(2, 1, 0)[::-1, ::-1, :]
    )


def test_unknown_series_uid_lists_available(two_series) -> None:
    folder, _, _ = two_series
    with pytest.raises(VolumeError) as info:
        load_volume(folder, series_uid="9.9.9")
    message = str(info.value)
    assert "9.9.9" in message and "available" in message
    assert UID_A in message and UID_B in message


def test_rescale_slope_is_applied(tmp_path: Path, write_dicom_series) -> None:
    hu = (_hu(3) // 2 * 2).astype(np.int16)  # even, so that slope 2 stores them exactly
    folder = tmp_path / "slope"
    write_dicom_series(folder, UID_A, "slope 2", hu, intercept=-1024.0, slope=2.0)
    volume = load_volume(folder)
    np.testing.assert_array_equal(
        volume.array, hu.astype(np.float32).transpose(2, 1, 0)[::-1, ::-1, :]
    )


def test_empty_folder(tmp_path: Path) -> None:
    folder = tmp_path / "empty_dicom"
    folder.mkdir()
    with pytest.raises(VolumeError) as info:
        load_volume(folder)
    assert "empty_dicom" in str(info.value) and "empty" in info.value.problem


def test_folder_without_dicom(tmp_path: Path) -> None:
    folder = tmp_path / "notes_folder"
    folder.mkdir()
    (folder / "readme.txt").write_text("not a DICOM file")
    (folder / "scan.dcm").write_bytes(b"\0" * 300)
    with pytest.raises(VolumeError) as info:
        list_dicom_series(folder)
    assert "notes_folder" in str(info.value) and "no DICOM series" in str(info.value)


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha", ".nrrd"])
def test_dicom_mask_written_on_the_series_grid(one_series, tmp_path: Path, suffix: str) -> None:
    folder, hu = one_series
    volume = load_volume(folder)
    out = save_mask(volume.array > 0, volume, tmp_path / f"mask{suffix}")

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), UID_A))
    series = reader.Execute()
    expected = (hu > 0).astype(np.uint8)  # (slice, row, col), as GetArrayFromImage gives
    if suffix == ".nii.gz":
        written = nib.load(str(out))
        np.testing.assert_array_equal(np.asanyarray(written.dataobj), expected.transpose(2, 1, 0))
        np.testing.assert_allclose(written.affine, volume.source.affine, atol=1e-4)
        assert int(written.header["sform_code"]) == 1
    else:
        written = sitk.ReadImage(str(out))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(written), expected)
        np.testing.assert_allclose(written.GetSpacing(), series.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(written.GetOrigin(), series.GetOrigin(), atol=1e-6)
        np.testing.assert_allclose(written.GetDirection(), series.GetDirection(), atol=1e-6)
