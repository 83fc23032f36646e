"""The federation log: progress lines, warnings and errors with their time."""

from __future__ import annotations

import html
import time

from PySide6.QtWidgets import QPlainTextEdit, QWidget

from app.federation.model import FederationModel, LogEntry

LEVEL_COLOURS = {"info": None, "warning": "#a05a00", "error": "#b00000"}
MAX_LINES = 5000  # a 300-round run stays readable and light


def entry_html(entry: LogEntry) -> str:
    """One log line as HTML: ``HH:MM:SS text``, warnings and errors coloured."""
    stamp = time.strftime("%H:%M:%S", time.localtime(entry.time))
    prefix = {"warning": "warning: ", "error": "error: "}.get(entry.level, "")
    text = html.escape(prefix + entry.text)
    colour = LEVEL_COLOURS.get(entry.level)
    body = f'<span style="color:{colour}">{text}</span>' if colour else text
    return f'<span style="color:#777">{stamp}</span>&nbsp;{body}'


class LogView(QPlainTextEdit):
    """Read-only view of :attr:`FederationModel.log`, following new lines."""

    def __init__(self, federation: FederationModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.federation = federation
        self.setReadOnly(True)
        self.setMaximumBlockCount(MAX_LINES)
        self.setPlaceholderText("Nothing yet: rounds, warnings and errors of the federation are listed here.")
        self.setToolTip("What happened in the federation, newest last (warnings in orange, errors in red)")
        for entry in federation.log:
            self.appendHtml(entry_html(entry))
        federation.log_added.connect(self._add)

    def _add(self, entry: LogEntry) -> None:
        self.appendHtml(entry_html(entry))
        self.verticalScrollBar().setValue(self.verticalScrollBar().maximum())
