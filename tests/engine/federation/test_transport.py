"""FlowerTransport's rules for sites that fail (and the handshake that follows them), against a scripted in-memory Grid.

The Grid stands in for the SuperLink only: it stores pushed Flower messages, and each
site (node) answers them as its script says: at once, never, with an error, or after
being offline for a while (the SuperLink then answers for it with NODE_UNAVAILABLE, and
lists the node again once it is back). The real SuperLink is exercised by the loopback
tests in tests/integration/flower/.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest
import torch
from flwr.app import Error, Message as FlowerMessage
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.supercore.task_identity import TaskIdentity

from engine.errors import FederationError
from engine.federation.records import content_to_message, reply_to_content
from engine.federation.server_app import ask_site_info
from engine.federation.transport import FlowerTransport
from engine.fl.protocol import Message, Reply


@pytest.fixture(autouse=True)
def serverapp_identity():
    """Flower stamps messages with the identity of the ServerApp process that makes them."""
    saved = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id)
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 7, 1, SUPERLINK_NODE_ID
    yield
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved


@dataclass
class Site:
    behaviour: str = "answer"  # answer | silent | error | offline
    back_at: float = float("inf")  # offline: when the node is online again
    received: list[int] = field(default_factory=list)  # rounds of the messages it answered

    def online(self) -> bool:
        return self.behaviour != "offline" or time.monotonic() >= self.back_at


class ScriptedGrid:
    def __init__(self, sites: dict[int, Site]) -> None:
        self.sites = sites
        self.inbox: dict[str, FlowerMessage] = {}
        self.pushed_at: dict[str, float] = {}
        self.pushed = 0

    def push_messages(self, messages):
        ids = []
        for message in messages:
            self.pushed += 1
            message_id = f"m{self.pushed}"
            message.metadata.__dict__["_message_id"] = message_id
            self.inbox[message_id] = message
            self.pushed_at[message_id] = time.monotonic()
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids):
        out = []
        for message_id in message_ids:
            message = self.inbox[message_id]
            site = self.sites[message.metadata.dst_node_id]
            if site.behaviour == "silent":
                continue
            if site.behaviour == "error":
                out.append(FlowerMessage(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, "site-x: data folder gone"), reply_to=message))
            elif not site.online():  # the SuperLink answers for an offline node
                out.append(FlowerMessage(Error(ErrorCode.NODE_UNAVAILABLE, "Error: Node Unavailable"), reply_to=message))
            elif site.behaviour == "offline" and self.pushed_at[message_id] < site.back_at:
                continue  # went to the node's previous life: lost
            else:
                incoming = content_to_message(message.metadata.message_type, message.content)
                site.received.append(incoming.round)
                reply = Reply({"model": {"w": torch.ones(2)}}, {"loss": 0.5}, num_examples=3)
                out.append(FlowerMessage(reply_to_content(reply), reply_to=message))
        return out

    def get_node_ids(self):
        return [node for node, site in self.sites.items() if site.online()]


def make(sites: dict[int, Site], *, timeout_s: float = 0.3, min_sites: int = 2):
    grid = ScriptedGrid(sites)
    warnings: list[str] = []
    transport = FlowerTransport(
        grid,  # type: ignore[arg-type]
        {k: k for k in sites},
        {k: f"site-{k}" for k in sites},
        timeout_s=timeout_s,
        min_sites=min_sites,
        warn=lambda text, site: warnings.append(text),
    )
    return transport, grid, warnings


def messages(sites, rnd: int = 1) -> dict[int, Message]:
    return {k: Message("train", rnd, {"global": {"w": torch.zeros(2)}}) for k in sites}


def test_every_site_answers() -> None:
    transport, grid, warnings = make({0: Site(), 1: Site(), 2: Site()})
    replies = transport.exchange(messages(range(3)))
    assert sorted(replies) == [0, 1, 2] and warnings == []
    assert replies[0].num_examples == 3 and torch.equal(replies[0].arrays["model"]["w"], torch.ones(2))
    assert transport.stats["train"]["exchanges"] == 1 and transport.stats["train"]["bytes_up"] > 0
    assert [(e["kind"], e["round"], e["replies"]) for e in transport.exchanges] == [("train", 1, 3)]
    message = next(iter(grid.inbox.values()))
    assert message.metadata.ttl == pytest.approx(0.3 + 5.0)  # never delivered after the wait is over


def test_a_silent_site_is_left_out_after_the_timeout_when_enough_answered() -> None:
    transport, _, warnings = make({0: Site(), 1: Site(), 2: Site("silent")})
    started = time.monotonic()
    replies = transport.exchange(messages(range(3)))
    assert sorted(replies) == [0, 1]
    assert time.monotonic() - started >= 0.3
    assert any("no 'train' reply from site-2" in w and "going on with 2" in w for w in warnings), warnings


def test_with_too_few_replies_the_transport_sends_again_and_waits() -> None:
    sites = {0: Site(), 1: Site("silent"), 2: Site("silent")}
    transport, grid, warnings = make(sites, timeout_s=0.2)
    # site 1 comes back to life after the first timeout; the re-sent message reaches it
    original = grid.pull_messages

    def pull(ids):
        if any("sending again" in w for w in warnings):
            sites[1].behaviour = "answer"
        return original(ids)

    grid.pull_messages = pull  # type: ignore[method-assign]
    replies = transport.exchange(messages(range(3)))
    assert sorted(replies) == [0, 1]
    assert any("waiting for site-1, site-2" in w and "1 of the 2 sites needed" in w for w in warnings), warnings
    assert grid.pushed >= 5  # three, then the two missing ones again


def test_an_offline_site_gets_the_message_again_when_it_is_back() -> None:
    sites = {0: Site(), 1: Site(), 2: Site("offline", back_at=time.monotonic() + 0.5)}
    transport, grid, warnings = make(sites, timeout_s=5.0)
    replies = transport.exchange(messages(range(3), rnd=4))
    assert sorted(replies) == [0, 1, 2]  # answered within the timeout, after coming back
    assert sites[2].received == [4]
    assert any("site-2 is offline" in w for w in warnings), warnings
    assert grid.pushed == 4


def test_error_replies_leaving_too_few_sites_fail_the_exchange() -> None:
    transport, _, warnings = make({0: Site(), 1: Site("error"), 2: Site("error")}, min_sites=2)
    with pytest.raises(FederationError, match=r"round 1: only 1 site\(s\) could answer 'train', 2 needed.*site-1: site-x: data folder gone"):
        transport.exchange(messages(range(3)))
    assert sum("answered 'train' with an error" in w for w in warnings) == 2


def test_one_error_reply_among_enough_replies_is_left_out() -> None:
    transport, _, warnings = make({0: Site(), 1: Site(), 2: Site("error")})
    assert sorted(transport.exchange(messages(range(3)))) == [0, 1]
    assert any("site-2 answered 'train' with an error" in w for w in warnings)


def test_the_handshake_waits_for_a_listed_node_that_is_not_back_yet() -> None:
    """After a SuperLink restart it lists nodes whose SuperNode has not reconnected."""
    sites = {40: Site(), 41: Site("offline", back_at=time.monotonic() + 0.4)}
    warnings: list[str] = []
    infos = ask_site_info(ScriptedGrid(sites), [40, 41], timeout_s=5.0, warn=lambda text, site: warnings.append(text))
    assert infos == {40: {"loss": 0.5}, 41: {"loss": 0.5}}
    assert sites[41].received == [0]
    assert any("on node 41 is offline" in w for w in warnings), warnings


def test_the_handshake_stops_on_a_site_that_answers_with_an_error() -> None:
    sites = {40: Site(), 41: Site("error")}
    with pytest.raises(FederationError, match=r"only 1 site\(s\) could answer 'query.site_info', 2 needed.*on node 41: site-x: data folder gone"):
        ask_site_info(ScriptedGrid(sites), [40, 41], timeout_s=5.0, warn=lambda text, site: None)
