"""The worker machinery: a job in a thread of its own, one-line errors, cooperative cancel.

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
import threading
from collections.abc import Callable, Iterator
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

from engine.errors import FedSegError, Interrupted
from engine.events import Event, EventBus, RunFailed, RunFinished

log = logging.getLogger(__name__)

#: Workers whose thread still runs: a worker nobody else references must not be
#: garbage-collected under its running QThread (Qt aborts the process then).
_RUNNING: set[Worker] = set()


class Cancelled(Interrupted):
    """Raised inside a job once its worker was cancelled; it never reaches the user (a
    site computing a message answers the coordinator with it, see ``jobs.join``)."""


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
