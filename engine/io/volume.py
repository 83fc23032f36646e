"""The one volume type of the engine: a 3D array in RAS canonical orientation plus geometry.

Every reader (NIfTI, DICOM series, MHA/NRRD) returns a :class:`Volume`; every consumer
(training, inference, the viewer) works in its canonical frame, and writers use
:attr:`Volume.source` to put a mask back in *exactly* the geometry the image came from.

Canonical orientation follows nibabel's ``as_closest_canonical``: the voxel axes are
permuted and flipped (never resampled) so that array axis 0 increases towards the
patient's Right, axis 1 towards Anterior and axis 2 towards Superior (RAS+ world, mm).
An oblique acquisition stays oblique: :attr:`Volume.affine` then has off-diagonal terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class SourceGeometry:
    """Where a volume came from, enough to write a result back in its grid.

    Attributes
    ----------
    path:
        The file or DICOM folder that was read.
    format:
        ``"nifti"``, ``"dicom"``, ``"mha"`` or ``"nrrd"``.
    shape:
        Array shape as stored in the source, in (i, j, k) voxel order.
    affine:
        4x4 voxel-to-world matrix of the *source* voxel grid, RAS+ mm (nibabel convention).
    ornt:
        nibabel orientation array (3x2) that maps the source axes to the canonical axes
        (``nibabel.orientations.io_orientation`` of ``affine``).
    series_uid:
        DICOM SeriesInstanceUID when the source is a DICOM series, else ``None``.
    nifti_header:
        Raw bytes of the source NIfTI header (qform/sform codes, units) when the source is
        NIfTI, so that a written mask carries the same header fields; else ``None``.
    """

    path: str
    format: str
    shape: tuple[int, int, int]
    affine: np.ndarray
    ornt: np.ndarray
    series_uid: str | None = None
    nifti_header: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image (CT in HU) or label map in RAS canonical orientation.

    Attributes
    ----------
    array:
        Voxel values, shape (X, Y, Z), canonical orientation. CT is float32 HU; label maps
        keep an integer dtype.
    affine:
        4x4 voxel-to-world matrix of ``array`` (RAS+ mm).
    source:
        The geometry of the file this came from (see :class:`SourceGeometry`).
    """

    array: np.ndarray
    affine: np.ndarray
    source: SourceGeometry

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the canonical array axes."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 mL = 1000 mm^3)."""
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0
