"""What the worker tests share: starting a worker and waiting for it to end cancelled."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from PySide6.QtCore import SignalInstance

from app.workers import Worker

WAIT_MS = 60_000  # a hang fails the test; nothing here is timed


@pytest.fixture
def run_to_cancel(qtbot) -> Callable[[Worker, SignalInstance], list[tuple]]:
    """``run_to_cancel(worker, result)``: start ``worker`` (the test's slots cancel it part
    way), wait for ``cancelled`` and for its thread to end, and return what its ``result``
    signal carried meanwhile (a cancelled job must deliver nothing)."""

    def run(worker: Worker, result: SignalInstance) -> list[tuple]:
        results: list[tuple] = []
        result.connect(lambda *args: results.append(args))
        with qtbot.waitSignal(worker.cancelled, timeout=WAIT_MS):
            worker.start()
        assert worker.wait(5000)
        return results

    return run
