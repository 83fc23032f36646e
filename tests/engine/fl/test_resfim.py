"""pFL-ResFIM, the interpretation of ALGORITHMS.md 5.2: style bank, spectral transfer, diagonal
Fisher, residual, top-rho masks, masked aggregation and personal models; by hand and on real
tiny sites."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from engine.errors import ConfigError
from engine.fl import STRATEGIES, build_strategy
from engine.fl.base import PERSONAL
from engine.fl.protocol import EVALUATE, TRAIN, Message, Reply
from engine.fl.resfim import (
    KEPT,
    MASK,
    SHARED,
    STYLE,
    STYLES,
    ResFIM,
    ResFIMParams,
    ResFIMSite,
    diagonal_fisher,
    masked_average,
    pack,
    residual_fisher,
    top_fraction,
    transfer_style,
    unpack_mask,
)
from engine.fl.site import SiteInfo
from engine.simulation.transport import InProcessTransport
from engine.training.fourier import low_amplitude

SPATIAL = (-3, -2, -1)
AFFINE_IN = ["instance", {"affine": True}]


def test_defaults_and_bad_values_are_named():
    assert ResFIMParams() == ResFIMParams(rho=0.1, mask_every=5, fisher_batches=8, r=0.1, bank_size=4, norm_local=True)
    assert STRATEGIES.get("resfim") is ResFIM and ResFIM.personalised and ResFIM.site_logic is ResFIMSite
    assert build_strategy("resfim", {"rho": 0.2}, [SiteInfo(0, "a", 1)]).params.rho == 0.2
    for values, field in (
        ({"rho": 1.0}, "rho"),
        ({"rho": -0.1}, "rho"),
        ({"mask_every": 0}, "mask_every"),
        ({"fisher_batches": 0}, "fisher_batches"),
        ({"r": 0.6}, "r"),
        ({"bank_size": 0}, "bank_size"),
    ):
        with pytest.raises(ConfigError, match=f"strategy.params.{field}: must be"):
            build_strategy("resfim", values, [SiteInfo(0, "a", 1)])


# -- spectral transfer -----------------------------------------------------------------------------
def test_style_transfer_swaps_the_window_amplitude_and_keeps_the_phase():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2, 1, 8, 8, 8, generator=gen)
    r = 0.25  # half-width floor(8 * 0.25) = 2: a 5^3 window
    own = low_amplitude(images, r)
    assert own.shape == (2, 1, 5, 5, 5)
    assert torch.allclose(transfer_style(images, own, r), images, atol=1e-5), "its own style: unchanged"
    other = low_amplitude(torch.rand(2, 1, 8, 8, 8, generator=gen) * 3.0, r)
    styled = transfer_style(images, other, r)
    assert torch.allclose(low_amplitude(styled, r), other, rtol=1e-4, atol=1e-3)
    before, after = torch.fft.fftn(images, dim=SPATIAL), torch.fft.fftn(styled, dim=SPATIAL)
    keep = before.abs() > 1e-3
    assert torch.allclose((after / after.abs())[keep], (before / before.abs())[keep], atol=1e-3)
    assert torch.allclose(styled.mean(dim=SPATIAL), images.mean(dim=SPATIAL) * 3.0, rtol=0.2), "DC = 3x the mean"


# -- Fisher, residual, mask -------------------------------------------------------------------------
def test_diagonal_fisher_is_the_mean_squared_minibatch_gradient():
    """loss = sum (w x + b - y)^2: dL/dw = 2 sum (w x + b - y) x, dL/db = 2 sum (w x + b - y)."""
    net = nn.Linear(1, 1)
    with torch.no_grad():
        net.weight.fill_(2.0)
        net.bias.fill_(1.0)
    batches = [
        (torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [0.0]])),
        (torch.tensor([[-1.0]]), torch.tensor([[1.0]])),
    ]
    fisher = diagonal_fisher(net, lambda out, y: ((out - y) ** 2).sum(), batches, torch.device("cpu"))
    # batch 1: residuals 3, 5 -> dw = 2 (3 + 10) = 26, db = 16; batch 2: residual -2 -> dw = 4, db = -4
    assert fisher["weight"].item() == pytest.approx((26**2 + 4**2) / 2)
    assert fisher["bias"].item() == pytest.approx((16**2 + 4**2) / 2)
    assert not net.training and net.weight.grad is None, "eval mode, no gradient left behind"


def test_residual_is_the_absolute_change_against_the_mean_of_the_other_styles():
    own = {"w": torch.tensor([1.0, 4.0, 2.0])}
    others = [{"w": torch.tensor([1.0, 1.0, 5.0])}, {"w": torch.tensor([3.0, 1.0, 1.0])}]
    assert torch.equal(residual_fisher(own, others)["w"], torch.tensor([1.0, 3.0, 1.0]))
    assert not residual_fisher(own, [own, own])["w"].any(), "style changes nothing: no sensitivity"


def test_top_fraction_keeps_the_floor_of_rho_n_largest():
    scores = torch.tensor([[0.1, 5.0, 0.3], [4.0, 0.2, 0.0], [9.0, 0.5, 0.4], [0.6, 0.7, 0.8]])
    mask = top_fraction(scores, 0.25)  # floor(0.25 * 12) = 3
    assert mask.shape == scores.shape and mask.sum() == 3
    assert mask[2, 0] and mask[0, 1] and mask[1, 0]
    assert top_fraction(torch.rand(10), 0.1).sum() == 1
    assert top_fraction(torch.rand(9), 0.1).sum() == 0, "a tiny tensor may keep nothing"
    assert top_fraction(torch.rand(100), 0.29).sum() == 29, "floor without float noise"
    assert top_fraction(torch.rand(7), 0.0).sum() == 0


def test_upload_holds_only_the_shared_entries_and_one_bit_per_entry():
    state = {"w": torch.arange(10.0).reshape(2, 5), "b": torch.tensor([7.0, 8.0, 9.0])}
    mask = {
        "w": torch.tensor([[1, 0, 0, 1, 0], [0, 0, 0, 0, 1]], dtype=torch.bool),
        "b": torch.zeros(3, dtype=torch.bool),
    }
    sent = pack(state, mask)
    assert torch.equal(sent[SHARED]["w"], torch.tensor([1.0, 2.0, 4.0, 5.0, 6.0, 7.0, 8.0]))
    assert torch.equal(sent[SHARED]["b"], state["b"])
    assert sent[MASK]["w"].dtype == torch.uint8 and sent[MASK]["w"].numel() == 2 and sent[MASK]["b"].numel() == 1
    assert all(torch.equal(unpack_mask(sent[MASK][n], state[n].shape), mask[n]) for n in state)
    assert not any(v in sent[SHARED]["w"].tolist() for v in (0.0, 3.0, 9.0)), "sensitive entries never leave"


def test_masked_average_by_hand():
    """theta_bar_i = sum_k (1 - m_ki) p_k theta_ki / sum_k (1 - m_ki) p_k."""
    thetas = {k: torch.tensor([1.0, 2.0, 3.0, 4.0]) + 4.0 * k for k in range(3)}
    masks = {
        0: torch.tensor([False, True, False, True]),
        1: torch.tensor([False, False, True, True]),
        2: torch.tensor([False, False, False, True]),
    }
    p = {0: 0.5, 1: 0.25, 2: 0.25}
    uploads = {k: pack({"w": thetas[k]}, {"w": masks[k]})[SHARED] for k in thetas}
    previous = {"w": torch.tensor([-1.0, -1.0, -1.0, -1.0]), "count": torch.tensor(3)}
    out = masked_average({k: (uploads[k], {"w": masks[k]}) for k in thetas}, p, previous)
    expected = [
        0.5 * 1 + 0.25 * 5 + 0.25 * 9,  # everyone shares
        (0.25 * 6 + 0.25 * 10) / 0.5,  # site 0 keeps it
        (0.5 * 3 + 0.25 * 11) / 0.75,  # site 1 keeps it
        -1.0,  # nobody shares: the previous value
    ]
    assert out["w"].tolist() == pytest.approx(expected)
    assert out["count"] == 3


# -- real sites -----------------------------------------------------------------------------------
def _drive(gen, transport):
    sent = []
    messages = next(gen)
    while True:
        sent.append(messages)
        replies = transport.exchange(messages)
        try:
            messages = gen.send(replies)
        except StopIteration as stop:
            return stop.value, sent, replies


def test_a_site_shares_its_style_as_amplitude_windows_only(make_site):
    site = make_site(ResFIMSite, ResFIMParams(bank_size=3, r=0.1))
    reply = site.handle(Message(STYLE, 1))
    bank = reply.arrays["style"]["amplitude"]
    assert bank.shape == (3, 1, 3, 3, 3)  # 16^3 patches: half-width floor(1.6) = 1
    assert (bank >= 0).all() and reply.num_examples == 3
    again = site.handle(Message(STYLE, 1)).arrays["style"]["amplitude"]
    assert torch.equal(bank, again), "seeded draws"


def test_rounds_exchange_styles_then_train_with_masks_and_aggregate_masked(make_site):
    params = ResFIMParams(rho=0.2, fisher_batches=2, mask_every=2)
    sites = [make_site(ResFIMSite, params, index=k) for k in range(3)]
    strategy = ResFIM(params, [s.runtime.info for s in sites])
    transport = InProcessTransport({s.runtime.index: s for s in sites})
    initial = sites[0].runtime.weights()
    outcome, sent, replies = _drive(strategy.round(1, initial), transport)
    assert [next(iter(m.values())).kind for m in sent] == [STYLE, TRAIN]
    for k, message in sent[1].items():  # each site gets the other sites' banks
        assert sorted(message.arrays[STYLES]) == sorted(str(j) for j in range(3) if j != k)
    assert strategy.alpha == pytest.approx([1 / 3] * 3)  # equal n_k
    masks = {}
    for k, reply in replies.items():
        assert strategy.check_reply(sent[1][k], reply, initial) is None
        masks[k] = {n: unpack_mask(b, initial[n].shape) for n, b in reply.arrays[MASK].items()}
        for name, mask in masks[k].items():
            assert mask.sum() == math.floor(0.2 * mask.numel() + 1e-9), name
        kept = sum(int(m.sum()) for m in masks[k].values())
        assert reply.metrics["kept_fraction"] == pytest.approx(kept / sum(t.numel() for t in initial.values()))
    assert any(not torch.equal(masks[0][n], masks[1][n]) for n in initial), "sites differ in what they keep"
    # the personal model: own entries where the mask is set, the aggregate elsewhere
    shared = outcome.global_state
    for k, site in enumerate(sites):
        own = site.runtime.store.load(KEPT)[0]
        personal = site.personal_weights(shared, 1)
        for name in initial:
            expected = torch.where(masks[k][name], own[f"own/{name}"], shared[name])
            assert torch.equal(personal[name], expected), name
    # round 2 is not a mask round: no styles, each site reuses its mask
    _, sent2, replies2 = _drive(strategy.round(2, shared), transport)
    assert len(sent2) == 1 and all(STYLES not in m.arrays for m in sent2[0].values())
    for k, reply in replies2.items():
        assert all(torch.equal(unpack_mask(b, initial[n].shape), masks[k][n]) for n, b in reply.arrays[MASK].items())
    assert all(STYLES in m.arrays for m in strategy.train_messages(3, shared).values()), "round 3 = 1 + R"


def test_local_training_starts_from_and_validation_scores_the_personal_model(make_site):
    site = make_site(ResFIMSite, ResFIMParams(fisher_batches=1))
    initial = site.runtime.weights()
    peer = make_site(ResFIMSite, ResFIMParams(), index=1).handle(Message(STYLE, 1)).arrays["style"]["amplitude"]
    site.handle(Message(TRAIN, 1, {"global": initial, STYLES: {"1": peer}}))
    shared = {n: t + 0.25 for n, t in initial.items()}
    personal = site.personal_weights(shared, 1)
    start = site.start_weights(Message(TRAIN, 2, {"global": shared}))
    assert all(torch.equal(start[n], personal[n]) for n in personal)
    assert any(torch.equal(personal[n], shared[n]) for n in personal), "tensors with nothing kept"
    assert any(not torch.equal(personal[n], shared[n]) for n in personal), "the kept entries"
    reply = site.handle(Message(EVALUATE, 1, {"model": shared}, {"split": "val", "model": PERSONAL}))
    expected = [c.dice for c in site.runtime.evaluate("val", personal)]
    assert [c["dice"] for c in reply.metrics["cases"]] == pytest.approx(expected)
    assert site.personal_weights(shared, 0) is shared, "before round 1 the shared model"


def test_norm_layers_are_kept_whole_and_without_styles_only_they_are(make_site):
    site = make_site(ResFIMSite, ResFIMParams(rho=0.1, fisher_batches=1), norm=AFFINE_IN)
    assert len(site.norm_names) == 12
    initial = site.runtime.weights()
    reply = site.handle(Message(TRAIN, 1, {"global": initial}))  # no styles (alone, or no bank yet)
    for name, bits in reply.arrays[MASK].items():
        mask = unpack_mask(bits, initial[name].shape)
        assert bool(mask.all()) if name in site.norm_names else not mask.any(), name
        assert reply.arrays[SHARED][name].numel() == (0 if name in site.norm_names else initial[name].numel())


def test_malformed_uploads_are_rejected():
    strategy = ResFIM(ResFIMParams(), [SiteInfo(0, "a", 1)])
    model = {"w": torch.zeros(10), "n": torch.tensor(2)}
    message = Message(TRAIN, 1, {"global": model})
    good = pack({"w": torch.arange(10.0)}, {"w": torch.arange(10) < 3})
    assert strategy.check_reply(message, Reply(good, {"train_loss": 0.1}), model) is None
    short = {SHARED: {"w": torch.zeros(6)}, MASK: good[MASK]}
    assert "its mask shares 7" in strategy.check_reply(message, Reply(short), model)
    assert "no masked model" in strategy.check_reply(message, Reply({"local": model}), model)
    extra = {SHARED: good[SHARED] | {"x": torch.zeros(1)}, MASK: good[MASK]}
    assert "'shared' does not name" in strategy.check_reply(message, Reply(extra), model)
    nan = {SHARED: {"w": torch.full((7,), float("nan"))}, MASK: good[MASK]}
    assert "NaN" in strategy.check_reply(message, Reply(nan), model)
    bank = Message(STYLE, 1)
    assert strategy.check_reply(bank, Reply({"style": {"amplitude": -torch.ones(1, 1, 1, 1, 1)}}), model)


def test_checkpoint_keeps_the_banks():
    strategy = ResFIM(ResFIMParams(), [SiteInfo(0, "a", 1), SiteInfo(1, "b", 1)])
    tensors, meta = strategy.state_dict()
    fresh = ResFIM(ResFIMParams(), strategy.sites)
    fresh.load_state_dict(tensors, meta)
    assert fresh.banks is None, "not asked yet"
    strategy.banks = {0: torch.rand(2, 1, 3, 3, 3), 1: torch.rand(2, 1, 3, 3, 3)}
    tensors, meta = strategy.state_dict()
    fresh.load_state_dict(tensors, meta)
    assert sorted(fresh.banks) == [0, 1] and all(torch.equal(fresh.banks[k], strategy.banks[k]) for k in (0, 1))
    messages = fresh.train_messages(1, {"w": torch.zeros(1)})
    assert torch.equal(messages[0].arrays[STYLES]["1"], strategy.banks[1]) and "0" not in messages[0].arrays[STYLES]


def test_an_upload_crosses_the_flower_records_unchanged():
    """Edge cases of the sparse upload: a wholly kept tensor sends 0 values; bits are uint8."""
    records = pytest.importorskip("engine.federation.records")
    state = {"w": torch.arange(10.0), "n": torch.ones(3)}
    mask = {"w": torch.arange(10) % 3 == 0, "n": torch.ones(3, dtype=torch.bool)}
    sent = Reply(pack(state, mask), {"train_loss": 0.5}, 4)
    back = records.content_to_reply(records.reply_to_content(sent))
    for group in (SHARED, MASK):
        for name, tensor in sent.arrays[group].items():
            got = back.arrays[group][name]
            assert got.dtype == tensor.dtype and torch.equal(got, tensor), (group, name)
    assert back.arrays[SHARED]["n"].numel() == 0
