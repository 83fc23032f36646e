"""Recently opened files and run folders, kept in QSettings across sessions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QMenu

KEY = "recent/paths"
LIMIT = 10


class RecentFiles:
    """The File > Open recent menu: newest first, at most :data:`LIMIT`, no duplicates;
    a path that no longer exists is shown disabled rather than dropped (a USB drive)."""

    def __init__(self, settings: QSettings, open_path: Callable[[str], object]) -> None:
        self.settings = settings
        self.open_path = open_path
        self.menu = QMenu("Open &recent")
        self.menu.setToolTipsVisible(True)
        self._rebuild()

    @property
    def paths(self) -> list[str]:
        value = self.settings.value(KEY, [])
        if isinstance(value, str):  # QSettings gives a lone string for a one-item list
            value = [value]
        return [str(p) for p in value or []]

    def add(self, path: str) -> None:
        paths = [path] + [p for p in self.paths if p != path]
        self.settings.setValue(KEY, paths[:LIMIT])
        self._rebuild()

    def _rebuild(self) -> None:
        self.menu.clear()
        paths = self.paths
        if not paths:
            self.menu.addAction("(nothing opened yet)").setEnabled(False)
            return
        for path in paths:
            action = self.menu.addAction(Path(path).name or path)
            action.setToolTip(path)
            action.setEnabled(Path(path).exists())
            action.triggered.connect(lambda _checked=False, p=path: self.open_path(p))
        self.menu.addSeparator()
        self.menu.addAction("Clear list").triggered.connect(self.clear)

    def clear(self) -> None:
        self.settings.setValue(KEY, [])
        self._rebuild()
