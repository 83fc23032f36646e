"""The federation panel end to end: a real in-process demo federation (tiny config)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app.federation.panel import FederationPanel
from app.federation.sites_table import COLUMNS

WAIT_MS = 120_000  # a hang fails the test; nothing here is timed


@pytest.fixture
def panel(qtbot, errors, tiny, tmp_path) -> FederationPanel:
    panel = FederationPanel(show_error=errors)
    qtbot.addWidget(panel)
    panel.demo.runs_root = tmp_path
    panel.demo.base_config = tiny(rounds=2)
    panel.demo.rounds.setValue(2)
    return panel


def table_rows(panel: FederationPanel) -> list[list[str]]:
    model = panel.sites_table.view.model()
    return [[model.data(model.index(r, c), Qt.ItemDataRole.DisplayRole) for c in range(len(COLUMNS))] for r in range(model.rowCount())]


def test_the_demo_runs_to_the_last_round_and_the_panel_follows(qtbot, panel, errors, tmp_path) -> None:
    events: list[object] = []
    folders: list[str] = []
    panel.event.connect(events.append)
    panel.run_folder.connect(folders.append)
    assert panel.progress.format() == "no federation running"
    assert panel.demo.simulation.isChecked()

    panel.demo.start_button.click()
    assert panel.worker is not None and not panel.demo.start_button.isEnabled()
    assert not panel.host.start_button.isEnabled()  # one federation at a time
    qtbot.waitUntil(lambda: panel.worker is None, timeout=WAIT_MS)

    assert errors.shown == []
    rows = table_rows(panel)
    assert [row[:2] for row in rows] == [["site-1", "done"], ["site-2", "done"], ["site-3", "done"]]
    demo_sites = Path(folders[0]) / "demo-sites"
    train = [len(json.loads((demo_sites / row[0] / "dataset.json").read_text())["splits"]["train"]) for row in rows]
    assert [row[3] for row in rows] == [str(n) for n in train]  # each site's training cases
    for row in rows:
        assert 0.0 <= float(row[4]) <= 1.0  # last validation Dice
    assert (panel.progress.value(), panel.progress.maximum()) == (2, 2)
    assert panel.progress.format() == "round 2 of 2: finished"
    types = [event.type for event in events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("round_finished") == 2
    (folder,) = folders
    assert Path(folder).parent == tmp_path and (Path(folder) / "results.json").is_file()
    assert "run finished" in panel.log_view.toPlainText()
    assert panel.demo.start_button.isEnabled() and panel.host.start_button.isEnabled()


def test_stop_ends_the_demo_and_frees_the_panel(qtbot, panel, errors) -> None:
    panel.demo.start_button.click()
    worker = panel.worker
    cancelled: list[bool] = []
    worker.cancelled.connect(lambda: cancelled.append(True))
    qtbot.waitUntil(lambda: any(row.state == "training" for row in panel.model.sites), timeout=WAIT_MS)
    panel.demo.stop_button.click()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=WAIT_MS)
    assert cancelled == [True] and errors.shown == []
    assert "stopped" in panel.model.log[-1].text
    assert panel.model.rounds_done == 0 and not panel.model.running
    assert panel.demo.start_button.isEnabled() and not panel.demo.stop_button.isEnabled()
