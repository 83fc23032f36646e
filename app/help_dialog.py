"""Help > Keyboard shortcuts: every key the window and the viewer answer to."""

from __future__ import annotations

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget


class ShortcutsDialog(QDialog):
    #: keys the viewer handles itself (app/viewer/widget.py, app/viewer/slice_view.py)
    VIEWER_KEYS: list[tuple[str, str]] = [
        ("Mouse wheel / Up / Down", "Previous or next slice"),
        ("PageUp / PageDown", "Ten slices back or forward"),
        ("Ctrl + wheel", "Zoom"),
        ("Middle drag", "Pan"),
        ("Left click / drag", "Move the crosshair (all three views follow)"),
        ("Right drag", "Window (horizontal) and level (vertical)"),
        ("1 - 5", "Window presets: lung, soft tissue, liver, bone, brain"),
        ("H", "Hide or show all overlays"),
        ("D", "Difference mode: true positives, false positives, false negatives"),
    ]

    def __init__(self, rows: list[tuple[str, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.table = QTableWidget(len(rows), 2)
        self.table.setHorizontalHeaderLabels(["Keys", "Action"])
        for row, (keys, action) in enumerate(rows):
            self.table.setItem(row, 0, QTableWidgetItem(keys))
            self.table.setItem(row, 1, QTableWidgetItem(action))
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().setVisible(False)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(520, 420)
