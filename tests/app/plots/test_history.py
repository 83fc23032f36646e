"""RunHistory from synthetic events (no Qt)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.plots.history import RunHistory
from engine.errors import FedSegError
from engine.events import BetaStep, JsonlEventLog, RoundStarted, RunFinished, RunWarning, SiteProgress



def test_rounds_become_arrays(events, betas3):
    history = RunHistory.from_events(events.auto_run(betas3))
    assert history.sites == ["site-a", "site-b", "site-c"]
    assert history.algorithm == "auto-fedavg" and history.status == "running"
    np.testing.assert_array_equal(history.round_numbers(), [1, 2, 3])
    np.testing.assert_allclose(history.alpha_matrix()[2], [0.629, 0.156, 0.215], atol=1e-3)
    np.testing.assert_allclose(history.beta_matrix(), betas3)
    np.testing.assert_allclose(history.val_dice_matrix()[1], [0.2, 0.21, 0.22])
    np.testing.assert_allclose(history.mean_val_dice(), [0.11, 0.21, 0.31])
    np.testing.assert_allclose(history.bytes_up(), [1e6, 2e6, 3e6])
    np.testing.assert_allclose(history.bytes_down(), [3e6, 6e6, 9e6])


def test_dicts_from_events_jsonl_work_like_events(events, betas3):
    as_events = RunHistory.from_events(events.auto_run(betas3))
    as_dicts = RunHistory.from_events([e.to_dict() for e in events.auto_run(betas3)] + [{"type": "from_the_future"}])
    np.testing.assert_allclose(as_dicts.alpha_matrix(), as_events.alpha_matrix())
    np.testing.assert_allclose(as_dicts.beta_matrix(), as_events.beta_matrix())


def test_progress_and_unknown_events_are_ignored():
    history = RunHistory()
    assert history.add(SiteProgress(round=1, site="a", phase="train", step=1, total=2)) is None
    assert history.add({"type": "something_new", "x": 1}) is None
    assert history.status == "empty"


def test_beta_steps_sit_between_rounds(events, betas3):
    history = RunHistory.from_events(events.auto_run(betas3))
    steps = history.beta_steps(2)
    assert [s.step for s in steps] == [1, 2]
    np.testing.assert_allclose(steps[0].beta, [7.9, 4.9, 5.9])
    x, beta = history.beta_step_trace()
    np.testing.assert_allclose(x, [0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    np.testing.assert_allclose(beta[-1], betas3[-1])


def test_missing_site_is_nan_and_warnings_keep_their_round(events):
    history = RunHistory()
    history.add(events.started())
    history.add(RoundStarted(round=1, rounds=5))
    history.add(RunWarning(message="round 1: site site-b did not reply", site="site-b"))
    history.add(events.finished(1, [0.5, 0.0, 0.5], [6.0, 6.0, 6.0], {"site-a": 0.4, "site-b": None, "site-c": 0.6}, missing=["site-b"]))
    dice = history.val_dice_matrix()[0]
    assert dice[0] == 0.4 and np.isnan(dice[1]) and dice[2] == 0.6
    assert history.mean_val_dice()[0] == pytest.approx(0.5)
    assert history.missing_sites() == {1: ("site-b",)}
    assert history.warnings[0].round == 1 and history.warnings[0].site == "site-b"


def test_resumed_run_replaces_rounds_instead_of_duplicating(events, betas3):
    history = RunHistory.from_events(events.auto_run(betas3))
    history.add(RunWarning(message="late warning in round 3"))
    # the run was interrupted after round 3 and resumed from the checkpoint of round 2
    history.add(events.started(start_round=3))
    np.testing.assert_array_equal(history.round_numbers(), [1, 2])
    assert history.beta_steps(3) == [] and history.warnings == []
    for event in events.auto_round(3, [7.0, 7.0, 9.0]) + events.auto_round(4, [9.0, 7.0, 9.0]):
        history.add(event)
    np.testing.assert_array_equal(history.round_numbers(), [1, 2, 3, 4])
    np.testing.assert_allclose(history.beta_matrix()[2], [7.0, 7.0, 9.0])
    assert len(history.beta_steps(3)) == 2


def test_a_new_run_starts_from_scratch(events, betas3):
    history = RunHistory.from_events(events.auto_run(betas3))
    history.add(events.started(sites=["x", "y"], algorithm="fedavg"))
    assert history.sites == ["x", "y"] and history.rounds == [] and history.alpha_matrix().shape == (0, 2)


def test_weight_kind_and_layers_from_the_config(events):
    assert RunHistory.from_events([events.started()]).weight_kind == "dirichlet"  # engine default
    assert RunHistory.from_events([events.started(params={"weights": "softmax"})]).weight_kind == "softmax"
    fedavg = RunHistory.from_events([events.started(algorithm="fedavg")])
    assert fedavg.weight_kind is None and fedavg.aggregation is None
    layered = RunHistory.from_events(
        [events.started(params={"aggregation": "layer"}), events.finished(1, [0.3, 0.3, 0.4], [[2.0, 4.0], [2.0, 4.0], [3.0, 5.0]], {})]
    )
    assert layered.aggregation == "layer" and layered.layer_count == 2
    np.testing.assert_allclose(layered.beta_matrix(), [[3.0, 3.0, 4.0]])
    np.testing.assert_allclose(layered.beta_matrix(layer=1), [[4.0, 4.0, 5.0]])


def test_from_folder_skips_a_torn_last_line(tmp_path, events, betas3):
    log = JsonlEventLog(tmp_path / "events.jsonl")
    for event in events.auto_run(betas3):
        log(event)
    log.close()
    with (tmp_path / "events.jsonl").open("a") as fh:  # the writer died mid-line
        fh.write(json.dumps(BetaStep(round=4, step=1, beta=[1.0, 2.0, 3.0]).to_dict())[:25])
    history = RunHistory.from_folder(tmp_path)
    np.testing.assert_array_equal(history.round_numbers(), [1, 2, 3])
    assert history.beta_steps(4) == []


def test_finished_run(tmp_path, events, betas3):
    history = RunHistory.from_events(events.auto_run(betas3) + [RunFinished(out_dir=str(tmp_path), summary={"global_test_avg": 0.7})])
    assert history.status == "finished" and history.summary["global_test_avg"] == 0.7


def test_not_a_run_folder(tmp_path):
    with pytest.raises(FedSegError, match="not a run folder"):
        RunHistory.from_folder(tmp_path)
