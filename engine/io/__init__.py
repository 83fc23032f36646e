"""Volumes in and out: NIfTI, DICOM series, MHA/NRRD, in RAS canonical orientation."""

from engine.io.dicom import DicomSeries, list_dicom_series, read_dicom_series
from engine.io.readers import READ_SUFFIXES, load_label, load_volume
from engine.io.volume import SourceGeometry, Volume
from engine.io.writers import WRITE_SUFFIXES, save_mask

__all__ = [
    "READ_SUFFIXES",
    "WRITE_SUFFIXES",
    "DicomSeries",
    "SourceGeometry",
    "Volume",
    "list_dicom_series",
    "load_label",
    "load_volume",
    "read_dicom_series",
    "save_mask",
]
