"""Shared fixtures for the engine.io tests: source geometries, writers of test files.

The writers here deliberately do NOT use engine.io: they convert RAS affines to ITK's LPS
geometry independently, so that a wrong convention in the engine makes the tests fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk


def _oblique_affine() -> np.ndarray:
    angle = np.deg2rad(15.0)
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 0.9, 2.0])
    affine[:3, 3] = [-100.0, 50.0, 20.0]
    return affine


#: Source voxel-to-world (RAS+) affines the readers and writers must handle.
SOURCE_AFFINES: dict[str, np.ndarray] = {
    "identity": np.eye(4),
    "flipped": np.diag([-1.5, -2.0, 3.0, 1.0]),
    # OpenKBP: axis 0 -> posterior, axis 1 -> patient's left, axis 2 -> inferior.
    "permuted": np.array(
        [[0.0, -3.906, 0.0, 0.0], [-3.906, 0.0, 0.0, 0.0], [0.0, 0.0, -2.5, 0.0], [0, 0, 0, 1]]
    ),
    "oblique": _oblique_affine(),
}


@pytest.fixture(params=list(SOURCE_AFFINES), ids=list(SOURCE_AFFINES))
def source_affine(request: pytest.FixtureRequest) -> np.ndarray:
    """Each of :data:`SOURCE_AFFINES` in turn (a copy, so tests may not alter the others)."""
    return SOURCE_AFFINES[request.param].copy()


def sitk_geometry(affine: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """(spacing, origin, row-major direction) in ITK's LPS convention for a RAS affine."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    return tuple(spacing.tolist()), tuple(lps[:3, 3].tolist()), tuple(direction.ravel().tolist())


def sitk_affine(image: sitk.Image) -> np.ndarray:
    """RAS affine of a SimpleITK image (test-side reference implementation)."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


@pytest.fixture
def oblique_affine() -> np.ndarray:
    """A rotated (15 degrees about z), anisotropic, translated affine."""
    return SOURCE_AFFINES["oblique"].copy()


@pytest.fixture
def read_raw() -> Callable[[Path], tuple[np.ndarray, np.ndarray]]:
    """Return ``read(path) -> (array in (i, j, k) order, RAS affine)``, without engine.io."""

    def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
        path = Path(path)
        if path.name.endswith((".nii", ".nii.gz")):
            image = nib.load(str(path))
            return np.asanyarray(image.dataobj), image.affine
        image = sitk.ReadImage(str(path))
        return sitk.GetArrayFromImage(image).transpose(2, 1, 0), sitk_affine(image)

    return read


WriteImage = Callable[..., Path]


@pytest.fixture
def write_image() -> WriteImage:
    """Return ``write(path, array_ijk, affine, **nifti_kwargs) -> path``.

    The format follows the suffix: NIfTI through nibabel (qform/sform code 1 unless
    ``qform_code``/``sform_code`` are given; optional ``slope``/``inter``), anything else
    through SimpleITK with the LPS geometry of ``affine``.
    """

    def write(
        path: Path,
        array: np.ndarray,
        affine: np.ndarray,
        *,
        qform_code: int = 1,
        sform_code: int = 1,
        slope: float | None = None,
        inter: float | None = None,
    ) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.name.endswith((".nii", ".nii.gz")):
            image = nib.Nifti1Image(array, affine)
            image.header.set_qform(affine, code=qform_code)
            image.header.set_sform(affine, code=sform_code)
            if slope is not None:
                image.header.set_slope_inter(slope, inter)
            nib.save(image, str(path))
        else:
            image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).T))
            spacing, origin, direction = sitk_geometry(affine)
            image.SetSpacing(spacing[: image.GetDimension()])
            image.SetOrigin(origin[: image.GetDimension()])
            if image.GetDimension() == 3:
                image.SetDirection(direction)
            sitk.WriteImage(image, str(path))
        return path

    return write


def _shared_data_root() -> Path | None:
    repo = Path(__file__).resolve().parents[3]
    for candidate in (repo / ".." / "shared", repo / "shared"):
        root = candidate / "data" / "openkbp-sites"
        if root.is_dir():
            return root.resolve()
    return None


@pytest.fixture(scope="session")
def openkbp_root() -> Path:
    """The real OpenKBP CT sites (read-only); skips when the shared folder is absent."""
    root = _shared_data_root()
    if root is None:
        pytest.skip("real CT data ../shared/data/openkbp-sites not found next to the repository")
    return root
