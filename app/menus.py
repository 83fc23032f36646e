"""The main window's menu bar: File, Segment, View, Help, and the list of their shortcuts.

The menus only call the window's public slots (``choose_ct``, ``segment``, ...), so what a
menu item does stays in :mod:`app.main_window` and tests call the slots directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMenu, QMenuBar

from app.help_dialog import ShortcutsDialog

if TYPE_CHECKING:
    from app.main_window import MainWindow

Shortcut = QKeySequence.StandardKey | str | None


def add_action(menu: QMenu, text: str, slot: Callable[[], object], shortcut: Shortcut = None,
               tip: str | None = None) -> QAction:
    """A menu item calling ``slot()`` (Qt's ``checked`` argument is dropped)."""
    action = menu.addAction(text)
    action.triggered.connect(lambda _checked=False: slot())
    if shortcut is not None:
        action.setShortcut(QKeySequence(shortcut))
    if tip:
        action.setStatusTip(tip)
        action.setToolTip(tip)
    return action


def build_menus(window: MainWindow) -> None:
    """Fill ``window``'s menu bar; sets ``window.save_action``."""
    bar = window.menuBar()
    file = bar.addMenu("&File")
    add_action(file, "&Open CT...", window.choose_ct, QKeySequence.StandardKey.Open, "A NIfTI, MHA or NRRD file")
    add_action(file, "Open DICOM &folder...", window.choose_dicom, "Ctrl+Shift+O", "A folder with one DICOM series")
    add_action(file, "Open &ground truth...", lambda: window.choose_mask("truth"), "Ctrl+G",
               "A label map on the CT's grid")
    add_action(file, "Open &prediction...", lambda: window.choose_mask("prediction"), "Ctrl+P",
               "A predicted mask on the CT's grid")
    add_action(file, "Open &run folder...", window.choose_run, "Ctrl+R", "Replay a run's events.jsonl into the plots")
    file.addMenu(window.recent.menu)
    file.addSeparator()
    window.save_action = add_action(file, "&Save prediction...", window.choose_save_prediction,
                                    QKeySequence.StandardKey.Save, "Write the prediction in the CT's source geometry")
    file.addSeparator()
    add_action(file, "&Quit", window.close, QKeySequence.StandardKey.Quit)
    segment = bar.addMenu("&Segment")
    add_action(segment, "&Segment with the current model", window.segment, "Ctrl+E",
               "Run the latest global model on the open CT")
    add_action(segment, "Segment with a &model folder...", window.choose_model, "Ctrl+Shift+E",
               "A folder with model.json and weights")
    add_action(segment, "&Cancel", window.cancel_jobs, "Esc")
    view = bar.addMenu("&View")
    view.addAction(window.federation_dock.toggleViewAction())
    view.addAction(window.plots_dock.toggleViewAction())
    add_action(view, "&Fit slices", window.viewer.reset_zoom, "F")
    help_menu = bar.addMenu("&Help")
    add_action(help_menu, "&Keyboard shortcuts", window.show_shortcuts, QKeySequence.StandardKey.HelpContents)


def shortcut_rows(bar: QMenuBar) -> list[tuple[str, str]]:
    """(keys, what they do) for the help dialog: menu actions, then the viewer's keys."""
    rows = []
    for menu in bar.findChildren(QMenu):
        for action in menu.actions():
            if not action.shortcut().isEmpty():
                keys = action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
                rows.append((keys, action.text().replace("&", "")))
    return rows + ShortcutsDialog.VIEWER_KEYS
