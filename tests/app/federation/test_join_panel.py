"""Join tab: the data check comes first, and Join waits for it to pass."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from app.federation.join_panel import JoinPanel

WAIT_MS = 60_000


@pytest.fixture
def panel(qtbot, errors) -> JoinPanel:
    panel = JoinPanel(errors)
    qtbot.addWidget(panel)
    return panel


def check(qtbot, panel: JoinPanel, folder: Path) -> None:
    """Type the folder, press Check data, wait for the background check to end."""
    panel.data.setText(str(folder))
    assert not panel.join_button.isEnabled()  # not checked yet
    panel.check_button.click()
    assert panel.checker is not None and not panel.join_button.isEnabled()  # checking
    qtbot.waitUntil(lambda: panel.checker is None, timeout=WAIT_MS)


def test_a_good_site_shows_its_report_and_enables_join(qtbot, panel, phantom_site) -> None:
    check(qtbot, panel, phantom_site)
    assert panel.status.text().startswith("✓ phantom-site-1: usable, 16 cases")
    assert panel.cases.text().startswith("16 (train/val/test ")
    assert panel.spacing.text() == "2 × 2 × 2.5 mm"
    assert panel.labels.text() == "0 background, 1 lesion"
    assert panel.problems.count() == 0
    assert panel.join_button.isEnabled()
    assert not panel.allow_sharing.isChecked()  # model sharing is opt-in
    panel.data.setText(str(phantom_site.parent))  # another folder: checked again first
    assert not panel.join_button.isEnabled()


def test_a_broken_site_lists_its_problems_and_keeps_join_disabled(qtbot, panel, phantom_site, tmp_path) -> None:
    broken = tmp_path / "broken-site"
    shutil.copytree(phantom_site, broken)
    label_path = broken / "labelsTr" / "site1_002.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)), label_path)  # another shape than its CT
    check(qtbot, panel, broken)
    assert panel.status.text().startswith("✗")
    problems = [panel.problems.item(i).text() for i in range(panel.problems.count())]
    assert len(problems) == 1 and problems[0].startswith("labelsTr/site1_002.nii.gz: ")
    assert not panel.join_button.isEnabled()
    assert "checked and is usable" in panel.join_button.toolTip()


def test_join_with_a_missing_ca_file_shows_the_engine_message(qtbot, panel, phantom_site, errors, tmp_path) -> None:
    check(qtbot, panel, phantom_site)
    panel.superlink.setText("127.0.0.1:9092")
    panel.ca.setText(str(tmp_path / "nowhere" / "ca.pem"))
    panel.key.setText(str(tmp_path / "site.key"))
    panel.join_button.click()
    assert errors.shown == [("Join", f"{tmp_path / 'nowhere' / 'ca.pem'}: CA certificate (--ca) not found")]
    assert panel.worker is None and panel.join_button.isEnabled()
