"""The worker machinery: one-line errors and the cancellable event bus."""

from __future__ import annotations

import logging

import pytest

from app.workers import CancellableBus, CancelToken, Cancelled, RunWorker
from engine.events import RoundStarted, RunFailed

WAIT_MS = 60_000  # a hang fails the test; nothing here is timed


def test_an_unexpected_error_gives_its_type_and_message_and_a_logged_traceback(qtbot, caplog) -> None:
    def job(ctx):
        ctx.bus.emit(RoundStarted(round=1, rounds=1))
        return {"value": 1 / 0}

    worker = RunWorker(job)
    events: list[object] = []
    worker.event.connect(events.append)
    with caplog.at_level(logging.ERROR, logger="app.workers"):
        with qtbot.waitSignal(worker.failed, timeout=WAIT_MS) as blocker:
            worker.start()
    assert blocker.args == ["ZeroDivisionError: division by zero"]
    assert [type(e).__name__ for e in events] == ["RoundStarted"]
    assert any(record.exc_info and record.exc_info[0] is ZeroDivisionError for record in caplog.records)


def test_the_cancellable_bus_stops_at_the_next_event_but_lets_the_failure_through() -> None:
    token = CancelToken()
    bus = CancellableBus(token)
    got: list[str] = []
    bus.subscribe(lambda event: got.append(event.type))
    bus.emit(RoundStarted(round=1, rounds=2))
    token.set()
    with pytest.raises(Cancelled):
        bus.emit(RoundStarted(round=2, rounds=2))
    bus.emit(RunFailed(error="cancelled by the operator"))
    assert got == ["round_started", "run_failed"]
