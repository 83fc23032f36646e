"""``flower-supernode`` with a shorter poll interval (``python -m engine.federation.supernode``).

Flower 1.41's SuperNode pulls the Fleet API for a message, and when none is waiting
sleeps a fixed 3 s before the next pull; it checks for the ClientApp's reply every 0.5 s
(``flwr/supernode/start_client_internal.py``). Auto-FedAvg's beta phase is S short
request/reply exchanges in a row, so those fixed sleeps alone would cost about 3.5 s per
beta step on an idle loopback. This entry point runs Flower's own ``flower_supernode()``
with the same arguments, but with an adaptive pull interval: right after a message it
polls every 20 ms, doubling up to Flower's 3 s while nothing arrives, so an idle site
costs the SuperLink what a stock SuperNode costs. Nothing else is changed; the version
is pinned exactly (pyproject) because this relies on the module's ``time.sleep`` calls.
"""

from __future__ import annotations

import time as _time
from types import SimpleNamespace

FIRST_POLL_S = 0.02
MAX_POLL_S = 3.0  # Flower's own interval
REPLY_POLL_S = 0.01


class AdaptivePoll:
    """Stands in for the ``time`` module inside ``start_client_internal``."""

    def __init__(self) -> None:
        self.idle_polls = 0

    def sleep(self, seconds: float) -> None:
        if seconds >= 1.0:  # "no message was pulled": back off
            delay = min(MAX_POLL_S, FIRST_POLL_S * 2**self.idle_polls)
            self.idle_polls += 1
        else:  # waiting for the ClientApp's reply: a message is being handled
            delay = REPLY_POLL_S
            self.idle_polls = 0
        _time.sleep(delay)


def install() -> AdaptivePoll:
    from flwr.supernode import start_client_internal

    poll = AdaptivePoll()
    start_client_internal.time = SimpleNamespace(sleep=poll.sleep)  # type: ignore[attr-defined]
    return poll


def main() -> None:
    install()
    from flwr.supernode.cli import flower_supernode

    flower_supernode()


if __name__ == "__main__":
    main()
