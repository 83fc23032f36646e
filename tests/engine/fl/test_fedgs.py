"""FedGS (ALGORITHMS.md 2 and 14): difficulty and batch scale by hand, the accumulated
scaled update on a real tiny network (SGD: G = sum eta lr g), FedAvg with step weights
when eta = 1, the server's weights, and the site's reply."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.config import TrainConfig
from engine.errors import ConfigError
from engine.fl import STRATEGIES
from engine.fl.fedavg import FedAvg
from engine.fl.fedgs import (
    FedGS,
    FedGSParams,
    FedGSSite,
    ScaledUpdates,
    batch_scale,
    difficulty,
)
from engine.fl.protocol import TRAIN, Message, Reply
from engine.fl.site import SiteInfo
from engine.model.networks import build_network
from engine.training.trainer import LocalTrainer

CPU = torch.device("cpu")


def patches(*lesion_voxels: int, voxels: int = 150) -> torch.Tensor:
    """A (B, 1, voxels, 1, 1) label batch whose patch b holds ``lesion_voxels[b]`` lesion voxels."""
    label = torch.zeros(len(lesion_voxels), 1, voxels, 1, 1)
    for b, n in enumerate(lesion_voxels):
        label[b, 0, :n] = 1.0
    return label


# -- the formulas ----------------------------------------------------------------------------
def test_difficulty_test_vectors():
    assert float(difficulty(150, 100)) == pytest.approx(0.8287, abs=1e-4)
    assert float(difficulty(1000, 1000)) == pytest.approx(0.7616, abs=1e-4)
    assert float(difficulty(1000, 100)) == pytest.approx(0.978, abs=1e-3)
    assert float(difficulty(5000, 1000)) == pytest.approx(0.909, abs=1e-3)


def test_eta_is_one_without_a_small_lesion():
    assert batch_scale(patches(0, 0, 0, 0), tau=150, log_base=100) == 1.0  # no lesion at all
    assert batch_scale(patches(2, 3, 0, 150), tau=150, log_base=100) == 1.0  # a^-1 = 75, 50, -, 1 < 150


def test_eta_by_hand():
    # one small patch at a^-1 = 150 of B = 4: 1 + (2/4) 0.8287 = 1.414 (ALGORITHMS.md 2.2)
    assert batch_scale(patches(1, 0, 0, 30), tau=150, log_base=100) == pytest.approx(1.4143, abs=1e-4)
    # two small patches, a^-1 = 150 and 300, B = 2: 1 + (2/2)(delta(150) + delta(300))
    label = torch.zeros(2, 1, 300, 1, 1)
    label[0, 0, :2] = 1.0  # 300 / 2 = 150
    label[1, 0, :1] = 1.0  # 300
    expected = 1 + float(difficulty(150, 100) + difficulty(300, 100))
    assert batch_scale(label, tau=150, log_base=100) == pytest.approx(expected)


def test_eta_stays_in_one_to_three():
    rng = np.random.default_rng(0)
    for _ in range(200):
        b = int(rng.integers(1, 6))
        label = torch.from_numpy((rng.random((b, 1, 8, 8, 4)) < rng.random() * 0.02).astype(np.float32))
        eta = batch_scale(label, tau=float(rng.uniform(1.5, 300)), log_base=float(rng.uniform(1.5, 1000)))
        assert 1.0 <= eta < 3.0
    # every patch tiny (one voxel in 10^6, (log_1000 10^6)^2 = 4): eta = 1 + 2 tanh(4), close to 3
    assert batch_scale(patches(1, 1, voxels=10**6), tau=2, log_base=1000) == pytest.approx(1 + 2 * math.tanh(4.0))


def test_params_defaults_and_validation():
    assert FedGSParams() == FedGSParams(tau=0.0, log_base=0.0, weighting="steps")
    for bad, field in (({"tau": 0.5}, "tau"), ({"log_base": 1.0}, "log_base"), ({"weighting": "n"}, "weighting")):
        with pytest.raises(ConfigError, match=f"strategy.params.{field}"):
            FedGS.params_from(bad)
    assert "fedgs" in STRATEGIES


# -- the accumulated update on a real tiny network ------------------------------------------------
def tiny_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network("unet", {"channels": [4, 8], "strides": [2]})


def site_batches(seed: int, lesion_sides: list[int]):
    """Batches of 2 random 8^3 patches; patch b of step t has a cube lesion of side lesion_sides[t % len]."""

    def batch(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        side = lesion_sides[len(batch.drawn) % len(lesion_sides)]
        batch.drawn.append(side)
        label = torch.zeros(2, 1, 8, 8, 8)
        label[:, :, :side, :side, :side] = 1.0
        image = torch.from_numpy(rng.random((2, 1, 8, 8, 8)).astype(np.float32)) * 0.5 + 0.5 * label
        return image, label

    batch.drawn = []
    return batch


def sgd_run(seed: int, steps: int, sides: list[int], tau: float, log_base: float, record: list | None = None):
    """Train a tiny UNet with SGD (lr 0.1, no decay) and FedGS's hook; return (start, local, hook)."""
    net = tiny_net()
    start = {k: v.detach().clone() for k, v in net.state_dict().items()}
    hook = ScaledUpdates(tau, log_base)
    trainer = LocalTrainer(net, TrainConfig(device="cpu"), CPU)

    def recording(network, closure):
        loss = closure()
        if record is not None:
            record.append({n: p.grad.detach().clone() for n, p in network.named_parameters()})
        return loss

    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    rng = np.random.default_rng(seed)
    trainer.train(site_batches(seed, sides), steps, rng, optimizer=optimizer, gradient=recording, on_update=hook)
    local = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return start, local, hook


