"""Sites table and log view follow the FederationModel."""

from __future__ import annotations

from PySide6.QtCore import Qt

from app.federation.log_view import LogView
from app.federation.model import HOST, FederationModel
from app.federation.sites_table import COLUMNS, OFFLINE_BACKGROUND, SitesTable, seen_text
from engine.events import RoundFinished, RunStarted, RunWarning, SiteProgress


class Clock:
    now = 500.0

    def __call__(self) -> float:
        return self.now


def cell(table: SitesTable, row: int, column: str, role=Qt.ItemDataRole.DisplayRole):
    model = table.view.model()
    return model.data(model.index(row, COLUMNS.index(column)), role)


def test_the_table_shows_each_site_and_marks_offline_rows(qtbot) -> None:
    clock = Clock()
    federation = FederationModel(clock=clock)
    table = SitesTable(federation)
    qtbot.addWidget(table)
    assert table.stack.currentWidget() is table.empty  # empty state until there are sites

    federation.begin(HOST, {"site-a": 16, "site-b": 8})
    federation.apply(RunStarted(algorithm="fedavg", sites=["site-a", "site-b"], rounds=2, config={}))
    assert table.stack.currentWidget() is table.view
    assert table.view.model().rowCount() == 2
    clock.now += 3
    federation.apply(SiteProgress(round=1, site="site-a", phase="train", step=2, total=5))
    metrics = {"val_dice": {"site-a": 0.734, "site-b": None}, "mean_val_dice": 0.734}
    clock.now += 40
    federation.apply(RoundFinished(round=1, alpha=[0.6, 0.4], beta=None, metrics=metrics, bytes_up=0, bytes_down=0, seconds=1.0, missing_sites=["site-b"]))

    assert [cell(table, 0, c) for c in COLUMNS] == ["site-a", "waiting", "just now", "16", "0.734"]
    assert [cell(table, 1, c) for c in COLUMNS] == ["site-b", "⚠ offline", "43 s ago", "8", "-"]
    background = cell(table, 1, "Site", Qt.ItemDataRole.BackgroundRole)
    assert background.color() == OFFLINE_BACKGROUND
    assert cell(table, 0, "Site", Qt.ItemDataRole.BackgroundRole) is None
    assert "missing from round 1" in cell(table, 1, "State", Qt.ItemDataRole.ToolTipRole)
    # the table model tells the view which row changed
    changed: list[int] = []
    table.view.model().dataChanged.connect(lambda top, bottom, roles=(): changed.append(top.row()))
    federation.apply(RunWarning(message="round 2: site site-a did not reply", site="site-a"))
    assert changed == [0] and cell(table, 0, "State") == "⚠ offline"


def test_seen_text_reads_like_a_dashboard() -> None:
    assert [seen_text(s) for s in (None, 0.5, 12, 300, 10_000)] == ["-", "just now", "12 s ago", "5 min ago", "3 h ago"]


def test_the_log_lists_entries_with_warnings_and_errors_coloured(qtbot) -> None:
    federation = FederationModel()
    federation.add_log("info", "round 1 of 2 started")
    view = LogView(federation)
    qtbot.addWidget(view)
    federation.add_log("warning", "site x is offline")
    federation.add_log("error", "run failed: <boom>")
    lines = view.toPlainText().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["round 1 of 2 started", "warning: site x is offline", "error: run failed: <boom>"]
    html = view.document().toHtml()
    assert "#a05a00" in html and "#b00000" in html  # warning orange, error red
