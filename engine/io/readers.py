"""Read a CT volume or a label map into a :class:`~engine.io.volume.Volume` (RAS canonical).

Supported sources: NIfTI (``.nii``, ``.nii.gz``, via nibabel), MetaImage and NRRD (``.mha``,
``.mhd``, ``.nrrd``, ``.nhdr``, via SimpleITK) and a folder holding a DICOM series (via
SimpleITK/GDCM, see :mod:`engine.io.dicom`).

Every reader ends in the same place: a 3D array in source (i, j, k) voxel order plus a RAS+
voxel-to-world affine. From there the array is permuted/flipped (never resampled) into
nibabel's closest-canonical RAS orientation, and the source geometry is kept so that
:func:`engine.io.writers.save_mask` can put a result back on exactly the source grid.

A caller that may have to stop a long read (the GUI's Cancel) passes ``should_stop`` and
``progress``: see :mod:`engine.io.stoppable`.

Every problem with the input becomes a :class:`~engine.errors.VolumeError` naming the file:
the CLI and the GUI show it as one line, so no other exception type may escape for bad input.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from os import PathLike
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

from engine.errors import Interrupted, VolumeError
from engine.io.dicom import read_dicom_series, sitk_error_text
from engine.io.stoppable import Progress, StopCheck, read_proxy_in_slabs, run_stoppable
from engine.io.volume import SourceGeometry, Volume

__all__ = [
    "READ_SUFFIXES",
    "load_label",
    "load_volume",
    "lps_geometry_from_ras_affine",
    "ras_affine_from_sitk",
]

log = logging.getLogger(__name__)

#: File suffixes :func:`load_volume` reads, mapped to :attr:`SourceGeometry.format`.
#: ``.nii.gz`` comes first so that it wins over a bare ``.gz`` test.
READ_SUFFIXES: dict[str, str] = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".mha": "mha",
    ".mhd": "mha",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
}

# DICOM/ITK world coordinates are LPS+, nibabel's (and ours) are RAS+: negate x and y.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# Affines of a label map and its image may differ by float rounding in the writing tool.
_AFFINE_ATOL = 1e-3


def file_suffix(path: Path, suffixes: dict[str, str] | tuple[str, ...]) -> str | None:
    """Return the (lower-case) suffix of ``path`` found in ``suffixes``, or ``None``."""
    name = path.name.lower()
    for suffix in suffixes:
        if name.endswith(suffix):
            return suffix
    return None


def ras_affine_from_sitk(image: sitk.Image) -> np.ndarray:
    """RAS+ voxel-to-world affine of the first three axes of a SimpleITK image.

    ITK maps index ``(i, j, k)`` to LPS+ ``origin + D @ diag(spacing) @ (i, j, k)``; flipping
    x and y turns that into nibabel's RAS+ convention.
    """
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)[:3]
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)[:3]
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing  # scales column j by spacing[j]
    lps[:3, 3] = origin
    return _LPS_TO_RAS @ lps


def lps_geometry_from_ras_affine(
    affine: np.ndarray,
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Inverse of :func:`ras_affine_from_sitk`: ``(spacing, origin, direction)`` for SimpleITK.

    ``direction`` is the row-major flattened 3x3 LPS direction matrix.
    """
    lps = _LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    return (
        tuple(float(s) for s in spacing),
        tuple(float(o) for o in lps[:3, 3]),
        tuple(float(d) for d in direction.ravel()),
    )


def _to_3d(path: Path, array: np.ndarray) -> np.ndarray:
    """Drop trailing singleton dimensions beyond the third; refuse 2D and real 4D data."""
    shape = tuple(int(n) for n in array.shape)
    if array.ndim < 3:
        raise VolumeError(path, f"is a {array.ndim}D image (shape {shape}); a 3D volume is needed")
    while array.ndim > 3 and array.shape[-1] == 1:
        # NIfTI writers often store a 3D volume as (X, Y, Z, 1); that is still one volume.
        array = array[..., 0]
    if array.ndim > 3:
        raise VolumeError(
            path, f"is a {array.ndim}D image (shape {shape}); only 3D volumes are supported"
        )
    if 0 in array.shape:
        raise VolumeError(path, f"has no voxels (shape {shape})")
    return array


def _truncated(err: BaseException) -> bool:
    if isinstance(err, (EOFError, zlib.error, gzip.BadGzipFile)):
        return True
    # nibabel on a short file: "Expected N bytes, got M bytes ... could the file be damaged?"
    # (OSError), a too-small buffer (ValueError), or, for a slab of a short file,
    # "not enough data in file" (ValueError).
    text = str(err).lower()
    return (
        ("expected" in text and "bytes" in text)
        or "damaged" in text
        or "buffer" in text
        or "not enough data" in text
    )


