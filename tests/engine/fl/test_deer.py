"""DEeR (ALGORITHMS.md 6): the deviation eliminator, the noise regulator, the privacy
budget, the protocol driven by hand, and the site half on real tiny sites."""

from __future__ import annotations

import logging

import pytest
import torch

from engine.errors import ConfigError, FederationError
from engine.fl import privacy
from engine.fl.coordinator import initial_global_state
from engine.fl.deer import A, B, BASE, KIND, DEeR, DEeRParams, DEeRSite
from engine.fl.protocol import EVALUATE, QUERY_BEST_LOCAL, Message, Reply
from engine.fl.site import SiteInfo
from engine.model import lora

K = 3


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_strategy(config, **params) -> DEeR:
    strategy = DEeR(DEeRParams(**params), [SiteInfo(i, f"site{i}", 3 + i) for i in range(K)])
    strategy.configure(config)
    return strategy


def updates_for(message: Message, seed: int) -> dict[str, torch.Tensor]:
    factors = message.arrays["factors"]
    gen = g(seed)
    trained = lora.factor_names(factors, message.config["factor"])
    return {n: 0.01 * torch.randn(factors[n].shape, generator=gen) for n in trained}


def answer(messages: dict[int, Message], skip: set[int] = frozenset()) -> dict[int, Reply]:
    replies = {}
    for k, m in messages.items():
        if k not in skip:
            seed = 10 * m.round + k + (5 if m.config["factor"] == A else 0)
            replies[k] = Reply({"update": updates_for(m, seed)}, {"train_loss": 0.5 + k, "local_val_dice": 0.1}, 3 + k)
    return replies


# -- section 14: the deviation eliminator -----------------------------------------------------
def test_aggregating_b_with_a_fixed_is_the_mean_of_the_products() -> None:
    gen = g(0)
    a = torch.randn(8, 54, generator=gen, dtype=torch.float64)
    b = torch.randn(16, 8, generator=gen, dtype=torch.float64)
    updates = [0.1 * torch.randn(16, 8, generator=gen, dtype=torch.float64) for _ in range(K)]
    replies = {k: Reply({"update": {"x" + lora.FACTOR_B: u}}) for k, u in enumerate(updates)}
    mean_b = DEeR.aggregate({"x" + lora.FACTOR_B: b}, replies, {k: 1 / K for k in range(K)})["x" + lora.FACTOR_B]
    products = sum((b + u) @ a for u in updates) / K
    assert torch.allclose(mean_b @ a, products, atol=1e-12, rtol=0)
    # what DEeR avoids: averaging both factors of sites that trained both deviates
    a_k = [a + 0.1 * torch.randn(a.shape, generator=gen, dtype=torch.float64) for _ in range(K)]
    fedavg = (sum(b + u for u in updates) / K) @ (sum(a_k) / K)
    ideal = sum((b + u) @ ak for u, ak in zip(updates, a_k)) / K
    assert float((fedavg - ideal).abs().max()) > 1e-3


# -- section 14: the noise regulator ------------------------------------------------------------
def projection(m: torch.Tensor) -> torch.Tensor:
    q, _ = torch.linalg.qr(m)  # orthonormal basis of the column space (full column rank)
    return q @ q.T


def test_regulated_noise_is_a_projection_of_n() -> None:
    gen = g(1)
    b = torch.randn(16, 8, generator=gen, dtype=torch.float64) * 1e-3  # small B: the noise must not blow up in W
    a = torch.randn(8, 54, generator=gen, dtype=torch.float64) * 50
    n = torch.randn(16, 54, generator=gen, dtype=torch.float64)
    noise_a = privacy.regulated_noise(b, A, n)
    noise_b = privacy.regulated_noise(a, B, n)
    assert noise_a.shape == (8, 54) and noise_b.shape == (16, 8)
    assert float((b @ noise_a - projection(b) @ n).norm()) < 1e-9
    assert float((noise_b @ a - n @ projection(a.T)).norm()) < 1e-9
    assert float((b @ noise_a).norm()) <= float(n.norm()) + 1e-9  # a projection never grows N
    # plain DP noise on A would reach W scaled by B: the regulator's does not depend on |B|
    assert torch.allclose((1e3 * b) @ privacy.regulated_noise(1e3 * b, A, n), b @ noise_a, atol=1e-9)


