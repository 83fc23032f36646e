"""The SuperNode's adaptive pull interval (engine/federation/supernode.py), on a fake clock."""

from __future__ import annotations

import pytest

from engine.federation.supernode import FIRST_POLL_S, HOT_S, MAX_POLL_S, REPLY_POLL_S, AdaptivePoll

FLOWER_IDLE_SLEEP = 3.0  # what Flower asks for when no message was pulled
FLOWER_REPLY_SLEEP = 0.5  # what it asks for while the ClientApp works on a message


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def poll() -> tuple[AdaptivePoll, Clock]:
    clock = Clock()
    return AdaptivePoll(clock=clock, sleep=lambda s: None), clock


def test_an_idle_site_backs_off_to_flowers_interval(poll) -> None:
    adaptive, _ = poll
    delays = [adaptive.delay(FLOWER_IDLE_SLEEP) for _ in range(12)]
    assert delays[0] == 2 * FIRST_POLL_S and delays == sorted(delays)
    assert delays[-1] == MAX_POLL_S


def test_it_polls_fast_for_a_while_after_a_message_then_backs_off(poll) -> None:
    adaptive, clock = poll
    assert adaptive.delay(FLOWER_REPLY_SLEEP) == REPLY_POLL_S  # a message is being handled
    clock.now += HOT_S - 0.1
    assert adaptive.delay(FLOWER_IDLE_SLEEP) == FIRST_POLL_S  # the next beta step is near
    clock.now += 0.2
    later = [adaptive.delay(FLOWER_IDLE_SLEEP) for _ in range(3)]
    assert later == [2 * FIRST_POLL_S, 4 * FIRST_POLL_S, 8 * FIRST_POLL_S]
