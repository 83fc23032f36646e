"""Background workers: everything slow runs off the GUI thread.

- :mod:`~app.workers.base`: :class:`Worker` (a job in a QThread of its own, ending with its
  result, ``failed(str)`` or ``cancelled()``, then ``ended()``), cooperative cancel
  (:class:`CancelToken`, :class:`CancellableBus`, :func:`cancel_at_forward`) and
  :class:`CallWorker` for a plain function;
- :mod:`~app.workers.load`: :class:`LoadWorker`, a CT and its label map;
- :mod:`~app.workers.segment`: :class:`SegmentWorker`, a CT through a model folder;
- :mod:`~app.workers.run`: :class:`RunWorker`, an engine job (simulation, Flower demo,
  hosted run, site), its events re-emitted as Qt signals.
"""

from app.workers.base import (
    CallWorker,
    CancellableBus,
    Cancelled,
    CancelToken,
    Worker,
    cancel_at_forward,
    error_line,
)
from app.workers.load import LoadWorker, load_lesion
from app.workers.run import Job, JobContext, RunWorker
from app.workers.segment import SegmentWorker, window_batches

__all__ = [
    "CallWorker",
    "CancelToken",
    "CancellableBus",
    "Cancelled",
    "Job",
    "JobContext",
    "LoadWorker",
    "RunWorker",
    "SegmentWorker",
    "Worker",
    "cancel_at_forward",
    "error_line",
    "load_lesion",
    "window_batches",
]