def _read_nifti(
    path: Path, label: bool, should_stop: StopCheck | None = None, progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray, bytes]:
    # Any exception from parsing a user's file is a property of the file, not a bug of ours;
    # nibabel, gzip and zlib raise many unrelated types (EOFError, zlib.error, OSError,
    # ValueError, ImageFileError, ...), so the whole parse is guarded.
    in_slabs = should_stop is not None or progress is not None
    try:
        # mmap=False: a memory map would keep the file open (on Windows it then cannot be
        # replaced by a mask written to the same path) and gains nothing for a full read.
        # keep_file_open: slabs of a .nii.gz continue one gzip stream (engine.io.stoppable).
        img = nib.load(str(path), mmap=False, keep_file_open=in_slabs)
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise VolumeError(path, f"is not a NIfTI image (nibabel read {type(img).__name__})")
        if in_slabs:
            # nibabel scales a slab as it scales the whole image (get_fdata casts the same
            # float64/float32 result to float32), so the values are the same
            data = read_proxy_in_slabs(path, img.dataobj, should_stop, progress)
            if not label:
                data = data.astype(np.float32, copy=False)
        elif label:
            # dataobj keeps the stored integer dtype when no scl_slope/inter is set.
            data = np.asanyarray(img.dataobj)
        else:
            # get_fdata applies scl_slope/scl_inter, giving HU.
            data = img.get_fdata(dtype=np.float32)
        affine = np.array(img.affine, dtype=np.float64)
        header = bytes(img.header.binaryblock)
    except (VolumeError, Interrupted):
        raise
    except Exception as err:  # noqa: BLE001 - see comment above
        what = "is truncated or corrupt" if _truncated(err) else "cannot be read as NIfTI"
        detail = " ".join(str(err).split())  # the CLI shows one line
        raise VolumeError(path, f"{what} ({type(err).__name__}: {detail})") from err
    return _to_3d(path, data), affine, header


