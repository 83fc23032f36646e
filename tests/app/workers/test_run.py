"""RunWorker: an engine run's events as Qt signals, stopped by a cancel."""

from __future__ import annotations

import threading

from app.federation import jobs
from app.workers import RunWorker
from engine.events import read_events


def test_cancelling_a_simulation_stops_it_and_records_why(tmp_path, tiny, run_to_cancel) -> None:
    out = tmp_path / "run"
    worker = RunWorker(jobs.simulation_demo(tiny(rounds=50), out))
    types: list[str] = []
    threads: set[int] = set()

    def on_event(event) -> None:
        types.append(event.type)
        threads.add(threading.get_ident())
        if event.type == "site_progress":
            worker.cancel()

    worker.event.connect(on_event)
    assert run_to_cancel(worker, worker.finished) == []
    assert "site_progress" in types and "round_finished" not in types
    assert threads == {threading.get_ident()}  # events reach slots in the GUI thread
    last = read_events(out / "events.jsonl")[-1]
    assert last["type"] == "run_failed" and "cancelled" in last["error"]
    assert not (out / "results.json").exists()
