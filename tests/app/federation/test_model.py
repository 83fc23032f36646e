"""FederationModel from synthetic engine events: rounds, site states, offline, Dice."""

from __future__ import annotations

import pytest

from app.federation.model import DEMO, DONE, EVALUATING, HOST, JOIN, LEARNING_BETA, OFFLINE, TRAINING, WAITING, FederationModel
from engine.events import BetaStep, RoundFinished, RoundStarted, RunFailed, RunFinished, RunStarted, RunWarning, SiteProgress

SITES = ["site-1", "site-2", "site-3"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def started(rounds: int = 3, timeout: float = 30.0, start_round: int = 1) -> RunStarted:
    return RunStarted(algorithm="auto-fedavg", sites=SITES, rounds=rounds, config={"federation": {"reply_timeout_s": timeout}}, start_round=start_round)


def finished(rnd: int, dice: dict, missing: list[str] | None = None) -> RoundFinished:
    metrics = {"val_dice": dice, "mean_val_dice": 0.5, "local_val_dice": {}, "train_loss": {}}
    return RoundFinished(round=rnd, alpha=[1 / 3] * 3, beta=None, metrics=metrics, bytes_up=1, bytes_down=1, seconds=2.0, missing_sites=missing or [])


def states(model: FederationModel) -> dict[str, str]:
    return {row.name: row.state for row in model.sites}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def model(qtbot, clock) -> FederationModel:
    model = FederationModel(clock=clock)
    model.begin(HOST)
    model.apply(started())
    return model


def test_round_progress_follows_the_rounds(qtbot, model) -> None:
    progress: list[tuple[int, int, int]] = []
    model.progress_changed.connect(lambda *args: progress.append(args))
    model.apply(RoundStarted(round=1, rounds=3))
    model.apply(finished(1, {n: 0.1 for n in SITES}))
    model.apply(RoundStarted(round=2, rounds=3))
    assert progress == [(1, 3, 0), (1, 3, 1), (2, 3, 1)]
    assert (model.round, model.rounds, model.rounds_done) == (2, 3, 1)


def test_site_states_follow_their_progress(qtbot, model) -> None:
    model.apply(RoundStarted(round=1, rounds=3))
    assert set(states(model).values()) == {WAITING}
    changed: list[int] = []
    model.site_changed.connect(changed.append)
    model.apply(SiteProgress(round=1, site="site-2", phase="train", step=1, total=4, loss=0.9))
    assert states(model)["site-2"] == TRAINING and changed == [1]
    assert "train step 1/4, loss 0.900" in model.site("site-2").detail
    model.apply(SiteProgress(round=1, site="site-2", phase="train", step=4, total=4))
    assert states(model)["site-2"] == EVALUATING  # it validates its local model next
    model.apply(SiteProgress(round=1, site="site-1", phase="learn_beta", step=1, total=2))
    assert states(model) == {"site-1": LEARNING_BETA, "site-2": EVALUATING, "site-3": WAITING}


def test_round_finished_sets_last_dice_and_the_missing_site_offline(qtbot, model, clock) -> None:
    model.apply(RoundStarted(round=1, rounds=3))
    clock.now += 5
    model.apply(finished(1, {"site-1": 0.61, "site-2": 0.42}, missing=["site-3"]))
    assert states(model) == {"site-1": WAITING, "site-2": WAITING, "site-3": OFFLINE}
    assert model.site("site-1").last_dice == pytest.approx(0.61)
    assert model.site("site-3").last_dice is None
    assert model.site("site-1").last_seen == clock.now
    assert "missing: site-3" in model.log[-1].text
    # the next round's Dice replaces the last one; a site that replies again is back
    model.apply(finished(2, {"site-1": 0.7, "site-2": None, "site-3": 0.3}))
    assert model.site("site-1").last_dice == pytest.approx(0.7)
    assert model.site("site-2").last_dice == pytest.approx(0.42)  # no new value: keep the last
    assert states(model)["site-3"] == WAITING


def test_an_offline_warning_marks_the_site_and_goes_to_the_log(qtbot, model) -> None:
    model.apply(RunWarning(message="round 2: site site-2 is offline (node gone); waiting for it", site="site-2"))
    model.apply(RunWarning(message="round 2: rejected the 'train' reply of site site-1: NaN", site="site-1"))
    assert states(model) == {"site-1": WAITING, "site-2": OFFLINE, "site-3": WAITING}
    assert [entry.level for entry in model.log[-2:]] == ["warning", "warning"]


def test_a_site_silent_longer_than_the_reply_timeout_goes_offline(qtbot, model, clock) -> None:
    model.apply(RoundStarted(round=1, rounds=3))
    clock.now += 20
    model.apply(SiteProgress(round=1, site="site-1", phase="train", step=1, total=4))
    model.apply(BetaStep(round=1, step=1, beta=[6.0, 6.0, 6.0]))  # replies came in: all heard from
    clock.now += 25
    assert model.check_offline() == []  # 25 s < 30 s reply timeout
    model.apply(SiteProgress(round=1, site="site-1", phase="train", step=2, total=4))
    clock.now += 10  # site-2, site-3: 35 s of silence; site-1: 10 s
    assert model.check_offline() == ["site-2", "site-3"]
    assert states(model) == {"site-1": TRAINING, "site-2": OFFLINE, "site-3": OFFLINE}
    assert model.check_offline() == []  # once is enough
    model.apply(SiteProgress(round=1, site="site-3", phase="train", step=1, total=4))
    assert states(model)["site-3"] == TRAINING  # heard from again: back


def test_run_finished_marks_sites_done_and_stops_the_offline_clock(qtbot, model, clock) -> None:
    model.apply(finished(3, {n: 0.5 for n in SITES}, missing=["site-2"]))
    model.apply(RunFinished(out_dir="/runs/x", summary={"global_test_avg": 0.55}))
    assert states(model) == {"site-1": DONE, "site-2": OFFLINE, "site-3": DONE}
    assert (model.rounds_done, model.running) == (3, False)
    clock.now += 10_000
    assert model.check_offline() == []
    assert "global test Dice 0.550" in model.log[-1].text


def test_a_resumed_run_starts_with_its_finished_rounds(qtbot, clock) -> None:
    model = FederationModel(clock=clock)
    model.begin(DEMO, {"site-1": 16, "site-2": 8})
    model.apply(started(rounds=5, start_round=4))
    assert (model.round, model.rounds, model.rounds_done) == (3, 5, 3)
    assert [row.cases for row in model.sites] == [16, 8, None]  # cases known before the run started are kept
    assert model.reply_timeout_s == 30.0


def test_a_joined_site_learns_its_row_and_round_from_its_own_progress(qtbot, clock) -> None:
    model = FederationModel(clock=clock)
    model.begin(JOIN, {"hospital-a": 40})
    model.apply(SiteProgress(round=3, site="hospital-a", phase="train", step=5, total=20))
    assert [(row.name, row.state, row.cases) for row in model.sites] == [("hospital-a", TRAINING, 40)]
    assert (model.round, model.rounds) == (3, 0)  # an event of an older engine: rounds unknown
    model.apply(SiteProgress(round=3, site="hospital-a", phase="evaluate", step=1, total=2, rounds=10))
    assert (model.round, model.rounds) == (3, 10)
    assert states(model) == {"hospital-a": EVALUATING}
    assert "evaluate step 1/2" in model.site("hospital-a").detail


def test_the_sites_own_case_counts_fill_the_table(qtbot, clock) -> None:
    model = FederationModel(clock=clock)
    model.begin(HOST)
    counts = {"site-1": 12, "site-2": 7, "site-3": 30}
    model.apply(RunStarted(algorithm="fedavg", sites=SITES, rounds=2, config={}, site_cases=counts))
    assert {row.name: row.cases for row in model.sites} == counts


def test_a_failed_run_is_logged_as_an_error(qtbot, model) -> None:
    entries: list[object] = []
    model.log_added.connect(entries.append)
    model.apply(RunFailed(error="round 2: too few sites replied"))
    assert [(e.level, e.text) for e in entries] == [("error", "run failed: round 2: too few sites replied")]
    assert not model.running


def test_in_process_sites_are_never_offline_for_silence(qtbot, clock) -> None:
    model = FederationModel(clock=clock)
    model.begin(DEMO, watch_silence=False)  # they only wait for their turn
    model.apply(started(timeout=30.0))
    clock.now += 10_000
    assert model.check_offline() == [] and set(states(model).values()) == {WAITING}


def test_ending_a_run_early_leaves_no_site_busy(qtbot, clock) -> None:
    model = FederationModel(clock=clock)
    model.begin(HOST)
    model.apply(started())
    model.apply(SiteProgress(round=1, site="site-1", phase="train", step=1, total=4))
    model.end()  # stopped by the operator
    assert states(model)["site-1"] == WAITING and model.site("site-1").detail == "run stopped"
    model.begin(JOIN, {"hospital-a": 40})
    model.apply(SiteProgress(round=1, site="hospital-a", phase="train", step=1, total=4))
    model.end()  # left the federation
    assert states(model) == {"hospital-a": OFFLINE}