def _array_from_sitk(path: Path, image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    components = image.GetNumberOfComponentsPerPixel()
    if components != 1:
        raise VolumeError(
            path,
            f"has {components} values per voxel (colour/vector image); a scalar volume is needed",
        )
    # GetArrayFromImage is in (k, j, i) order (C order, fastest axis last); reverse all axes so
    # that array[i, j, k] matches ITK index (i, j, k) and nibabel's convention.
    array = sitk.GetArrayFromImage(image)
    array = array.transpose(tuple(reversed(range(array.ndim))))
    array = _to_3d(path, array)
    return array, ras_affine_from_sitk(image)


def _read_sitk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise VolumeError(path, f"cannot be read ({sitk_error_text(err)})") from err
    return _array_from_sitk(path, image)


def _format_value(value: float) -> str:
    return f"{float(value):g}"


def _as_label(path: Path, array: np.ndarray) -> np.ndarray:
    """Return a label map as the smallest fitting integer dtype, refusing non-labels."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        fractional = array != np.round(array)
        if fractional.any():
            example = array[fractional].flat[0]
            raise VolumeError(
                path, f"label map has non-integer values (e.g. {_format_value(example)})"
            )
    low, high = array.min(), array.max()
    if low < 0:
        raise VolumeError(path, f"label map has negative values (e.g. {_format_value(low)})")
    for dtype in (np.uint8, np.int16, np.int32):
        if high <= np.iinfo(dtype).max:
            return array.astype(dtype, copy=False)
    raise VolumeError(path, f"label map has values too large (max {_format_value(high)})")


def _check_finite(path: Path, array: np.ndarray) -> None:
    if not np.issubdtype(array.dtype, np.floating):
        return
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise VolumeError(path, f"contains {bad} NaN/Inf voxels")


def load_volume(
    path: str | PathLike[str],
    *,
    series_uid: str | None = None,
    label: bool = False,
    should_stop: StopCheck | None = None,
    progress: Progress | None = None,
) -> Volume:
    """Read a CT volume (or label map) and reorient it to RAS canonical.

    Parameters
    ----------
    path:
        A ``.nii``, ``.nii.gz``, ``.mha``, ``.mhd``, ``.nrrd`` or ``.nhdr`` file, or a folder
        holding a DICOM series.
    series_uid:
        SeriesInstanceUID to read when a DICOM folder holds several series. Only valid for
        DICOM folders.
    label:
        ``False``: a CT image, returned as float32 (Hounsfield units, rescale applied).
        ``True``: a label map, returned with an integer dtype (uint8 when values fit).
    should_stop, progress:
        For a read the caller may stop (:mod:`engine.io.stoppable`): ``should_stop()`` is
        polled during the read, ``progress(done, total)`` called after every slab of a
        NIfTI file. Without them the file is read in one go.

    Returns
    -------
    Volume
        The voxels in RAS canonical orientation, their affine, and the source geometry.

    Raises
    ------
    VolumeError
        For a missing/unreadable/truncated file, an unsupported suffix, a 2D or 4D image,
        NaN/Inf voxels, an ambiguous or unknown DICOM series, a label map with non-integer
        or negative values, or a degenerate affine.
    Interrupted
        When ``should_stop()`` said stop.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeError(path, "file or folder not found")

    nifti_header: bytes | None = None
    uid: str | None = None
    if path.is_dir():
        image, series = run_stoppable(
            path, lambda: read_dicom_series(path, series_uid), should_stop
        )
        array, affine = _array_from_sitk(path, image)
        fmt, uid = "dicom", series.uid
    else:
        suffix = file_suffix(path, READ_SUFFIXES)
        if suffix is None:
            supported = ", ".join(READ_SUFFIXES)
            hint = ""
            if path.suffix.lower() in (".dcm", ".ima", ""):
                hint = " (for DICOM, give the folder holding the series, not one file)"
            raise VolumeError(
                path, f"unsupported file type; supported: {supported} or a DICOM folder{hint}"
            )
        if series_uid is not None:
            raise VolumeError(path, "a series UID (--series) applies only to a DICOM folder")
        fmt = READ_SUFFIXES[suffix]
        if fmt == "nifti":
            array, affine, nifti_header = _read_nifti(path, label, should_stop, progress)
        else:
            array, affine = run_stoppable(path, lambda: _read_sitk(path), should_stop)

    _check_finite(path, array)
    if label:
        array = _as_label(path, array)
    else:
        array = array.astype(np.float32, copy=False)

    rzs = affine[:3, :3]
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(rzs)) < 1e-12:
        raise VolumeError(path, "has a degenerate voxel-to-world affine (zero or NaN voxel size)")

    # Closest canonical RAS, exactly as nibabel.as_closest_canonical does it: permute/flip.
    ornt = io_orientation(affine)
    canonical = np.ascontiguousarray(apply_orientation(array, ornt))
    canonical_affine = affine @ inv_ornt_aff(ornt, array.shape)

    source = SourceGeometry(
        path=str(path),
        format=fmt,
        shape=tuple(int(n) for n in array.shape),  # type: ignore[arg-type]
        affine=affine,
        ornt=ornt,
        series_uid=uid,
        nifti_header=nifti_header,
    )
    log.debug(
        "loaded %s (%s, source shape %s, orientation %s, dtype %s)",
        path,
        fmt,
        source.shape,
        "".join(nib.aff2axcodes(affine)),
        canonical.dtype,
    )
    return Volume(array=canonical, affine=canonical_affine, source=source)


def load_label(
    path: str | PathLike[str], reference: Volume, *, should_stop: StopCheck | None = None,
    progress: Progress | None = None,
) -> Volume:
    """Read a label map and check it lies on the same voxel grid as its image.

    Parameters
    ----------
    path:
        The label map (any format :func:`load_volume` reads).
    reference:
        The image it belongs to, as returned by :func:`load_volume`.
    should_stop, progress:
        As for :func:`load_volume`.

    Returns
    -------
    Volume
        The label map in RAS canonical orientation, integer dtype.

    Raises
    ------
    VolumeError
        On the label path, if it cannot be read as a label map or its shape or affine
        differ from those of the image (affine tolerance 1e-3 mm).
    """
    path = Path(path)
    label = load_volume(path, label=True, should_stop=should_stop, progress=progress)
    src, ref = label.source, reference.source
    if src.shape == ref.shape and np.allclose(src.affine, ref.affine, atol=_AFFINE_ATOL, rtol=0):
        return label
    # Same physical grid stored in another voxel order (e.g. a DICOM image and a label
    # exported by a tool that flips rows): the canonical arrays still match voxel for voxel.
    if label.shape == reference.shape and np.allclose(
        label.affine, reference.affine, atol=_AFFINE_ATOL, rtol=0
    ):
        log.info("%s: voxel order differs from its image but the grid is the same", path)
        return label
    if label.shape != reference.shape:
        raise VolumeError(path, f"shape {src.shape} differs from its image {ref.shape}")
    if src.shape == ref.shape:
        diff = np.abs(src.affine - ref.affine).max()
    else:
        diff = np.abs(label.affine - reference.affine).max()
    raise VolumeError(path, f"affine differs from its image (max difference {diff:.4g} mm)")