def test_regulated_noise_of_a_zero_factor_is_zero() -> None:
    n = torch.randn(4, 27, generator=g(2), dtype=torch.float64)
    assert not privacy.regulated_noise(torch.zeros(4, 4), A, n).any()


def test_clip_bounds_the_joint_norm() -> None:
    update = {"a": torch.full((2, 2), 3.0), "b": torch.full((4,), 4.0)}  # norm sqrt(36 + 64) = 10
    clipped = privacy.clip_update(update, 2.5)
    assert privacy.update_norm(clipped) == pytest.approx(2.5)
    assert torch.allclose(clipped["a"] / update["a"], torch.full((2, 2), 0.25))
    assert privacy.clip_update(update, 10.5)["b"] is update["b"]


# -- the privacy budget (Opacus) ---------------------------------------------------------------
def test_noise_multiplier_meets_the_target_epsilon() -> None:
    sigmas = [privacy.noise_multiplier(eps, 1 / K, 0.1, 240) for eps in (1.0, 3.0)]
    assert sigmas[0] > sigmas[1] > 0
    spent = privacy.spent_epsilon(sigmas[1], 1 / K, 0.1, 240)
    assert 2.9 < spent <= 3.0


def test_privacy_report(tiny_config) -> None:
    config = tiny_config()  # 3 rounds, 2 local steps, batch 2; sites hold 3 + 4 + 5 = 12 cases
    paper = make_strategy(config, epsilon=3.0, clip=0.3).report()["privacy"]
    assert paper["delta"] == pytest.approx(1 / K)
    assert paper["sample_rate"] == pytest.approx(2 / 12) and paper["steps"] == K * 3 * 2 * 2
    assert paper["noise_std_per_site"] == pytest.approx(paper["noise_multiplier"] * 0.3 / K**0.5)
    assert paper["epsilon"] <= 3.0 and paper["clip"] == 0.3
    client = make_strategy(config, epsilon=3.0, delta=1e-3, accounting="client").report()["privacy"]
    assert client["sample_rate"] == 1.0 and client["steps"] == 2 * 3 and client["delta"] == 1e-3
    assert client["noise_multiplier"] > paper["noise_multiplier"]
    assert make_strategy(config, dp=False).report()["privacy"] == {"dp": False}


@pytest.mark.parametrize(
    "params, phrase",
    [
        ({"rank": 0}, "strategy.params.rank"),
        ({"epsilon": 0.0}, "strategy.params.epsilon"),
        ({"clip": -1.0}, "strategy.params.clip"),
        ({"delta": 1.0}, "strategy.params.delta"),
        ({"momentum": 1.0}, "strategy.params.momentum"),
        ({"accounting": "sample"}, "allowed: paper, client"),
    ],
)
def test_params_are_validated(params, phrase) -> None:
    with pytest.raises(ConfigError, match=phrase):
        DEeR.params_from(params)


# -- the protocol, driven by hand ------------------------------------------------------------------
def test_a_round_is_two_half_rounds_with_w0_sent_once(tiny_config, caplog) -> None:
    config = tiny_config()
    with caplog.at_level(logging.WARNING):
        strategy = make_strategy(config, dp=False)
    assert "no init_model" in caplog.text
    plain = initial_global_state(config)
    gen = strategy.round(1, plain)
    first = next(gen)
    assert {m.kind for m in first.values()} == {KIND} and {m.config["factor"] for m in first.values()} == {B}
    assert all("base" in m.arrays for m in first.values())
    assert first[0].config["noise_std"] == 0.0 and first[0].config["clip"] == 0.0
    state0 = {**first[0].arrays["base"], **first[0].arrays["factors"]}
    assert lora.merged_state(state0, 1.0).keys() == plain.keys()
    assert all(torch.equal(lora.merged_state(state0, 1.0)[n], t) for n, t in plain.items())  # B = 0
    b_replies = answer(first)
    second = gen.send(b_replies)
    assert {m.config["factor"] for m in second.values()} == {A}
    assert not any("base" in m.arrays for m in second.values())
    factors = second[0].arrays["factors"]
    for name in lora.factor_names(factors, B):
        mean_update = sum(r.arrays["update"][name].double() for r in b_replies.values()) / K
        expected = first[0].arrays["factors"][name].double() + mean_update
        assert torch.allclose(factors[name].double(), expected, atol=1e-7)
    for name in lora.factor_names(factors, A):  # A stays fixed while B trains
        assert torch.equal(factors[name], first[0].arrays["factors"][name])
    with pytest.raises(StopIteration) as stop:
        gen.send(answer(second, skip={2}))
    outcome = stop.value.value
    assert outcome.alpha == pytest.approx([0.5, 0.5, 0.0])
    assert outcome.train_loss == {0: 0.5, 1: 1.5, 2: 2.5}
    assert strategy.has_base == {0, 1}
    # round 2: site 2 missed a message, so it gets W0 again
    nxt = next(strategy.round(2, outcome.global_state))
    assert ["base" in nxt[k].arrays for k in range(K)] == [False, False, True]


