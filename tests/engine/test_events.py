"""Event bus, the JSONL event log and its reader."""

from __future__ import annotations

import json
import logging


from engine.events import (
    BetaStep,
    EventBus,
    JsonlEventLog,
    RoundFinished,
    RoundStarted,
    RunWarning,
    count_lines,
    finite,
    read_events,
    truncate_lines,
)


def test_bus_delivers_in_order_to_every_subscriber():
    bus = EventBus()
    a, b = [], []
    bus.subscribe(a.append)
    bus.subscribe(lambda e: b.append(e.round))
    events = [RoundStarted(round=r, rounds=3) for r in (1, 2, 3)]
    for e in events:
        bus.emit(e)
    assert a == events
    assert b == [1, 2, 3]


def test_subscribers_are_called_in_subscription_order():
    bus = EventBus()
    calls = []
    bus.subscribe(lambda e: calls.append("first"))
    bus.subscribe(lambda e: calls.append("second"))
    bus.emit(RoundStarted(round=1, rounds=1))
    assert calls == ["first", "second"]


def test_unsubscribe_stops_delivery():
    bus = EventBus()
    got = []
    unsubscribe = bus.subscribe(got.append)
    bus.emit(RoundStarted(round=1, rounds=2))
    unsubscribe()
    bus.emit(RoundStarted(round=2, rounds=2))
    assert [e.round for e in got] == [1]
    unsubscribe()  # a second call is harmless


def test_unsubscribe_during_emit_does_not_skip_others():
    bus = EventBus()
    got = []
    holder = {}

    def once(event):
        holder["unsub"]()

    holder["unsub"] = bus.subscribe(once)
    bus.subscribe(got.append)
    bus.emit(RoundStarted(round=1, rounds=1))
    bus.emit(RoundStarted(round=2, rounds=2))
    assert [e.round for e in got] == [1, 2]


def test_failing_subscriber_does_not_stop_others(caplog):
    bus = EventBus()
    got = []

    def broken(event):
        raise RuntimeError("plot crashed")

    bus.subscribe(broken)
    bus.subscribe(got.append)
    with caplog.at_level(logging.ERROR, logger="engine.events"):
        bus.emit(RoundStarted(round=1, rounds=1))
        bus.emit(RoundStarted(round=2, rounds=1))
    assert [e.round for e in got] == [1, 2]
    assert "round_started" in caplog.text


def test_event_to_dict_has_type_tag():
    e = RunWarning(message="site b did not reply", site="b")
    assert e.to_dict() == {"type": "warning", "message": "site b did not reply", "site": "b"}
    assert BetaStep(round=2, step=3, beta=[6.0, 5.5]).to_dict()["type"] == "beta_step"


def test_jsonl_log_writes_one_object_per_line(tmp_path):
    path = tmp_path / "logs" / "events.jsonl"
    log = JsonlEventLog(path)
    log(RoundStarted(round=1, rounds=2))
    log(BetaStep(round=1, step=1, beta=[6.1, 5.9]))
    log(RunWarning(message="x"))
    assert count_lines(log.path) == 3
    log.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    objects = [json.loads(line) for line in lines]
    assert [o["type"] for o in objects] == ["round_started", "beta_step", "warning"]
    assert objects[0] == {"type": "round_started", "round": 1, "rounds": 2}
    assert objects[1]["beta"] == [6.1, 5.9]


def test_jsonl_log_turns_nan_into_null(tmp_path):
    path = tmp_path / "events.jsonl"
    log = JsonlEventLog(path)
    log(
        RoundFinished(
            round=1,
            alpha=[0.5, float("nan")],
            beta=None,
            metrics={"mean_val_dice": float("nan"), "val_dice": {"a": float("inf"), "b": 0.25}, "t": (1.0, float("-inf"))},
            bytes_up=10,
            bytes_down=20,
            seconds=0.5,
        )
    )
    log.close()
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    obj = json.loads(text)  # standard JSON
    assert obj["alpha"] == [0.5, None]
    assert obj["metrics"]["mean_val_dice"] is None
    assert obj["metrics"]["val_dice"] == {"a": None, "b": 0.25}
    assert obj["metrics"]["t"] == [1.0, None]
    assert obj["missing_sites"] == []


def test_jsonl_log_appends_to_an_existing_file(tmp_path):
    path = tmp_path / "events.jsonl"
    first = JsonlEventLog(path)
    first(RoundStarted(round=1, rounds=2))
    first.close()
    second = JsonlEventLog(path)
    second(RoundStarted(round=2, rounds=2))
    second.close()
    assert [e["round"] for e in read_events(path)] == [1, 2]


def test_log_as_bus_subscriber(tmp_path):
    bus = EventBus()
    log = JsonlEventLog(tmp_path / "e.jsonl")
    bus.subscribe(log)
    bus.emit(RoundStarted(round=1, rounds=1))
    log.close()
    assert read_events(tmp_path / "e.jsonl") == [{"type": "round_started", "round": 1, "rounds": 1}]


def test_finite():
    assert finite(1.5) == 1.5
    assert finite(float("nan")) is None
    assert finite({"a": [float("inf"), 2], "b": "x"}) == {"a": [None, 2], "b": "x"}
    assert finite(3) == 3 and finite(None) is None


def test_read_events_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "events.jsonl"
    good = [{"type": "round_started", "round": 1, "rounds": 3}, {"type": "round_started", "round": 2, "rounds": 3}]
    path.write_text("".join(json.dumps(o) + "\n" for o in good) + '{"type": "round_fini')
    assert read_events(path) == good


def test_read_events_skips_blank_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"type": "a"}\n\n   \n{"type": "b"}\n')
    assert [e["type"] for e in read_events(path)] == ["a", "b"]


def test_count_lines(tmp_path):
    path = tmp_path / "x.jsonl"
    assert count_lines(path) == 0
    path.write_text("a\nb\nc")
    assert count_lines(path) == 3


def test_truncate_lines_keeps_the_first_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("l1\nl2\nl3\nl4 torn")
    truncate_lines(path, 2)
    assert path.read_text() == "l1\nl2\n"
    truncate_lines(path, 10)  # more than there are: unchanged
    assert path.read_text() == "l1\nl2\n"
    truncate_lines(path, 0)
    assert path.read_text() == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl"]  # no temp file left
    truncate_lines(tmp_path / "missing.jsonl", 3)  # a missing file is ignored
    assert not (tmp_path / "missing.jsonl").exists()


def test_resume_pattern_truncate_then_append(tmp_path):
    # what a resumed run does: keep the lines of the checkpointed rounds, then append
    path = tmp_path / "events.jsonl"
    log = JsonlEventLog(path)
    for r in (1, 2, 3):
        log(RoundStarted(round=r, rounds=5))
    log.close()
    with path.open("a") as fh:
        fh.write('{"type": "round_sta')  # crash mid-write
    truncate_lines(path, 2)
    log = JsonlEventLog(path)
    log(RoundStarted(round=3, rounds=5))
    log.close()
    assert [e["round"] for e in read_events(path)] == [1, 2, 3]
    assert count_lines(path) == 3