def test_with_sgd_the_scaled_update_is_the_sum_of_eta_lr_g():
    """ALGORITHMS.md 2.6: with SGD, G_k = sum_t eta_t lr g_t (here 2 of 3 steps are small)."""
    grads: list[dict[str, torch.Tensor]] = []
    # 8^3 = 512 voxels: side 1 -> a^-1 = 512 (small at tau 100), side 4 -> 8 (large)
    start, local, hook = sgd_run(0, 3, [1, 4, 1], tau=100, log_base=100, record=grads)
    eta_small = 1 + float(difficulty(512, 100)) * 2  # both patches of the batch are small
    assert hook.etas == pytest.approx([eta_small, 1.0, eta_small])
    scaled = hook.scaled_model(local)
    changed = 0
    for name, _ in tiny_net().named_parameters():
        g = sum(eta * 0.1 * grads[t][name] for t, eta in enumerate(hook.etas))
        assert torch.allclose(start[name] - scaled[name], g, atol=1e-6), name
        changed += int(not torch.allclose(scaled[name], local[name]))
    assert changed > 5  # the scaling did something (biases before instance norms get no gradient)


def test_with_eta_one_fedgs_is_fedavg_with_step_weights():
    """ALGORITHMS.md 14: eta = 1 at every step (no small lesion) and SGD without decay."""
    runs = {0: sgd_run(0, 3, [4], tau=100, log_base=100), 1: sgd_run(1, 5, [3, 4], tau=100, log_base=100)}
    assert all(e == 1.0 for _, _, hook in runs.values() for e in hook.etas)
    start = runs[0][0]
    sites = [SiteInfo(0, "a", 10), SiteInfo(1, "b", 10)]

    def respond_fedgs(messages):
        replies = {}
        for k in messages:
            _, local, hook = runs[k]
            metrics = {"train_loss": 0.1, "steps": len(hook.etas)}
            replies[k] = Reply(arrays={"local": hook.scaled_model(local)}, metrics=metrics, num_examples=10)
        return replies

    def respond_fedavg(messages):  # FedAvg whose weights are the step counts
        steps = {k: len(runs[k][2].etas) for k in messages}
        metrics = {"train_loss": 0.1}
        return {k: Reply(arrays={"local": runs[k][1]}, metrics=dict(metrics), num_examples=steps[k]) for k in messages}

    fedgs = drive(FedGS(FedGSParams(), sites).round(1, start), respond_fedgs)
    fedavg = drive(FedAvg(FedAvg.Params(), sites).round(1, start), respond_fedavg)
    assert fedgs.alpha == pytest.approx([3 / 8, 5 / 8]) == fedavg.alpha
    for name in start:
        assert torch.equal(fedgs.global_state[name], fedavg.global_state[name]), name
    # and it is w - sum_k s_k G_k with G_k = w - w_k
    for name, _ in tiny_net().named_parameters():
        g = [start[name] - runs[k][1][name] for k in (0, 1)]
        assert torch.allclose(fedgs.global_state[name], start[name] - (3 / 8) * g[0] - (5 / 8) * g[1], atol=1e-6)


