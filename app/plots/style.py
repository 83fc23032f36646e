"""Shared look of the run plots: one colour per site everywhere, the round marker, and
a stack that swaps a plot for a short note (empty state, "needs 3 sites", softmax)."""

from __future__ import annotations

from collections.abc import Iterable

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QStackedWidget, QWidget

# Matplotlib's "tab10": distinct on dark and light backgrounds alike.
SITE_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)
MEAN_COLOR = "#a0a0a0"  # grey: readable whatever background the app sets
MARKER_COLOR = "#f0c000"


def site_color(index: int) -> str:
    """The colour of site ``index`` (cycles after 10 sites)."""
    return SITE_COLORS[index % len(SITE_COLORS)]


def site_pen(index: int, width: float = 2.0, dashed: bool = False) -> pg.QtGui.QPen:
    style = Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine
    return pg.mkPen(color=site_color(index), width=width, style=style)


def round_marker() -> pg.InfiniteLine:
    """The vertical line that marks the selected round on a per-round plot."""
    line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(MARKER_COLOR, width=1, style=Qt.PenStyle.DashLine))
    line.setZValue(-10)  # behind the curves
    line.hide()
    return line


def place_marker(line: pg.InfiniteLine, rnd: int | None) -> None:
    if rnd is None:
        line.hide()
    else:
        line.setValue(rnd)
        line.show()


class NoteStack(QStackedWidget):
    """A plot, or in its place a centred note saying why there is nothing to draw."""

    def __init__(self, content: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.content = content
        self.note = QLabel()
        self.note.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.note.setWordWrap(True)
        self.addWidget(content)
        self.addWidget(self.note)

    def show_note(self, text: str) -> None:
        self.note.setText(text)
        self.setCurrentWidget(self.note)

    def show_content(self) -> None:
        self.setCurrentWidget(self.content)

    @property
    def showing_note(self) -> bool:
        return self.currentWidget() is self.note

    def note_text(self) -> str:
        """The note shown, "" while the plot is shown."""
        return self.note.text() if self.showing_note else ""


def format_vector(values: Iterable[float], digits: int = 2) -> str:
    """(0.63, 0.16, 0.21): how the titles print alpha and beta (paper Fig. 3c style)."""
    return "(" + ", ".join(f"{float(v):.{digits}f}" for v in values) + ")"
