"""Running an engine job (simulation, Flower demo, hosted run, site) off the GUI thread."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, Signal

from app.workers.base import CancellableBus, CancelToken, Worker
from engine.events import Event


@dataclass
class JobContext:
    """What a :class:`RunWorker` job gets.

    Attributes
    ----------
    bus:
        Give it to the engine: every event reaches ``RunWorker.event``; ``emit`` raises
        :class:`Cancelled` once the worker is cancelled.
    token:
        The stop flag (pass it where the engine takes a ``threading.Event``).
    publish:
        Deliver an event to the GUI without the cancel check (a site leaving still
        reports its last progress).
    say, note_sites, note_folder:
        A line for the log; site name -> number of cases; the run's output folder.
    """

    bus: CancellableBus
    token: CancelToken
    publish: Callable[[Event], None]
    say: Callable[[str], None]
    note_sites: Callable[[dict[str, int]], None]
    note_folder: Callable[[str], None]


Job = Callable[[JobContext], "dict[str, Any] | None"]


class RunWorker(Worker):
    """Runs an engine job (simulation, Flower demo, hosted run, site) and re-emits its
    events as Qt signals. Jobs are built in :mod:`app.federation.jobs`."""

    event = Signal(object)  # engine.events.Event
    finished = Signal(dict)  # results.json of the run, or what the job returned
    sites = Signal(dict)  # site name -> cases, when the job knows them
    run_folder = Signal(str)

    def __init__(self, job: Job, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.job = job

    def work(self) -> None:
        bus = CancellableBus(self.token)
        bus.subscribe(self.event.emit)
        context = JobContext(
            bus=bus,
            token=self.token,
            publish=self.event.emit,
            say=lambda text: self.progress.emit(0, 0, text),
            note_sites=self.sites.emit,
            note_folder=lambda folder: self.run_folder.emit(str(folder)),
        )
        result = self.job(context)
        self.finished.emit(dict(result or {}))
