"""Dirichlet views of Auto-FedAvg's weights at the selected round (paper Fig. 3c).

- :class:`SimplexDensity`: Dir(beta) as a heat map on the triangle (K = 3 only), the
  sites' names at the corners, the mode (= the alpha the round aggregated with, for
  network-wise weights) marked with a cross, a colour bar.
- :class:`MarginalDensities`: for any K, the marginal Beta(beta_k, sum(beta) - beta_k)
  of each alpha_k and a dashed vertical line at the alpha used.

When there is nothing to draw (no round yet, FedAvg's fixed weights, softmax weights,
K != 3 for the triangle) the view shows a note saying so instead.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF
from PySide6.QtWidgets import QWidget

from engine.fl.learned_weights import DIRICHLET, SOFTMAX

from app.plots.dirichlet import CORNERS, HEIGHT, barycentric_to_xy, dirichlet_mode, marginal_densities, simplex_density
from app.plots.line_plots import SiteCurves
from app.plots.model import RunPlotsModel
from app.plots.style import NoteStack, format_vector, site_pen

NEEDS_THREE_SITES = "The simplex view needs exactly 3 sites; see the marginal densities."


def density_problem(model: RunPlotsModel, *, simplex: bool) -> str | None:
    """Why the density of the selected round cannot be drawn, or None if it can."""
    history, rnd = model.history, model.selected_round
    if rnd is None:
        return "No round has finished yet: the density of the aggregation weights appears after the first round."
    beta = history.beta_vector(rnd, model.layer)
    if beta is None:
        return f"{history.algorithm} aggregates with fixed weights: there is no β, so no Dirichlet density to show."
    record = history.record(rnd)
    assert record is not None
    if not (np.all(np.isfinite(beta)) and np.all(beta > 0)):
        # events.jsonl stores a NaN as null: a diverged beta must not break the plots
        return f"Round {rnd}: β = {beta.tolist()} is not a valid concentration (NaN or ≤ 0), so no density."
    if history.weight_kind == SOFTMAX:
        return (
            "Softmax weights (paper Eq. 4): α = softmax(β) is a point, not a distribution, "
            f"so there is no Dirichlet density.\nRound {rnd}: β = {format_vector(beta)}, α = {format_vector(record.alpha)}"
        )
    if history.weight_kind != DIRICHLET:
        return f"β of an unknown kind ({history.weight_kind!r}): no density to show."
    if simplex and beta.size != 3:
        return NEEDS_THREE_SITES
    return None


def density_title(model: RunPlotsModel, beta: np.ndarray | None) -> str:
    """"round r: beta = (...)" (beta left out when None), and which layer."""
    layers = model.history.layer_count
    title = f"round {model.selected_round}" + (f": β = {format_vector(beta)}" if beta is not None else "")
    if layers:
        title += f" (mean over {layers} layers)" if model.layer is None else f" (layer {model.layer + 1} of {layers})"
    return title


class DensityView(NoteStack):
    """What both density views share: they redraw when the run, the round, the selection
    or the layer changes, and show a note instead when there is no density to draw."""

    simplex = False  # whether the view needs exactly 3 sites

    def _follow(self, model: RunPlotsModel, on_reset: Callable[[], None]) -> None:
        """Subscribe to ``model``; ``on_reset()`` (a new run's sites) also runs now."""
        self.model = model
        self.shown_beta: np.ndarray | None = None
        self._shown_key: tuple | None = None
        self.title = ""
        model.runReset.connect(on_reset)
        for signal in (model.roundsChanged, model.selectionChanged, model.layerChanged):
            signal.connect(self.refresh)
        on_reset()

    def refresh(self, *_: object) -> None:
        raise NotImplementedError

    def _beta_or_note(self) -> np.ndarray | None:
        """β of the selected round (and layer), or None once the note says why not."""
        problem = density_problem(self.model, simplex=self.simplex)
        if problem is not None:
            self.shown_beta = self._shown_key = None
            self.show_note(problem)
            return None
        beta = self.model.history.beta_vector(self.model.selected_round, self.model.layer)  # type: ignore[arg-type]
        assert beta is not None
        return beta


class SimplexDensity(DensityView):
    """Dir(beta) of the selected round on the 2-simplex (K = 3)."""

    simplex = True

    def __init__(self, model: RunPlotsModel, parent: QWidget | None = None, resolution: int = 200) -> None:
        self.view = pg.GraphicsLayoutWidget()
        super().__init__(self.view, parent)
        self.resolution = resolution
        self.plot = self.view.addPlot()
        for axis in ("left", "bottom"):
            self.plot.hideAxis(axis)
        self.plot.setAspectLocked(True)
        self.plot.setMouseEnabled(False, False)
        self.plot.hideButtons()
        self.image_item = pg.ImageItem(axisOrder="row-major")  # image[row = y, col = x]
        self.plot.addItem(self.image_item)
        corners = np.vstack([CORNERS, CORNERS[:1]])
        self.plot.addItem(pg.PlotDataItem(corners[:, 0], corners[:, 1], pen=pg.mkPen("#c8c8c8", width=1)))
        self.mode_item = pg.ScatterPlotItem(symbol="+", size=18, pen=pg.mkPen("#ff3030", width=2), brush=None)
        self.plot.addItem(self.mode_item)
        anchors = ((0.5, 0.0), (0.5, 0.0), (0.5, 1.0))  # names below the base, above the apex
        self.corner_labels = [pg.TextItem("", anchor=a) for a in anchors]
        for label, (x, y) in zip(self.corner_labels, CORNERS):
            label.setPos(x, y)
            self.plot.addItem(label)
        self.color_bar = pg.ColorBarItem(colorMap="viridis", interactive=False, label="density", rounding=0.01)
        self.color_bar.setImageItem(self.image_item, insert_in=self.plot)
        self.plot.setRange(xRange=(-0.12, 1.12), yRange=(-0.14, HEIGHT + 0.1), padding=0)
        self.plot.disableAutoRange()
        self.mode_point: np.ndarray | None = None
        self._follow(model, self._name_corners)

    def _name_corners(self) -> None:
        sites = self.model.history.sites
        for i, label in enumerate(self.corner_labels):
            label.setText(sites[i] if len(sites) == 3 else "")
            label.setColor(site_pen(i).color())
        self.refresh()

    def refresh(self, *_: object) -> None:
        beta = self._beta_or_note()
        if beta is None:
            self.mode_point = None
            return
        rnd, layer = self.model.selected_round, self.model.layer
        key = (rnd, layer, beta.tobytes())
        if key == self._shown_key:  # roundsChanged and selectionChanged both ask for a new round
            return
        self._shown_key = key
        if self.shown_beta is None or not np.array_equal(beta, self.shown_beta):
            image = simplex_density(beta, self.resolution)
            self.image_item.setImage(image, autoLevels=False)
            self.image_item.setRect(QRectF(0.0, 0.0, 1.0, HEIGHT))  # needs an image first
            self.color_bar.setLevels((0.0, _top_level(image, beta)))
            self.shown_beta = beta
        mode = dirichlet_mode(beta)
        self.mode_point = mode.point
        x, y = barycentric_to_xy(mode.point)
        self.mode_item.setData([x], [y])
        self.title = f"{density_title(self.model, beta)}, {mode.note}: α = {format_vector(mode.point)}"
        self.plot.setTitle(self.title, size="9pt")
        self.show_content()


def _top_level(image: np.ndarray, beta: np.ndarray) -> float:
    """Top of the colour scale: the maximum, or a high percentile when some beta_k < 1
    (the density is unbounded near those faces and would wash the rest out)."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 1.0
    top = float(np.percentile(finite, 99.0)) if np.any(beta < 1.0) else float(finite.max())
    return top if top > 0 else 1.0


class MarginalDensities(DensityView):
    """Beta(beta_k, sum(beta) - beta_k) of each site's alpha_k at the selected round.

    The dashed line of site k sits at the alpha the round aggregated with (for
    layer-wise weights: the mean over layers as reported, or the mode of the chosen
    layer's Dir(beta)).
    """

    x = np.linspace(0.0, 1.0, 1001)

    def __init__(self, model: RunPlotsModel, parent: QWidget | None = None) -> None:
        self.view = pg.PlotWidget()
        super().__init__(self.view, parent)
        self.plot = self.view.getPlotItem()
        self.plot.addLegend(offset=(-10, 10))
        self.plot.setLabel("bottom", "αₖ")
        self.plot.setLabel("left", "density")
        self.plot.setXRange(0.0, 1.0)
        self.curves = SiteCurves(self.plot, symbol=None)
        self.alpha_lines: list[pg.InfiniteLine] = []
        self._follow(model, self._rebuild)

    def _rebuild(self) -> None:
        sites = self.model.history.sites
        self.curves.rebuild(sites)
        if len(self.alpha_lines) != len(sites):
            for line in self.alpha_lines:
                self.plot.removeItem(line)
            self.alpha_lines = [pg.InfiniteLine(angle=90, pen=site_pen(i, width=1.5, dashed=True)) for i in range(len(sites))]
            for line in self.alpha_lines:
                self.plot.addItem(line, ignoreBounds=True)
        self._shown_key = None  # new curves hold no data yet
        self.refresh()

    def alpha_shown(self) -> np.ndarray:
        """Where the dashed lines are: the alpha of the selected round (see class doc)."""
        history, rnd, layer = self.model.history, self.model.selected_round, self.model.layer
        record = history.record(rnd) if rnd is not None else None
        if record is None:
            return np.zeros(0)
        if layer is None:
            return np.asarray(record.alpha, dtype=float)
        beta = history.beta_vector(rnd, layer)  # type: ignore[arg-type]
        return dirichlet_mode(beta).point

    def refresh(self, *_: object) -> None:
        beta = self._beta_or_note()
        if beta is None:
            return
        rnd, layer = self.model.selected_round, self.model.layer
        alpha = self.alpha_shown()
        key = (rnd, layer, beta.tobytes(), alpha.tobytes())
        if key == self._shown_key:
            return
        self._shown_key = key
        self.curves.set_data(self.x, marginal_densities(beta, self.x).T)
        for k, (line, value) in enumerate(zip(self.alpha_lines, alpha)):
            line.setValue(float(value))
            label = self.plot.legend.getLabel(self.curves.curves[k])
            if label is not None:  # beta and alpha per site here: a title cannot hold K of them
                label.setText(f"{self.curves.sites[k]}: β = {beta[k]:.2f}, α = {value:.2f}")
        self.shown_beta = beta
        self.title = f"marginals Beta(βₖ, Σβ − βₖ) of {density_title(self.model, None)}"
        self.plot.setTitle(self.title, size="9pt")
        self.show_content()
