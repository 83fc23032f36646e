"""HarmoFL (ALGORITHMS.md 3 and 14): the amplitude is shared once and averaged 1/K, the
reference goes with every train and evaluate message, sites normalise every network
input with it and take perturbed steps (two passes each)."""

from __future__ import annotations

import pytest
import torch

from engine.errors import ConfigError, FederationError
from engine.fl import STRATEGIES
from engine.fl.harmofl import (
    AMPLITUDE,
    AMPLITUDE_PHASE,
    HarmoFL,
    HarmoFLParams,
    HarmoFLSite,
)
from engine.fl.protocol import EVALUATE, TRAIN, Message, Reply
from engine.fl.site import SiteInfo
from engine.model.checkpoint import ModelCard
from engine.model.inference import input_transform_for
from engine.training.fourier import RunningAmplitude

MODEL = {"w": torch.tensor([0.0, 0.0])}
SPATIAL = (-3, -2, -1)


def sites(*n: int) -> list[SiteInfo]:
    return [SiteInfo(i, f"site{i}", k) for i, k in enumerate(n)]


def amplitude(value: float) -> torch.Tensor:
    return torch.full((1, 1, 1, 1), value)


def responder(amplitudes: dict[int, float], locals_: dict[int, dict]):
    def respond(messages):
        kind = next(iter(messages.values())).kind
        if kind == AMPLITUDE:
            answering = [k for k in messages if k in amplitudes]
            return {k: Reply(arrays={"amplitude": {"amplitude": amplitude(amplitudes[k])}}) for k in answering}
        assert kind == TRAIN
        metrics = {"train_loss": 0.1, "local_val_dice": 0.5}
        return {k: Reply(arrays={"local": locals_[k]}, metrics=dict(metrics), num_examples=10 + k) for k in messages}

    return respond


LOCALS = {0: {"w": torch.tensor([3.0, 0.0])}, 1: {"w": torch.tensor([0.0, 3.0])}, 2: {"w": torch.tensor([3.0, 3.0])}}


def test_params_defaults_and_validation():
    assert HarmoFLParams() == HarmoFLParams(alpha=0.05, r=0.0, momentum=0.1)
    for bad, field in (({"alpha": -0.1}, "alpha"), ({"r": 0.6}, "r"), ({"momentum": 0.0}, "momentum")):
        with pytest.raises(ConfigError, match=f"strategy.params.{field}"):
            HarmoFL.params_from(bad)
    assert "harmofl" in STRATEGIES


def test_amplitude_is_shared_once_and_averaged_uniformly(drive):
    strategy = HarmoFL(HarmoFLParams(), sites(1, 2, 9))
    outcome, sent = drive(strategy.round(1, MODEL), responder({0: 3.0, 1: 6.0, 2: 30.0}, LOCALS))
    assert [next(iter(b.values())).kind for b in sent] == [AMPLITUDE, TRAIN]
    assert all(m.arrays == {} for m in sent[0].values())
    for message in sent[1].values():  # (3 + 6 + 30) / 3 = 13, whatever n_k is
        assert torch.allclose(message.arrays["amplitude"]["reference"], amplitude(13.0))
    # the models are averaged 1/K too: w = ((3+0+3)/3, (0+3+3)/3)
    assert outcome.alpha == pytest.approx([1 / 3] * 3)
    assert torch.allclose(outcome.global_state["w"], torch.tensor([2.0, 2.0]))
    _, sent2 = drive(strategy.round(2, MODEL), responder({0: 100.0, 1: 100.0, 2: 100.0}, LOCALS))
    assert [next(iter(b.values())).kind for b in sent2] == [TRAIN]  # fixed after round 1
    assert torch.allclose(sent2[0][0].arrays["amplitude"]["reference"], amplitude(13.0))
    evaluate = strategy.evaluate_messages(2, MODEL, "val")
    assert set(evaluate) == {0, 1, 2}
    assert all(torch.allclose(m.arrays["amplitude"]["reference"], amplitude(13.0)) for m in evaluate.values())
    assert all(m.config["split"] == "val" and m.arrays["model"] is MODEL for m in evaluate.values())


def test_a_silent_site_is_left_out_of_the_average(drive):
    strategy = HarmoFL(HarmoFLParams(), sites(1, 1, 1))
    _, sent = drive(strategy.round(1, MODEL), responder({0: 3.0, 2: 9.0}, LOCALS))
    assert torch.allclose(sent[1][1].arrays["amplitude"]["reference"], amplitude(6.0))


def test_no_amplitude_at_all_stops_the_round():
    gen = HarmoFL(HarmoFLParams(), sites(1, 1)).round(1, MODEL)
    next(gen)
    with pytest.raises(FederationError, match="amplitude"):
        gen.send({})