def test_the_exported_model_is_the_merged_plain_network(tiny_config) -> None:
    strategy = make_strategy(tiny_config(), dp=False, lora_alpha=16.0)
    plain = initial_global_state(tiny_config())
    state = strategy.adapted(plain)
    assert lora.is_adapted_state(state) and strategy.adapted(state) is state
    state = {n: (t + 0.01 if n.endswith(lora.FACTOR_B) else t) for n, t in state.items()}
    exported = strategy.exported_model(state)
    assert exported.keys() == plain.keys()
    changed = [n for n in plain if not torch.equal(exported[n], plain[n])]
    assert changed and all(n.endswith(".weight") and plain[n].dim() == 5 for n in changed)
    assert strategy.exported_model(plain) is plain


def test_check_reply_accepts_only_the_trained_factor(tiny_config) -> None:
    strategy = make_strategy(tiny_config(), dp=False)
    message = next(strategy.round(1, initial_global_state(tiny_config())))[0]
    good = updates_for(message, 0)
    ok = Reply({"update": good}, {"train_loss": 0.3})
    assert strategy.check_reply(message, ok, {}) is None
    name = next(iter(good))
    a_names = lora.factor_names(message.arrays["factors"], A)
    bad = [
        (Reply(metrics={"train_loss": 0.3}), "no 'update'"),
        (Reply({"update": {**good, name: torch.zeros(1)}}, {"train_loss": 0.3}), "has shape [1]"),
        (Reply({"update": {**good, a_names[0]: torch.zeros(1)}}, {"train_loss": 0.3}), "unexpected tensor"),
        (Reply({"update": good, "local": message.arrays["base"]}, {"train_loss": 0.3}), "array group 'local'"),
        (Reply({"update": {**good, name: torch.full_like(good[name], float("nan"))}}, {"train_loss": 0.3}), "NaN"),
        (Reply({"update": good}), "no train_loss"),
    ]
    for reply, phrase in bad:
        problem = strategy.check_reply(message, reply, {})
        assert problem is not None and phrase in problem, (phrase, problem)


def test_checkpoint_keeps_who_holds_w0(tiny_config) -> None:
    strategy = make_strategy(tiny_config(), dp=False)
    strategy.has_base = {0, 2}
    tensors, meta = strategy.state_dict()
    again = make_strategy(tiny_config(), dp=False)
    again.load_state_dict(tensors, meta)
    assert again.has_base == {0, 2}


# -- the site half ------------------------------------------------------------------------------------
def first_messages(config, **params) -> tuple[DEeR, dict[int, Message]]:
    strategy = make_strategy(config, **params)
    return strategy, next(strategy.round(1, initial_global_state(config)))


def test_site_trains_only_the_factor_and_sends_only_its_update(make_site, tiny_config) -> None:
    _, messages = first_messages(tiny_config(), dp=False)
    site = make_site(DEeRSite, DEeRParams(dp=False))
    reply = site.handle(messages[0])
    factors = messages[0].arrays["factors"]
    assert list(reply.arrays) == ["update"]
    assert set(reply.arrays["update"]) == set(lora.factor_names(factors, B))
    assert any(float(u.abs().max()) > 0 for u in reply.arrays["update"].values())
    local = site.runtime.weights()
    for name, t in {**messages[0].arrays["base"], **{n: factors[n] for n in lora.factor_names(factors, A)}}.items():
        assert torch.equal(local[name], t), name  # W0, biases, PReLU slopes and A stay frozen
    for name, u in reply.arrays["update"].items():  # without DP the update is exactly local - global
        assert torch.equal(u, local[name] - factors[name])
    assert site.runtime.store.load(BASE) is not None


