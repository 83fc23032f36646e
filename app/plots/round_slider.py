"""``RoundSlider``: scrub back through the finished rounds of a run.

Moving it selects a round in the model (the density plots show that round, the line
plots mark it); putting it at the right end, or pressing "Latest", follows new rounds
again as they finish.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSlider, QWidget

from app.plots.model import RunPlotsModel


class RoundSlider(QWidget):
    """A slider over the finished rounds (index i = the i-th finished round)."""

    def __init__(self, model: RunPlotsModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setPageStep(10)
        self.slider.setToolTip("Round shown by the density plots; the right end follows the latest round")
        self.label = QLabel()
        self.label.setMinimumWidth(180)
        self.latest_button = QPushButton("Latest")
        self.latest_button.setToolTip("Follow new rounds as they finish")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 0)
        layout.addWidget(QLabel("Round"))
        layout.addWidget(self.slider, stretch=1)
        layout.addWidget(self.label)
        layout.addWidget(self.latest_button)
        self.slider.valueChanged.connect(self._on_slider)
        self.latest_button.clicked.connect(lambda: self.model.select_round(None))
        model.roundsChanged.connect(self._sync)
        model.selectionChanged.connect(self._sync)
        self._sync()

    @property
    def rounds(self) -> list[int]:
        return [r.round for r in self.model.history.rounds]

    def _on_slider(self, index: int) -> None:
        rounds = self.rounds
        if 0 <= index < len(rounds):
            self.model.select_round(rounds[index])

    def _sync(self, *_: object) -> None:
        """Range and position from the model; no valueChanged loop back into it."""
        rounds, selected = self.rounds, self.model.selected_round
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(len(rounds) - 1, 0))
        if selected is not None:
            self.slider.setValue(rounds.index(selected))
        self.slider.blockSignals(False)
        self.setEnabled(bool(rounds))
        self.latest_button.setEnabled(not self.model.following_latest)
        if selected is None:
            self.label.setText("no round yet")
        else:
            planned = self.model.history.planned_rounds
            follow = " (latest)" if self.model.following_latest else ""
            self.label.setText(f"{selected} of {max(planned or 0, rounds[-1])}{follow}")
