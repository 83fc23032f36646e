"""alpha/beta, Dice and bytes plots follow the model (the curves' data arrays)."""

from __future__ import annotations

import numpy as np
import pytest

from app.plots.line_plots import AlphaPlot, BytesPlot, DicePlot
from app.plots.model import RunPlotsModel


@pytest.fixture
def model(qtbot):
    return RunPlotsModel()


def curve_data(curve):
    x, y = curve.getData()
    return (np.asarray(x) if x is not None else np.zeros(0)), (np.asarray(y) if y is not None else np.zeros(0))


def test_alpha_plot_draws_one_curve_per_site_from_round_finished(qtbot, model, events, betas3):
    plot = AlphaPlot(model)
    qtbot.addWidget(plot)
    run = events.auto_run(betas3)
    for event in run[: 1 + 5]:  # run_started and round 1
        model.add_event(event)
    assert len(plot.alpha_curves.curves) == 3
    x, y = curve_data(plot.alpha_curves.curves[0])
    np.testing.assert_array_equal(x, [1.0])
    np.testing.assert_allclose(y, [1 / 3])
    first_curve = plot.alpha_curves.curves[0]
    for event in run[6:]:
        model.add_event(event)
    assert plot.alpha_curves.curves[0] is first_curve  # data updated, items not recreated
    x, y = curve_data(first_curve)
    np.testing.assert_array_equal(x, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(y, [1 / 3, 7 / 16, 17.3 / 27.5])
    _, site_c = curve_data(plot.alpha_curves.curves[2])
    np.testing.assert_allclose(site_c, [1 / 3, 5 / 16, 5.9 / 27.5])
    legend_names = [label.text for _, label in plot.alpha_plot.legend.items]
    assert legend_names == ["site-a", "site-b", "site-c"]


def test_beta_is_shown_below_alpha_with_its_steps(qtbot, model, events, betas3):
    plot = AlphaPlot(model)
    qtbot.addWidget(plot)
    for event in events.auto_run(betas3):
        model.add_event(event)
    for k in range(3):
        x, y = curve_data(plot.beta_curves.curves[k])
        np.testing.assert_array_equal(x, [1, 2, 3])
        np.testing.assert_allclose(y, [b[k] for b in betas3])
    x, y = curve_data(plot.beta_step_lines.curves[1])
    np.testing.assert_allclose(x, [0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    np.testing.assert_allclose(y, [5.9, 6.0, 4.9, 5.0, 5.2, 5.3])
    assert plot.beta_plot.titleLabel.text == "Dirichlet concentration β"
    assert not plot.beta_note.isVisible()


def test_beta_steps_draw_live_before_the_round_ends(qtbot, model, events, betas3):
    plot = AlphaPlot(model)
    qtbot.addWidget(plot)
    for event in events.auto_run(betas3)[:-1]:  # round 3's round_finished has not come yet
        model.add_event(event)
    x, _ = curve_data(plot.beta_step_lines.curves[0])
    assert x[-1] == 3.0
    x, _ = curve_data(plot.beta_curves.curves[0])
    assert x[-1] == 2.0


def test_fedavg_has_no_beta_and_says_so(qtbot, model, events):
    plot = AlphaPlot(model)
    qtbot.addWidget(plot)
    model.add_event(events.started(algorithm="fedavg"))
    model.add_event(events.finished(1, [0.2, 0.3, 0.5], None, {"site-a": 0.1, "site-b": 0.2, "site-c": 0.3}))
    _, y = curve_data(plot.alpha_curves.curves[2])
    np.testing.assert_allclose(y, [0.5])
    _, beta = curve_data(plot.beta_curves.curves[0])
    assert np.isnan(beta).all()
    assert plot.beta_note.isVisible() and "fixed weights" in plot.beta_note.toPlainText()


def test_layerwise_beta_shows_the_mean_or_the_chosen_layer(qtbot, model, events):
    plot = AlphaPlot(model)
    qtbot.addWidget(plot)
    model.add_event(events.started(params={"aggregation": "layer"}))
    model.add_event(events.finished(1, [0.3, 0.3, 0.4], [[2.0, 4.0], [2.0, 6.0], [3.0, 5.0]], {}))
    _, y = curve_data(plot.beta_curves.curves[1])
    np.testing.assert_allclose(y, [4.0])
    assert "mean over 2 layers" in plot.beta_plot.titleLabel.text
    model.set_layer(1)
    _, y = curve_data(plot.beta_curves.curves[1])
    np.testing.assert_allclose(y, [6.0])
    assert "layer 2 of 2" in plot.beta_plot.titleLabel.text


def test_softmax_beta_is_titled_as_logits(qtbot, model, events):
    plot = AlphaPlot(model)
    qtbot.addWidget(plot)
    model.add_event(events.started(params={"weights": "softmax"}))
    assert plot.beta_plot.titleLabel.text == "softmax logits β"


def test_dice_plot_has_sites_and_mean_with_gaps_for_missing_sites(qtbot, model, events, betas3):
    plot = DicePlot(model)
    qtbot.addWidget(plot)
    for event in events.auto_run(betas3[:2]):
        model.add_event(event)
    model.add_event(events.finished(3, [0.5, 0.0, 0.5], [6.0] * 3, {"site-a": 0.5, "site-b": None, "site-c": 0.7}, missing=["site-b"]))
    x, y = curve_data(plot.site_curves.curves[1])
    np.testing.assert_array_equal(x, [1, 2, 3])
    np.testing.assert_allclose(y[:2], [0.11, 0.21])
    assert np.isnan(y[2])
    _, mean = curve_data(plot.mean_curve)
    np.testing.assert_allclose(mean, [0.11, 0.21, 0.6])


def test_bytes_plot_in_megabytes(qtbot, model, events, betas3):
    plot = BytesPlot(model)
    qtbot.addWidget(plot)
    for event in events.auto_run(betas3):
        model.add_event(event)
    x, up = curve_data(plot.up_curve)
    _, down = curve_data(plot.down_curve)
    np.testing.assert_array_equal(x, [1, 2, 3])
    np.testing.assert_allclose(up, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(down, [3.0, 6.0, 9.0])
    assert "total 6.0 MB up, 18.0 MB down" in plot.plot.titleLabel.text


def test_line_plots_mark_the_selected_round(qtbot, model, events, betas3):
    alpha, dice, sent = AlphaPlot(model), DicePlot(model), BytesPlot(model)
    for widget in (alpha, dice, sent):
        qtbot.addWidget(widget)
    for event in events.auto_run(betas3):
        model.add_event(event)
    markers = [*alpha.markers, dice.marker, sent.marker]
    assert [m.value() for m in markers] == [3, 3, 3, 3]
    model.select_round(2)
    assert [m.value() for m in markers] == [2, 2, 2, 2]
    assert all(m.isVisibleTo(m.parentItem()) for m in markers)
