"""Background workers: everything slow runs off the GUI thread.

A worker is a :class:`QObject` that lives in the GUI thread; its job runs in a
:class:`QThread` of its own. The job emits the worker's signals from that thread, and Qt
queues them to the receivers, which live in the GUI thread, so widgets are only ever
touched there. Every worker ends with exactly one of its result signal, ``failed(str)``
or ``cancelled()``, then ``ended()``.

Cancelling is cooperative, because neither the engine nor MONAI can be interrupted from
outside a thread: :meth:`Worker.cancel` sets a :class:`CancelToken` (a
``threading.Event``, which ``run_site`` and ``ServerSession.follow`` accept as their stop
flag) and the job raises :class:`Cancelled` at its next check point:

* an engine run checks at every event it emits, through :class:`CancellableBus` (the
  engine calls ``bus.emit`` itself between training steps; a *subscriber* cannot stop a
  run, since :class:`~engine.events.EventBus` logs a failing subscriber and goes on);
* network code checks before every forward call (:func:`cancel_at_forward`), so sliding
  windows and evaluations stop after the patch batch in hand.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

from engine.errors import FedSegError
from engine.events import Event, EventBus, RunFailed, RunFinished

log = logging.getLogger(__name__)

#: Workers whose thread still runs: a worker nobody else references must not be
#: garbage-collected under its running QThread (Qt aborts the process then).
_RUNNING: set[Worker] = set()


class Cancelled(Exception):
    """Raised inside a job once its worker was cancelled; it never reaches the user."""


class CancelToken(threading.Event):
    """A stop flag for the engine (``run_site``'s ``stop``) that jobs also check."""

    def check(self) -> None:
        """Raise :class:`Cancelled` if the token is set."""
        if self.is_set():
            raise Cancelled("cancelled by the operator")


class CancellableBus(EventBus):
    """An :class:`EventBus` whose ``emit`` raises :class:`Cancelled` once ``token`` is set.

    ``run_failed``/``run_finished`` still pass, so that ``recorded_run`` can close the
    run's ``events.jsonl`` with the reason when the cancel unwinds through it.
    """

    def __init__(self, token: CancelToken) -> None:
        super().__init__()
        self.token = token

    def emit(self, event: Event) -> None:
        if not isinstance(event, (RunFailed, RunFinished)):
            self.token.check()
        super().emit(event)


@contextlib.contextmanager
def cancel_at_forward(token: CancelToken, module: Any = None) -> Iterator[None]:
    """Check ``token`` before every forward call of ``module``.

    Without ``module``, every torch module called *by this thread* is checked (a global
    hook: the engine builds its networks inside the run, out of our reach); other threads,
    such as a segmentation running beside a training, are left alone.
    """
    import torch

    thread = threading.get_ident()

    def hook(_module: Any, _args: Any) -> None:
        if threading.get_ident() == thread:
            token.check()

    if module is not None:
        handle = module.register_forward_pre_hook(hook)
    else:
        handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def error_line(exc: BaseException) -> str:
    """The one line a user sees: a FedSegError's message, else its type and message."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, FedSegError):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class _JobThread(QThread):
    def __init__(self, target: Callable[[], None]) -> None:
        super().__init__()
        self._target = target

    def run(self) -> None:
        self._target()


class Worker(QObject):
    """Runs :meth:`work` once in a thread of its own; subclasses add a result signal."""

    progress = Signal(int, int, str)  # done, total (0: unknown), what is going on
    failed = Signal(str)  # one line for the user; a bug's traceback goes to the log
    cancelled = Signal()
    ended = Signal()  # after the result, failed or cancelled signal

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.token = CancelToken()
        self._thread: _JobThread | None = None

    def start(self) -> None:
        """Start the job (once)."""
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} runs once; make a new one")
        self._thread = _JobThread(self._execute)
        self._thread.finished.connect(lambda: _RUNNING.discard(self))
        _RUNNING.add(self)
        self._thread.start()

    def cancel(self) -> None:
        """Ask the job to stop at its next check point (within about a second)."""
        self.token.set()

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.isRunning()

    def wait(self, msecs: int = -1) -> bool:
        """Block until the thread ends (for shutdown); False on timeout."""
        if self._thread is None:
            return True
        return self._thread.wait(msecs) if msecs >= 0 else self._thread.wait()

    def work(self) -> None:
        """The job; runs in the worker thread and emits the result signal itself."""
        raise NotImplementedError

    def _execute(self) -> None:
        try:
            self.token.check()
            self.work()
        except Exception as exc:
            if self.token.is_set():  # whatever the cancel unwound through
                log.info("%s cancelled (%s)", type(self).__name__, error_line(exc))
                self.cancelled.emit()
            else:
                if not isinstance(exc, FedSegError):
                    log.error("%s failed", type(self).__name__, exc_info=exc)
                self.failed.emit(error_line(exc))
        finally:
            self.ended.emit()


class CallWorker(Worker):
    """Runs ``function(*args, **kwargs)`` (a site check, say) and emits its return value."""

    done = Signal(object)

    def __init__(self, function: Callable[..., Any], *args: Any, parent: QObject | None = None, **kwargs: Any) -> None:
        super().__init__(parent)
        self.function, self.args, self.kwargs = function, args, kwargs

    def work(self) -> None:
        self.done.emit(self.function(*self.args, **self.kwargs))


class LoadWorker(Worker):
    """Loads a CT and, optionally, its label map on the CT's grid, reduced to the lesion."""

    loaded = Signal(object, object)  # Volume, lesion mask (bool array on its grid) or None

    def __init__(
        self,
        path: str | Path,
        label_path: str | Path | None = None,
        *,
        series_uid: str | None = None,
        lesion_label: int = 1,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.path = Path(path)
        self.label_path = Path(label_path) if label_path else None
        self.lesion_label = lesion_label
        self.series_uid = series_uid

    def work(self) -> None:
        from engine.io.readers import load_volume

        steps = 2 if self.label_path else 1
        self.progress.emit(0, steps, f"reading {self.path.name}")
        volume = load_volume(self.path, series_uid=self.series_uid)
        label = None
        if self.label_path is not None:
            self.token.check()
            self.progress.emit(1, steps, f"reading {self.label_path.name}")
            label = load_lesion(self.label_path, volume, self.lesion_label)
        self.token.check()
        self.progress.emit(steps, steps, f"loaded {self.path.name}")
        self.loaded.emit(volume, label)


def load_lesion(path: str | Path, reference: Any, lesion_label: int = 1) -> Any:
    """A label map on ``reference``'s grid, reduced to its lesion (``lesion_mask``), in the
    worker's thread: the reduction reads every voxel, too slow for the GUI thread."""
    from engine.io.readers import load_label

    from app.viewer.measurements import lesion_mask

    return lesion_mask(load_label(path, reference).array, lesion_label)


def window_batches(volume_shape: tuple[int, ...], spacing: tuple[float, ...], card: Any, overlap: float, sw_batch_size: int) -> int:
    """Forward calls a sliding-window inference will make (MONAI's window grid on the
    CT resampled to ``card.target_spacing``); an estimate for the progress bar."""
    windows = 1
    for n, s, t, roi in zip(volume_shape, spacing, card.target_spacing, card.patch_size):
        size = max(int(roi), round(n * s / t))
        step = max(int(roi * (1 - overlap)), 1)
        windows *= math.ceil((size - roi) / step) + 1
    return max(1, math.ceil(windows / sw_batch_size))


class SegmentWorker(Worker):
    """Segments a loaded CT with the model in a model folder (``model.json`` + weights)."""

    segmented = Signal(object)  # engine.model.inference.Prediction

    def __init__(self, volume: Any, model_folder: str | Path, *, device: str = "auto", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.volume = volume
        self.model_folder = Path(model_folder)
        self.device = device

    def work(self) -> None:
        from engine.config import EvalConfig
        from engine.model.checkpoint import load_model
        from engine.model.inference import predict_volume
        from engine.training.device import resolve_device

        self.progress.emit(0, 0, f"loading the model in {self.model_folder}")
        network, card = load_model(self.model_folder)
        device = resolve_device(self.device)
        eval_cfg = EvalConfig()
        total = window_batches(self.volume.shape, self.volume.spacing, card, eval_cfg.sw_overlap, eval_cfg.sw_batch_size)
        done = 0

        def count(_module: Any, _args: Any) -> None:
            nonlocal done
            done += 1
            self.progress.emit(min(done, total), total, "segmenting")

        handle = network.register_forward_pre_hook(count)
        try:
            with cancel_at_forward(self.token, network):
                prediction = predict_volume(network.to(device), card, self.volume, device, eval_cfg, on_progress=lambda text: self.progress.emit(0, total, text))
        finally:
            handle.remove()
        self.progress.emit(total, total, f"lesion volume {prediction.lesion_ml:.2f} mL")
        self.segmented.emit(prediction)


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
