"""Delivering a strategy's messages through a Flower ``Grid`` (Message API).

One call of :meth:`FlowerTransport.exchange` is one request/reply exchange with the
addressed sites: push a Flower ``Message`` per site, pull replies until all have
answered. A site that does not answer within ``timeout_s`` is left out if at least
``min_sites`` answered (the strategy renormalises its weights over the replies and the
coordinator records the missing site in the round's event); with fewer, the messages
are sent again to the missing sites (a restarted site has lost what it had pulled) and
the wait goes on. Error replies (a refusal, a crash at the site) are logged with the
site's reason and count as no reply.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flwr.app import Message as FlowerMessage
from flwr.serverapp import Grid

from engine.federation.records import META, content_to_reply, message_to_content
from engine.fl.protocol import Message, Reply

log = logging.getLogger(__name__)

FIRST_POLL_S = 0.005
MAX_POLL_S = 0.2


def record_bytes(content) -> int:
    """Bytes of a RecordDict's records as Flower serialises them (arrays with their
    dtype/shape headers, config values)."""
    return sum(record.count_bytes() for record in content.values())


class FlowerTransport:
    """A :class:`~engine.fl.protocol.Transport` over a Flower Grid."""

    def __init__(
        self,
        grid: Grid,
        nodes: dict[int, int],
        names: dict[int, str],
        *,
        timeout_s: float,
        min_sites: int,
        warn: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.grid = grid
        self.nodes = nodes  # site index -> Flower node id
        self.names = names
        self.timeout_s = timeout_s
        self.min_sites = min_sites
        self.warn = warn or (lambda text, site: log.warning(text))
        #: per message kind: exchanges, seconds, and serialised record bytes down/up
        self.stats: dict[str, dict[str, float]] = {}

    def _count(self, kind: str, key: str, value: float) -> None:
        entry = self.stats.setdefault(kind, {"exchanges": 0, "seconds": 0.0, "bytes_down": 0, "bytes_up": 0})
        entry[key] += value

    def _push(self, messages: dict[int, Message], kind_round: str) -> dict[str, int]:
        flower = []
        for index, message in messages.items():
            content = message_to_content(message)
            content[META]["site"] = index  # which SiteRuntime answers (the site's index in the run)
            flower.append(FlowerMessage(content, dst_node_id=self.nodes[index], message_type=message.kind, group_id=kind_round))
            self._count(message.kind, "bytes_down", record_bytes(content))
        ids = list(self.grid.push_messages(flower))
        return {msg_id: index for msg_id, index in zip(ids, messages) if msg_id}

    def exchange(self, messages: dict[int, Message]) -> dict[int, Reply]:
        if not messages:
            return {}
        first = next(iter(messages.values()))
        group = f"{first.round}"
        started = time.monotonic()
        waiting = self._push(messages, group)  # message id -> site index
        replies: dict[int, Reply] = {}
        answered: set[int] = set()
        deadline = time.monotonic() + self.timeout_s
        poll = FIRST_POLL_S
        needed = min(self.min_sites, len(messages))
        while set(messages) - answered:
            got = list(self.grid.pull_messages(list(waiting)))
            for reply in got:
                index = waiting.pop(reply.metadata.reply_to_message_id, None)
                if index is None or index in answered:
                    continue
                answered.add(index)
                self._take(index, messages[index], reply, replies)
            if got:
                poll = FIRST_POLL_S
            if not set(messages) - answered:
                break
            if time.monotonic() > deadline:
                missing = sorted(set(messages) - answered)
                names = ", ".join(self.names[k] for k in missing)
                if len(replies) >= needed:
                    self.warn(f"round {first.round}: no '{first.kind}' reply from {names} within {self.timeout_s:g} s; going on with {len(replies)} site(s)", None)
                    break
                self.warn(
                    f"round {first.round}: waiting for {names} ('{first.kind}'): {len(replies)} of the {needed} sites needed replied; sending again",
                    None,
                )
                waiting.update(self._push({k: messages[k] for k in missing}, group))
                deadline = time.monotonic() + self.timeout_s
            time.sleep(poll)
            poll = min(MAX_POLL_S, poll * 2)
        seconds = time.monotonic() - started
        self._count(first.kind, "exchanges", 1)
        self._count(first.kind, "seconds", seconds)
        log.debug("%s round %s: %d/%d replies in %.3f s", first.kind, first.round, len(replies), len(messages), seconds)
        return replies

    def _take(self, index: int, message: Message, reply: FlowerMessage, replies: dict[int, Reply]) -> None:
        name = self.names[index]
        if reply.has_error():
            self.warn(f"round {message.round}: site {name} answered '{message.kind}' with an error: {reply.error.reason}", name)
            return
        self._count(message.kind, "bytes_up", record_bytes(reply.content))
        try:
            replies[index] = content_to_reply(reply.content)
        except (KeyError, ValueError, TypeError) as exc:
            self.warn(f"round {message.round}: unreadable '{message.kind}' reply of site {name}: {exc}", name)
