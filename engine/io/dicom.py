"""DICOM series: list the series in a folder and read one of them (SimpleITK / GDCM).

A DICOM "volume" is a folder of single-slice files. One folder may hold several series
(a scout, a soft-tissue and a bone reconstruction, ...), so the user must be able to see
what is there and pick one by its SeriesInstanceUID (``--series UID`` on the command line).

GDCM sorts the slices by ImagePositionPatient along the slice normal and applies
RescaleSlope/RescaleIntercept, so the pixel values of the image we return are Hounsfield
units for CT. Only the folder itself is searched, not its subfolders: a recursive search
could silently mix series from different studies.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import SimpleITK as sitk

from engine.errors import VolumeError

__all__ = ["DicomSeries", "list_dicom_series", "read_dicom_series"]

log = logging.getLogger(__name__)

_TAG_DESCRIPTION = "0008|103e"
_TAG_MODALITY = "0008|0060"


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series found in a folder.

    Attributes
    ----------
    uid:
        SeriesInstanceUID (0020,000E) as reported by GDCM.
    description:
        SeriesDescription (0008,103E) of its first file, ``""`` when absent.
    num_files:
        Number of slice files that belong to the series.
    modality:
        Modality (0008,0060) of its first file (``"CT"``, ``"MR"``, ...), ``""`` when absent.
    """

    uid: str
    description: str
    num_files: int
    modality: str

    def summary(self) -> str:
        """One-line description used in error messages: ``UID (description, N files)``."""
        description = self.description or "no description"
        return f"{self.uid} ({description}, {self.num_files} files)"


def sitk_error_text(err: BaseException) -> str:
    """One line from a SimpleITK/ITK exception, without its C++ source location."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if lines and lines[0].startswith("Exception thrown in SimpleITK"):
        lines = lines[1:]  # "... in SimpleITK ImageFileReader_Execute: /path/file.cxx:99:"
    text = " ".join(lines)
    # "sitk::ERROR: ..." or "ITK ERROR: MetaImageIO(0x55d0...): ..." -> the message only.
    text = re.sub(r"^(sitk::ERROR:|ITK ERROR:)\s*(\w+\(0x[0-9a-fA-F]+\):\s*)?", "", text)
    return text or type(err).__name__


def _check_folder(folder: Path) -> None:
    if not folder.exists():
        raise VolumeError(folder, "folder not found")
    if not folder.is_dir():
        raise VolumeError(folder, "is not a folder (a DICOM series is read from its folder)")
    if not any(folder.iterdir()):
        raise VolumeError(folder, "folder is empty, no DICOM series to read")


def _first_file_tags(filename: str) -> tuple[str, str]:
    """Read SeriesDescription and Modality of one file (header only, no pixel data)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(filename)
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:  # a broken first file must not hide the other series
        log.warning("cannot read the DICOM header of %s: %s", filename, sitk_error_text(err))
        return "", ""

    def tag(key: str) -> str:
        return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""

    return tag(_TAG_DESCRIPTION), tag(_TAG_MODALITY)


def _series_files(folder: Path, uid: str) -> tuple[str, ...]:
    return tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))


def list_dicom_series(folder: str | PathLike[str]) -> list[DicomSeries]:
    """List the DICOM series stored directly in ``folder``.

    Parameters
    ----------
    folder:
        A folder holding DICOM slice files (subfolders are not searched).

    Returns
    -------
    list of DicomSeries
        One entry per SeriesInstanceUID, in the order GDCM reports them.

    Raises
    ------
    VolumeError
        If the folder is missing, empty, or holds no readable DICOM file.
    """
    folder = Path(folder)
    _check_folder(folder)
    try:
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as err:
        raise VolumeError(
            folder, f"cannot scan the folder for DICOM files ({sitk_error_text(err)})"
        ) from err
    if not uids:
        count = sum(1 for p in folder.iterdir() if p.is_file())
        raise VolumeError(
            folder,
            f"no DICOM series found ({count} files checked; subfolders are not searched)",
        )
    series = []
    for uid in uids:
        files = _series_files(folder, uid)
        description, modality = _first_file_tags(files[0]) if files else ("", "")
        series.append(DicomSeries(uid, description, len(files), modality))
    log.debug("DICOM series in %s: %s", folder, [s.summary() for s in series])
    return series


def _choose_series(folder: Path, series: list[DicomSeries], series_uid: str | None) -> DicomSeries:
    listing = "; ".join(s.summary() for s in series)
    if series_uid is None:
        if len(series) == 1:
            return series[0]
        raise VolumeError(
            folder,
            f"folder holds {len(series)} DICOM series, choose one with --series UID: {listing}",
        )
    for s in series:
        if s.uid == series_uid:
            return s
    raise VolumeError(folder, f"no DICOM series with UID {series_uid!r}; available: {listing}")


def read_dicom_series(
    folder: str | PathLike[str], series_uid: str | None = None
) -> tuple[sitk.Image, DicomSeries]:
    """Read one DICOM series of a folder as a 3D SimpleITK image.

    Parameters
    ----------
    folder:
        A folder holding DICOM slice files.
    series_uid:
        SeriesInstanceUID to read; may be omitted when the folder holds a single series.

    Returns
    -------
    image : SimpleITK.Image
        Slices sorted by position; pixel values rescaled (HU for CT); LPS geometry.
    series : DicomSeries
        The series that was read.

    Raises
    ------
    VolumeError
        If the folder is not usable, several series exist and none was chosen, the UID is
        unknown, or the slices cannot be read.
    """
    folder = Path(folder)
    series = _choose_series(folder, list_dicom_series(folder), series_uid)
    files = _series_files(folder, series.uid)
    if series.modality and series.modality != "CT":
        # Not an error: the viewer can show MR too; HU-based models will just do badly.
        log.warning("%s: series %s has modality %s, not CT", folder, series.uid, series.modality)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise VolumeError(
            folder, f"cannot read DICOM series {series.uid} ({sitk_error_text(err)})"
        ) from err
    log.info("read DICOM series %s from %s (%d files)", series.uid, folder, len(files))
    return image, series
