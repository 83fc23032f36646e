"""Delivering a strategy's messages through a Flower ``Grid`` (Message API).

One call of :meth:`FlowerTransport.exchange` is one request/reply exchange with the
addressed sites: push a Flower ``Message`` per site, pull replies until all have
answered. The rules when a site fails:

* no reply within ``timeout_s``: the site is left out if at least ``min_sites`` answered
  (the strategy renormalises its weights over the replies and the coordinator records
  the missing site in the round's event); with fewer, the messages are sent again to
  the missing sites and the wait goes on;
* the SuperLink reports the site's node offline (no heartbeat for 2 x 30 s) or the
  message expired: nothing will come back for that message, so it is sent again as soon
  as the node is online again (a restarted site keeps its identity, its node id);
* an error reply (a refusal, a crash in the site's code) is logged with the site's
  reason and counts as no reply; if errors leave fewer than ``min_sites`` replies the
  exchange fails, since sending the same message again would fail the same way.

Every message lives ``timeout_s`` (+ a margin) on the SuperLink: one the coordinator has
stopped waiting for is never delivered to a site that comes back later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flwr.app import Message as FlowerMessage
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from engine.errors import FederationError
from engine.federation.records import META, content_to_reply, message_to_content
from engine.fl.protocol import Message, Reply

log = logging.getLogger(__name__)

FIRST_POLL_S = 0.005
HOT_S = 2.0  # pull every FIRST_POLL_S this long into an exchange (a beta step takes about 1 s)
MAX_POLL_S = 0.2
NODE_CHECK_S = 1.0  # how often to ask whether an offline site is back
TTL_MARGIN_S = 5.0
#: error codes the SuperLink itself puts in a reply: the message never reached a site
UNDELIVERED = {ErrorCode.NODE_UNAVAILABLE, ErrorCode.MESSAGE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE}


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
        #: one entry per exchange: kind, round, seconds, replies (benchmarks/federation.py)
        self.exchanges: list[dict[str, float | str | int]] = []

    def _count(self, kind: str, key: str, value: float) -> None:
        entry = self.stats.setdefault(kind, {"exchanges": 0, "seconds": 0.0, "bytes_down": 0, "bytes_up": 0})
        entry[key] += value

    def report(self) -> dict[str, object]:
        """What ``transport.json`` holds."""
        return {"kinds": self.stats, "exchanges": self.exchanges}

    def _push(self, messages: dict[int, Message]) -> dict[str, int]:
        """Push one Flower message per site; message id -> site index."""
        flower = []
        for index, message in messages.items():
            content = message_to_content(message)
            content[META]["site"] = index  # which SiteRuntime answers (the site's index in the run)
            flower.append(
                FlowerMessage(
                    content,
                    dst_node_id=self.nodes[index],
                    message_type=message.kind,
                    group_id=str(message.round),
                    ttl=self.timeout_s + TTL_MARGIN_S,
                )
            )
            self._count(message.kind, "bytes_down", record_bytes(content))
        ids = list(self.grid.push_messages(flower))
        return {msg_id: index for msg_id, index in zip(ids, messages) if msg_id}

    def exchange(self, messages: dict[int, Message]) -> dict[int, Reply]:
        if not messages:
            return {}
        first = next(iter(messages.values()))
        started = time.monotonic()
        pending = self._push(messages)  # message id -> site index, awaiting a reply
        replies: dict[int, Reply] = {}
        failed: dict[int, str] = {}  # site index -> the error it answered with
        offline: set[int] = set()  # undelivered: send again when the node is back
        deadline = time.monotonic() + self.timeout_s
        next_node_check = 0.0
        poll = FIRST_POLL_S
        needed = min(self.min_sites, len(messages))

        def unanswered() -> list[int]:
            return sorted(set(messages) - set(replies) - set(failed))

        while unanswered():
            got = list(self.grid.pull_messages(list(pending))) if pending else []
            for reply in got:
                index = pending.pop(reply.metadata.reply_to_message_id, None)
                if index is None or index in replies or index in failed:
                    continue  # a late answer to a message that was sent again
                if reply.has_error() and reply.error.code in UNDELIVERED:
                    if index not in offline:
                        self.warn(f"round {first.round}: site {self.names[index]} is offline ({reply.error.reason}); waiting for it", self.names[index])
                    offline.add(index)
                    continue
                self._take(index, messages[index], reply, replies, failed)
            hot = got or time.monotonic() - started < HOT_S
            poll = FIRST_POLL_S if hot else min(MAX_POLL_S, poll * 2)
            if not unanswered():
                break
            if offline and time.monotonic() >= next_node_check:
                online = set(self.grid.get_node_ids())
                back = {k for k in offline if self.nodes[k] in online}
                if back:
                    log.info("round %s: site(s) %s back online; sending '%s' again", first.round, ", ".join(self.names[k] for k in back), first.kind)
                    pending.update(self._push({k: messages[k] for k in back}))
                    offline -= back
                next_node_check = time.monotonic() + NODE_CHECK_S
            if time.monotonic() > deadline:
                missing = unanswered()
                names = ", ".join(self.names[k] for k in missing)
                if len(replies) >= needed:
                    self.warn(f"round {first.round}: no '{first.kind}' reply from {names} within {self.timeout_s:g} s; going on with {len(replies)} site(s)", None)
                    break
                self.warn(
                    f"round {first.round}: waiting for {names} ('{first.kind}'): {len(replies)} of the {needed} sites needed replied "
                    f"within {self.timeout_s:g} s (federation.reply_timeout_s); sending again",
                    None,
                )
                pending = {m: k for m, k in pending.items() if k not in missing}
                pending.update(self._push({k: messages[k] for k in missing}))
                offline -= set(missing)
                deadline = time.monotonic() + self.timeout_s
            time.sleep(poll)
        if len(replies) < needed:
            reasons = "; ".join(f"{self.names[k]}: {why}" for k, why in sorted(failed.items()))
            raise FederationError(f"round {first.round}: only {len(replies)} site(s) could answer '{first.kind}', {needed} needed ({reasons})")
        seconds = time.monotonic() - started
        self._count(first.kind, "exchanges", 1)
        self._count(first.kind, "seconds", seconds)
        self.exchanges.append({"kind": first.kind, "round": first.round, "seconds": round(seconds, 4), "replies": len(replies)})
        log.debug("%s round %s: %d/%d replies in %.3f s", first.kind, first.round, len(replies), len(messages), seconds)
        return replies

    def _take(self, index: int, message: Message, reply: FlowerMessage, replies: dict[int, Reply], failed: dict[int, str]) -> None:
        name = self.names[index]
        if reply.has_error():
            failed[index] = reply.error.reason
            self.warn(f"round {message.round}: site {name} answered '{message.kind}' with an error: {reply.error.reason}", name)
            return
        self._count(message.kind, "bytes_up", record_bytes(reply.content))
        try:
            replies[index] = content_to_reply(reply.content)
        except (KeyError, ValueError, TypeError) as exc:
            failed[index] = f"unreadable reply ({exc})"
            self.warn(f"round {message.round}: unreadable '{message.kind}' reply of site {name}: {exc}", name)
