"""A reply with NaN/Inf, a missing tensor or a wrong shape is rejected with its reason,
and the round goes on with the other sites (weights renormalised over them)."""

from __future__ import annotations

import pytest
import torch

from engine.events import EventBus, RoundFinished, RunWarning
from engine.fl.auto_fedavg import STEP, AutoFedAvg, AutoFedAvgParams
from engine.fl.base import Strategy
from engine.fl.coordinator import Coordinator
from engine.fl.fedavg import FedAvg
from engine.fl.protocol import TRAIN, Message, Reply
from engine.fl.site import SiteInfo

MODEL = {"conv.weight": torch.ones(2, 1, 3), "conv.bias": torch.zeros(2)}


def _train(local):
    return Reply(arrays={"local": local}, metrics={"train_loss": 0.5}, num_examples=4)


@pytest.mark.parametrize(
    "local, reason",
    [
        ({"conv.weight": torch.full((2, 1, 3), float("nan")), "conv.bias": torch.zeros(2)}, "local/conv.weight holds NaN or Inf"),
        ({"conv.weight": torch.ones(2, 1, 3), "conv.bias": torch.tensor([0.0, float("inf")])}, "local/conv.bias holds NaN or Inf"),
        ({"conv.weight": torch.ones(2, 1, 3)}, "'local' lacks tensor conv.bias"),
        ({"conv.weight": torch.ones(2, 1, 4), "conv.bias": torch.zeros(2)}, "conv.weight has shape [2, 1, 4], expected [2, 1, 3]"),
        ({**MODEL, "extra": torch.zeros(1)}, "unexpected tensor extra"),
    ],
)
def test_bad_train_replies_are_named(local, reason):
    strategy = Strategy(None, [SiteInfo(0, "a", 4)])
    problem = strategy.check_reply(Message(TRAIN, 1, {"global": MODEL}), _train(local), MODEL)
    assert problem is not None and reason in problem
    assert strategy.check_reply(Message(TRAIN, 1, {"global": MODEL}), _train(dict(MODEL)), MODEL) is None


def test_beta_step_reply_must_match_beta():
    strategy = AutoFedAvg(AutoFedAvgParams(), [SiteInfo(i, str(i), 4) for i in range(3)])
    message = Message(STEP, 1, {"beta": {"beta": torch.full((3,), 6.0)}})
    assert strategy.check_reply(message, Reply({"beta": {"grad": torch.zeros(3)}}), MODEL) is None
    assert "shape [2]" in strategy.check_reply(message, Reply({"beta": {"grad": torch.zeros(2)}}), MODEL)
    assert "no beta gradient" in strategy.check_reply(message, Reply(), MODEL)


class _OneBadSite:
    """Answers train messages itself; site 1 returns a NaN model."""

    def exchange(self, messages):
        replies = {}
        for k, m in messages.items():
            if m.kind == TRAIN:
                local = {n: t + k for n, t in m.arrays["global"].items()}
                if k == 1:
                    local["conv.bias"] = torch.full((2,), float("nan"))
                replies[k] = Reply({"local": local}, {"train_loss": 0.1, "local_val_dice": None}, num_examples=2 + 2 * k)
            else:
                replies[k] = Reply(metrics={"dice": 0.5, "cases": []})
        return replies


def test_the_round_goes_on_without_the_rejected_site(tmp_path):
    from engine.config import RunConfig

    sites = [SiteInfo(i, f"s{i}", 2 + 2 * i) for i in range(3)]
    bus = EventBus()
    seen = []
    bus.subscribe(seen.append)
    strategy = FedAvg(None, sites)
    coordinator = Coordinator(RunConfig(rounds=1), strategy, _OneBadSite(), sites, tmp_path, bus, dict(MODEL))
    coordinator._round(1)
    finished = [e for e in seen if isinstance(e, RoundFinished)][0]
    assert finished.missing_sites == ["s1"]
    assert finished.alpha == pytest.approx([2 / 8, 0.0, 6 / 8])  # renormalised over s0 and s2
    expected = {n: (2 * (t + 0) + 6 * (t + 2)) / 8 for n, t in MODEL.items()}
    assert all(torch.allclose(coordinator.state.global_state[n], expected[n]) for n in MODEL)
    warnings = [e.message for e in seen if isinstance(e, RunWarning)]
    assert any("rejected the 'train' reply of site s1: local/conv.bias holds NaN or Inf" in w for w in warnings)
