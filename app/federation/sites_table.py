"""The sites table: one row per site of the federation, offline rows marked in red."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QHeaderView, QLabel, QStackedWidget, QTableView, QVBoxLayout, QWidget

from app.federation.model import DONE, OFFLINE, FederationModel, SiteRow

COLUMNS = ("Site", "State", "Last seen", "Train cases", "Last Dice")
COLUMN_TIPS = (
    "Site name (its data folder's name)",
    "What the site is doing: waiting, training, learning β, evaluating, offline or done",
    "How long ago this app last heard from the site",
    "Training cases the site reported (its images never leave the site)",
    "Validation Dice of the global model at this site, last round",
)
OFFLINE_BACKGROUND = QColor(255, 218, 218)
OFFLINE_TEXT = QColor(160, 0, 0)
DONE_TEXT = QColor(0, 110, 40)
EMPTY_TEXT = "No sites yet.\nStart a demo, join a federation or host one: its sites appear here."


def seen_text(seconds: float | None) -> str:
    """``"just now"``, ``"12 s ago"``, ``"3 min ago"``, ``"2 h ago"``, or ``"-"``."""
    if seconds is None:
        return "-"
    if seconds < 2:
        return "just now"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


class SitesTableModel(QAbstractTableModel):
    """A Qt item model over :attr:`FederationModel.sites` (read-only)."""

    def __init__(self, federation: FederationModel, parent: Any = None) -> None:
        super().__init__(parent)
        self.federation = federation
        federation.sites_reset.connect(self._reset)
        federation.site_changed.connect(self._row_changed)

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008, N802 - Qt API
        return 0 if parent.isValid() else len(self.federation.sites)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008, N802 - Qt API
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(COLUMNS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMN_TIPS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self.federation.sites):
            return None
        row = self.federation.sites[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(row, index.column())
        if role == Qt.ItemDataRole.BackgroundRole and row.state == OFFLINE:
            return QBrush(OFFLINE_BACKGROUND)
        if role == Qt.ItemDataRole.ForegroundRole:
            if row.state == OFFLINE:
                return QBrush(OFFLINE_TEXT)
            if row.state == DONE:
                return QBrush(DONE_TEXT)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(row)
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() >= 3:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _text(self, row: SiteRow, column: int) -> str:
        if column == 0:
            return row.name
        if column == 1:
            return "⚠ offline" if row.state == OFFLINE else row.state
        if column == 2:
            ago = None if row.last_seen is None else max(0.0, self.federation.clock() - row.last_seen)
            return seen_text(ago)
        if column == 3:
            return "-" if row.cases is None else str(row.cases)
        return "-" if row.last_dice is None else f"{row.last_dice:.3f}"

    def _tooltip(self, row: SiteRow) -> str:
        lines = [f"{row.name}: {row.state}"]
        if row.detail:
            lines.append(row.detail)
        if row.state == OFFLINE:
            lines.append(f"Offline: missing from a round, reported offline by the coordinator, or silent for more than the reply timeout ({self.federation.reply_timeout_s:g} s).")
        return "\n".join(lines)

    def refresh_last_seen(self) -> None:
        """Redraw the "Last seen" column (its text depends on the clock)."""
        if self.federation.sites:
            self.dataChanged.emit(self.index(0, 2), self.index(len(self.federation.sites) - 1, 2), [Qt.ItemDataRole.DisplayRole])

    def _reset(self) -> None:
        self.beginResetModel()
        self.endResetModel()

    def _row_changed(self, row: int) -> None:
        self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))


class SitesTable(QWidget):
    """The table view, or a hint while there are no sites."""

    def __init__(self, federation: FederationModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.table_model = SitesTableModel(federation, self)
        self.view = QTableView()
        self.view.setModel(self.table_model)
        self.view.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.view.setEditTriggers(QTableView.EditTrigger.NoEditTriggers)
        self.view.verticalHeader().setVisible(False)
        self.view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.view.setToolTip("Sites of the current federation; hover a row for details")
        self.empty = QLabel(EMPTY_TEXT)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.empty.setEnabled(False)  # greyed: a hint, not content
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.view)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.stack)
        federation.sites_reset.connect(self._show)
        self._show()

    @property
    def federation(self) -> FederationModel:
        return self.table_model.federation

    def _show(self) -> None:
        self.stack.setCurrentWidget(self.view if self.federation.sites else self.empty)
