"""Real head-and-neck CT (OpenKBP, shared read-only data): orientation from the anatomy."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from engine.io import load_label, load_volume, save_mask

RIGHT_PAROTID, LEFT_PAROTID = 6, 7


@pytest.fixture(scope="module")
def pt_1(openkbp_root: Path):
    image_path = openkbp_root / "site-a" / "imagesTr" / "pt_1.nii.gz"
    label_path = openkbp_root / "site-a" / "labelsTr" / "pt_1.nii.gz"
    if not (image_path.is_file() and label_path.is_file()):
        pytest.skip(f"{image_path} or its label is missing from the shared data")
    image = load_volume(image_path)
    return image, load_label(label_path, image), label_path


def test_image_is_hu_float32_with_site_a_spacing(pt_1) -> None:
    image, _, _ = pt_1
    assert image.array.dtype == np.float32
    assert image.shape == (128, 128, 128)
    assert -1024 <= image.array.min() and image.array.max() <= 3071
    assert sorted(image.spacing) == pytest.approx([2.5, 3.906, 3.906], abs=1e-3)
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    assert nib.aff2axcodes(image.source.affine) == ("P", "L", "I")


def test_right_parotid_has_higher_axis0_index_than_left(pt_1) -> None:
    _, label, _ = pt_1
    assert label.array.dtype == np.uint8
    right = np.argwhere(label.array == RIGHT_PAROTID).mean(axis=0)
    left = np.argwhere(label.array == LEFT_PAROTID).mean(axis=0)
    assert right[0] > left[0] + 5, f"right parotid {right}, left parotid {left}"


def test_mask_written_back_matches_the_source_label_file(pt_1, tmp_path: Path) -> None:
    image, label, label_path = pt_1
    out = save_mask(label.array == 1, image, tmp_path / "ptv70.nii.gz")  # PTV70
    written, source = nib.load(str(out)), nib.load(str(label_path))
    np.testing.assert_array_equal(
        np.asanyarray(written.dataobj), (np.asanyarray(source.dataobj) == 1).astype(np.uint8)
    )
    np.testing.assert_array_equal(written.affine, source.affine)
    assert int(written.header["qform_code"]) == int(source.header["qform_code"])
    assert int(written.header["sform_code"]) == int(source.header["sform_code"])
