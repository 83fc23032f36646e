"""FedRDN (ALGORITHMS.md 10 and 14): statistics by hand, the once-only exchange, random
draws in training, the site's own statistics at test time, checkpoint and model card."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from engine.errors import ConfigError, FederationError
from engine.fl import STRATEGIES
from engine.fl.fedrdn import (
    STATS,
    FedRDN,
    FedRDNParams,
    FedRDNSite,
    RandomNormalisation,
)
from engine.fl.protocol import EVALUATE, TRAIN, Message, Reply
from engine.fl.site import SiteInfo
from engine.model.checkpoint import ModelCard
from engine.model.inference import input_transform_for
from engine.training.intensity import EPS, intensity_stats, normalise

MODEL = {"w": torch.tensor([1.0, 1.0])}


def sites(*n: int) -> list[SiteInfo]:
    return [SiteInfo(i, f"site{i}", k) for i, k in enumerate(n)]


def stats_reply(mean: float, std: float) -> Reply:
    f64 = torch.float64
    return Reply(arrays={"stats": {"mean": torch.tensor([mean], dtype=f64), "std": torch.tensor([std], dtype=f64)}})


def responder(stats: dict[int, tuple[float, float]], locals_: dict[int, dict], skip_stats: set[int] = frozenset()):
    def respond(messages):
        kind = next(iter(messages.values())).kind
        if kind == STATS:
            return {k: stats_reply(*stats[k]) for k in messages if k not in skip_stats}
        assert kind == TRAIN
        metrics = {"train_loss": 0.1, "local_val_dice": 0.5}
        return {k: Reply(arrays={"local": locals_[k]}, metrics=dict(metrics), num_examples=k + 1) for k in messages}

    return respond


# -- statistics and normalisation -----------------------------------------------------------
def test_body_statistics_leave_out_the_air_floor():
    # image 1: body voxels 0.2, 0.4 (+ two air voxels at 0); image 2: body 0.6 (+ one air voxel)
    a = torch.tensor([0.0, 0.2, 0.0, 0.4]).reshape(1, 1, 1, 4)
    b = torch.tensor([0.6, 0.0]).reshape(1, 1, 1, 2)
    mean, std = intensity_stats([a, b], body=True)
    # pooled body voxels (0.2, 0.4, 0.6): mean 0.4, population var (0.04 + 0 + 0.04) / 3
    assert mean.dtype == torch.float64 and mean.shape == (1,)
    assert mean.item() == pytest.approx(0.4)
    assert std.item() == pytest.approx((0.08 / 3) ** 0.5)
    # every voxel: (0.2 + 0.4 + 0.6) / 6 = 0.2; E[x^2] = 0.56 / 6
    mean_all, std_all = intensity_stats([a, b], body=False)
    assert mean_all.item() == pytest.approx(0.2)
    assert std_all.item() == pytest.approx((0.56 / 6 - 0.04) ** 0.5)


def test_statistics_of_an_image_without_body_fall_back_to_all_voxels():
    mean, std = intensity_stats([torch.zeros(1, 2, 2, 2)])
    assert mean.item() == 0.0 and std.item() == 0.0


def test_normalise_per_channel_and_per_image():
    image = torch.full((2, 1, 2, 2, 2), 3.0)
    out = normalise(image, torch.tensor([1.0]), torch.tensor([2.0]))
    assert torch.allclose(out, torch.full_like(image, 2.0 / (2.0 + EPS)))
    per_image = normalise(image, torch.tensor([[1.0], [3.0]]), torch.tensor([[1.0], [1.0]]))
    assert torch.allclose(per_image[0], torch.full((1, 2, 2, 2), 2.0), atol=1e-6)
    assert torch.allclose(per_image[1], torch.zeros(1, 2, 2, 2))


def test_training_draws_are_roughly_uniform_over_sites():
    # site j's statistics (mu = j, sigma = 1) turn a zero image into -j / (1 + eps): the draw is readable
    mean = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    std = torch.ones(3, 1, dtype=torch.float64)
    transform = RandomNormalisation(mean, std, np.random.default_rng(0), per_image=True)
    drawn = []
    for _ in range(750):
        out = transform(torch.zeros(4, 1, 2, 2, 2))
        drawn += [round(-float(out[b].mean())) for b in range(4)]
    assert drawn == transform.draws
    counts = Counter(drawn)
    assert set(counts) == {0, 1, 2}
    assert all(abs(c - 1000) < 100 for c in counts.values()), counts  # 3000 draws, sd ~26
    # per batch: one site for the whole batch
    batch = RandomNormalisation(mean, std, np.random.default_rng(1), per_image=False)
    for _ in range(20):
        out = batch(torch.zeros(4, 1, 2, 2, 2))
        assert len({round(float(out[b].mean()), 6) for b in range(4)}) == 1


# -- the server ----------------------------------------------------------------------------
def test_params_defaults_and_validation():
    assert FedRDNParams() == FedRDNParams(sample="image", statistics="body")
    with pytest.raises(ConfigError, match="strategy.params.sample"):
        FedRDNParams(sample="voxel")
    with pytest.raises(ConfigError, match="strategy.params.statistics"):
        FedRDN.params_from({"statistics": "foreground"})
    assert "fedrdn" in STRATEGIES


def test_statistics_are_asked_once_then_sent_with_every_train_message(drive):
    strategy = FedRDN(FedRDNParams(), sites(2, 6))
    stats = {0: (0.3, 0.1), 1: (0.5, 0.2)}
    locals_ = {0: {"w": torch.tensor([1.0, 2.0])}, 1: {"w": torch.tensor([3.0, 4.0])}}
    outcome, sent = drive(strategy.round(1, MODEL), responder(stats, locals_))
    assert [next(iter(b.values())).kind for b in sent] == [STATS, TRAIN]
    assert all(m.arrays == {} for m in sent[0].values())  # the query carries nothing
    for message in sent[1].values():
        assert torch.equal(message.arrays["stats"]["mean"], torch.tensor([[0.3], [0.5]], dtype=torch.float64))
        assert torch.equal(message.arrays["stats"]["std"], torch.tensor([[0.1], [0.2]], dtype=torch.float64))
    # the server is FedAvg: replies' n_k = 1, 2 -> alpha (1/3, 2/3)
    assert outcome.alpha == pytest.approx([1 / 3, 2 / 3])
    assert torch.allclose(outcome.global_state["w"], torch.tensor([7 / 3, 10 / 3]))
    _, sent2 = drive(strategy.round(2, MODEL), responder(stats, locals_))
    assert [next(iter(b.values())).kind for b in sent2] == [TRAIN]


def test_a_site_that_missed_the_exchange_is_asked_again_and_only_it(drive):
    strategy = FedRDN(FedRDNParams(), sites(1, 1, 1))
    stats = {0: (0.1, 0.1), 1: (0.2, 0.1), 2: (0.3, 0.1)}
    locals_ = {k: {"w": torch.tensor([float(k), 0.0])} for k in range(3)}
    _, sent = drive(strategy.round(1, MODEL), responder(stats, locals_, skip_stats={1}))
    assert sent[1][1].arrays["stats"]["mean"].flatten().tolist() == pytest.approx([0.1, 0.3])
    _, sent2 = drive(strategy.round(2, MODEL), responder(stats, locals_))
    assert list(sent2[0]) == [1] and sent2[0][1].kind == STATS
    assert sent2[1][0].arrays["stats"]["mean"].flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])


def test_no_statistics_at_all_stops_the_round():
    strategy = FedRDN(FedRDNParams(), sites(1, 1))
    gen = strategy.round(1, MODEL)
    next(gen)
    with pytest.raises(FederationError, match="intensity statistics"):
        gen.send({})


def test_bad_statistics_replies_are_rejected():
    strategy = FedRDN(FedRDNParams(), sites(1, 1))
    query = Message(STATS, 1)
    assert strategy.check_reply(query, stats_reply(0.3, 0.1), MODEL) is None
    assert "no intensity statistics" in strategy.check_reply(query, Reply(), MODEL)
    assert "> 0" in strategy.check_reply(query, stats_reply(0.3, 0.0), MODEL)
    assert "NaN" in strategy.check_reply(query, stats_reply(float("nan"), 0.1), MODEL)
    strategy.stats[0] = ([0.3], [0.1])
    two = Reply(arrays={"stats": {"mean": torch.zeros(2).double(), "std": torch.ones(2).double()}})
    assert "do not fit" in strategy.check_reply(query, two, MODEL)


def test_statistics_survive_a_checkpoint_and_go_into_the_model_card(drive):
    strategy = FedRDN(FedRDNParams(), sites(1, 1))
    drive(strategy.round(1, MODEL), responder({0: (0.25, 0.125), 1: (0.5, 0.0625)}, {k: dict(MODEL) for k in range(2)}))
    tensors, meta = strategy.state_dict()
    again = FedRDN(FedRDNParams(), sites(1, 1))
    again.load_state_dict(tensors, meta)
    assert again.stats == {0: ([0.25], [0.125]), 1: ([0.5], [0.0625])}
    _, sent = drive(again.round(2, MODEL), responder({}, {k: dict(MODEL) for k in range(2)}))
    assert [next(iter(b.values())).kind for b in sent] == [TRAIN]  # a resumed run does not ask again
    card = again.model_card_fields()["input_transform"]
    assert card["kind"] == "fedrdn" and card["statistics"] == "body"
    assert card["site_stats"] == {"site0": {"mean": [0.25], "std": [0.125]}, "site1": {"mean": [0.5], "std": [0.0625]}}


def test_inference_normalises_a_ct_with_its_own_body_statistics():
    spec = {"kind": "fedrdn", "statistics": "body"}
    card = ModelCard("unet", {}, [1.0] * 3, [-160.0, 240.0], [8, 8, 8], 1, input_transform=spec)
    image = torch.zeros(1, 4, 4, 4)
    image[0, 1:3, 1:3, 1:3] = torch.linspace(0.2, 0.9, 8).reshape(2, 2, 2)
    transform = input_transform_for(card, image)
    body = image[image > 0].double()
    out = transform(image.unsqueeze(0))
    expected = (image.double() - body.mean()) / (body.std(unbiased=False) + EPS)
    assert torch.allclose(out.double(), expected.unsqueeze(0), atol=1e-6)
    assert input_transform_for(ModelCard("unet", {}, [1.0] * 3, [0.0, 1.0], [8, 8, 8], 1), image) is None


# -- the site ------------------------------------------------------------------------------
def capture_inputs(site) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    site.runtime.network.register_forward_hook(lambda module, args, out: seen.append(args[0].detach().clone()))
    return seen


def test_site_answers_its_own_statistics(make_site):
    site = make_site(FedRDNSite, FedRDNParams(), index=1)
    reply = site.handle(Message(STATS, 1))
    own = intensity_stats([c.image for c in site.runtime.data.splits["train"]])
    assert torch.equal(reply.arrays["stats"]["mean"], own[0]) and torch.equal(reply.arrays["stats"]["std"], own[1])
    assert reply.num_examples == 3
    assert reply.arrays["stats"]["std"].item() > 0


def test_training_uses_the_sent_statistics_and_testing_only_the_sites_own(make_site):
    site = make_site(FedRDNSite, FedRDNParams(), index=0)
    rt = site.runtime
    own_mean, own_std = site.own_stats()
    # constant images make every normalised voxel equal: which statistics were used is readable
    for split in rt.data.splits.values():
        for case in split:
            case.image.fill_(0.5)
    own_value = (0.5 - own_mean.item()) / (own_std.item() + EPS)
    others = torch.tensor([[10.0], [20.0], [30.0]], dtype=torch.float64)  # nothing like this site's
    stats = {"mean": others, "std": torch.ones(3, 1, dtype=torch.float64)}
    seen = capture_inputs(site)
    weights = rt.weights()
    reply = site.handle(Message(TRAIN, 1, arrays={"global": weights, "stats": stats}))
    steps = rt.config.train.local_steps
    train_inputs, val_inputs = seen[:steps], seen[steps:]
    assert len(train_inputs) == steps and val_inputs
    expected = {round(0.5 - m, 4) for m in (10.0, 20.0, 30.0)}
    for batch in train_inputs:
        for image in batch:
            values = torch.unique(image.round(decimals=4))
            assert len(values) == 1 and round(values.item(), 4) in expected
    for window in val_inputs:  # the local validation inside on_train: own statistics
        assert torch.allclose(window, torch.full_like(window, own_value), atol=1e-5)
    assert rt.train_input is None  # training's transform does not outlive the message
    assert reply.metrics["local_val_dice"] is not None
    seen.clear()
    site.handle(Message(EVALUATE, 1, arrays={"model": weights, "stats": stats}, config={"split": "test"}))
    assert seen and all(torch.allclose(w, torch.full_like(w, own_value), atol=1e-5) for w in seen)


def test_train_message_without_statistics_is_refused(make_site):
    site = make_site(FedRDNSite, FedRDNParams())
    with pytest.raises(FederationError, match="no intensity statistics"):
        site.handle(Message(TRAIN, 1, arrays={"global": site.runtime.weights()}))
