"""``RunPlotsWidget``: all live plots of one run in tabs, with the round slider.

The main window feeds it the run's events as they come (``add_event``, from the Qt
signal of ``app/workers/run.py``) or replays a finished run (``load_run``). It shows a short
text until the first round has finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSplitter, QStackedWidget, QTabWidget, QVBoxLayout, QWidget

from engine.events import Event

from app.plots.density_plots import MarginalDensities, SimplexDensity
from app.plots.history import RunHistory
from app.plots.line_plots import AlphaPlot, BytesPlot, DicePlot
from app.plots.model import RunPlotsModel
from app.plots.round_slider import RoundSlider

NO_RUN = "No run yet: start a run, join a federation or open a run folder to see its rounds here."
MAX_WARNINGS_IN_TOOLTIP = 20


class RunPlotsWidget(QWidget):
    """Tabs "Weights", "Dirichlet", "Validation Dice", "Communication" over a round slider.

    Public API for the main window: :meth:`add_event`, :meth:`load_run`, :meth:`clear`,
    :attr:`history`; :attr:`model` for finer control (select a round or a layer).
    Call them in the GUI thread (engine events come through a queued Qt signal).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = RunPlotsModel(self)
        self.status_label = QLabel()
        self.warnings_label = QLabel()
        self.warnings_label.setStyleSheet("color: #d08000;")
        self.alpha_plot = AlphaPlot(self.model)
        self.dice_plot = DicePlot(self.model)
        self.bytes_plot = BytesPlot(self.model)
        self.simplex = SimplexDensity(self.model)
        self.marginals = MarginalDensities(self.model)
        self.layer_box = QComboBox()
        self.layer_box.setToolTip("Layer-wise weights: one Dirichlet per layer")
        self.slider = RoundSlider(self.model)

        self.tabs = QTabWidget()
        self.tabs.addTab(self.alpha_plot, "Weights α, β")
        self.tabs.addTab(self._density_tab(), "Dirichlet")
        self.tabs.addTab(self.dice_plot, "Validation Dice")
        self.tabs.addTab(self.bytes_plot, "Communication")
        self.empty_label = QLabel(NO_RUN)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)
        self.pages = QStackedWidget()
        self.pages.addWidget(self.empty_label)
        self.pages.addWidget(self.tabs)

        header = QHBoxLayout()
        header.addWidget(self.status_label, stretch=1)
        header.addWidget(self.warnings_label)
        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addWidget(self.pages, stretch=1)
        layout.addWidget(self.slider)

        self.layer_box.currentIndexChanged.connect(self._on_layer_box)
        self.model.runReset.connect(self._fill_layer_box)
        self.model.roundsChanged.connect(self._fill_layer_box)
        self.model.layerChanged.connect(self._fill_layer_box)
        self.model.statusChanged.connect(self._show_status)
        # after the density views' own slots (connected earlier), so their notes are set
        for signal in (self.model.runReset, self.model.roundsChanged, self.model.selectionChanged, self.model.layerChanged):
            signal.connect(self._one_note_for_both)
        self._fill_layer_box()
        self._show_status()
        self._one_note_for_both()

    def _density_tab(self) -> QWidget:
        tab = QWidget()
        layer_row = QHBoxLayout()
        self.layer_label = QLabel("β of")
        layer_row.addWidget(self.layer_label)
        layer_row.addWidget(self.layer_box)
        layer_row.addStretch(1)
        # stacked: the dock is narrow and the triangle keeps its aspect ratio
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.simplex)
        splitter.addWidget(self.marginals)
        layout = QVBoxLayout(tab)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(layer_row)
        layout.addWidget(splitter, stretch=1)
        return tab

    # -- public API --------------------------------------------------------------------
    @property
    def history(self) -> RunHistory:
        return self.model.history

    def add_event(self, event: Event | dict[str, Any]) -> None:
        """Take one live event (an engine Event or an ``events.jsonl`` dict)."""
        self.model.add_event(event)

    def load_run(self, folder: str | Path) -> RunHistory:
        """Replay the run in ``folder`` (its ``events.jsonl``); raises FedSegError if
        the folder holds no run, leaving the plots as they were."""
        return self.model.load_run(folder)

    def clear(self) -> None:
        self.model.clear()

    # -- views of the model ------------------------------------------------------------
    def _fill_layer_box(self) -> None:
        """One entry per layer of layer-wise beta (hidden for network-wise), showing the
        model's layer."""
        count = self.history.layer_count
        self.layer_box.setVisible(count > 0)
        self.layer_label.setVisible(count > 0)
        self.layer_box.blockSignals(True)
        if self.layer_box.count() != (count + 1 if count else 0):
            self.layer_box.clear()
            if count:
                self.layer_box.addItem("mean over layers")
                self.layer_box.addItems([f"layer {p + 1} of {count}" for p in range(count)])
        layer = self.model.layer
        self.layer_box.setCurrentIndex(-1 if not count else 0 if layer is None else layer + 1)
        self.layer_box.blockSignals(False)

    def _one_note_for_both(self, *_: object) -> None:
        """When neither density can be drawn (no round, no beta, softmax) say it once."""
        self.simplex.setVisible(not self.marginals.showing_note)

    def _on_layer_box(self, index: int) -> None:
        self.model.set_layer(None if index <= 0 else index - 1)

    def _show_status(self) -> None:
        history = self.history
        self.pages.setCurrentWidget(self.tabs if history.rounds else self.empty_label)
        if history.status == "empty":
            self.status_label.setText("")
            self.empty_label.setText(NO_RUN)
        else:
            self.status_label.setText(status_text(history))
            if not history.rounds:
                self.empty_label.setText(f"{history.algorithm} on {len(history.sites)} sites: waiting for the first round to finish.")
        count = len(history.warnings)
        self.warnings_label.setVisible(count > 0)
        self.warnings_label.setText(f"⚠ {count} warning{'s' if count != 1 else ''}")
        recent = history.warnings[-MAX_WARNINGS_IN_TOOLTIP:]
        self.warnings_label.setToolTip("\n".join(w.message for w in recent))


def status_text(history: RunHistory) -> str:
    """One line: algorithm, sites, weights, progress and state of the run."""
    parts = [f"{history.algorithm} on {len(history.sites)} sites"]
    if history.weight_kind is not None:
        layers = f" ({history.layer_count} layers)" if history.layer_count else ""
        parts.append(f"{history.weight_kind} weights, {history.aggregation}-wise{layers}")
    done = history.last_round or 0
    parts.append(f"round {done} of {max(history.planned_rounds or 0, done)} done")
    if history.status == "finished":
        parts.append("finished")
    elif history.status == "failed":
        parts.append(f"failed: {history.error}")
    missing = history.missing_sites()
    if missing:
        parts.append(f"sites missing in {len(missing)} round{'s' if len(missing) != 1 else ''}")
    return " · ".join(parts)
