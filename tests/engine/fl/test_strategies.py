"""Strategies driven by hand: no sites, no data, only the message generators.

Each test plays the server's counterpart: it takes a strategy's ``round`` generator,
reads the batch of messages it yields, builds the replies itself (small hand-made state
dicts and ``num_examples``), sends them in, and reads the :class:`RoundOutcome` from
``StopIteration``. Expected values are computed by hand in the comments.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

from engine.errors import ConfigError, FederationError
from engine.fl import STRATEGIES, build_strategy
from engine.fl.auto_fedavg import (
    BETA_FLOOR,
    SETUP,
    STEP,
    AutoFedAvg,
    AutoFedAvgParams,
    AutoFedAvgSite,
    merge_states,
)
from engine.fl.base import RoundOutcome
from engine.fl.fedavg import FedAvg, FedAvgEven
from engine.fl.fedprox import FedProx, FedProxParams, FedProxSite, proximal_term
from engine.fl.learned_weights import extra_communication_ratio
from engine.fl.local_only import LocalOnly
from engine.fl.protocol import TRAIN, Message, Reply, payload_bytes
from engine.fl.site import SiteInfo, SiteStore
from engine.model.checkpoint import load_tensors, save_tensors
from engine.model.networks import build_network
from engine.training.losses import build_loss

# --------------------------------------------------------------------------------------
# helpers



def make_sites(*num_train: int) -> list[SiteInfo]:
    return [SiteInfo(index=i, name=f"site{i}", num_train=n) for i, n in enumerate(num_train)]


def train_reply(state: dict[str, torch.Tensor], n: int, loss: float = 0.5, val: float | None = 0.7) -> Reply:
    return Reply(arrays={"local": state}, metrics={"train_loss": loss, "local_val_dice": val}, num_examples=n)


Responder = Callable[[dict[int, Message]], dict[int, Reply]]


def drive(gen, responder: Responder) -> tuple[RoundOutcome, list[dict[int, Message]], list[dict[int, Reply]]]:
    """Run a round generator to the end; return its outcome and every batch exchanged."""
    sent: list[dict[int, Message]] = []
    answered: list[dict[int, Reply]] = []
    messages = next(gen)
    while True:
        sent.append(messages)
        replies = responder(messages)
        answered.append(replies)
        try:
            messages = gen.send(replies)
        except StopIteration as stop:
            return stop.value, sent, answered


def responder_for(locals_: dict[int, dict], n: dict[int, int], grads: list[dict[int, torch.Tensor]] | None = None) -> Responder:
    """Answers train messages with ``locals_``, setup messages with an ack, and step s with
    ``grads[s - 1]`` (sites absent from a dict do not reply)."""

    def respond(messages: dict[int, Message]) -> dict[int, Reply]:
        kinds = {m.kind for m in messages.values()}
        assert len(kinds) == 1, f"one kind per batch, got {kinds}"
        kind = kinds.pop()
        if kind == TRAIN:
            return {k: train_reply(locals_[k], n[k]) for k in messages if k in locals_}
        if kind == SETUP:
            return {k: Reply(metrics={"cached_models": len(m.arrays)}) for k, m in messages.items()}
        if kind == STEP:
            assert grads is not None, "no beta gradients were planned for this round"
            step = next(iter(messages.values())).config["step"]
            planned = grads[step - 1]
            return {k: Reply(arrays={"beta": {"grad": planned[k]}}, metrics={"loss": 0.1}) for k in messages if k in planned}
        raise AssertionError(f"unexpected message kind {kind}")

    return respond


def f32(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# three sites' local models: a vector "w" and a scalar "b", easy to average by hand
LOCALS3 = {
    0: {"w": f32(0.0, 3.0), "b": f32(3.0)},
    1: {"w": f32(3.0, 6.0), "b": f32(-3.0)},
    2: {"w": f32(6.0, 0.0), "b": f32(9.0)},
}
GLOBAL0 = {"w": f32(1.0, 1.0), "b": f32(0.0)}


# --------------------------------------------------------------------------------------
# FedAvg / FedAvg-even


def test_registry_knows_the_strategies():
    for name in ("fedavg", "fedavg-even", "fedprox", "auto-fedavg", "local-only"):
        assert name in STRATEGIES
    with pytest.raises(ConfigError, match="did you mean 'fedavg'"):
        STRATEGIES.get("fedavgg")


def test_fedavg_weights_by_num_examples():
    sites = make_sites(2, 6)
    strategy = FedAvg(FedAvg.Params(), sites)
    locals_ = {0: {"w": f32(1.0, 2.0)}, 1: {"w": f32(3.0, 4.0)}}
    outcome, sent, _ = drive(strategy.round(1, {"w": f32(0.0, 0.0)}), responder_for(locals_, {0: 2, 1: 6}))
    assert len(sent) == 1
    assert {m.kind for m in sent[0].values()} == {TRAIN}
    assert set(sent[0]) == {0, 1}
    for m in sent[0].values():
        assert m.round == 1
        assert torch.equal(m.arrays["global"]["w"], f32(0.0, 0.0))
    # alpha = (2/8, 6/8); w = 0.25 * (1, 2) + 0.75 * (3, 4) = (2.5, 3.5)
    assert outcome.alpha == pytest.approx([0.25, 0.75])
    assert torch.allclose(outcome.global_state["w"], f32(2.5, 3.5))
    assert strategy.alpha == pytest.approx([0.25, 0.75])
    assert outcome.train_loss == {0: 0.5, 1: 0.5}
    assert outcome.local_val_dice == {0: 0.7, 1: 0.7}
    assert outcome.beta is None


def test_fedavg_uses_replied_num_examples_not_site_info():
    # SiteInfo says (100, 100) but the replies say (1, 3): the replies count
    strategy = FedAvg(FedAvg.Params(), make_sites(100, 100))
    locals_ = {0: {"w": f32(4.0)}, 1: {"w": f32(8.0)}}
    outcome, _, _ = drive(strategy.round(1, {"w": f32(0.0)}), responder_for(locals_, {0: 1, 1: 3}))
    assert outcome.alpha == pytest.approx([0.25, 0.75])
    assert torch.allclose(outcome.global_state["w"], f32(7.0))


def test_fedavg_even_uses_one_over_k():
    strategy = FedAvgEven(FedAvgEven.Params(), make_sites(1, 2, 9))
    outcome, _, _ = drive(strategy.round(1, GLOBAL0), responder_for(LOCALS3, {0: 1, 1: 2, 2: 9}))
    assert outcome.alpha == pytest.approx([1 / 3] * 3)
    # w = ((0+3+6)/3, (3+6+0)/3) = (3, 3); b = (3 - 3 + 9) / 3 = 3
    assert torch.allclose(outcome.global_state["w"], f32(3.0, 3.0))
    assert torch.allclose(outcome.global_state["b"], f32(3.0))


def test_fedavg_missing_site_gets_zero_and_others_renormalise():
    strategy = FedAvg(FedAvg.Params(), make_sites(2, 4, 6))
    locals_ = {0: LOCALS3[0], 2: LOCALS3[2]}  # site 1 does not answer
    outcome, _, _ = drive(strategy.round(3, GLOBAL0), responder_for(locals_, {0: 2, 2: 6}))
    # over the repliers: 2/8 and 6/8
    assert outcome.alpha == pytest.approx([0.25, 0.0, 0.75])
    # w = 0.25*(0,3) + 0.75*(6,0) = (4.5, 0.75); b = 0.25*3 + 0.75*9 = 7.5
    assert torch.allclose(outcome.global_state["w"], f32(4.5, 0.75))
    assert torch.allclose(outcome.global_state["b"], f32(7.5))
    assert set(outcome.train_loss) == {0, 2}


def test_fedavg_even_missing_site():
    strategy = FedAvgEven(FedAvgEven.Params(), make_sites(2, 4, 6))
    outcome, _, _ = drive(strategy.round(1, GLOBAL0), responder_for({1: LOCALS3[1], 2: LOCALS3[2]}, {1: 4, 2: 6}))
    assert outcome.alpha == pytest.approx([0.0, 0.5, 0.5])
    assert torch.allclose(outcome.global_state["w"], f32(4.5, 3.0))


def test_round_without_any_reply_raises():
    for strategy in (
        FedAvg(FedAvg.Params(), make_sites(1, 1)),
        AutoFedAvg(AutoFedAvgParams(), make_sites(1, 1)),
    ):
        gen = strategy.round(1, GLOBAL0)
        next(gen)
        with pytest.raises(FederationError, match="no site"):
            gen.send({})


def test_local_only_sends_the_model_in_round_one_only():
    strategy = LocalOnly(LocalOnly.Params(), make_sites(1, 1))

    def respond(messages):
        return {k: Reply(metrics={"train_loss": 0.25, "local_val_dice": 0.5}, num_examples=1) for k in messages}

    out1, sent1, _ = drive(strategy.round(1, GLOBAL0), respond)
    assert all("global" in m.arrays for m in sent1[0].values())
    out2, sent2, _ = drive(strategy.round(2, GLOBAL0), respond)
    assert all(m.arrays == {} for m in sent2[0].values())
    assert out2.alpha == []
    assert out2.global_state is GLOBAL0


# --------------------------------------------------------------------------------------
# FedProx


def _linear_pair() -> tuple[nn.Linear, dict[str, torch.Tensor]]:
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]]))
        lin.bias.copy_(torch.tensor([0.5, -0.5]))
    ref = {"weight": torch.tensor([[0.0, 2.0, 1.0], [1.0, -1.0, 0.5]]), "bias": torch.tensor([0.0, 0.5])}
    return lin, ref


def test_proximal_term_value_by_hand():
    lin, ref = _linear_pair()
    mu = 0.1
    # differences: weight (1, 0, 2, -1, 0, 0) -> 1 + 4 + 1 = 6; bias (0.5, -1) -> 0.25 + 1 = 1.25
    # (mu / 2) * 7.25 = 0.3625
    value = proximal_term(lin, ref, mu)
    assert value.item() == pytest.approx(0.3625, abs=1e-7)


def test_proximal_term_gradient_is_mu_times_difference():
    lin, ref = _linear_pair()
    mu = 0.1
    proximal_term(lin, ref, mu).backward()
    assert torch.allclose(lin.weight.grad, mu * (lin.weight.detach() - ref["weight"]))
    assert torch.allclose(lin.bias.grad, mu * (lin.bias.detach() - ref["bias"]))
    # concretely, for the first weight row: 0.1 * (1, 0, 2)
    assert torch.allclose(lin.weight.grad[0], torch.tensor([0.1, 0.0, 0.2]))


def test_proximal_term_skips_buffers():
    # BatchNorm running stats are in the state dict, not among the parameters
    net = nn.BatchNorm1d(2)
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    ref["running_mean"] = torch.tensor([100.0, 100.0])
    assert proximal_term(net, ref, 1.0).item() == pytest.approx(0.0)
    ref["weight"] = torch.tensor([0.0, 1.0])  # weight is (1, 1) -> diff (1, 0)
    assert proximal_term(net, ref, 1.0).item() == pytest.approx(0.5)


def test_fedprox_site_extra_loss_uses_a_frozen_copy_of_the_received_model():
    lin, ref = _linear_pair()
    site = FedProxSite(FedProxParams(mu=0.1), runtime=None)
    start = {k: v.clone() for k, v in ref.items()}
    extra = site.extra_loss(Message(TRAIN, 1, arrays={"global": start}), start)
    assert extra is not None
    start["weight"].add_(1000.0)  # the site's own copy must not follow later changes
    assert extra(lin).item() == pytest.approx(0.3625, abs=1e-7)
    assert FedProxSite(FedProxParams(mu=0.0), runtime=None).extra_loss(Message(TRAIN, 1), start) is None


def test_fedprox_params_and_server():
    with pytest.raises(ConfigError, match="mu"):
        FedProxParams(mu=-0.1)
    assert FedProxParams().mu == 0.001
    assert FedProx.params_from({"mu": 0.01}).mu == 0.01
    with pytest.raises(ConfigError, match="did you mean 'mu'"):
        FedProx.params_from({"muu": 0.01})
    # the server is FedAvg: n_k / n
    outcome, _, _ = drive(
        FedProx(FedProxParams(), make_sites(2, 6)).round(1, {"w": f32(0.0)}),
        responder_for({0: {"w": f32(1.0)}, 1: {"w": f32(3.0)}}, {0: 2, 1: 6}),
    )
    assert outcome.alpha == pytest.approx([0.25, 0.75])
    assert torch.allclose(outcome.global_state["w"], f32(2.5))


# --------------------------------------------------------------------------------------
# Auto-FedAvg: message protocol


def auto(k_sites=3, **params) -> AutoFedAvg:
    return AutoFedAvg(AutoFedAvgParams(**params), make_sites(*([5] * k_sites)))


def const_grads(*rows) -> dict[int, torch.Tensor]:
    return {k: torch.tensor(r, dtype=torch.float32) for k, r in enumerate(rows)}


def test_round_before_t0_has_no_learning_phase():
    strategy = auto(t0=2, beta_steps=3)
    outcome, sent, _ = drive(strategy.round(1, GLOBAL0), responder_for(LOCALS3, {0: 1, 1: 2, 2: 9}))
    assert len(sent) == 1
    assert {m.kind for m in sent[0].values()} == {TRAIN}
    # alpha = mode(Dir(6, 6, 6)) = uniform, whatever n_k is (FedAvg-even start)
    assert outcome.alpha == pytest.approx([1 / 3] * 3)
    assert outcome.beta == [6.0, 6.0, 6.0]
    assert torch.allclose(outcome.global_state["w"], f32(3.0, 3.0))
    assert torch.allclose(outcome.global_state["b"], f32(3.0))


def test_learning_round_protocol_setup_then_steps():
    strategy = auto(t0=2, beta_steps=3)
    grads = [const_grads([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])] * 3
    n = {0: 1, 1: 1, 2: 1}
    drive(strategy.round(1, GLOBAL0), responder_for(LOCALS3, n))
    outcome, sent, _ = drive(strategy.round(2, GLOBAL0), responder_for(LOCALS3, n, grads))
    kinds = [next(iter(b.values())).kind for b in sent]
    assert kinds == [TRAIN, SETUP, STEP, STEP, STEP]
    setup = sent[1]
    assert set(setup) == {0, 1, 2}
    for k, message in setup.items():
        assert message.round == 2
        # exactly the K-1 other sites' models, under "site.<j>"
        assert set(message.arrays) == {f"site.{j}" for j in range(3) if j != k}
        for j in range(3):
            if j != k:
                for name, tensor in LOCALS3[j].items():
                    assert torch.equal(message.arrays[f"site.{j}"][name], tensor)
    for s, batch in enumerate(sent[2:], start=1):
        assert set(batch) == {0, 1, 2}
        for message in batch.values():
            assert message.kind == STEP
            assert message.round == 2
            assert message.config["step"] == s
            assert message.config["steps"] == 3
            assert list(message.config["sites"]) == [0, 1, 2]
            assert set(message.arrays) == {"beta"}
            assert torch.allclose(message.arrays["beta"]["beta"], f32(6.0, 6.0, 6.0))
    assert outcome.alpha == pytest.approx([1 / 3] * 3)


def test_beta_local_steps_group_a_phase_into_fewer_messages():
    """S = 5 steps, 2 per message: messages start at steps 1, 3, 5 and the last one, a
    single step, is the paper's message (no local_steps key)."""
    strategy = auto(t0=1, beta_steps=5, beta_local_steps=2)
    grads = [const_grads([0.0] * 3, [0.0] * 3, [0.0] * 3)] * 5  # indexed by a message's first step
    events = []
    strategy.emit = events.append
    _, sent, _ = drive(strategy.round(1, GLOBAL0), responder_for(LOCALS3, {0: 1, 1: 1, 2: 1}, grads))
    steps = [next(iter(batch.values())) for batch in sent[2:]]
    assert [m.config["step"] for m in steps] == [1, 3, 5]
    assert [m.config.get("local_steps") for m in steps] == [2, 2, None]
    assert all(m.config["steps"] == 5 for m in steps)
    assert [e.step for e in events] == [2, 4, 5]  # beta after the last step each message covers


