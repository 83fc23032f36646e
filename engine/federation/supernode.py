"""``flower-supernode`` with a shorter poll interval (``python -m engine.federation.supernode``).

Flower 1.41's SuperNode pulls the Fleet API for a message, and when none is waiting
sleeps a fixed 3 s before the next pull; it checks for the ClientApp's reply every 0.5 s
(``flwr/supernode/start_client_internal.py``). Auto-FedAvg's beta phase is S short
request/reply exchanges in a row, so those fixed sleeps alone would cost about 3.5 s per
beta step on an idle loopback. This entry point runs Flower's own ``flower_supernode()``
with the same arguments, but with an adaptive pull interval: for 5 s after a message it
polls every 20 ms, then doubles the interval up to Flower's 3 s while nothing arrives,
so an idle site costs the SuperLink what a stock SuperNode costs. Nothing else is changed; the version
is pinned exactly (pyproject) because this relies on the module's ``time.sleep`` calls.

Started by ``fedseg site``, the SuperNode also ends (gracefully: it tells the SuperLink
it leaves) when the site process dies, rather than staying connected with nobody to
answer its messages.
"""

from __future__ import annotations

import os
import signal
import threading
import time as _time
from types import SimpleNamespace

from engine.federation import pulls

FIRST_POLL_S = 0.02
HOT_S = 5.0  # keep polling fast this long after a message: the next one is usually close
MAX_POLL_S = 3.0  # Flower's own interval
REPLY_POLL_S = 0.01
TIED_ENV = "FEDSEG_STOP_WITH_PARENT"  # set by ManagedProcess(tied=True)


class AdaptivePoll:
    """Stands in for the ``time`` module inside ``start_client_internal``.

    Within :data:`HOT_S` of the last message it pulls every 20 ms (a beta phase sends a
    message every fraction of a second, and a site that answered first waits for the
    slowest one before the next step); after that it backs off, doubling up to 3 s.
    """

    def __init__(self, clock=_time.monotonic, sleep=_time.sleep) -> None:
        self.clock = clock
        self._sleep = sleep
        self.last_message = -HOT_S
        self.idle_polls = 0

    def delay(self, requested: float) -> float:
        now = self.clock()
        if requested < 1.0:  # waiting for the ClientApp's reply: a message is being handled
            self.last_message = now
            self.idle_polls = 0
            return REPLY_POLL_S
        if now - self.last_message < HOT_S:  # "no message was pulled", shortly after one
            return FIRST_POLL_S
        self.idle_polls += 1
        return min(MAX_POLL_S, FIRST_POLL_S * 2**self.idle_polls)

    def sleep(self, seconds: float) -> None:
        self._sleep(self.delay(seconds))


def install() -> AdaptivePoll:
    from flwr.supernode import start_client_internal

    poll = AdaptivePoll()
    start_client_internal.time = SimpleNamespace(sleep=poll.sleep)  # type: ignore[attr-defined]
    return poll


def stop_when_parent_dies() -> None:
    """In a child started with ``tied=True``: stop gracefully (SIGTERM to itself, so the
    program's own handlers run) when the parent's end of stdin closes, i.e. when the
    parent process has ended, however it ended (a crash, a kill, a power-cut test)."""
    if os.environ.get(TIED_ENV) != "1":
        return

    def watch() -> None:
        # os.read, not sys.stdin: a daemon thread blocked inside the buffered reader holds
        # its lock, and the interpreter aborts at exit ("could not acquire lock for stdin")
        while os.read(0, 4096):
            pass
        signal.raise_signal(signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


def main() -> None:
    stop_when_parent_dies()  # a site process that dies takes its SuperNode with it
    install()
    pulls.install()
    from flwr.common.logger import update_console_handler
    from flwr.supernode.cli import flower_supernode

    # supernode.log is a file an operator reads after the fact: times, not colour codes
    update_console_handler(timestamps=True, colored=False)

    flower_supernode()


if __name__ == "__main__":
    main()