def drive(gen, respond):
    messages = next(gen)
    while True:
        try:
            messages = gen.send(respond(messages))
        except StopIteration as stop:
            return stop.value


# -- the server ------------------------------------------------------------------------------------
def train_reply(w: float, steps: int, n: int) -> Reply:
    metrics = {"train_loss": 0.1, "steps": steps}
    return Reply(arrays={"local": {"w": torch.tensor([w])}}, metrics=metrics, num_examples=n)


def test_server_weights_are_step_counts_or_cases():
    sites = [SiteInfo(0, "a", 6), SiteInfo(1, "b", 2)]
    replies = {0: train_reply(1.0, 2, 6), 1: train_reply(5.0, 6, 2)}
    by_steps = drive(FedGS(FedGSParams(), sites).round(1, {"w": torch.tensor([0.0])}), lambda m: replies)
    assert by_steps.alpha == pytest.approx([0.25, 0.75])  # tau_k / sum tau: 2/8, 6/8
    assert by_steps.global_state["w"].item() == pytest.approx(0.25 * 1 + 0.75 * 5)
    cases = FedGS(FedGSParams(weighting="cases"), sites)
    by_cases = drive(cases.round(1, {"w": torch.tensor([0.0])}), lambda m: replies)
    assert by_cases.alpha == pytest.approx([0.75, 0.25])


def test_a_reply_without_step_count_is_rejected():
    strategy = FedGS(FedGSParams(), [SiteInfo(0, "a", 1)])
    model = {"w": torch.tensor([0.0])}
    message = Message(TRAIN, 1, arrays={"global": model})
    assert strategy.check_reply(message, train_reply(1.0, 3, 1), model) is None
    for steps in (None, 0, 2.5, True):
        reply = train_reply(1.0, 3, 1)
        reply.metrics["steps"] = steps
        assert "step count" in strategy.check_reply(message, reply, model)


# -- the site ------------------------------------------------------------------------------------
def test_site_sends_the_scaled_local_model_and_keeps_the_real_one(make_site):
    # MemoryData lesions: 6x6x5 = 180 voxels in a 16^3 patch, a^-1 = 22.8 -> small at tau 10
    site = make_site(FedGSSite, FedGSParams(tau=10, log_base=10))
    rt = site.runtime
    start = rt.weights()
    reply = site.handle(Message(TRAIN, 1, arrays={"global": start}))
    local = rt.weights()  # what training left in the network
    eta = 1 + 2 * float(difficulty(4096 / 180, 10))  # both patches of every batch are small
    steps = rt.config.train.local_steps
    assert reply.metrics["steps"] == steps and reply.metrics["small_steps"] == steps
    assert reply.metrics["mean_eta"] == pytest.approx(eta)
    assert rt.on_update is None
    params = dict(rt.network.named_parameters())
    moved = 0
    for name, tensor in reply.arrays["local"].items():
        if name in params:  # w - G = w + eta (w_k - w) when every step has the same eta
            assert torch.allclose(tensor, start[name] + eta * (local[name] - start[name]), atol=1e-6), name
            moved += int(not torch.equal(tensor, local[name]))
        else:
            assert torch.equal(tensor, local[name])
    assert moved > 0
    best = rt.store.load("best_local")
    assert best is not None and all(torch.equal(best[0][k], local[k]) for k in local)


def test_site_defaults_follow_the_eval_threshold(make_site):
    site = make_site(FedGSSite, FedGSParams())
    ratio = site.runtime.config.eval.small_lesion_ratio
    assert site.thresholds() == (ratio, ratio)
    # the tiny sites' lesions (a^-1 = 22.8) are large at tau = 400: eta = 1, the reply is the local model
    reply = site.handle(Message(TRAIN, 1, arrays={"global": site.runtime.weights()}))
    assert reply.metrics["mean_eta"] == 1.0 and reply.metrics["small_steps"] == 0
    local = site.runtime.weights()
    assert all(torch.equal(reply.arrays["local"][k], local[k]) for k in local)
    assert math.isclose(float(difficulty(ratio, ratio)), math.tanh(1.0))
