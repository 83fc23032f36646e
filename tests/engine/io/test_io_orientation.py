"""Canonical RAS orientation, proven with an asymmetric phantom at known world positions."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from engine.io import load_volume

SHAPE = (24, 22, 20)
RIGHT, SUPERIOR = 1000.0, 500.0


def _sizes(affine: np.ndarray) -> tuple[float, float]:
    """Block offset from the centre and block radius (mm), scaled to the field of view."""
    voxel = np.linalg.norm(affine[:3, :3], axis=0)
    extent = float(np.min(voxel * (np.array(SHAPE) - 1)))
    return 0.25 * extent, max(0.12 * extent, 0.75 * float(voxel.max()))


def _phantom(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source array with a sphere at the patient's right and one superior of the centre.

    RAS+: world +x is the patient's Right, +z is Superior.
    """
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), axis=-1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    centre = affine[:3, :3] @ ((np.array(SHAPE) - 1) / 2.0) + affine[:3, 3]
    offset, radius = _sizes(affine)
    array = np.zeros(SHAPE, dtype=np.float32)
    right = np.linalg.norm(world - (centre + [offset, 0, 0]), axis=-1) <= radius
    superior = np.linalg.norm(world - (centre + [0, 0, offset]), axis=-1) <= radius
    array[right] = RIGHT
    array[superior] = SUPERIOR
    assert right.sum() > 5 and superior.sum() > 5  # the phantom itself is sane
    return array, centre


def _centroid(array: np.ndarray, value: float) -> np.ndarray:
    return np.argwhere(array == value).mean(axis=0)


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_right_is_high_axis0_and_superior_high_axis2(
    tmp_path: Path, write_image, source_affine: np.ndarray, suffix: str
) -> None:
    array, centre = _phantom(source_affine)
    volume = load_volume(write_image(tmp_path / f"phantom{suffix}", array, source_affine))
    middle = (np.array(volume.shape) - 1) / 2.0

    right = _centroid(volume.array, RIGHT)
    superior = _centroid(volume.array, SUPERIOR)
    assert right[0] > middle[0] + 1, f"right block at axis-0 index {right[0]:.1f} of {volume.shape}"
    assert superior[2] > middle[2] + 1, f"superior block at axis-2 index {superior[2]:.1f}"
    # The other axes stay central (it is a permutation/flip, not just any shuffle).
    assert abs(right[2] - middle[2]) < 1.5 and abs(superior[0] - middle[0]) < 1.5

    # The canonical affine maps the blocks back to where they were put in the world.
    to_world = lambda idx: volume.affine[:3, :3] @ idx + volume.affine[:3, 3]  # noqa: E731
    offset, _ = _sizes(source_affine)
    tolerance = 0.5 * float(np.max(volume.spacing))
    np.testing.assert_allclose(to_world(right), centre + [offset, 0, 0], atol=tolerance)
    np.testing.assert_allclose(to_world(superior), centre + [0, 0, offset], atol=tolerance)

    # Each canonical axis points mostly along the world axis of the same number, positively.
    rzs = volume.affine[:3, :3]
    assert list(np.argmax(np.abs(rzs), axis=0)) == [0, 1, 2]
    assert np.all(np.diag(rzs) > 0)
    assert nib.aff2axcodes(volume.affine) == ("R", "A", "S")


def test_matches_nibabel_closest_canonical(
    tmp_path: Path, write_image, source_affine: np.ndarray
) -> None:
    array, _ = _phantom(source_affine)
    path = write_image(tmp_path / "phantom.nii", array, source_affine)
    volume = load_volume(path)
    expected = nib.as_closest_canonical(nib.load(str(path)))
    np.testing.assert_array_equal(volume.array, expected.get_fdata(dtype=np.float32))
    np.testing.assert_allclose(volume.affine, expected.affine, atol=1e-6)
    assert volume.array.flags.c_contiguous  # torch.from_numpy refuses negative strides


def test_source_geometry_is_kept(tmp_path: Path, write_image, source_affine: np.ndarray) -> None:
    array, _ = _phantom(source_affine)
    path = write_image(tmp_path / "phantom.nrrd", array, source_affine)
    volume = load_volume(path)
    assert volume.source.format == "nrrd"
    assert volume.source.path == str(path)
    assert volume.source.shape == SHAPE
    np.testing.assert_allclose(volume.source.affine, source_affine, atol=1e-6)
    expected_ornt = nib.orientations.io_orientation(source_affine)
    np.testing.assert_array_equal(volume.source.ornt, expected_ornt)
    assert volume.source.series_uid is None and volume.source.nifti_header is None
    # Spacing follows the canonical axes: the voxel sizes of the source, permuted.
    assert sorted(volume.spacing) == pytest.approx(
        sorted(np.linalg.norm(source_affine[:3, :3], axis=0))
    )
    assert volume.voxel_volume_ml == pytest.approx(
        abs(np.linalg.det(source_affine[:3, :3])) / 1000.0
    )
