"""Delivering messages by function call, with copy semantics.

Tensors are cloned on the way in and out so that a site can never alias the server's
state (or another site's), exactly as if the message had been serialised.
"""

from __future__ import annotations

from engine.fl.base import SiteLogic
from engine.fl.protocol import ArrayDict, Message, Reply


def _copy(arrays: dict[str, ArrayDict]) -> dict[str, ArrayDict]:
    return {group: {k: v.detach().clone() for k, v in tensors.items()} for group, tensors in arrays.items()}


class InProcessTransport:
    """Calls each addressed site's :class:`SiteLogic` in turn (sites run sequentially,
    which keeps a CPU run deterministic and its memory bounded)."""

    def __init__(self, sites: dict[int, SiteLogic]) -> None:
        self.sites = sites

    def exchange(self, messages: dict[int, Message]) -> dict[int, Reply]:
        replies: dict[int, Reply] = {}
        for index, message in messages.items():
            delivered = Message(message.kind, message.round, _copy(message.arrays), dict(message.config))
            reply = self.sites[index].handle(delivered)
            replies[index] = Reply(_copy(reply.arrays), dict(reply.metrics), reply.num_examples)
        return replies
