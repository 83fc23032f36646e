"""check_site: statistics on real OpenKBP data, and per-file problems on broken sites."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from engine.data.check import SiteReport, check_site


def test_openkbp_site_b(openkbp: Path) -> None:
    report = check_site(openkbp / "site-b", lesion_label=1)
    assert report.usable, report.format()
    assert report.problems == []
    assert report.n_cases == 16 and len(report.cases) == 16
    assert report.split_sizes == {"train": 10, "val": 3, "test": 3}
    assert sorted(report.spacing_min) == pytest.approx([3.0, 4.688, 4.688], abs=1e-3)
    assert sorted(report.spacing_max) == pytest.approx([3.0, 4.688, 4.688], abs=1e-3)
    assert report.shape_min == report.shape_max == (128, 128, 128)
    assert {0, 1} <= set(report.label_values)
    assert report.label_names[1] == "PTV70"
    # The dataset README documents p1 / p50 / p99 = -386 / -6 / 1029 HU for site-b.
    assert report.hu_p1 == pytest.approx(-386, abs=15)
    assert report.hu_p50 == pytest.approx(-6, abs=10)
    assert report.hu_p99 == pytest.approx(1029, abs=30)
    fractions = [c.lesion_fraction for c in report.cases]
    assert all(f is not None and 0.0 < f < 0.02 for f in fractions)
    assert np.mean(fractions) == pytest.approx(0.00327, rel=0.05)  # README: 0.327 %
    assert np.mean([c.lesion_ml for c in report.cases]) == pytest.approx(453, rel=0.05)  # README: 453 mL
    text = report.format()
    assert text.splitlines()[-1] == "usable"
    assert "OpenKBP-HN-site-b" in text and "PTV70" in text and "pt_96" in text
    json.dumps(report.to_dict())  # JSON-able


def _broken_site(write_site) -> Path:
    root = write_site("broken", n=5)
    # 1: a truncated gzip image
    img = root / "imagesTr" / "case_1.nii.gz"
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 2])
    # 2: a label with a different shape from its image
    aff = nib.load(root / "imagesTr" / "case_2.nii.gz").affine
    nib.save(nib.Nifti1Image(np.zeros((10, 12, 6), np.uint8), aff), root / "labelsTr" / "case_2.nii.gz")
    # 3: a label with non-integer values
    lab = np.zeros((12, 12, 6), np.float32)
    lab[5:7, 5:7, 2:4] = 0.5
    lab[3, 3, 3] = 1.0
    aff = nib.load(root / "imagesTr" / "case_3.nii.gz").affine
    nib.save(nib.Nifti1Image(lab, aff), root / "labelsTr" / "case_3.nii.gz")
    return root


def test_broken_site_reports_every_bad_file(write_site) -> None:
    report = check_site(_broken_site(write_site))
    assert not report.usable
    bad = {"imagesTr/case_1.nii.gz", "labelsTr/case_2.nii.gz", "labelsTr/case_3.nii.gz"}
    assert {f for f, _ in report.problems} == bad
    text = report.format()
    for name in bad:
        assert name in text
    assert text.splitlines()[-1] == "NOT usable: 3 problems"
    # the good cases are still measured
    loaded = {c.case_id for c in report.cases if c.loaded}
    assert loaded == {"case_0", "case_4"}
    assert report.spacing_min is not None and report.hu_p50 is not None
    problems = dict(report.problems)
    assert "shape" in problems["labelsTr/case_2.nii.gz"]
    d = report.to_dict()
    assert d["usable"] is False and len(d["problems"]) == 3
    json.dumps(d)


def test_lesion_label_never_present_is_unusable(write_site) -> None:
    root = write_site("nolesion", n=4, lesion=False)
    report = check_site(root)
    assert not report.usable
    assert len(report.problems) == 1
    assert "absent from every training case" in report.problems[0][1]
    assert report.format().splitlines()[-1] == "NOT usable: 1 problem"
    # with a lesion label that is present, the same site is fine
    assert check_site(root, lesion_label=0).usable


def test_lesion_only_outside_train_is_unusable(write_site) -> None:
    splits = {"train": ["case_0", "case_1"], "val": ["case_2"], "test": ["case_3"]}
    root = write_site("valonly", n=4, splits=splits, lesion=[False, False, True, True])
    report = check_site(root)
    assert not report.usable
    assert "absent from every training case" in report.problems[0][1]


def test_empty_lesion_in_some_cases_is_a_warning(write_site) -> None:
    root = write_site("someempty", n=5, lesion=[True, False, True, True, True])
    report = check_site(root, split_seed=1)
    assert report.usable, report.format()
    assert [f for f, _ in report.warnings] == ["labelsTr/case_1.nii.gz"]
    assert report.cases[1].lesion_voxels == 0 and report.cases[0].lesion_voxels == 12
    assert report.cases[0].lesion_ml == pytest.approx(12 * 2 * 2 * 3 / 1000)
    assert report.format().splitlines()[-1] == "usable"


def test_broken_layout_gives_a_report_not_an_exception(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text("{ not json")
    report = check_site(tmp_path)
    assert isinstance(report, SiteReport)
    assert not report.usable
    assert report.problems[0][0] == "dataset.json"
    assert "not valid JSON" in report.problems[0][1]
    assert report.format().splitlines()[-1] == "NOT usable: 1 problem"
    missing = check_site(tmp_path / "absent")
    assert not missing.usable and "does not exist" in missing.format()
