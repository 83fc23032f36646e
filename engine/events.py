"""Typed run events and their subscription.

The engine reports progress only through these events (never ``print``). The CLI prints
them, the GUI turns them into Qt signals, and every run appends them to ``events.jsonl``
so that any finished run can be replayed into the plots. ``type`` is the JSON tag.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    type: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


@dataclass(frozen=True)
class RunStarted(Event):
    type: ClassVar[str] = "run_started"
    algorithm: str
    sites: list[str]
    rounds: int
    config: dict[str, Any]
    start_round: int = 1
    #: site name -> number of training cases (what the sites told the coordinator)
    site_cases: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundStarted(Event):
    type: ClassVar[str] = "round_started"
    round: int
    rounds: int


@dataclass(frozen=True)
class SiteProgress(Event):
    """A site finished one step of ``phase`` ("train", "learn_beta", "evaluate": a step
    of evaluation is one case)."""

    type: ClassVar[str] = "site_progress"
    round: int
    site: str
    phase: str
    step: int
    total: int
    loss: float | None = None
    rounds: int = 0  # the run's number of rounds (a site knows it from the run's config); 0: unknown


@dataclass(frozen=True)
class BetaStep(Event):
    """Auto-FedAvg: the server averaged the sites' beta after step ``step`` of a phase."""

    type: ClassVar[str] = "beta_step"
    round: int
    step: int
    beta: list[Any]
    seconds: float | None = None  # wall time of the step's exchange (send beta .. last reply)


@dataclass(frozen=True)
class RoundFinished(Event):
    """One round done.

    ``alpha`` has one weight per site (sums to 1; for layer-wise weights, the mean over
    layers); ``beta`` is the Dirichlet/softmax parameter or ``None``; ``metrics`` holds
    ``val_dice`` (per site, the evaluated model), ``mean_val_dice``, ``local_val_dice``
    and ``train_loss`` (per site). Bytes count this round's protocol payloads.
    """

    type: ClassVar[str] = "round_finished"
    round: int
    alpha: list[float]
    beta: list[Any] | None
    metrics: dict[str, Any]
    bytes_up: int
    bytes_down: int
    seconds: float
    missing_sites: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunWarning(Event):
    type: ClassVar[str] = "warning"
    message: str
    site: str | None = None


@dataclass(frozen=True)
class RunFinished(Event):
    type: ClassVar[str] = "run_finished"
    out_dir: str
    summary: dict[str, Any]


@dataclass(frozen=True)
class RunFailed(Event):
    type: ClassVar[str] = "run_failed"
    error: str


Subscriber = Callable[[Event], None]


class EventBus:
    """Synchronous publish/subscribe; subscribers run in the emitting thread.

    A failing subscriber is logged and does not stop the run (a broken plot must not
    kill a 300-round training).
    """

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:  # noqa: BLE001 - see class docstring
                log.exception("event subscriber %r failed on %s", callback, event.type)


class JsonlEventLog:
    """Appends every event as one JSON line, flushed, so a crash loses at most one line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        self._fh.write(json.dumps(finite(event.to_dict()), allow_nan=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def finite(value: Any) -> Any:
    """Replace NaN/Inf floats by ``None`` so that the JSON stays standard."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


def truncate_lines(path: Path, keep: int) -> None:
    """Keep the first ``keep`` lines of ``path`` (used when resuming a run).

    The file is cut in place, so a log already open for appending keeps writing to it.
    """
    if not path.exists():
        return
    with path.open("r+b") as fh:
        for _ in range(keep):
            if not fh.readline():
                break
        fh.truncate(fh.tell())


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Read ``events.jsonl``; a torn last line (crash while writing) is skipped."""
    events = []
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s: skipping a torn line", path)
    return events


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls for cls in (RunStarted, RoundStarted, SiteProgress, BetaStep, RoundFinished, RunWarning, RunFinished, RunFailed)
}


def event_from_dict(values: dict[str, Any]) -> Event | None:
    """The event a line of ``events.jsonl`` holds (None for an unknown type: newer writer)."""
    cls = EVENT_TYPES.get(values.get("type", ""))
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


class EventTail:
    """Follows a growing ``events.jsonl`` (another process writes it): :meth:`poll`
    returns the events of the complete lines added since the last call."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._offset = 0

    def poll(self) -> list[Event]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1  # only whole lines: the writer may be mid-line
        self._offset += end
        events = []
        for line in chunk[:end].splitlines():
            if line.strip():
                event = event_from_dict(json.loads(line))
                if event is not None:
                    events.append(event)
        return events


@contextlib.contextmanager
def recorded_run(bus: EventBus, path: str | Path) -> Iterator[EventBus]:
    """Append every event of ``bus`` to ``path`` while the block runs; an exception
    leaves a ``run_failed`` event (its first line) before it propagates."""
    writer = JsonlEventLog(path)
    unsubscribe = bus.subscribe(writer)
    try:
        yield bus
    except Exception as exc:
        bus.emit(RunFailed(error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
        raise
    finally:
        unsubscribe()
        writer.close()
