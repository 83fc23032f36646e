"""RunPlotsWidget: live feeding, replay of a run folder, resume, slider, empty state."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app.plots.run_plots import NO_RUN, RunPlotsWidget
from engine.errors import FedSegError
from engine.events import JsonlEventLog, RunFinished, RunWarning


@pytest.fixture
def widget(qtbot):
    w = RunPlotsWidget()
    qtbot.addWidget(w)
    return w


def alpha_rounds(widget):
    x, _ = widget.alpha_plot.alpha_curves.curves[0].getData()
    return list(x)


def test_empty_state_until_the_first_round(widget, events, betas3):
    assert widget.pages.currentWidget() is widget.empty_label and widget.empty_label.text() == NO_RUN
    run = events.auto_run(betas3)
    widget.add_event(run[0])
    assert widget.pages.currentWidget() is widget.empty_label
    assert "waiting for the first round" in widget.empty_label.text()
    for event in run[1:6]:
        widget.add_event(event)
    assert widget.pages.currentWidget() is widget.tabs
    assert widget.status_label.text().startswith("auto-fedavg on 3 sites · dirichlet weights, network-wise · round 1 of 5")


def test_replay_of_a_run_folder(widget, tmp_path, events, betas3):
    log = JsonlEventLog(tmp_path / "events.jsonl")
    for event in events.auto_run(betas3) + [RunFinished(out_dir=str(tmp_path), summary={})]:
        log(event)
    log.close()
    history = widget.load_run(tmp_path)
    assert history is widget.history and widget.history.status == "finished"
    assert alpha_rounds(widget) == [1, 2, 3]
    np.testing.assert_allclose(widget.simplex.shown_beta, betas3[-1])
    assert widget.slider.label.text() == "3 of 5 (latest)"
    assert widget.status_label.text().endswith("finished")


def test_a_folder_without_a_run_keeps_the_plots(widget, tmp_path, events, betas3):
    for event in events.auto_run(betas3):
        widget.add_event(event)
    with pytest.raises(FedSegError):
        widget.load_run(tmp_path / "nothing-here")
    assert alpha_rounds(widget) == [1, 2, 3]


def test_resumed_run_does_not_duplicate_rounds(widget, events, betas3):
    for event in events.auto_run(betas3):
        widget.add_event(event)
    widget.add_event(events.started(start_round=3))
    for event in events.auto_round(3, [7.0, 7.5, 8.0]) + events.auto_round(4, [9.0, 7.0, 9.0]):
        widget.add_event(event)
    assert alpha_rounds(widget) == [1, 2, 3, 4]
    _, beta_c = widget.alpha_plot.beta_curves.curves[2].getData()
    np.testing.assert_allclose(beta_c, [6.0, 6.0, 8.0, 9.0])  # round 3 as run again (was 6.9)
    _, dice = widget.dice_plot.mean_curve.getData()
    assert len(dice) == 4


def test_slider_scrubs_the_densities_and_marks_the_line_plots(widget, qtbot, events, betas3):
    run = events.auto_run(betas3)
    for event in run:
        widget.add_event(event)
    slider = widget.slider.slider
    assert (slider.minimum(), slider.maximum(), slider.value()) == (0, 2, 2)
    slider.setValue(0)
    assert widget.model.selected_round == 1
    np.testing.assert_allclose(widget.simplex.shown_beta, betas3[0])
    np.testing.assert_allclose(widget.simplex.mode_point, [1 / 3, 1 / 3, 1 / 3])
    assert widget.dice_plot.marker.value() == 1
    assert widget.slider.label.text() == "1 of 5"
    # a new round does not pull the user away from the round being looked at
    for event in events.auto_round(4, [9.0, 5.0, 5.0]):
        widget.add_event(event)
    assert widget.model.selected_round == 1 and slider.maximum() == 3 and slider.value() == 0
    qtbot.mouseClick(widget.slider.latest_button, Qt.MouseButton.LeftButton)
    assert widget.model.selected_round == 4 and slider.value() == 3
    np.testing.assert_allclose(widget.simplex.shown_beta, [9.0, 5.0, 5.0])
    for event in events.auto_round(5, [9.0, 6.0, 5.0]):
        widget.add_event(event)
    assert widget.model.selected_round == 5  # following again


def test_softmax_run_shows_the_note_in_the_density_tab(widget, events):
    widget.add_event(events.started(params={"weights": "softmax"}))
    widget.add_event(events.finished(1, [0.2, 0.3, 0.5], [0.1, 0.5, 1.0], {}))
    assert "softmax" in widget.marginals.note_text()
    assert widget.simplex.isHidden()  # the same note once, not twice side by side
    assert "softmax weights" in widget.status_label.text()


def test_layer_box_for_layerwise_weights(widget, events):
    widget.add_event(events.started(params={"aggregation": "layer"}))
    assert widget.layer_box.count() == 0
    widget.add_event(events.finished(1, [0.4, 0.3, 0.3], [[2.0, 4.0], [2.0, 6.0], [3.0, 5.0]], {}))
    assert [widget.layer_box.itemText(i) for i in range(widget.layer_box.count())] == ["mean over layers", "layer 1 of 2", "layer 2 of 2"]
    assert not widget.simplex.isHidden()
    widget.layer_box.setCurrentIndex(2)
    assert widget.model.layer == 1
    np.testing.assert_allclose(widget.simplex.shown_beta, [4.0, 6.0, 5.0])
    widget.model.set_layer(None)
    assert widget.layer_box.currentIndex() == 0


def test_warnings_are_counted_and_listed(widget, events, betas3):
    for event in events.auto_run(betas3[:1]):
        widget.add_event(event)
    widget.add_event(RunWarning(message="round 1: site site-b did not reply", site="site-b"))
    widget.add_event(RunWarning(message="round 1: rejected a reply", site="site-c"))
    assert widget.warnings_label.text() == "⚠ 2 warnings"
    assert widget.warnings_label.toolTip().splitlines() == ["round 1: site site-b did not reply", "round 1: rejected a reply"]


def test_dict_events_and_clear(widget, events, betas3):
    for event in events.auto_run(betas3):
        widget.add_event(event.to_dict())
    assert alpha_rounds(widget) == [1, 2, 3]
    widget.clear()
    assert widget.history.rounds == [] and widget.pages.currentWidget() is widget.empty_label
    assert widget.alpha_plot.alpha_curves.curves == []
    assert "No round has finished yet" in widget.simplex.note_text()
