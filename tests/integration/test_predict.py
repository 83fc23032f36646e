"""``fedseg predict`` with a trained model on CTs in other geometries and formats.

The mask must come back on the CT's own voxel grid: same shape, same affine (NIfTI) or
origin/spacing/direction (MHA), read back raw with nibabel/SimpleITK, not through the
engine. Re-saving the same voxels in another voxel order or format must give the same
mask in that order, which is what makes these checks sharp.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

pytestmark = pytest.mark.integration

LPS = np.diag([-1.0, -1.0, 1.0])
VOLUME_LINE = re.compile(r"lesion volume ([0-9.]+) mL \((\d+) voxels\)")


def _predict(model: Path, image: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[float, int]:
    from engine.cli import main

    rc = main(["predict", "--model", str(model), "--image", str(image), "--out", str(out), "--device", "cpu"])
    stdout, stderr = capsys.readouterr()
    assert rc == 0, stderr
    assert out.is_file()
    match = VOLUME_LINE.search(stdout)
    assert match, stdout
    return float(match.group(1)), int(match.group(2))


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path

def _written_nifti_mask(mask_path: Path, image: Path, array: np.ndarray) -> tuple[np.ndarray, nib.Nifti1Image]:
    """The written mask, after checking it has exactly the source CT's shape and affine."""
    written = nib.load(str(mask_path))
    mask = np.asarray(written.dataobj)
    source = nib.load(str(image))
    assert mask.shape == source.shape == array.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
    return mask, source



def _rotation(axis: int, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [d for d in range(3) if d != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _reorder(array: np.ndarray, affine: np.ndarray, axes: tuple[int, int, int], flip: int) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels and physical grid stored with permuted axes and one flipped axis."""
    out = np.transpose(array, axes)
    perm = np.zeros((4, 4))
    perm[3, 3] = 1.0
    for new, old in enumerate(axes):
        perm[old, new] = 1.0  # old index = perm @ new index
    flipper = np.eye(4)
    flipper[flip, flip] = -1.0
    flipper[flip, 3] = out.shape[flip] - 1
    return np.flip(out, axis=flip).copy(), affine @ perm @ flipper


@pytest.fixture(scope="module")
def model(demo_run: Any) -> Path:
    return demo_run("fedavg").out


@pytest.fixture(scope="module")
def ct(phantom_sites: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(phantom_sites[0] / "imagesTr" / "site1_003.nii.gz"))
    return np.asarray(img.dataobj).astype(np.int16), img.affine.copy()


@pytest.fixture(scope="module")
def reference_mask(model: Path, ct: tuple[np.ndarray, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The mask of the CT in its original file; not trivially empty or full."""
    from engine.cli import main

    folder = tmp_path_factory.mktemp("predict-reference")
    image = _save_nifti(ct[0], ct[1], folder / "ct.nii.gz")
    assert main(["predict", "--model", str(model), "--image", str(image), "--out", str(folder / "mask.nii.gz"), "--device", "cpu"]) == 0
    mask = np.asarray(nib.load(str(folder / "mask.nii.gz")).dataobj)
    assert mask.shape == ct[0].shape
    assert 0 < mask.sum() < mask.size, "the reused model predicts an empty or full mask: geometry checks would be vacuous"
    return mask


def test_predict_permuted_flipped_nifti(model: Path, ct: tuple[np.ndarray, np.ndarray], reference_mask: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    array, affine = _reorder(ct[0], ct[1], axes=(2, 0, 1), flip=1)
    image = _save_nifti(array, affine, tmp_path / "permuted.nii.gz")
    ml, voxels = _predict(model, image, tmp_path / "mask.nii.gz", capsys)
    mask, source = _written_nifti_mask(tmp_path / "mask.nii.gz", image, array)
    expected, _ = _reorder(reference_mask, ct[1], axes=(2, 0, 1), flip=1)
    np.testing.assert_array_equal(mask, expected)
    assert voxels == int(mask.sum())
    assert ml == pytest.approx(round(voxels * abs(np.linalg.det(source.affine[:3, :3])) / 1000.0, 2), abs=0.0051)


def test_predict_oblique_permuted_nifti(model: Path, ct: tuple[np.ndarray, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    array, affine = _reorder(ct[0], ct[1], axes=(1, 2, 0), flip=0)
    oblique = affine.copy()
    oblique[:3, :] = _rotation(2, 20.0) @ _rotation(0, 10.0) @ affine[:3, :]
    image = _save_nifti(array, oblique, tmp_path / "oblique.nii.gz")
    ml, voxels = _predict(model, image, tmp_path / "mask.nii", capsys)
    mask, source = _written_nifti_mask(tmp_path / "mask.nii", image, array)
    assert set(np.unique(mask).tolist()) <= {0, 1}
    assert voxels == int(mask.sum())
    voxel_ml = abs(np.linalg.det(source.affine[:3, :3])) / 1000.0
    assert ml == pytest.approx(round(voxels * voxel_ml, 2), abs=0.0051)


def test_predict_mha(model: Path, ct: tuple[np.ndarray, np.ndarray], reference_mask: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    array, affine = ct
    lps = LPS @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))  # sitk wants (z, y, x)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in LPS @ affine[:3, 3]))
    image.SetDirection(tuple(float(d) for d in (lps / spacing).ravel()))
    path = tmp_path / "ct.mha"
    sitk.WriteImage(image, str(path))

    ml, voxels = _predict(model, path, tmp_path / "mask.mha", capsys)
    source = sitk.ReadImage(str(path))
    written = sitk.ReadImage(str(tmp_path / "mask.mha"))
    assert written.GetSize() == source.GetSize()
    np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(written.GetSpacing(), source.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-6)
    mask = sitk.GetArrayFromImage(written).transpose(2, 1, 0)
    assert set(np.unique(mask).tolist()) <= {0, 1}
    np.testing.assert_array_equal(mask, reference_mask)  # same grid, same voxel order
    assert voxels == int(mask.sum())
    assert ml == pytest.approx(round(voxels * float(np.prod(source.GetSpacing())) / 1000.0, 2), abs=0.0051)
