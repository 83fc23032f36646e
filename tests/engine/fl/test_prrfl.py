"""PRR-FL (ALGORITHMS.md 4 and 14): progressive Fourier aggregation on the server, deputy-
enhanced transfer at the site; on hand-made kernels and on real tiny sites."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from engine.errors import ConfigError, FederationError
from engine.fl import STRATEGIES, build_strategy
from engine.fl.base import PERSONAL
from engine.fl.prrfl import (
    DEPUTY,
    EXCHANGE,
    KEPT,
    RECOVER,
    SUBLIMATE,
    PRRFL,
    DeputyLoss,
    PRRFLParams,
    PRRFLSite,
    as_matrix,
    fourier_aggregate,
    from_matrix,
    kernel_names,
    low_frequency_window,
    next_stage,
    pfa_ratio,
    progressive_fourier_aggregation,
    voxel_kl,
)
from engine.fl.protocol import EVALUATE, TRAIN, Message, Reply
from engine.fl.site import SiteInfo
from engine.model.networks import build_network
from engine.simulation.transport import InProcessTransport

TINY = {"channels": [4, 8, 16], "strides": [2, 2]}


def test_defaults_are_the_codes_and_bad_values_are_named():
    assert PRRFLParams() == PRRFLParams(l0=0.7, l_end=0.95, alpha1=0.7, alpha2=0.9, epochs=5)
    assert STRATEGIES.get("prrfl") is PRRFL and PRRFL.personalised and PRRFL.site_logic is PRRFLSite
    assert build_strategy("prrfl", {"l0": 0.5}, [SiteInfo(0, "a", 1)]).params.l0 == 0.5
    for values, field in (
        ({"l0": 1.5}, "l0"),
        ({"l0": 0.8, "l_end": 0.75}, "l_end"),
        ({"alpha1": -0.1}, "alpha1"),
        ({"alpha1": 0.95}, "alpha2"),
        ({"epochs": 0}, "epochs"),
    ):
        with pytest.raises(ConfigError, match=f"strategy.params.{field}: must be"):
            build_strategy("prrfl", values, [SiteInfo(0, "a", 1)])


# -- ALGORITHMS.md 14 -----------------------------------------------------------------------------
def test_window_schedule_starts_at_l0_and_reaches_095_at_t_equals_T():
    assert pfa_ratio(0, 50) == pytest.approx(0.7)
    assert pfa_ratio(50, 50) == pytest.approx(0.95)
    ratios = [pfa_ratio(t, 50) for t in range(51)]
    assert all(a < b for a, b in zip(ratios, ratios[1:]))
    assert pfa_ratio(25, 50) == pytest.approx(0.825)


def _kernels(k: int, shape=(4, 3, 3, 3, 3), seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) for _ in range(k)]


def test_at_l_0_every_deputy_is_unchanged():
    weights = _kernels(3)
    for before, after in zip(weights, fourier_aggregate(weights, 0.0)):
        assert torch.allclose(after, before, atol=1e-6)


def test_at_l_1_with_identical_phases_the_result_is_the_average_amplitude_model():
    """Site k's kernel has the amplitude A_k and one common phase P (both of real
    matrices, so the kernel is real): at L = 1 every site gets ifft(mean A e^{iP})."""
    gen = torch.Generator().manual_seed(1)
    shape = (4, 3, 3, 3, 3)
    rows, cols = as_matrix(torch.zeros(shape)).shape
    phase = torch.fft.fft2(torch.randn(rows, cols, generator=gen, dtype=torch.float64)).angle()
    amplitudes = [torch.fft.fft2(torch.randn(rows, cols, generator=gen, dtype=torch.float64)).abs() for _ in range(3)]
    weights = [from_matrix(torch.fft.ifft2(torch.polar(a, phase)).real, shape).float() for a in amplitudes]
    expected = from_matrix(torch.fft.ifft2(torch.polar(sum(amplitudes) / 3, phase)).real, shape).float()
    for out in fourier_aggregate(weights, 1.0):
        assert torch.allclose(out, expected, atol=1e-5)
    # scaled copies share their phase: the average-amplitude model is the mean scale times the kernel
    w = weights[0]
    for out in fourier_aggregate([0.5 * w, 1.0 * w, 3.0 * w], 1.0):
        assert torch.allclose(out, 1.5 * w, atol=1e-5)


# -- the pieces of PFA ----------------------------------------------------------------------------
def test_kernels_become_matrices_as_in_4_5_and_back():
    w = torch.arange(2 * 3 * 4 * 5 * 6, dtype=torch.float32).reshape(2, 3, 4, 5, 6)  # (N, C, k1, k2, k3)
    m = as_matrix(w)
    assert m.shape == (3 * 4 * 5, 6 * 2)  # (C k1 k2) x (k3 N)
    assert m[0, 1] == w[1, 0, 0, 0, 0]  # the column index runs over N fastest
    assert torch.equal(from_matrix(m, w.shape), w)
    linear = torch.randn(5, 7)
    assert as_matrix(linear) is linear and torch.equal(from_matrix(as_matrix(linear), linear.shape), linear)
    conv2d = torch.randn(8, 3, 3, 3)
    assert as_matrix(conv2d).shape == (9, 24) and torch.equal(from_matrix(as_matrix(conv2d), conv2d.shape), conv2d)


def test_window_is_symmetric_empty_at_0_full_at_1():
    assert not low_frequency_window(8, 9, 0.0).any()
    assert low_frequency_window(8, 9, 1.0).all()
    window = low_frequency_window(10, 7, 0.7)  # |f| < 3.5 of 10 rows: f in -3..3; |f| < 2.45 of 7 cols: -2..2
    assert window.sum() == 7 * 5
    f_rows = torch.fft.fftfreq(10) * 10
    assert sorted(f_rows[window[:, 0]].round().int().tolist()) == [-3, -2, -1, 0, 1, 2, 3]
    flipped = torch.roll(torch.flip(window, dims=(0, 1)), shifts=(1, 1), dims=(0, 1))  # index f -> -f
    assert torch.equal(flipped, window)


def test_mean_amplitude_inside_the_window_own_amplitude_outside_own_phase_everywhere():
    weights = _kernels(3, seed=2)
    ratio = 0.7
    out = fourier_aggregate(weights, ratio)
    spectra = [torch.fft.fft2(as_matrix(w.double())) for w in weights]
    mean = torch.stack([s.abs() for s in spectra]).mean(dim=0)
    window = low_frequency_window(*mean.shape, ratio)
    assert 0 < window.sum() < window.numel()
    for w, o, s in zip(weights, out, spectra):
        got = torch.fft.fft2(as_matrix(o.double()))
        assert torch.allclose(got.abs()[window], mean[window], atol=1e-4)
        assert torch.allclose(got.abs()[~window], s.abs()[~window], atol=1e-4)
        keep = s.abs() > 1e-3  # the phase of a (near) zero coefficient is meaningless
        assert torch.allclose((got / got.abs())[keep], (s / s.abs())[keep], atol=1e-4)
        assert not torch.allclose(o, w, atol=1e-3), "the low frequencies moved towards the others'"


def test_deputies_kernels_by_fourier_norms_local_rest_averaged():
    gen = torch.Generator().manual_seed(3)
    deputies = {
        k: {
            "conv.weight": torch.randn(4, 2, 3, 3, 3, generator=gen),
            "conv.bias": torch.randn(4, generator=gen),
            "norm.weight": torch.randn(4, generator=gen),
            "norm.num_batches_tracked": torch.tensor(k),
        }
        for k in (0, 2, 5)
    }
    out = progressive_fourier_aggregation(deputies, 0.8, {"conv.weight"}, {"norm.weight"})
    assert sorted(out) == [0, 2, 5]
    mean_bias = torch.stack([d["conv.bias"] for d in deputies.values()]).mean(dim=0)
    expected = fourier_aggregate([deputies[k]["conv.weight"] for k in (0, 2, 5)], 0.8)
    for i, k in enumerate((0, 2, 5)):
        assert torch.allclose(out[k]["conv.bias"], mean_bias, atol=1e-6)
        assert torch.equal(out[k]["norm.weight"], deputies[k]["norm.weight"])
        assert out[k]["norm.num_batches_tracked"] == k
        assert torch.equal(out[k]["conv.weight"], expected[i])
    assert not torch.allclose(out[0]["conv.weight"], out[2]["conv.weight"]), "a different deputy per site"


def test_kernels_are_found_by_module_type():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.Conv3d(1, 2, 3)  # called "bn" but a convolution
            self.conv = nn.BatchNorm3d(2)  # called "conv" but a norm
            self.up = nn.ConvTranspose3d(2, 2, 2)
            self.head = nn.Linear(2, 1)

    assert kernel_names(Net()) == ["bn.weight", "up.weight", "head.weight"]
    names = kernel_names(build_network("unet", TINY))
    assert names and all(n.endswith(".weight") for n in names)
    assert len(names) == sum(isinstance(m, nn.modules.conv._ConvNd) for m in build_network("unet", TINY).modules())


# -- DET --------------------------------------------------------------------------------------------
def test_stage_rules_of_4_3():
    a1, a2 = 0.7, 0.9
    assert next_stage(0, 0.5, 0.9, a1, a2) == RECOVER  # first block of a round, whatever the Dice
    assert next_stage(RECOVER, 1.0, 0.6, a1, a2) == RECOVER
    assert next_stage(RECOVER, 1.0, 0.95, a1, a2) == EXCHANGE  # from Recover only to Exchange
    assert next_stage(EXCHANGE, 1.0, 0.8, a1, a2) == EXCHANGE
    assert next_stage(EXCHANGE, 1.0, 0.9, a1, a2) == SUBLIMATE
    assert next_stage(SUBLIMATE, 1.0, 0.95, a1, a2) == SUBLIMATE
    assert next_stage(SUBLIMATE, 1.0, 0.8, a1, a2) == EXCHANGE
    assert next_stage(SUBLIMATE, 1.0, 0.5, a1, a2) == RECOVER


def test_voxel_kl_is_the_teacher_to_student_kl_per_voxel():
    gen = torch.Generator().manual_seed(4)
    student = torch.randn(2, 2, 3, 3, 3, generator=gen, requires_grad=True)
    teacher = torch.randn(2, 2, 3, 3, 3, generator=gen, requires_grad=True)
    p, q = torch.softmax(teacher, 1), torch.softmax(student, 1)
    expected = (p * (p.log() - q.log())).sum(dim=1).mean()
    value = voxel_kl(student, teacher)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    value.backward()
    assert teacher.grad is None and student.grad is not None, "the teacher is detached"
    assert voxel_kl(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize(
    ("stage", "personal_learns", "deputy_learns"),
    [(RECOVER, False, True), (EXCHANGE, True, True), (SUBLIMATE, True, False)],
)
def test_which_model_distils_in_each_stage(stage, personal_learns, deputy_learns):
    """Who gets a KL term: with a zero segmentation loss only the distillation is left."""
    loss = DeputyLoss(lambda out, label: out.sum() * 0.0)
    loss.stage = stage
    gen = torch.Generator().manual_seed(5)
    personal = torch.randn(1, 2, 2, 2, 2, generator=gen, requires_grad=True)
    deputy = torch.randn(1, 2, 2, 2, 2, generator=gen, requires_grad=True)
    loss((personal, deputy), torch.zeros(1, 1, 2, 2, 2)).backward()
    assert (personal.grad.abs().sum() > 0) == personal_learns
    assert (deputy.grad.abs().sum() > 0) == deputy_learns


# -- real sites ----------------------------------------------------------------------------------
def _configured(sites, tiny_config, **params):
    strategy = PRRFL(PRRFLParams(**params), [s.runtime.info for s in sites])
    strategy.configure(tiny_config())
    return strategy


def _round(sites, strategy, rnd, shared):
    transport = InProcessTransport({s.runtime.index: s for s in sites})
    gen = strategy.round(rnd, shared)
    messages = next(gen)
    replies = transport.exchange(messages)
    try:
        gen.send(replies)
    except StopIteration as stop:
        return stop.value, messages, replies
    raise AssertionError("a PRR-FL round is one exchange")


def test_a_round_sends_each_site_its_own_deputy_and_keeps_personal_models_home(make_site, tiny_config):
    sites = [make_site(PRRFLSite, PRRFLParams(), index=k) for k in range(3)]
    initial = sites[0].runtime.weights()
    strategy = _configured(sites, tiny_config)
    outcome, sent, replies = _round(sites, strategy, 1, initial)
    for message in sent.values():  # round 1: the common initial model as every deputy
        assert set(message.arrays) == {DEPUTY}
        assert all(torch.equal(message.arrays[DEPUTY][n], initial[n]) for n in initial)
    assert outcome.alpha == pytest.approx([1 / 3] * 3)
    kernels = strategy.kernels
    deputies = strategy.deputies
    assert sorted(deputies) == [0, 1, 2]
    for name in initial:
        if name in kernels:
            assert not torch.equal(deputies[0][name], deputies[1][name]), name
        else:  # biases and PReLU slopes: the 1/K average in every deputy
            assert all(torch.equal(deputies[0][name], deputies[k][name]) for k in (1, 2)), name
    # the shared model is the 1/K average of the uploaded deputies; personal models stay home
    for name, value in outcome.global_state.items():
        expected = sum(r.arrays["local"][name].double() for r in replies.values()) / 3
        assert torch.allclose(value.double(), expected, atol=1e-6), name
    personal = [s.runtime.store.load(KEPT) for s in sites]
    assert all(p is not None and p[2] == 1 for p in personal)
    assert any(not torch.equal(personal[0][0][n], outcome.global_state[n]) for n in initial)


def test_round_two_sends_the_pfa_deputies(make_site, tiny_config):
    sites = [make_site(PRRFLSite, PRRFLParams(), index=k) for k in range(2)]
    strategy = _configured(sites, tiny_config)
    outcome, _, _ = _round(sites, strategy, 1, sites[0].runtime.weights())
    deputies = {k: {n: t.clone() for n, t in d.items()} for k, d in strategy.deputies.items()}
    messages = strategy.train_messages(2, outcome.global_state)
    for k, message in messages.items():
        assert all(torch.equal(message.arrays[DEPUTY][n], deputies[k][n]) for n in deputies[k])
    # a checkpoint holds the deputies: a resumed server sends the same ones
    tensors, meta = strategy.state_dict()
    fresh = _configured(sites, tiny_config)
    fresh.load_state_dict(tensors, meta)
    for k, message in fresh.train_messages(2, outcome.global_state).items():
        assert all(torch.equal(message.arrays[DEPUTY][n], deputies[k][n]) for n in deputies[k])


def test_the_window_follows_the_schedule_over_the_run(make_site, tiny_config, monkeypatch):
    sites = [make_site(PRRFLSite, PRRFLParams(epochs=1), index=k) for k in range(2)]
    strategy = _configured(sites, tiny_config)  # rounds = 3
    used: list[float] = []
    import engine.fl.prrfl as prrfl

    real = prrfl.progressive_fourier_aggregation
    def spy(deputies, ratio, *rest):
        used.append(ratio)
        return real(deputies, ratio, *rest)

    monkeypatch.setattr(prrfl, "progressive_fourier_aggregation", spy)
    shared = sites[0].runtime.weights()
    for rnd in (1, 2, 3):
        shared = _round(sites, strategy, rnd, shared)[0].global_state
    assert used == pytest.approx([0.7, 0.7 + 0.25 / 3, 0.7 + 0.5 / 3])


def test_site_trains_both_models_in_blocks_and_uploads_the_deputy(make_site, tiny_config):
    site = make_site(PRRFLSite, PRRFLParams(epochs=5))
    initial = site.runtime.weights()
    reply = site.handle(Message(TRAIN, 1, {DEPUTY: initial}))
    steps = site.runtime.config.train.local_steps
    assert reply.metrics["det_stages"][0] == RECOVER and len(reply.metrics["det_stages"]) == min(5, steps)
    assert set(reply.arrays) == {"local"} and reply.num_examples == 3
    personal = site.runtime.store.load(KEPT)[0]
    deputy = reply.arrays["local"]
    assert any(not torch.equal(deputy[n], initial[n]) for n in initial), "the deputy was trained"
    assert any(not torch.equal(personal[n], initial[n]) for n in initial), "the personal model was trained"
    for key in ("train_loss", "deputy_train_loss"):
        assert reply.metrics[key] > 0
    # round 2: a deputy unlike the personal model (as PFA makes it); each model trains from its own start
    gen = torch.Generator().manual_seed(6)
    received = {n: t + 0.05 * torch.randn(t.shape, generator=gen) for n, t in deputy.items()}
    reply = site.handle(Message(TRAIN, 2, {DEPUTY: received}))
    personal2, deputy2 = site.runtime.store.load(KEPT)[0], reply.arrays["local"]

    def gap(a, b):
        return max(float((a[n] - b[n]).abs().max()) for n in a)

    assert gap(deputy2, received) < 0.02 < gap(deputy2, personal)  # the deputy moved little from what it got
    assert gap(personal2, personal) < 0.02 < gap(personal2, received)  # the personal model from its own
    assert gap(personal2, deputy2) > 0.02, "two different models"
    assert reply.metrics["deputy_train_loss"] != pytest.approx(reply.metrics["train_loss"], rel=1e-6)
    # one block: always mutual learning
    one = make_site(PRRFLSite, PRRFLParams(epochs=1), index=1)
    assert one.handle(Message(TRAIN, 1, {DEPUTY: initial})).metrics["det_stages"] == [EXCHANGE]


def test_personal_model_continues_from_itself_not_from_the_deputy(make_site):
    site = make_site(PRRFLSite, PRRFLParams())
    initial = site.runtime.weights()
    site.handle(Message(TRAIN, 1, {DEPUTY: initial}))
    p1 = site.runtime.store.load(KEPT)[0]
    assert site.personal_weights({n: t + 1.0 for n, t in initial.items()}, 1) is not None
    assert all(torch.equal(site.personal_weights(initial, 1)[n], p1[n]) for n in p1)
    assert site.personal_weights(initial, 0) is initial  # before round 1: the first deputy
    # validation scores the personal model, whatever shared model comes with the message
    reply = site.handle(Message(EVALUATE, 1, {"model": initial}, {"split": "val", "model": PERSONAL}))
    expected = [c.dice for c in site.runtime.evaluate("val", p1)]
    assert [c["dice"] for c in reply.metrics["cases"]] == pytest.approx(expected)


def test_missing_deputy_and_unconfigured_server_are_clear_errors(make_site):
    site = make_site(PRRFLSite, PRRFLParams())
    with pytest.raises(FederationError, match="without a deputy"):
        site.handle(Message(TRAIN, 1, {"global": site.runtime.weights()}))
    strategy = PRRFL(PRRFLParams(), [SiteInfo(0, "a", 1)])
    with pytest.raises(FederationError, match="configure"):
        next(strategy.round(1, {"w": torch.zeros(1)}))


def test_a_site_that_does_not_reply_keeps_its_previous_deputy(tiny_config):
    strategy = PRRFL(PRRFLParams(), [SiteInfo(k, f"s{k}", 1) for k in range(3)])
    strategy.configure(tiny_config())
    state = build_network("unet", TINY).state_dict()
    gen = strategy.round(1, state)
    next(gen)
    replies = {k: Reply({"local": {n: t + k for n, t in state.items()}}, {"train_loss": 0.1}, 1) for k in (0, 2)}
    with pytest.raises(StopIteration) as stop:
        gen.send(replies)
    assert stop.value.value.alpha == pytest.approx([0.5, 0.0, 0.5])
    assert sorted(strategy.deputies) == [0, 2]
    assert all(torch.equal(strategy.train_messages(2, state)[1].arrays[DEPUTY][n], state[n]) for n in state)
