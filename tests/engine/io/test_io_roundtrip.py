"""load_volume -> mask in the canonical frame -> save_mask -> the mask sits on the source grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from engine.io import load_volume, save_mask

SHAPE = (7, 9, 5)  # odd and all different, so a wrong permutation cannot go unnoticed
SUFFIXES = [".nii", ".nii.gz", ".mha", ".nrrd"]


def _source_array(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 1000, size=SHAPE).astype(np.int16)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_same_format(
    tmp_path: Path, write_image, read_raw, source_affine: np.ndarray, suffix: str
) -> None:
    source = _source_array()
    src_path = write_image(tmp_path / f"ct{suffix}", source, source_affine)

    volume = load_volume(src_path)
    assert volume.array.dtype == np.float32
    assert sorted(volume.shape) == sorted(SHAPE)
    mask = volume.array > 100

    out = save_mask(mask, volume, tmp_path / "out" / f"mask{suffix}")
    assert out == tmp_path / "out" / f"mask{suffix}"

    written, affine = read_raw(out)
    _, source_affine_read = read_raw(src_path)
    assert written.dtype == np.uint8
    assert written.shape == SHAPE
    np.testing.assert_array_equal(written, (source > 100).astype(np.uint8))
    np.testing.assert_allclose(affine, source_affine_read, atol=1e-5)
    np.testing.assert_allclose(affine, source_affine, atol=1e-4)
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp file left


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_sitk_round_trip_keeps_spacing_origin_direction(
    tmp_path: Path, write_image, source_affine: np.ndarray, suffix: str
) -> None:
    src_path = write_image(tmp_path / f"ct{suffix}", _source_array(), source_affine)
    volume = load_volume(src_path)
    out = save_mask(volume.array > 0, volume, tmp_path / f"mask{suffix}")

    original, written = sitk.ReadImage(str(src_path)), sitk.ReadImage(str(out))
    assert written.GetSize() == original.GetSize()
    np.testing.assert_allclose(written.GetSpacing(), original.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(written.GetOrigin(), original.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(written.GetDirection(), original.GetDirection(), atol=1e-6)
    assert written.GetPixelID() == sitk.sitkUInt8


@pytest.mark.parametrize("out_suffix", [".nii.gz", ".mha", ".nrrd"])
@pytest.mark.parametrize("src_suffix", [".nii.gz", ".mha"])
def test_round_trip_across_formats(
    tmp_path: Path, write_image, read_raw, src_suffix: str, out_suffix: str
) -> None:
    affine = np.array(
        [[0.0, -3.906, 0.0, 10.0], [-3.906, 0.0, 0.0, -20.0], [0.0, 0.0, -2.5, 30.0], [0, 0, 0, 1]]
    )
    source = _source_array()
    src_path = write_image(tmp_path / f"ct{src_suffix}", source, affine)
    volume = load_volume(src_path)
    out = save_mask(volume.array < -500, volume, tmp_path / f"mask{out_suffix}")

    written, written_affine = read_raw(out)
    np.testing.assert_array_equal(written, (source < -500).astype(np.uint8))
    np.testing.assert_allclose(written_affine, affine, atol=1e-4)


def test_nifti_header_codes_and_scaling_survive(tmp_path: Path, write_image) -> None:
    affine = np.diag([-1.5, -2.0, 3.0, 1.0])
    affine[:3, 3] = [12.0, -7.0, 3.0]
    raw = np.random.default_rng(1).integers(0, 2000, size=SHAPE).astype(np.int16)
    src_path = write_image(
        tmp_path / "ct.nii.gz", raw, affine, qform_code=2, sform_code=4, slope=1.0, inter=-1024.0
    )

    volume = load_volume(src_path)
    # nibabel applies scl_slope/scl_inter: stored 0..1999 -> HU -1024..975.
    hu_expected = nib.as_closest_canonical(nib.load(str(src_path))).get_fdata()
    np.testing.assert_array_equal(volume.array, hu_expected.astype(np.float32))
    assert volume.array.min() < -900

    out = save_mask(volume.array > 0, volume, tmp_path / "mask.nii.gz")
    written = nib.load(str(out))
    assert int(written.header["qform_code"]) == 2
    assert int(written.header["sform_code"]) == 4
    np.testing.assert_array_equal(written.affine, nib.load(str(src_path)).affine)
    # The CT's -1024 intercept must not be carried over to the mask values.
    np.testing.assert_array_equal(written.get_fdata(), (raw.astype(float) - 1024 > 0))


def test_non_nifti_source_gets_scanner_codes(
    tmp_path: Path, write_image, oblique_affine: np.ndarray
) -> None:
    src_path = write_image(tmp_path / "ct.nrrd", _source_array(), oblique_affine)
    volume = load_volume(src_path)
    out = save_mask(volume.array > 0, volume, tmp_path / "mask.nii")
    header = nib.load(str(out)).header
    assert int(header["qform_code"]) == 1
    assert int(header["sform_code"]) == 1
    np.testing.assert_allclose(header.get_qform(), oblique_affine, atol=1e-4)
    np.testing.assert_allclose(header.get_sform(), oblique_affine, atol=1e-4)


def test_save_mask_writes_label_values_and_overwrites(tmp_path: Path, write_image) -> None:
    src_path = write_image(tmp_path / "ct.nii.gz", _source_array(), np.eye(4))
    volume = load_volume(src_path)
    target = tmp_path / "mask.nii.gz"
    save_mask(np.ones(volume.shape, dtype=bool), volume, target)
    labels = (np.arange(np.prod(volume.shape)) % 4).reshape(volume.shape).astype(np.int64)
    save_mask(labels, volume, target)
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(target)).dataobj), labels)


def test_nifti2_source_is_written_as_nifti2(tmp_path: Path, read_raw) -> None:
    affine = np.diag([-2.0, 3.0, 1.5, 1.0])
    source = _source_array().astype(np.float32)
    src_path = tmp_path / "ct2.nii"
    nib.save(nib.Nifti2Image(source, affine), str(src_path))
    volume = load_volume(src_path)
    out = save_mask(volume.array > 0, volume, tmp_path / "mask.nii")
    assert isinstance(nib.load(str(out)), nib.Nifti2Image)
    written, written_affine = read_raw(out)
    np.testing.assert_array_equal(written, (source > 0).astype(np.uint8))
    np.testing.assert_array_equal(written_affine, affine)
