"""Ditto: FedAvg plus a personal model v_k per site (ALGORITHMS.md 9), on real tiny sites."""

from __future__ import annotations

import pytest
import torch

from engine.errors import ConfigError
from engine.fl import STRATEGIES, build_strategy
from engine.fl.base import PERSONAL, SiteLogic
from engine.fl.ditto import KEPT, Ditto, DittoParams, DittoSite
from engine.fl.fedavg import FedAvg
from engine.fl.protocol import EVALUATE, TRAIN, Message, Reply
from engine.fl.site import SiteInfo


def test_defaults_are_the_benchmarks_and_bad_values_are_named():
    assert DittoParams() == DittoParams(lam=0.001, lr_per=1e-4, weight_decay_per=5e-4)
    assert STRATEGIES.get("ditto") is Ditto and Ditto.personalised and issubclass(Ditto, FedAvg)
    strategy = build_strategy("ditto", {"lam": 0.1}, [SiteInfo(0, "a", 1)])
    assert strategy.params.lam == 0.1 and strategy.params.lr_per == 1e-4
    for values, field in (({"lam": -1.0}, "lam"), ({"lr_per": 0.0}, "lr_per"), ({"weight_decay_per": -1e-3}, "weight_decay_per")):
        with pytest.raises(ConfigError, match=f"strategy.params.{field}: must be"):
            build_strategy("ditto", values, [SiteInfo(0, "a", 1)])


def test_the_server_is_fedavg_and_still_rejects_malformed_replies():
    sites = [SiteInfo(0, "a", 1), SiteInfo(1, "b", 3)]
    strategy = Ditto(DittoParams(), sites)
    gen = strategy.round(1, {"w": torch.zeros(2)})
    messages = next(gen)
    assert set(messages) == {0, 1} and all(m.kind == TRAIN for m in messages.values())
    replies = {
        k: Reply({"local": {"w": torch.full((2,), 4.0 * k)}}, {"train_loss": 0.1}, num_examples=s.num_train)
        for k, s in enumerate(sites)
    }
    with pytest.raises(StopIteration) as stop:
        gen.send(replies)
    outcome = stop.value.value
    assert outcome.alpha == pytest.approx([0.25, 0.75])  # n_k / n
    assert torch.allclose(outcome.global_state["w"], torch.full((2,), 3.0))  # 0.25 * 0 + 0.75 * 4
    bad = Reply({"local": {"w": torch.zeros(3)}}, {"train_loss": 0.1}, num_examples=1)
    assert "shape [3]" in strategy.check_reply(messages[0], bad, {"w": torch.zeros(2)})
    assert "no 'local' model" in strategy.check_reply(messages[0], Reply(metrics={"train_loss": 0.1}), {"w": torch.zeros(2)})


def test_a_site_uploads_fedavgs_local_model_and_keeps_v_k(make_site):
    """The global copy is trained exactly as a FedAvg site trains it (same draws); v_k is
    trained first, stored at the site, and never in the reply."""
    ditto = make_site(DittoSite, DittoParams(), index=0)
    fedavg = make_site(SiteLogic, None, index=1)  # same config; replace its data by site 0's
    fedavg.runtime.data = ditto.runtime.data
    fedavg.runtime.index = 0  # same random streams
    initial = ditto.runtime.weights()
    reply = ditto.handle(Message(TRAIN, 1, {"global": initial}))
    plain = fedavg.handle(Message(TRAIN, 1, {"global": initial}))
    assert set(reply.arrays) == {"local"}
    assert all(torch.equal(reply.arrays["local"][k], plain.arrays["local"][k]) for k in initial)
    assert reply.metrics["train_loss"] == plain.metrics["train_loss"]
    assert reply.num_examples == plain.num_examples == 3
    assert "personal_train_loss" in reply.metrics
    v, _, rnd = ditto.runtime.store.load(KEPT)
    assert rnd == 1
    assert any(not torch.equal(v[k], reply.arrays["local"][k]) for k in v), "v_k is a model of its own"
    assert any(not torch.equal(v[k], initial[k]) for k in v), "v_k was trained"


def test_v_k_continues_from_itself_pulled_towards_the_received_model(make_site):
    """Round 2 receives w = v_k^1 + 0.5. With a huge lambda the proximal gradient
    lambda (v - w) dominates, so Adam's first steps move every parameter of v_k by about
    +lr_per each: v_k^2 starts from v_k^1 (not from w) and is pulled towards w."""
    lr = 1e-3
    site = make_site(DittoSite, DittoParams(lam=1e6, lr_per=lr, weight_decay_per=0.0))
    site.handle(Message(TRAIN, 1, {"global": site.runtime.weights()}))
    v1 = site.runtime.store.load(KEPT)[0]
    received = {k: v + 0.5 for k, v in v1.items()}
    site.handle(Message(TRAIN, 2, {"global": received}))
    v2, _, rnd = site.runtime.store.load(KEPT)
    assert rnd == 2
    steps = site.runtime.config.train.local_steps
    for name, _ in site.runtime.network.named_parameters():
        moved = v2[name] - v1[name]
        assert torch.allclose(moved, torch.full_like(moved, steps * lr), rtol=0.05), name


def test_without_lambda_v_k_is_not_pulled(make_site):
    site = make_site(DittoSite, DittoParams(lam=0.0, lr_per=1e-3, weight_decay_per=0.0))
    site.handle(Message(TRAIN, 1, {"global": site.runtime.weights()}))
    v1 = site.runtime.store.load(KEPT)[0]
    site.handle(Message(TRAIN, 2, {"global": {k: v + 0.5 for k, v in v1.items()}}))
    v2 = site.runtime.store.load(KEPT)[0]
    moved = torch.cat([(v2[n] - v1[n]).flatten() for n, _ in site.runtime.network.named_parameters()])
    assert (moved < 0).any() and (moved > 0).any(), "only the segmentation loss moves v_k: both directions"


def test_validation_uses_v_k_not_the_received_model(make_site):
    site = make_site(DittoSite, DittoParams(lr_per=1e-2))
    initial = site.runtime.weights()
    site.handle(Message(TRAIN, 1, {"global": initial}))
    v = site.runtime.store.load(KEPT)[0]
    reply = site.handle(Message(EVALUATE, 1, {"model": initial}, {"split": "val", "model": PERSONAL}))
    expected = [c.dice for c in site.runtime.evaluate("val", v)]
    assert [c["dice"] for c in reply.metrics["cases"]] == pytest.approx(expected)
    assert site.personal_weights(initial, 0) is initial  # before round 1: v_k starts as the received model