def test_bad_amplitude_replies_are_rejected():
    strategy = HarmoFL(HarmoFLParams(), sites(1))
    query = Message(AMPLITUDE, 1)
    assert strategy.check_reply(query, Reply(arrays={"amplitude": {"amplitude": amplitude(2.0)}}), MODEL) is None
    assert strategy.check_reply(query, Reply(), MODEL) == "no amplitude"
    assert ">= 0" in strategy.check_reply(query, Reply(arrays={"amplitude": {"amplitude": amplitude(-1.0)}}), MODEL)
    assert ">= 0" in strategy.check_reply(query, Reply(arrays={"amplitude": {"amplitude": torch.ones(3)}}), MODEL)


def test_reference_survives_a_checkpoint_and_goes_into_the_model_card(drive):
    strategy = HarmoFL(HarmoFLParams(r=0.0), sites(1, 1))
    assert strategy.model_card_fields() == {}
    drive(strategy.round(1, MODEL), responder({0: 2.0, 1: 4.0}, LOCALS))
    tensors, meta = strategy.state_dict()
    again = HarmoFL(HarmoFLParams(), sites(1, 1))
    again.load_state_dict(tensors, meta)
    _, sent = drive(again.round(2, MODEL), responder({}, LOCALS))
    assert [next(iter(b.values())).kind for b in sent] == [TRAIN]
    assert torch.allclose(sent[0][0].arrays["amplitude"]["reference"], amplitude(3.0))
    card = again.model_card_fields()["input_transform"]
    assert card == {"kind": "harmofl", "r": 0.0, "reference": [[[[3.0]]]]}
    # inference: a window's mean becomes reference / voxels
    model_card = ModelCard("unet", {}, [1.0] * 3, [0.0, 1.0], [4, 4, 2], 1, input_transform=card)
    transform = input_transform_for(model_card, torch.zeros(1, 4, 4, 2))
    out = transform(torch.rand(1, 1, 4, 4, 2) + 1.0)
    assert out.mean().item() == pytest.approx(3.0 / 32, abs=1e-6)


# -- the site ---------------------------------------------------------------------------------
def test_site_answers_the_running_amplitude_of_its_training_patches(make_site):
    site = make_site(HarmoFLSite, HarmoFLParams(r=0.1), index=2)
    rt = site.runtime
    reply = site.handle(Message(AMPLITUDE, 1))
    got = reply.arrays["amplitude"]["amplitude"]
    assert got.shape == (1, 3, 3, 3)  # 16^3 patches, b = floor(1.6) = 1
    # by hand: the same seeded draws, first batch as is, then momentum 0.1
    running = RunningAmplitude(0.1, 0.1)
    rng = rt.rng(1, AMPLITUDE_PHASE)
    for _ in range(rt.config.train.local_steps):
        running.update(rt.data.batch(rng)[0])
    assert torch.allclose(got, running.value)
    assert reply.metrics["batches"] == rt.config.train.local_steps
    assert torch.all(got >= 0)


def test_site_normalises_every_input_and_takes_two_passes_per_step(make_site):
    site = make_site(HarmoFLSite, HarmoFLParams())
    rt = site.runtime
    seen: list[torch.Tensor] = []
    rt.network.register_forward_hook(lambda module, args, out: seen.append(args[0].detach().clone()))
    voxels = 16**3
    reference = amplitude(0.25 * voxels)  # every input's mean becomes 0.25
    weights = rt.weights()
    reply = site.handle(Message(TRAIN, 1, arrays={"global": weights, "amplitude": {"reference": reference}}))
    steps = rt.config.train.local_steps
    train_inputs, val_inputs = seen[: 2 * steps], seen[2 * steps :]
    assert len(val_inputs) == len(rt.data.splits["val"])  # 16^3 cases: one window each
    for x in train_inputs + val_inputs:
        assert torch.allclose(x.mean(dim=SPATIAL), torch.full(x.shape[:2], 0.25), atol=1e-5)
    # SAM: each step's batch goes through the network twice (at w and at w + delta)
    for t in range(steps):
        assert torch.equal(train_inputs[2 * t], train_inputs[2 * t + 1])
    assert reply.metrics["local_val_dice"] is not None
    seen.clear()
    arrays = {"model": weights, "amplitude": {"reference": 2 * reference}}
    site.handle(Message(EVALUATE, 1, arrays=arrays, config={"split": "test"}))
    assert seen and all(torch.allclose(x.mean(dim=SPATIAL), torch.full(x.shape[:2], 0.5), atol=1e-5) for x in seen)


def test_alpha_zero_is_one_pass_per_step(make_site):
    site = make_site(HarmoFLSite, HarmoFLParams(alpha=0.0))
    assert site.runtime.gradient is None
    calls = []
    site.runtime.network.register_forward_hook(lambda *args: calls.append(1))
    site.runtime.train(1)
    assert len(calls) == site.runtime.config.train.local_steps


def test_messages_without_a_reference_are_refused(make_site):
    site = make_site(HarmoFLSite, HarmoFLParams())
    with pytest.raises(FederationError, match="reference amplitude"):
        site.handle(Message(TRAIN, 1, arrays={"global": site.runtime.weights()}))
    with pytest.raises(FederationError, match="reference amplitude"):
        site.handle(Message(EVALUATE, 1, arrays={"model": site.runtime.weights()}, config={"split": "val"}))
