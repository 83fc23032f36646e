"""``RunPlotsModel``: the run plots' Qt model (state + signals, no widgets).

It owns a :class:`~app.plots.history.RunHistory` and what the user chose to look at (the
round, the layer of layer-wise weights). Views subscribe to its signals and redraw only
what a signal concerns, so a site-progress event (many per round) redraws nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from engine.events import BetaStep, Event, RoundFinished, RunStarted

from app.plots.history import RunHistory


class RunPlotsModel(QObject):
    """State of the run plots.

    Signals
    -------
    runReset()
        A new run (or a cleared/replayed one): sites and algorithm may differ, views
        rebuild their per-site items.
    roundsChanged()
        Finished rounds were added, replaced or dropped (resume).
    betaStepsChanged(int)
        A beta step of that round arrived.
    statusChanged()
        Run status, current round or warnings changed.
    selectionChanged(object)
        The selected round (int, or None when there is no round yet).
    layerChanged(object)
        The layer of layer-wise beta shown (int, or None for the mean over layers).
    """

    runReset = Signal()
    roundsChanged = Signal()
    betaStepsChanged = Signal(int)
    statusChanged = Signal()
    selectionChanged = Signal(object)
    layerChanged = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.history = RunHistory()
        self._pinned: int | None = None  # None: follow the latest round
        self._layer: int | None = None

    # -- feeding -----------------------------------------------------------------------
    def add_event(self, event: Event | dict[str, Any]) -> None:
        """Take one live event (or an ``events.jsonl`` dict) and tell the views."""
        shown = self.selected_round
        event = self.history.add(event)
        if event is None:
            return
        if isinstance(event, RunStarted):
            if self._pinned is not None and self.history.record(self._pinned) is None:
                self._pinned = None  # that round is being run again (resume)
            if event.start_round <= 1:
                self._pinned, self._layer = None, None
            self.runReset.emit()  # once per run: the sites may have changed
            self.roundsChanged.emit()
        elif isinstance(event, RoundFinished):
            self.roundsChanged.emit()
        elif isinstance(event, BetaStep):
            self.betaStepsChanged.emit(event.round)
        self.statusChanged.emit()
        replaced_shown = isinstance(event, RoundFinished) and event.round == self.selected_round
        if self.selected_round != shown or replaced_shown:
            self.selectionChanged.emit(self.selected_round)

    def load_run(self, folder: str | Path) -> RunHistory:
        """Replay a run folder; the current history stays if the folder is not a run."""
        history = RunHistory.from_folder(folder)
        self._replace(history)
        return history

    def clear(self) -> None:
        self._replace(RunHistory())

    def _replace(self, history: RunHistory) -> None:
        self.history = history
        self._pinned, self._layer = None, None
        self.runReset.emit()
        self.roundsChanged.emit()
        self.statusChanged.emit()
        self.selectionChanged.emit(self.selected_round)

    # -- what is shown -----------------------------------------------------------------
    @property
    def selected_round(self) -> int | None:
        """The round the density plots show: the pinned one, else the latest finished."""
        if self._pinned is not None and self.history.record(self._pinned) is not None:
            return self._pinned
        return self.history.last_round

    @property
    def following_latest(self) -> bool:
        return self._pinned is None

    def select_round(self, rnd: int | None) -> None:
        """Show round ``rnd``; None (or the latest round) follows new rounds as they come."""
        before = (self.selected_round, self._pinned)
        if rnd is None or rnd == self.history.last_round:
            self._pinned = None
        elif self.history.record(rnd) is not None:
            self._pinned = int(rnd)
        else:
            raise ValueError(f"round {rnd} has not finished; finished rounds: {[r.round for r in self.history.rounds]}")
        if (self.selected_round, self._pinned) != before:
            self.selectionChanged.emit(self.selected_round)

    @property
    def layer(self) -> int | None:
        """Layer of layer-wise beta shown; None is the mean over layers."""
        return self._layer

    def set_layer(self, layer: int | None) -> None:
        count = self.history.layer_count
        if layer is not None and not 0 <= layer < count:
            raise ValueError(f"layer {layer} out of range: this run has {count} layers")
        if layer != self._layer:
            self._layer = layer
            self.layerChanged.emit(layer)
