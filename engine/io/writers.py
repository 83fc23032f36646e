"""Write a mask back onto the exact voxel grid of the image it was computed from.

Masks are computed in the canonical RAS frame of :class:`~engine.io.volume.Volume`; here
they are permuted/flipped back into the source voxel order and written with the source
affine, so that any other tool overlays them on the original image without resampling.
"""

from __future__ import annotations

import logging
import os
import uuid
from os import PathLike
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from nibabel.orientations import apply_orientation, ornt_transform

from engine.errors import VolumeError
from engine.io.dicom import sitk_error_text
from engine.io.readers import file_suffix, lps_geometry_from_ras_affine
from engine.io.volume import Volume

__all__ = ["WRITE_SUFFIXES", "save_mask"]

log = logging.getLogger(__name__)

#: Suffixes :func:`save_mask` writes. The two-file formats ``.mhd`` and ``.nhdr`` are left
#: out on purpose: their header names the data file, so they cannot be written to a
#: temporary name and renamed atomically.
WRITE_SUFFIXES: dict[str, str] = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".mha": "mha",
    ".nrrd": "nrrd",
}

_CANONICAL_ORNT = np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64)


def _mask_as_uint8(path: Path, mask: np.ndarray) -> np.ndarray:
    if mask.dtype == np.bool_:
        return mask.astype(np.uint8)
    if not np.issubdtype(mask.dtype, np.integer):
        if not np.all(np.isfinite(mask)) or np.any(mask != np.round(mask)):
            raise VolumeError(path, "mask has non-integer values; give a boolean or label array")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise VolumeError(
            path,
            f"mask values {mask.min():g}..{mask.max():g} do not fit in uint8 (0..255)",
        )
    return mask.astype(np.uint8)


def _nifti_image(array: np.ndarray, reference: Volume) -> nib.Nifti1Image | nib.Nifti2Image:
    source = reference.source
    affine = source.affine
    if source.nifti_header is not None:
        # Reusing the source header keeps qform/sform codes, units and the exact stored
        # affine (re-deriving a qform from the float affine could round differently).
        block = source.nifti_header
        is_nifti2 = len(block) == nib.Nifti2Header.template_dtype.itemsize
        header_cls = nib.Nifti2Header if is_nifti2 else nib.Nifti1Header
        header = header_cls(binaryblock=block)
        header.set_data_dtype(np.uint8)
        # The CT's scl_slope/scl_inter (e.g. -1024 HU) must not be applied to mask values.
        header.set_slope_inter(None, None)
        header["cal_min"] = 0
        header["cal_max"] = 0
        header.set_intent("label")
        header["descrip"] = b"FedSeg Studio mask"
        image_cls = nib.Nifti2Image if header_cls is nib.Nifti2Header else nib.Nifti1Image
        # The header's best affine equals ``affine`` (it was read from it), so nibabel keeps
        # the header's qform/sform as they are instead of recomputing them.
        return image_cls(array, affine, header=header)
    image = nib.Nifti1Image(array, affine)
    # Code 1 ("scanner"): the affine is the scanner geometry of the DICOM/MHA/NRRD source.
    image.header.set_sform(affine, code=1)
    image.header.set_qform(affine, code=1)
    image.header.set_xyzt_units("mm")
    image.header.set_intent("label")
    return image


def _write_sitk(array: np.ndarray, reference: Volume, target: Path) -> None:
    # Inverse of the reader: array[i, j, k] -> ITK index (i, j, k) -> numpy (k, j, i).
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    spacing, origin, direction = lps_geometry_from_ras_affine(reference.source.affine)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(target), True)  # useCompression: masks compress ~100x


def save_mask(
    mask: np.ndarray, reference: Volume, path: str | PathLike[str]
) -> Path:
    """Write a mask, computed in the canonical frame of ``reference``, on its source grid.

    Parameters
    ----------
    mask:
        Boolean or small-integer array of shape ``reference.shape`` (canonical RAS frame).
    reference:
        The image the mask belongs to, as returned by :func:`engine.io.load_volume`.
    path:
        Output file; its suffix picks the format: ``.nii``/``.nii.gz`` (NIfTI; the source
        header is reused when the source was NIfTI), ``.mha`` or ``.nrrd``. Parent folders
        are created.

    Returns
    -------
    pathlib.Path
        ``path``. The file is written as uint8 in the source voxel order with the source
        affine, via a temporary file and an atomic rename, so a failed write never leaves
        a partial file at ``path``.

    Raises
    ------
    VolumeError
        If the mask shape differs from the reference, the values do not fit uint8, the
        suffix is not writable, or the file cannot be written.
    """
    path = Path(path)
    mask = np.asarray(mask)
    if mask.shape != reference.shape:
        raise VolumeError(
            path, f"mask shape {tuple(mask.shape)} differs from its image {reference.shape}"
        )
    suffix = file_suffix(path, WRITE_SUFFIXES)
    if suffix is None:
        raise VolumeError(
            path, f"cannot write this file type; supported: {', '.join(WRITE_SUFFIXES)}"
        )
    data = _mask_as_uint8(path, mask)

    source = reference.source
    # Undo the canonical reorientation: the transform from the canonical (identity)
    # orientation back to the source one is the inverse of ``source.ornt``.
    to_source = ornt_transform(_CANONICAL_ORNT, np.asarray(source.ornt))
    data = np.ascontiguousarray(apply_orientation(data, to_source))
    if tuple(data.shape) != tuple(source.shape):  # a Volume built by hand with a wrong ornt
        raise VolumeError(
            path, f"mask maps to shape {data.shape}, not the source shape {source.shape}"
        )

    # Same folder as the target so os.replace is an atomic rename on the same filesystem;
    # the real suffix is kept because nibabel and SimpleITK choose the format from it.
    stem = path.name[: len(path.name) - len(suffix)]
    temp = path.with_name(f".{stem}.{uuid.uuid4().hex[:12]}.tmp{suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if WRITE_SUFFIXES[suffix] == "nifti":
            nib.save(_nifti_image(data, reference), str(temp))
        else:
            _write_sitk(data, reference, temp)
        os.replace(temp, path)
    except (OSError, RuntimeError, ValueError, nib.spatialimages.HeaderDataError) as err:
        if isinstance(err, RuntimeError):
            detail = sitk_error_text(err)
        else:
            detail = " ".join(str(err).split())
        raise VolumeError(path, f"cannot be written ({type(err).__name__}: {detail})") from err
    finally:
        try:
            temp.unlink(missing_ok=True)
        except OSError:  # best effort; the error that matters is the one above
            log.warning("could not remove temporary file %s", temp)
    log.info("wrote mask %s (%d voxels set)", path, int(np.count_nonzero(data)))
    return path
