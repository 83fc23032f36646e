"""Simplex heat map (K = 3) and marginal Beta curves (any K) of the selected round."""

from __future__ import annotations

import numpy as np
import pytest

from app.plots.density_plots import NEEDS_THREE_SITES, MarginalDensities, SimplexDensity
from app.plots.dirichlet import barycentric_to_xy, dirichlet_mode, simplex_grid
from app.plots.model import RunPlotsModel

SITES5 = ["s1", "s2", "s3", "s4", "s5"]
BETA5 = [6.0, 1.5, 2.0, 4.0, 9.0]


@pytest.fixture
def model(qtbot):
    return RunPlotsModel()


@pytest.fixture
def views(qtbot, model):
    simplex, marginals = SimplexDensity(model, resolution=120), MarginalDensities(model)
    qtbot.addWidget(simplex)
    qtbot.addWidget(marginals)
    return simplex, marginals


def feed(model, events):
    for event in events:
        model.add_event(event)


def test_simplex_heat_map_inside_the_triangle_only(views, model, events, betas3):
    simplex, _ = views
    feed(model, events.auto_run(betas3))
    assert not simplex.showing_note
    image = simplex.image_item.image
    inside = simplex_grid(120).inside
    assert np.isfinite(image[inside]).all() and (image[inside] > 0).all()
    assert np.isnan(image[~inside]).all()
    # drawn: NaN pixels are transparent, inside pixels opaque
    simplex.image_item.render()
    qimage = simplex.image_item.qimage
    top_row = image.shape[0] - 1
    assert qimage.pixelColor(0, top_row).alpha() == 0  # beside the apex
    assert qimage.pixelColor(60, 0).alpha() == 255  # middle of the base


def test_simplex_peak_and_cross_at_the_mode(views, model, events, betas3):
    simplex, _ = views
    feed(model, events.auto_run(betas3))
    mode = dirichlet_mode(betas3[-1]).point
    np.testing.assert_allclose(simplex.mode_point, [17.3 / 27.5, 4.3 / 27.5, 5.9 / 27.5])
    grid = simplex_grid(120)
    peak = grid.weights[np.unravel_index(np.nanargmax(simplex.image_item.image), grid.inside.shape)]
    np.testing.assert_allclose(peak, mode, atol=0.015)
    spots = simplex.mode_item.data
    np.testing.assert_allclose([spots["x"][0], spots["y"][0]], barycentric_to_xy(mode))
    assert simplex.color_bar.levels() == pytest.approx((0.0, np.nanmax(simplex.image_item.image)))
    assert [label.toPlainText() for label in simplex.corner_labels] == ["site-a", "site-b", "site-c"]
    assert "β = (18.30, 5.30, 6.90)" in simplex.title and "α = (0.63, 0.16, 0.21)" in simplex.title


def test_simplex_follows_the_selected_round(views, model, events, betas3):
    simplex, marginals = views
    feed(model, events.auto_run(betas3))
    model.select_round(2)
    np.testing.assert_allclose(simplex.shown_beta, [8.0, 5.0, 6.0])
    np.testing.assert_allclose(marginals.shown_beta, [8.0, 5.0, 6.0])
    assert simplex.title.startswith("round 2:")


def test_five_sites_five_marginals_each_integrating_to_one(views, model, events):
    simplex, marginals = views
    model.add_event(events.started(sites=SITES5))
    alpha = dirichlet_mode(BETA5).point.tolist()
    model.add_event(events.finished(1, alpha, BETA5, {}))
    assert simplex.note_text() == NEEDS_THREE_SITES
    assert not marginals.showing_note
    assert len(marginals.curves.curves) == 5
    for k, curve in enumerate(marginals.curves.curves):
        x, y = curve.getData()
        assert np.trapezoid(y, x) == pytest.approx(1.0, abs=1e-3)
        assert np.trapezoid(x * y, x) == pytest.approx(BETA5[k] / sum(BETA5), abs=1e-3)
    np.testing.assert_allclose([line.value() for line in marginals.alpha_lines], alpha)
    labels = [label.text for _, label in marginals.plot.legend.items]
    assert labels[0] == f"s1: β = 6.00, α = {alpha[0]:.2f}" and labels[4].startswith("s5: β = 9.00")
    assert marginals.title == "marginals Beta(βₖ, Σβ − βₖ) of round 1"


def test_softmax_weights_show_a_note_not_a_density(views, model, events):
    simplex, marginals = views
    model.add_event(events.started(params={"weights": "softmax"}))
    model.add_event(events.finished(1, [0.2, 0.3, 0.5], [0.1, 0.5, 1.0], {}))
    for view in views:
        assert view.showing_note
        assert "softmax" in view.note_text() and "no Dirichlet density" in view.note_text()
        assert "α = (0.20, 0.30, 0.50)" in view.note_text()


def test_fedavg_and_empty_states(views, model, events):
    simplex, marginals = views
    assert "No round has finished yet" in simplex.note_text()
    model.add_event(events.started(algorithm="fedavg"))
    model.add_event(events.finished(1, [0.3, 0.3, 0.4], None, {}))
    assert "fixed weights" in simplex.note_text() and "fixed weights" in marginals.note_text()


def test_layerwise_density_uses_the_mean_or_the_chosen_layer(views, model, events):
    simplex, marginals = views
    model.add_event(events.started(params={"aggregation": "layer"}))
    model.add_event(events.finished(1, [0.4, 0.3, 0.3], [[2.0, 4.0], [2.0, 6.0], [3.0, 5.0]], {}))
    np.testing.assert_allclose(simplex.shown_beta, [3.0, 4.0, 4.0])
    assert "mean over 2 layers" in simplex.title
    np.testing.assert_allclose([line.value() for line in marginals.alpha_lines], [0.4, 0.3, 0.3])  # reported alpha
    model.set_layer(0)
    np.testing.assert_allclose(simplex.shown_beta, [2.0, 2.0, 3.0])
    np.testing.assert_allclose([line.value() for line in marginals.alpha_lines], [0.25, 0.25, 0.5])  # mode of layer 1
    assert "layer 1 of 2" in marginals.title


def test_a_diverged_beta_gives_a_note_not_an_error(views, model, events):
    simplex, marginals = views
    model.add_event(events.started())
    model.add_event(events.finished(1, [0.3, 0.3, 0.4], [2.0, 3.0, 4.0], {}))
    model.add_event(events.finished(2, [0.3, 0.3, 0.4], [None, 3.0, 4.0], {}))  # NaN as events.jsonl writes it
    assert "not a valid concentration" in simplex.note_text() and "not a valid concentration" in marginals.note_text()
    model.select_round(1)
    np.testing.assert_allclose(simplex.shown_beta, [2.0, 3.0, 4.0])
