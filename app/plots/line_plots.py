"""Per-round line plots of a run: weights alpha and beta, validation Dice, bytes.

Each view creates its plot items once per run (``runReset``) and afterwards only calls
``setData`` on them, so a 300-round run costs the same per event as a 3-round one.
The selected round is marked by a vertical line (:func:`app.plots.style.round_marker`).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QWidget

from engine.fl.learned_weights import SOFTMAX

from app.plots.model import RunPlotsModel
from app.plots.style import MEAN_COLOR, place_marker, round_marker, site_color, site_pen

MB = 1e6  # the CLI prints 10^6 bytes as MB too
SYMBOLS_UP_TO = 60  # points: beyond, symbols add clutter and cost O(points) Python per redraw
UP_COLOR, DOWN_COLOR = "#e07b39", "#3a8fd6"


class SiteCurves:
    """One curve per site in ``plot``, named for the legend, rebuilt only when the
    site list changes. Symbols mark the points while there are few of them."""

    def __init__(self, plot: pg.PlotItem, *, symbol: str | None = "o", width: float = 2.0, in_legend: bool = True) -> None:
        self.plot = plot
        self.symbol = symbol
        self.width = width
        self.in_legend = in_legend
        self._symbols_on = True
        self.sites: list[str] = []
        self.curves: list[pg.PlotDataItem] = []

    def rebuild(self, sites: list[str]) -> None:
        if sites == self.sites:
            return
        for curve in self.curves:
            self.plot.removeItem(curve)
        self.sites = list(sites)
        self.curves = []
        self._symbols_on = True
        for i, name in enumerate(self.sites):
            curve = pg.PlotDataItem(
                pen=site_pen(i, width=self.width),
                symbol=self.symbol,
                symbolSize=5,
                symbolPen=None,
                symbolBrush=site_color(i),
                connect="finite",  # a missing value (NaN) breaks the line instead of hiding it
                name=name if self.in_legend else None,
            )
            self.plot.addItem(curve)
            self.curves.append(curve)

    def set_data(self, x: np.ndarray, columns: np.ndarray) -> None:
        """Curve k gets ``(x, columns[:, k])``; an empty ``x`` clears them."""
        symbols_on = len(x) <= SYMBOLS_UP_TO
        if self.symbol is not None and symbols_on != self._symbols_on:
            self._symbols_on = symbols_on
            for curve in self.curves:
                curve.setSymbol(self.symbol if symbols_on else None)
        for k, curve in enumerate(self.curves):
            # an all-NaN column (no Dice yet, no beta) is drawn as nothing, not as NaNs
            if len(x) and k < columns.shape[1] and not np.isnan(columns[:, k]).all():
                curve.setData(x, columns[:, k])
            else:
                curve.setData([], [])


class AlphaPlot(pg.GraphicsLayoutWidget):
    """alpha per site vs round (top) and beta per site vs round (below, x linked).

    beta's panel also draws the path of beta through Auto-FedAvg's learning steps as a
    thin line (step s of S in round r at x = r - 1 + s/S), live while a round runs. Layer-wise beta shows the layer chosen
    in the model (or the mean over layers, said in the title).
    """

    def __init__(self, model: RunPlotsModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.alpha_plot = self.addPlot(row=0, col=0, title="aggregation weights α")
        self.alpha_plot.addLegend(offset=(-10, 10))
        self.alpha_plot.setLabel("left", "α")
        self.alpha_plot.getAxis("left").enableAutoSIPrefix(False)  # weights read as they are
        self.alpha_plot.showGrid(y=True, alpha=0.3)
        self.beta_plot = self.addPlot(row=1, col=0, title="β")
        self.beta_plot.setLabel("left", "β")
        self.beta_plot.setLabel("bottom", "round")
        self.beta_plot.setXLink(self.alpha_plot)
        self.beta_plot.showGrid(y=True, alpha=0.3)
        self.alpha_curves = SiteCurves(self.alpha_plot)
        self.beta_curves = SiteCurves(self.beta_plot, in_legend=False)
        self.beta_step_lines = SiteCurves(self.beta_plot, symbol=None, width=1.0, in_legend=False)
        self.beta_note = pg.TextItem(anchor=(0.5, 0.5), color=MEAN_COLOR)
        self.beta_plot.addItem(self.beta_note, ignoreBounds=True)
        self.markers = (round_marker(), round_marker())
        self.alpha_plot.addItem(self.markers[0], ignoreBounds=True)
        self.beta_plot.addItem(self.markers[1], ignoreBounds=True)
        model.runReset.connect(self._rebuild)
        model.roundsChanged.connect(self._refresh)
        model.betaStepsChanged.connect(self._refresh_steps)
        model.layerChanged.connect(self._refresh)
        model.selectionChanged.connect(self._mark)
        self._rebuild()
        self._refresh()

    def _rebuild(self) -> None:
        sites = self.model.history.sites
        self.alpha_curves.rebuild(sites)
        self.beta_curves.rebuild(sites)
        self.beta_step_lines.rebuild(sites)
        for line in self.beta_step_lines.curves:
            line.setOpacity(0.6)

    def _refresh(self) -> None:
        history = self.model.history
        rounds = history.round_numbers()
        self.alpha_curves.set_data(rounds, history.alpha_matrix())
        self.beta_curves.set_data(rounds, history.beta_matrix(self.model.layer))
        self.beta_plot.setTitle(self.beta_title())
        has_beta = any(r.beta is not None for r in history.rounds)
        if rounds.size and not has_beta:
            self.beta_note.setText(f"{history.algorithm} aggregates with fixed weights: no β")
            self.beta_note.setPos(float(rounds.mean()), 0.0)
            self.beta_note.show()
        else:
            self.beta_note.hide()
        self._refresh_steps()
        self._mark(self.model.selected_round)

    def _refresh_steps(self, _round: int | None = None) -> None:
        x, beta = self.model.history.beta_step_trace(self.model.layer)
        self.beta_step_lines.set_data(x, beta)

    def _mark(self, rnd: int | None) -> None:
        for line in self.markers:
            place_marker(line, rnd)

    def beta_title(self) -> str:
        history = self.model.history
        kind = "softmax logits β" if history.weight_kind == SOFTMAX else "Dirichlet concentration β"
        layers = history.layer_count
        if layers:
            kind += f", mean over {layers} layers" if self.model.layer is None else f", layer {self.model.layer + 1} of {layers}"
        return kind


class DicePlot(pg.PlotWidget):
    """Validation Dice per site (coloured) and their mean (grey, dashed) vs round."""

    def __init__(self, model: RunPlotsModel, parent: QWidget | None = None) -> None:
        super().__init__(parent, title="validation Dice of the global model")
        self.model = model
        self.plot = self.getPlotItem()
        self.plot.addLegend(offset=(-10, -10))
        self.plot.setLabel("left", "Dice")
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.setLabel("bottom", "round")
        self.plot.showGrid(y=True, alpha=0.3)
        self.site_curves = SiteCurves(self.plot)
        self.mean_curve = pg.PlotDataItem(
            pen=pg.mkPen(MEAN_COLOR, width=3, style=pg.QtCore.Qt.PenStyle.DashLine), connect="finite", name="mean"
        )
        self.plot.addItem(self.mean_curve)
        self.marker = round_marker()
        self.plot.addItem(self.marker, ignoreBounds=True)
        model.runReset.connect(self._rebuild)
        model.roundsChanged.connect(self._refresh)
        model.selectionChanged.connect(self._mark)
        self._rebuild()
        self._refresh()

    def _rebuild(self) -> None:
        self.site_curves.rebuild(self.model.history.sites)

    def _mark(self, rnd: int | None) -> None:
        place_marker(self.marker, rnd)

    def _refresh(self) -> None:
        history = self.model.history
        rounds = history.round_numbers()
        self.site_curves.set_data(rounds, history.val_dice_matrix())
        self.mean_curve.setData(rounds, history.mean_val_dice())
        place_marker(self.marker, self.model.selected_round)


class BytesPlot(pg.PlotWidget):
    """Protocol bytes per round, up (sites -> server) and down (server -> sites), in MB."""

    def __init__(self, model: RunPlotsModel, parent: QWidget | None = None) -> None:
        super().__init__(parent, title="communication per round")
        self.model = model
        self.plot = self.getPlotItem()
        self.plot.addLegend(offset=(-10, 10))
        self.plot.setLabel("left", "MB (10⁶ bytes)")
        self.plot.setLabel("bottom", "round")
        self.plot.showGrid(y=True, alpha=0.3)
        # fillLevel=0 also makes the auto range start at 0 MB
        self.up_curve = pg.PlotDataItem(
            pen=pg.mkPen(UP_COLOR, width=2), symbol="t1", symbolBrush=UP_COLOR, fillLevel=0.0, brush=UP_COLOR + "40", name="up (to server)"
        )
        self.down_curve = pg.PlotDataItem(
            pen=pg.mkPen(DOWN_COLOR, width=2), symbol="t", symbolBrush=DOWN_COLOR, fillLevel=0.0, brush=DOWN_COLOR + "40", name="down (to sites)"
        )
        self._symbols_on = True
        self.plot.addItem(self.up_curve)
        self.plot.addItem(self.down_curve)
        self.marker = round_marker()
        self.plot.addItem(self.marker, ignoreBounds=True)
        model.roundsChanged.connect(self._refresh)
        model.selectionChanged.connect(self._mark)
        self._refresh()

    def _mark(self, rnd: int | None) -> None:
        place_marker(self.marker, rnd)

    def _refresh(self) -> None:
        history = self.model.history
        rounds = history.round_numbers()
        up, down = history.bytes_up() / MB, history.bytes_down() / MB
        symbols_on = rounds.size <= SYMBOLS_UP_TO
        if symbols_on != self._symbols_on:
            self._symbols_on = symbols_on
            self.up_curve.setSymbol("t1" if symbols_on else None)
            self.down_curve.setSymbol("t" if symbols_on else None)
        self.up_curve.setData(rounds, up)
        self.down_curve.setData(rounds, down)
        total = f": total {up.sum():.1f} MB up, {down.sum():.1f} MB down" if rounds.size else ""
        self.plot.setTitle("communication per round" + total)
        place_marker(self.marker, self.model.selected_round)
