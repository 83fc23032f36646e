"""Every bad input becomes a one-line VolumeError that names the file and the problem."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from engine.errors import VolumeError
from engine.io import load_label, load_volume, save_mask


def _raises(call, *, name: str, phrase: str) -> VolumeError:
    with pytest.raises(VolumeError) as info:
        call()
    message = str(info.value)
    assert name in message, message
    assert phrase in message, message
    assert "\n" not in message, message
    return info.value


def _nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def test_missing_file(tmp_path: Path) -> None:
    _raises(lambda: load_volume(tmp_path / "nope.nii.gz"), name="nope.nii.gz", phrase="not found")


def test_missing_folder(tmp_path: Path) -> None:
    _raises(lambda: load_volume(tmp_path / "dicom_gone"), name="dicom_gone", phrase="not found")


def test_unknown_suffix_lists_supported(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG")
    error = _raises(lambda: load_volume(path), name="scan.png", phrase="unsupported file type")
    for suffix in (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr", "DICOM folder"):
        assert suffix in error.problem


def test_single_dicom_file_hints_at_folder(tmp_path: Path) -> None:
    path = tmp_path / "slice.dcm"
    path.write_bytes(b"\0" * 10)
    _raises(lambda: load_volume(path), name="slice.dcm", phrase="give the folder")


def test_truncated_gzip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = _nifti(tmp_path / "cut.nii.gz", rng.normal(size=(32, 32, 16)).astype(np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _raises(lambda: load_volume(path), name="cut.nii.gz", phrase="truncated or corrupt")


def test_truncated_uncompressed_nifti(tmp_path: Path) -> None:
    path = _nifti(tmp_path / "cut.nii", np.ones((16, 16, 8), dtype=np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _raises(lambda: load_volume(path), name="cut.nii", phrase="truncated or corrupt")


def test_garbage_nifti(tmp_path: Path) -> None:
    path = tmp_path / "junk.nii"
    path.write_bytes(b"this is not an image" * 5)
    _raises(lambda: load_volume(path), name="junk.nii", phrase="cannot be read")


def test_gzip_that_is_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "plain.nii.gz"
    path.write_bytes(b"not gzip at all" * 40)
    with pytest.raises(VolumeError) as info:
        load_volume(path)
    assert "plain.nii.gz" in str(info.value)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_garbage_sitk_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(b"garbage")
    _raises(lambda: load_volume(path), name=f"junk{suffix}", phrase="cannot be read")


def test_mhd_with_missing_data_file(tmp_path: Path) -> None:
    path = tmp_path / "header_only.mhd"
    sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkInt16), str(path))
    (tmp_path / "header_only.raw").unlink()
    _raises(lambda: load_volume(path), name="header_only.mhd", phrase="cannot be read")


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_2d_image(tmp_path: Path, write_image, suffix: str) -> None:
    path = write_image(tmp_path / f"flat{suffix}", np.zeros((8, 9), np.float32), np.eye(4))
    _raises(lambda: load_volume(path), name=f"flat{suffix}", phrase="2D image")


def test_4d_image(tmp_path: Path) -> None:
    path = _nifti(tmp_path / "series4d.nii.gz", np.zeros((8, 8, 6, 3), np.float32))
    _raises(lambda: load_volume(path), name="series4d.nii.gz", phrase="4D image")


def test_4d_with_trailing_singleton_is_squeezed(tmp_path: Path) -> None:
    array = np.arange(8 * 7 * 6, dtype=np.float32).reshape(8, 7, 6, 1)
    volume = load_volume(_nifti(tmp_path / "single.nii.gz", array))
    assert volume.shape == (8, 7, 6)
    assert volume.source.shape == (8, 7, 6)
    np.testing.assert_array_equal(volume.array, array[..., 0])


def test_nan_and_inf_voxels_are_counted(tmp_path: Path) -> None:
    array = np.zeros((6, 6, 6), np.float32)
    array[0, 0, :3] = np.nan
    array[1, 1, 1] = np.inf
    path = _nifti(tmp_path / "holes.nii.gz", array)
    _raises(lambda: load_volume(path), name="holes.nii.gz", phrase="contains 4 NaN/Inf voxels")


def test_label_with_fractions(tmp_path: Path) -> None:
    array = np.zeros((6, 6, 6), np.float32)
    array[2, 2, 2] = 0.5
    path = _nifti(tmp_path / "soft.nii.gz", array)
    _raises(
        lambda: load_volume(path, label=True),
        name="soft.nii.gz",
        phrase="label map has non-integer values (e.g. 0.5)",
    )
    assert load_volume(path).array.dtype == np.float32  # as an image it is fine


def test_label_with_negative_values(tmp_path: Path) -> None:
    array = np.zeros((6, 6, 6), np.int16)
    array[1, 2, 3] = -1
    path = _nifti(tmp_path / "neg.nii.gz", array)
    _raises(lambda: load_volume(path, label=True), name="neg.nii.gz", phrase="negative values")


@pytest.mark.parametrize(
    ("stored", "high", "dtype"),
    [(np.float32, 10, np.uint8), (np.int32, 255, np.uint8), (np.uint16, 300, np.int16),
     (np.int32, 70000, np.int32)],
)
def test_label_dtype_is_integer_and_small(tmp_path: Path, stored, high: int, dtype) -> None:
    array = np.zeros((5, 6, 7), stored)
    array[1, 2, 3] = high
    volume = load_volume(_nifti(tmp_path / "labels.nii.gz", array), label=True)
    assert volume.array.dtype == dtype
    assert volume.array.max() == high


def test_series_uid_on_a_file(tmp_path: Path) -> None:
    path = _nifti(tmp_path / "ct.nii.gz", np.zeros((4, 4, 4), np.float32))
    _raises(lambda: load_volume(path, series_uid="1.2.3"), name="ct.nii.gz", phrase="DICOM folder")


# --- load_label ----------------------------------------------------------------------------


def test_label_shape_mismatch(tmp_path: Path) -> None:
    image = load_volume(_nifti(tmp_path / "img.nii.gz", np.zeros((64, 64, 32), np.float32)))
    path = _nifti(tmp_path / "lab.nii.gz", np.zeros((64, 64, 30), np.uint8))
    _raises(
        lambda: load_label(path, image),
        name="lab.nii.gz",
        phrase="shape (64, 64, 30) differs from its image (64, 64, 32)",
    )


def test_label_affine_mismatch(tmp_path: Path) -> None:
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    image = load_volume(_nifti(tmp_path / "img.nii.gz", np.zeros((8, 8, 4), np.float32), affine))
    shifted = affine.copy()
    shifted[2, 3] = 2.5
    path = _nifti(tmp_path / "lab.nii.gz", np.zeros((8, 8, 4), np.uint8), shifted)
    _raises(
        lambda: load_label(path, image),
        name="lab.nii.gz",
        phrase="affine differs from its image (max difference 2.5 mm)",
    )


def test_label_within_tolerance_and_other_voxel_order(tmp_path: Path) -> None:
    affine = np.diag([-0.8, -0.9, 2.5, 1.0])
    affine[:3, 3] = [40.0, 30.0, -10.0]
    ct = np.random.default_rng(0).normal(size=(8, 7, 4)).astype(np.float32)
    image = load_volume(_nifti(tmp_path / "img.nii.gz", ct, affine))

    labels = (ct > 0).astype(np.uint8)
    nearly = affine.copy()
    nearly[0, 3] += 4e-4
    label = load_label(_nifti(tmp_path / "lab.nii.gz", labels, nearly), image)
    np.testing.assert_array_equal(label.array, (image.array > 0).astype(np.uint8))

    # The same grid stored as RAS (e.g. by another tool): accepted, and voxels still match.
    canonical = nib.as_closest_canonical(nib.Nifti1Image(labels, affine))
    ras_path = tmp_path / "lab_ras.nii.gz"
    nib.save(canonical, str(ras_path))
    label = load_label(ras_path, image)
    np.testing.assert_array_equal(label.array, (image.array > 0).astype(np.uint8))


# --- save_mask -----------------------------------------------------------------------------


@pytest.fixture
def reference(tmp_path: Path) -> np.ndarray:
    affine = np.array([[0.0, -2.0, 0.0, 0.0], [-2.0, 0.0, 0.0, 0.0], [0, 0, -3.0, 0], [0, 0, 0, 1]])
    return load_volume(_nifti(tmp_path / "ref.nii.gz", np.zeros((6, 5, 4), np.float32), affine))


def test_save_mask_wrong_shape(reference, tmp_path: Path) -> None:
    target = tmp_path / "bad_shape.nii.gz"
    _raises(
        lambda: save_mask(np.zeros((6, 5, 4), bool), reference, target),
        name="bad_shape.nii.gz",
        phrase="mask shape (6, 5, 4) differs from its image (5, 6, 4)",
    )
    assert not target.exists()


@pytest.mark.parametrize("name", ["mask.png", "mask.mhd", "mask.nhdr"])
def test_save_mask_unwritable_suffix(reference, tmp_path: Path, name: str) -> None:
    _raises(
        lambda: save_mask(np.zeros(reference.shape, bool), reference, tmp_path / name),
        name=name,
        phrase="supported: .nii.gz, .nii, .mha, .nrrd",
    )


def test_save_mask_non_integer_values(reference, tmp_path: Path) -> None:
    mask = np.full(reference.shape, 0.3, np.float32)
    _raises(
        lambda: save_mask(mask, reference, tmp_path / "soft.nii.gz"),
        name="soft.nii.gz",
        phrase="non-integer",
    )


def test_failed_write_leaves_old_file_and_no_temp(
    reference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out_dir = tmp_path / "out"
    target = save_mask(np.zeros(reference.shape, bool), reference, out_dir / "mask.nii.gz")
    before = target.read_bytes()

    real_save = nib.save

    def half_then_fail(image, filename):  # a disk that fills up mid-write
        real_save(image, filename)
        Path(filename).write_bytes(Path(filename).read_bytes()[:50])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", half_then_fail)
    _raises(
        lambda: save_mask(np.ones(reference.shape, bool), reference, target),
        name="mask.nii.gz",
        phrase="No space left on device",
    )
    assert target.read_bytes() == before
    assert sorted(p.name for p in out_dir.iterdir()) == ["mask.nii.gz"]

    fresh = out_dir / "fresh.nii.gz"
    with pytest.raises(VolumeError):
        save_mask(np.ones(reference.shape, bool), reference, fresh)
    assert not fresh.exists()
    assert sorted(p.name for p in out_dir.iterdir()) == ["mask.nii.gz"]


def test_failed_sitk_write_is_a_volume_error(reference, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")  # a file where the parent folder should be
    _raises(
        lambda: save_mask(np.zeros(reference.shape, bool), reference, blocker / "mask.mha"),
        name="mask.mha",
        phrase="cannot be written",
    )


def test_save_mask_creates_parent_folders(reference, tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "mask.nrrd"
    assert save_mask(np.ones(reference.shape, bool), reference, target) == target
    assert target.is_file()
    assert os.listdir(target.parent) == ["mask.nrrd"]
