"""InProcessTransport: copy semantics (as if serialised) and addressed-sites-only replies."""

from __future__ import annotations

import torch

from engine.fl.protocol import Message, Reply
from engine.simulation.transport import InProcessTransport


class RecordingSite:
    """A stand-in SiteLogic: mutates what it receives in place, keeps what it sends."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.received: list[Message] = []
        self.kept = torch.full((3,), float(index))

    def handle(self, message: Message) -> Reply:
        self.received.append(message)
        for tensors in message.arrays.values():
            for tensor in tensors.values():
                tensor.add_(100.0)  # a careless site training in place
        message.config["touched"] = True
        return Reply(arrays={"local": {"w": self.kept}}, metrics={"site": self.index}, num_examples=10 + self.index)


def _message(weights: torch.Tensor, rnd: int = 4) -> Message:
    return Message("train", rnd, arrays={"global": {"w": weights}}, config={"lr": 0.1})


def test_a_site_mutating_a_received_tensor_leaves_the_server_copy_alone() -> None:
    sites = {k: RecordingSite(k) for k in range(3)}
    transport = InProcessTransport(sites)
    server = torch.arange(6, dtype=torch.float32)
    before = server.clone()
    messages = {k: _message(server) for k in sites}
    transport.exchange(messages)
    assert torch.equal(server, before)
    for k, site in sites.items():
        (delivered,) = site.received
        assert delivered.kind == "train" and delivered.round == 4
        assert torch.equal(delivered.arrays["global"]["w"], before + 100.0)  # the site's own copy changed
        assert delivered.arrays["global"]["w"].data_ptr() != server.data_ptr()
        assert messages[k].config == {"lr": 0.1}, "the server's config must not be changed by a site"


def test_every_site_gets_its_own_copy() -> None:
    sites = {k: RecordingSite(k) for k in range(2)}
    server = torch.zeros(4)
    InProcessTransport(sites).exchange({k: _message(server) for k in sites})
    a, b = (sites[k].received[0].arrays["global"]["w"] for k in range(2))
    assert a.data_ptr() != b.data_ptr()
    assert torch.equal(a, torch.full((4,), 100.0)) and torch.equal(b, torch.full((4,), 100.0))  # not +200


def test_replies_are_copies_too() -> None:
    sites = {k: RecordingSite(k) for k in range(2)}
    replies = InProcessTransport(sites).exchange({k: _message(torch.zeros(2)) for k in sites})
    for k, reply in replies.items():
        assert torch.equal(reply.arrays["local"]["w"], torch.full((3,), float(k)))
        sites[k].kept.mul_(0).add_(-7)  # the site later changes its model in place
        assert torch.equal(reply.arrays["local"]["w"], torch.full((3,), float(k)))
        assert reply.metrics == {"site": k}
        assert reply.num_examples == 10 + k


def test_only_addressed_sites_are_called_and_answer() -> None:
    sites = {k: RecordingSite(k) for k in range(4)}
    replies = InProcessTransport(sites).exchange({1: _message(torch.zeros(2)), 3: _message(torch.ones(2))})
    assert sorted(replies) == [1, 3]
    assert [len(sites[k].received) for k in range(4)] == [0, 1, 0, 1]
    assert torch.equal(sites[3].received[0].arrays["global"]["w"], torch.full((2,), 101.0))


def test_an_empty_exchange_calls_nobody() -> None:
    sites = {k: RecordingSite(k) for k in range(2)}
    assert InProcessTransport(sites).exchange({}) == {}
    assert all(not s.received for s in sites.values())
