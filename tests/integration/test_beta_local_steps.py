"""Auto-FedAvg's ``beta_local_steps`` at a real site (phantom data, the tiny U-Net): a
message of m steps answers the mean gradient along the site's own SGD path on beta, which
is what m one-step messages would give at the same beta (same patches, same draws)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from engine.fl.auto_fedavg import BETA_FLOOR, SETUP, STEP, AutoFedAvgParams, AutoFedAvgSite
from engine.fl.protocol import Message
from engine.fl.site import SiteRuntime
from engine.model.networks import build_network

LR = 0.5  # large enough that the second step sees a different beta


def site_with_models(loaded_phantoms: list[Any], tiny: Any, tmp_path: Path, params: AutoFedAvgParams) -> AutoFedAvgSite:
    config = tiny("auto-fedavg", {"beta_lr": LR})
    runtime = SiteRuntime(0, loaded_phantoms[0], config, tmp_path / "site-0", torch.device("cpu"))
    states = []
    for seed in range(3):  # three different models: the merge depends on beta
        torch.manual_seed(seed)
        states.append(build_network(config.model.network, config.model.args).state_dict())
    site = AutoFedAvgSite(params, runtime)
    site.after_train(Message("train", 1), states[0])
    site.on_query_learn_beta_setup(Message(SETUP, 1, arrays={"site.1": states[1], "site.2": states[2]}))
    return site


def step_message(beta: torch.Tensor, first: int, local_steps: int) -> Message:
    config: dict[str, Any] = {"sites": [0, 1, 2], "step": first, "steps": 2}
    if local_steps > 1:
        config["local_steps"] = local_steps
    return Message(STEP, 1, arrays={"beta": {"beta": beta}}, config=config)


def test_two_local_steps_answer_the_mean_gradient_of_the_two_one_step_messages(loaded_phantoms: list[Any], tiny: Any, tmp_path: Path) -> None:
    params = AutoFedAvgParams(beta_lr=LR, beta_local_steps=2)
    site = site_with_models(loaded_phantoms, tiny, tmp_path, params)
    beta0 = torch.tensor([6.0, 3.0, 1.5])
    g1 = site.on_query_learn_beta_step(step_message(beta0, 1, 1)).arrays["beta"]["grad"]
    beta1 = (beta0 - LR * g1).clamp(min=BETA_FLOOR)
    g2 = site.on_query_learn_beta_step(step_message(beta1, 2, 1)).arrays["beta"]["grad"]
    beta2 = (beta1 - LR * g2).clamp(min=BETA_FLOOR)
    assert not torch.allclose(g1, g2)  # the path matters: the second step is not the first again

    reply = site.on_query_learn_beta_step(step_message(beta0, 1, 2))
    expected = (beta0 - beta2) / (2 * LR)
    assert torch.allclose(reply.arrays["beta"]["grad"], expected, atol=1e-6)
    assert reply.arrays["beta"]["grad"].shape == beta0.shape