def test_t0_schedule_learns_only_every_t0_rounds():
    strategy = auto(t0=3, beta_steps=1)
    zero = [const_grads([0.0] * 3, [0.0] * 3, [0.0] * 3)]
    n = {0: 1, 1: 1, 2: 1}
    counts = []
    for rnd in range(1, 7):
        _, sent, _ = drive(strategy.round(rnd, GLOBAL0), responder_for(LOCALS3, n, zero))
        counts.append(len(sent))
    assert counts == [1, 1, 3, 1, 1, 3]


def test_sgd_step_is_the_uniform_mean_of_the_sites_steps():
    lr = 0.5
    strategy = auto(t0=1, beta_steps=2, beta_optimizer="sgd", beta_lr=lr)
    g1 = const_grads([1.0, 0.0, -1.0], [3.0, 0.0, -1.0], [2.0, -3.0, -1.0])
    g2 = const_grads([0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    outcome, sent, _ = drive(strategy.round(1, GLOBAL0), responder_for(LOCALS3, {0: 1, 1: 1, 2: 1}, [g1, g2]))
    beta0 = torch.full((3,), 6.0, dtype=torch.float64)
    # paper: each site steps beta^{s,k} = beta - lr g_k; the server takes the uniform mean
    per_site = [beta0 - lr * g1[k].double() for k in range(3)]
    beta1 = sum(per_site) / 3
    # by hand: mean g = (2, -1, -1) -> beta1 = (5, 6.5, 6.5)
    assert torch.allclose(beta1, torch.tensor([5.0, 6.5, 6.5], dtype=torch.float64))
    step2_beta = sent[3][0].arrays["beta"]["beta"]
    assert torch.allclose(step2_beta.double(), beta1, atol=1e-6)
    beta2 = beta1 - lr * 0.5  # (4.75, 6.25, 6.25)
    assert outcome.beta == pytest.approx(beta2.tolist(), abs=1e-12)
    assert strategy.beta_list() == pytest.approx([4.75, 6.25, 6.25], abs=1e-12)
    # aggregation with the mode: excess (3.75, 5.25, 5.25) / 14.25
    alpha = [3.75 / 14.25, 5.25 / 14.25, 5.25 / 14.25]
    assert outcome.alpha == pytest.approx(alpha, abs=1e-9)
    w = [sum(alpha[k] * LOCALS3[k]["w"][i].item() for k in range(3)) for i in range(2)]
    b = sum(alpha[k] * LOCALS3[k]["b"].item() for k in range(3))
    assert torch.allclose(outcome.global_state["w"], torch.tensor(w), atol=1e-6)
    assert torch.allclose(outcome.global_state["b"], torch.tensor([b]), atol=1e-6)


def test_missing_step_reply_averages_over_the_sites_that_answered():
    strategy = auto(t0=1, beta_steps=1, beta_optimizer="sgd", beta_lr=1.0)
    grads = [{0: f32(1.0, 0.0, 0.0), 1: f32(3.0, 0.0, 2.0)}]  # site 2 silent in the step
    outcome, sent, _ = drive(strategy.round(1, GLOBAL0), responder_for(LOCALS3, {0: 1, 1: 1, 2: 1}, grads))
    # mean over the two repliers: (2, 0, 1)
    assert outcome.beta == pytest.approx([4.0, 6.0, 5.0])


def test_site_missing_from_setup_is_left_out_of_the_phase():
    strategy = auto(t0=1, beta_steps=1, beta_optimizer="sgd", beta_lr=1.0)
    base = responder_for(LOCALS3, {0: 1, 1: 1, 2: 1}, [{0: f32(1.0, -1.0), 1: f32(1.0, -1.0)}])

    def respond(messages):
        replies = base(messages)
        if next(iter(messages.values())).kind == SETUP:
            replies.pop(2)
        return replies

    outcome, sent, _ = drive(strategy.round(1, GLOBAL0), respond)
    step = sent[2]
    assert set(step) == {0, 1}
    assert list(step[0].config["sites"]) == [0, 1]
    assert torch.allclose(step[0].arrays["beta"]["beta"], f32(6.0, 6.0))
    # beta of sites 0, 1 moved to (5, 7); site 2 keeps 6 but is not aggregated this round
    assert outcome.beta == pytest.approx([5.0, 7.0, 6.0])
    # mode over sites 0, 1: excess (4, 6) / 10
    assert outcome.alpha == pytest.approx([0.4, 0.6, 0.0])
    assert torch.allclose(outcome.global_state["w"], f32(0.4 * 0 + 0.6 * 3, 0.4 * 3 + 0.6 * 6))


def test_dirichlet_beta_is_clamped_above_one():
    strategy = auto(t0=1, beta_steps=1, beta_optimizer="sgd", beta_lr=1.0)
    grads = [const_grads([10.0, 0.0, -1.0], [10.0, 0.0, -1.0], [10.0, 0.0, -1.0])]
    outcome, _, _ = drive(strategy.round(1, GLOBAL0), responder_for(LOCALS3, {0: 1, 1: 1, 2: 1}, grads))
    # 6 - 10 = -4 -> clamped to 1 + 1e-3; the others: 6 and 7
    assert BETA_FLOOR == pytest.approx(1.001)
    assert outcome.beta == pytest.approx([1.001, 6.0, 7.0], abs=1e-12)
    # mode: excess (0.001, 5, 6) / 11.001
    assert outcome.alpha == pytest.approx([0.001 / 11.001, 5 / 11.001, 6 / 11.001], abs=1e-9)
    assert min(outcome.alpha) > 0


def test_softmax_beta_is_not_clamped():
    strategy = auto(t0=1, beta_steps=1, beta_optimizer="sgd", beta_lr=1.0, weights="softmax", beta_init=0.0)
    grads = [const_grads([10.0, 0.0, 0.0], [10.0, 0.0, 0.0], [10.0, 0.0, 0.0])]
    outcome, _, _ = drive(strategy.round(1, GLOBAL0), responder_for(LOCALS3, {0: 1, 1: 1, 2: 1}, grads))
    assert outcome.beta == pytest.approx([-10.0, 0.0, 0.0])
    e = math.exp(-10.0)
    assert outcome.alpha == pytest.approx([e / (e + 2), 1 / (e + 2), 1 / (e + 2)])


def test_zero_beta_steps_equals_fedavg_even():
    n = {0: 1, 1: 2, 2: 9}  # unequal sizes: FedAvg would differ
    auto_s = auto(t0=1, beta_steps=0)
    even = FedAvgEven(FedAvgEven.Params(), make_sites(1, 2, 9))
    fedavg = FedAvg(FedAvg.Params(), make_sites(1, 2, 9))
    for rnd in (1, 2):
        out_a, sent_a, _ = drive(auto_s.round(rnd, GLOBAL0), responder_for(LOCALS3, n))
        out_e, _, _ = drive(even.round(rnd, GLOBAL0), responder_for(LOCALS3, n))
        out_f, _, _ = drive(fedavg.round(rnd, GLOBAL0), responder_for(LOCALS3, n))
        assert len(sent_a) == 1  # no setup, no steps
        assert out_a.alpha == pytest.approx(out_e.alpha, abs=1e-12)
        assert out_a.alpha == pytest.approx([1 / 3] * 3)
        for name in GLOBAL0:
            assert torch.allclose(out_a.global_state[name], out_e.global_state[name], atol=1e-7)
        assert not torch.allclose(out_a.global_state["w"], out_f.global_state["w"])
    assert auto_s.beta_list() == [6.0, 6.0, 6.0]


def test_learning_round_bytes_give_the_extra_communication_ratio():
    k, t0 = 3, 2
    strategy = auto(t0=t0, beta_steps=2)
    state = {"conv.weight": torch.zeros(4, 3), "conv.bias": torch.zeros(4)}  # 16 float32 = 64 B
    locals_ = {j: {name: t + j for name, t in state.items()} for j in range(k)}
    model_bytes = payload_bytes({"m": state})
    assert model_bytes == 64
    zero = [const_grads(*([[0.0] * k] * k))] * 2
    n = {j: 1 for j in range(k)}
    traffic = []
    for rnd in range(1, t0 + 1):
        _, sent, answered = drive(strategy.round(rnd, state), responder_for(locals_, n, zero))
        traffic.append((sent, answered))
    # round 1: FedAvg traffic only, 2K model copies
    sent, answered = traffic[0]
    fedavg_round = sum(m.nbytes for m in sent[0].values()) + sum(r.nbytes for r in answered[0].values())
    assert fedavg_round == 2 * k * model_bytes
    # round 2: the same train traffic plus the setup batch of K(K-1) model copies
    sent, answered = traffic[1]
    assert sum(m.nbytes for m in sent[0].values()) + sum(r.nbytes for r in answered[0].values()) == fedavg_round
    setup_bytes = sum(m.nbytes for m in sent[1].values())
    assert setup_bytes == k * (k - 1) * model_bytes
    assert sum(r.nbytes for r in answered[1].values()) == 0
    # the beta messages: K float32 down and K float32 up per site per step (negligible)
    for batch, replies in zip(sent[2:], answered[2:]):
        assert sum(m.nbytes for m in batch.values()) == k * k * 4
        assert sum(r.nbytes for r in replies.values()) == k * k * 4
    # extra model traffic over t0 rounds vs FedAvg's over t0 rounds: (K-1) / (2 t0)
    assert setup_bytes / (t0 * fedavg_round) == pytest.approx((k - 1) / (2 * t0))
    assert setup_bytes / (t0 * fedavg_round) == pytest.approx(extra_communication_ratio(k, t0))


def test_layerwise_aggregation_with_hand_chosen_beta():
    # two sites, P = 2 layers: "conv" (weight + bias share one alpha) and "fc"
    strategy = AutoFedAvg(
        AutoFedAvgParams(aggregation="layer", t0=1, beta_steps=1, beta_optimizer="sgd", beta_lr=1.0),
        make_sites(1, 1),
    )
    locals_ = {
        0: {"conv.weight": f32(0.0, 3.0), "conv.bias": f32(6.0), "fc.weight": f32(10.0, 0.0)},
        1: {"conv.weight": f32(3.0, 0.0), "conv.bias": f32(0.0), "fc.weight": f32(0.0, 10.0)},
    }
    glob = {name: torch.zeros_like(t) for name, t in locals_[0].items()}
    # mean gradient (3, 4; 4, 1) takes beta from 6 to (3, 2; 2, 5)
    grads = [{0: torch.tensor([[2.0, 4.0], [4.0, 0.0]]), 1: torch.tensor([[4.0, 4.0], [4.0, 2.0]])}]
    outcome, sent, _ = drive(strategy.round(1, glob), responder_for(locals_, {0: 1, 1: 1}, grads))
    assert strategy.groups == [["conv.weight", "conv.bias"], ["fc.weight"]]
    assert sent[2][0].arrays["beta"]["beta"].shape == (2, 2)
    assert torch.allclose(torch.tensor(outcome.beta, dtype=torch.float64), torch.tensor([[3.0, 2.0], [2.0, 5.0]], dtype=torch.float64))
    # column "conv": excess (2, 1) -> (2/3, 1/3); column "fc": excess (1, 4) -> (0.2, 0.8)
    g = outcome.global_state
    assert torch.allclose(g["conv.weight"], f32(1.0, 2.0), atol=1e-6)  # (2/3*0 + 1/3*3, 2/3*3 + 0)
    assert torch.allclose(g["conv.bias"], f32(4.0), atol=1e-6)
    assert torch.allclose(g["fc.weight"], f32(2.0, 8.0), atol=1e-6)
    assert all(t.dtype == torch.float32 for t in g.values())
    # reported alpha: the mean over layers
    assert outcome.alpha == pytest.approx([(2 / 3 + 0.2) / 2, (1 / 3 + 0.8) / 2])


def test_layerwise_beta_loaded_by_hand_aggregates_per_layer():
    params = AutoFedAvgParams(aggregation="layer", t0=1, beta_steps=0)
    strategy = AutoFedAvg(params, make_sites(1, 1, 1))
    groups = [["a.weight", "a.bias"], ["b.weight"]]
    beta = torch.tensor([[2.0, 6.0], [3.0, 6.0], [6.0, 1.0]], dtype=torch.float64)
    strategy.load_state_dict({"beta": beta}, {"alpha": [1 / 3] * 3, "groups": groups})
    locals_ = {
        0: {"a.weight": f32(8.0), "a.bias": f32(0.0), "b.weight": f32(1.0)},
        1: {"a.weight": f32(0.0), "a.bias": f32(8.0), "b.weight": f32(2.0)},
        2: {"a.weight": f32(0.0), "a.bias": f32(0.0), "b.weight": f32(100.0)},
    }
    glob = {name: torch.zeros(1) for name in locals_[0]}
    outcome, _, _ = drive(strategy.round(1, glob), responder_for(locals_, {0: 1, 1: 1, 2: 1}))
    # layer a: excess (1, 2, 5) / 8; layer b: excess (5, 5, 0) / 10
    assert torch.allclose(outcome.global_state["a.weight"], f32(1.0))
    assert torch.allclose(outcome.global_state["a.bias"], f32(2.0))
    assert torch.allclose(outcome.global_state["b.weight"], f32(1.5))


def test_state_dict_round_trips_beta_and_adam_state(tmp_path):
    params = AutoFedAvgParams(t0=1, beta_steps=2, beta_lr=0.1)  # Adam (default)
    n = {0: 1, 1: 1, 2: 1}
    g_round1 = [const_grads([1.0, -2.0, 0.5], [0.3, 0.1, -1.0], [2.0, 2.0, 0.0]), const_grads([0.5, 0.0, 0.0], [-1.0, 1.0, 3.0], [0.0, 0.2, 0.1])]
    g_round2 = [const_grads([0.2, -0.1, 0.0], [1.0, 1.0, 1.0], [-3.0, 0.5, 0.5]), const_grads([0.0, 0.0, 1.0], [0.1, -0.1, 0.0], [0.7, 0.7, -0.7])]

    first = AutoFedAvg(params, make_sites(1, 1, 1))
    drive(first.round(1, GLOBAL0), responder_for(LOCALS3, n, g_round1))
    tensors, meta = first.state_dict()
    assert "beta" in tensors and any(k.startswith("optimizer.") for k in tensors)
    # through the checkpoint formats the coordinator uses: safetensors + JSON
    save_tensors(tmp_path / "strategy.safetensors", tensors)
    tensors = load_tensors(tmp_path / "strategy.safetensors")
    meta = json.loads(json.dumps(meta))

    restored = AutoFedAvg(params, make_sites(1, 1, 1))
    restored.load_state_dict(tensors, meta)
    assert restored.beta_list() == first.beta_list()
    assert restored.alpha == pytest.approx(first.alpha)

    beta_only = AutoFedAvg(params, make_sites(1, 1, 1))  # same beta, fresh Adam moments
    beta_only.load_state_dict({"beta": tensors["beta"]}, meta)

    out_first, sent_first, _ = drive(first.round(2, GLOBAL0), responder_for(LOCALS3, n, g_round2))
    out_restored, sent_restored, _ = drive(restored.round(2, GLOBAL0), responder_for(LOCALS3, n, g_round2))
    out_beta_only, _, _ = drive(beta_only.round(2, GLOBAL0), responder_for(LOCALS3, n, g_round2))
    assert torch.equal(sent_first[3][0].arrays["beta"]["beta"], sent_restored[3][0].arrays["beta"]["beta"])
    assert out_restored.beta == out_first.beta  # the identical next steps
    assert out_restored.alpha == out_first.alpha
    # the moments matter: without them Adam takes a different step
    assert out_beta_only.beta != pytest.approx(out_first.beta, abs=1e-6)


def test_adam_step_magnitude_first_step_is_lr_times_sign():
    # Adam's first step moves every coordinate with a non-zero gradient by ~lr
    strategy = auto(t0=1, beta_steps=1, beta_lr=0.05)
    grads = [const_grads([4.0, -0.01, 0.0], [4.0, -0.01, 0.0], [4.0, -0.01, 0.0])]
    outcome, _, _ = drive(strategy.round(1, GLOBAL0), responder_for(LOCALS3, {0: 1, 1: 1, 2: 1}, grads))
    assert outcome.beta == pytest.approx([5.95, 6.05, 6.0], abs=1e-5)


def test_beta_local_steps_must_be_positive():
    with pytest.raises(ConfigError, match=r"strategy.params.beta_local_steps: must be >= 1, got 0"):
        AutoFedAvgParams(beta_local_steps=0)


def test_params_validation():
    with pytest.raises(ConfigError, match="did you mean 'dirichlet'"):
        AutoFedAvgParams(weights="dirichlet2")
    with pytest.raises(ConfigError, match="strategy.params.aggregation"):
        AutoFedAvgParams(aggregation="layers")
    with pytest.raises(ConfigError, match="t0"):
        AutoFedAvgParams(t0=0)
    with pytest.raises(ConfigError, match="beta_steps"):
        AutoFedAvgParams(beta_steps=-1)
    with pytest.raises(ConfigError, match="beta_lr"):
        AutoFedAvgParams(beta_lr=0.0)
    with pytest.raises(ConfigError, match="beta_init"):
        AutoFedAvgParams(beta_init=1.0)
    AutoFedAvgParams(weights="softmax", beta_init=0.0)  # fine for softmax
    strategy = build_strategy("auto-fedavg", {"t0": 10, "beta_optimizer": "sgd"}, make_sites(1, 1))
    assert isinstance(strategy, AutoFedAvg)
    assert strategy.params.t0 == 10


# --------------------------------------------------------------------------------------
# merge_states


def test_merge_states_is_differentiable_in_alpha():
    torch.manual_seed(0)
    models = [{"w": torch.randn(2, 3), "b": torch.randn(3), "n": torch.tensor(k)} for k in range(3)]
    alpha = torch.tensor([0.2, 0.3, 0.5], requires_grad=True)
    merged = merge_states(models, alpha, None)
    assert torch.equal(merged["n"], torch.tensor(0))  # integer tensors from the first model
    expected_w = 0.2 * models[0]["w"] + 0.3 * models[1]["w"] + 0.5 * models[2]["w"]
    assert torch.allclose(merged["w"], expected_w)
    total = merged["w"].sum() + merged["b"].sum()
    (grad,) = torch.autograd.grad(total, alpha)
    for j in range(3):
        assert grad[j].item() == pytest.approx((models[j]["w"].sum() + models[j]["b"].sum()).item(), abs=1e-5)


def test_merge_states_layerwise_gradient_per_column():
    models = [
        {"a.weight": f32(1.0, 2.0), "a.bias": f32(3.0), "b.weight": f32(10.0)},
        {"a.weight": f32(-1.0, 0.0), "a.bias": f32(0.5), "b.weight": f32(20.0)},
    ]
    groups = [["a.weight", "a.bias"], ["b.weight"]]
    alpha = torch.tensor([[0.25, 0.5], [0.75, 0.5]], requires_grad=True)
    merged = merge_states(models, alpha, groups)
    assert torch.allclose(merged["a.weight"], f32(-0.5, 0.5))
    assert torch.allclose(merged["b.weight"], f32(15.0))
    total = sum(t.sum() for t in merged.values())
    (grad,) = torch.autograd.grad(total, alpha)
    # d/d alpha[j, p] = sum of model j's tensors in layer p
    assert torch.allclose(grad, torch.tensor([[6.0, 10.0], [-0.5, 20.0]]))


# --------------------------------------------------------------------------------------
# Auto-FedAvg: the site's beta gradient, against finite differences on a real tiny UNet


class TinyRuntime:
    """The parts of SiteRuntime the Auto-FedAvg site uses, around a real float64 UNet."""

    def __init__(self, index: int, network: nn.Module, store: SiteStore, batch) -> None:
        self.index = index
        self.name = f"site{index}"
        self.device = torch.device("cpu")
        self.network = network
        self.store = store
        self.trainer = SimpleNamespace(loss_fn=build_loss("dice"))
        self.data = SimpleNamespace(batch=lambda rng: batch)
        self.progress_calls: list[tuple] = []

    def rng(self, rnd: int, *phase: int) -> np.random.Generator:
        return np.random.default_rng([0, self.index, rnd, *phase])

    def seed_torch(self, rnd: int, *phase: int) -> None:
        torch.manual_seed(1234)

    def progress(self, *args) -> None:
        self.progress_calls.append(args)


def test_site_beta_gradient_matches_finite_differences(tmp_path):
    torch.manual_seed(0)
    args = {"channels": [4, 8], "strides": [2]}
    states = []
    for _ in range(3):
        net = build_network("unet", args).double()
        states.append({k: v.detach().clone() for k, v in net.state_dict().items()})
    image = torch.rand(1, 1, 8, 8, 8, dtype=torch.float64)
    label = torch.zeros(1, 1, 8, 8, 8, dtype=torch.float64)
    label[..., 2:6, 2:6, 3:5] = 1.0
    network = build_network("unet", args).double()
    me = 1
    runtime = TinyRuntime(me, network, SiteStore(tmp_path / "store"), (image, label))
    site = AutoFedAvgSite(AutoFedAvgParams(weights="softmax", beta_init=0.0), runtime)
    rnd = 4
    site.after_train(Message(TRAIN, rnd), states[me])  # its own local model, as after training
    setup = Message(SETUP, rnd, arrays={f"site.{j}": states[j] for j in range(3) if j != me}, config={"sites": [0, 1, 2]})
    assert site.handle(setup).metrics == {"cached_models": 2}
    beta = torch.tensor([0.3, -0.2, 0.1])
    reply = site.handle(Message(STEP, rnd, arrays={"beta": {"beta": beta}}, config={"sites": [0, 1, 2], "step": 1, "steps": 1}))
    grad = reply.arrays["beta"]["grad"]
    assert grad.shape == (3,)

    loss_fn = build_loss("dice")
    probe = build_network("unet", args).double().train()

    def loss_at(b: torch.Tensor) -> float:
        alpha = torch.softmax(b.double(), dim=0)
        merged = {name: sum(alpha[j] * states[j][name] for j in range(3)) for name in states[0]}
        probe.load_state_dict(merged)
        with torch.no_grad():
            return float(loss_fn(probe(image), label))

    assert reply.metrics["loss"] == pytest.approx(loss_at(beta), rel=1e-5)
    eps = 1e-5
    fd = []
    for k in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[k] = eps
        fd.append((loss_at(beta.double() + e) - loss_at(beta.double() - e)) / (2 * eps))
    assert max(abs(x) for x in fd) > 1e-6  # the check is not vacuous
    assert grad.double().tolist() == pytest.approx(fd, rel=1e-3, abs=1e-7)
    # the gradient sums to ~0: softmax is invariant to adding a constant to beta
    assert abs(float(grad.sum())) < 1e-5
    assert runtime.progress_calls and runtime.progress_calls[0][1] == "learn_beta"


def test_site_without_cached_peer_model_refuses(tmp_path):
    network = build_network("unet", {"channels": [4, 8], "strides": [2]})
    runtime = TinyRuntime(0, network, SiteStore(tmp_path), (torch.zeros(1, 1, 8, 8, 8), torch.zeros(1, 1, 8, 8, 8)))
    site = AutoFedAvgSite(AutoFedAvgParams(), runtime)
    site.after_train(Message(TRAIN, 2), {k: v.clone() for k, v in network.state_dict().items()})
    step = Message(STEP, 2, arrays={"beta": {"beta": f32(6.0, 6.0)}}, config={"sites": [0, 1], "step": 1})
    with pytest.raises(FederationError, match="not cached"):
        site.handle(step)
    with pytest.raises(FederationError, match="cannot handle"):
        site.handle(Message("query.unknown", 2))


def test_site_restarted_after_setup_uses_the_stored_peer_models(tmp_path):
    torch.manual_seed(1)
    args = {"channels": [4, 8], "strides": [2]}
    states = [{k: v.detach().clone() for k, v in build_network("unet", args).state_dict().items()} for _ in range(2)]
    image = torch.rand(1, 1, 8, 8, 8)
    label = (image > 0.6).float()
    store_dir = tmp_path / "store"
    params = AutoFedAvgParams(weights="softmax", beta_init=0.0)
    rnd, me = 3, 0
    step = Message(STEP, rnd, arrays={"beta": {"beta": f32(0.5, -0.5)}}, config={"sites": [0, 1], "step": 1, "steps": 1})

    first = AutoFedAvgSite(params, TinyRuntime(me, build_network("unet", args), SiteStore(store_dir), (image, label)))
    first.after_train(Message(TRAIN, rnd), states[me])
    first.handle(Message(SETUP, rnd, arrays={"site.1": states[1]}, config={"sites": [0, 1]}))
    grad_first = first.handle(step).arrays["beta"]["grad"]

    # a new process: empty cache, same site store on disk
    second = AutoFedAvgSite(params, TinyRuntime(me, build_network("unet", args), SiteStore(store_dir), (image, label)))
    grad_second = second.handle(step).arrays["beta"]["grad"]
    assert torch.equal(grad_first, grad_second)
    assert float(grad_first.abs().sum()) > 0

    # a setup from an older round does not count for this round
    third = AutoFedAvgSite(params, TinyRuntime(me, build_network("unet", args), SiteStore(tmp_path / "other"), (image, label)))
    third.after_train(Message(TRAIN, rnd), states[me])
    third.handle(Message(SETUP, rnd - 1, arrays={"site.1": states[1]}, config={"sites": [0, 1]}))
    with pytest.raises(FederationError, match="not cached"):
        AutoFedAvgSite(params, third.runtime).handle(step)