def test_site_clips_and_adds_reproducible_regulated_noise(make_site, tiny_config) -> None:
    strategy, messages = first_messages(tiny_config(), clip=1e-4)
    message = messages[0]
    assert message.config["clip"] == 1e-4 and message.config["noise_std"] > 0
    quiet = Message(KIND, 1, message.arrays, {**message.config, "noise_std": 0.0})
    clipped = make_site(DEeRSite, strategy.params, 0).handle(quiet).arrays["update"]
    assert privacy.update_norm(clipped) == pytest.approx(1e-4, rel=1e-4)
    noisy = make_site(DEeRSite, strategy.params, 1).handle(message).arrays["update"]
    again = make_site(DEeRSite, strategy.params, 1).handle(message).arrays["update"]
    assert all(torch.equal(noisy[n], again[n]) for n in noisy)  # the same draw in every runner
    noise = {n: noisy[n] - make_site(DEeRSite, strategy.params, 1).handle(quiet).arrays["update"][n] for n in noisy}
    assert privacy.update_norm(noise) > 10 * privacy.update_norm(clipped)  # std sigma C / sqrt(K) per entry of N
    # B's noise is N A^+: multiplied by A it is N P_A, in A's row space
    for name, nb in noise.items():
        a = message.arrays["factors"][name[: -len(lora.FACTOR_B)] + lora.FACTOR_A].double()
        pa = projection(a.T)
        assert torch.allclose(nb.double() @ a @ pa, nb.double() @ a, atol=1e-4)


def test_site_a_half_validates_and_keeps_the_released_model(make_site, tiny_config) -> None:
    strategy, messages = first_messages(tiny_config())
    site = make_site(DEeRSite, strategy.params)
    gen = strategy.round(1, initial_global_state(tiny_config()))
    next(gen)
    b_reply = site.handle(messages[0])
    second = gen.send({0: b_reply, 1: b_reply, 2: b_reply})[0]
    reply = site.handle(second)
    assert 0.0 <= reply.metrics["local_val_dice"] <= 1.0
    assert set(reply.arrays["update"]) == set(lora.factor_names(second.arrays["factors"], A))
    best, meta, rnd = site.runtime.store.load("best_local")
    assert rnd == 1 and meta["val_dice"] == reply.metrics["local_val_dice"]
    for name, u in reply.arrays["update"].items():  # the released model: global A + noised update
        assert torch.allclose(best[name], second.arrays["factors"][name] + u)
    model = {**messages[0].arrays["base"], **second.arrays["factors"]}  # the global layout
    assert strategy.check_reply(Message(QUERY_BEST_LOCAL, 1), site.handle(Message(QUERY_BEST_LOCAL, 1)), model) is None


def test_a_restarted_site_reloads_w0_and_evaluates_the_adapted_model(make_site, tiny_config) -> None:
    _, messages = first_messages(tiny_config(), dp=False)
    without_base = Message(KIND, 1, {"factors": messages[0].arrays["factors"]}, messages[0].config)
    with pytest.raises(FederationError, match="never received"):
        make_site(DEeRSite, DEeRParams(dp=False)).handle(without_base)
    make_site(DEeRSite, DEeRParams(dp=False)).handle(messages[0])  # stores W0
    restarted = make_site(DEeRSite, DEeRParams(dp=False))  # same store, fresh process
    trained = set(lora.factor_names(messages[0].arrays["factors"], B))
    assert set(restarted.handle(without_base).arrays["update"]) == trained
    model = {**messages[0].arrays["base"], **messages[0].arrays["factors"]}
    fresh = make_site(DEeRSite, DEeRParams(dp=False), 1)
    reply = fresh.handle(Message(EVALUATE, 1, {"model": model}, {"split": "val"}))
    assert lora.is_adapted(fresh.runtime.network) and 0.0 <= reply.metrics["dice"] <= 1.0
