"""Real sites without files: a :class:`SiteRuntime` with a tiny U-Net on in-memory cases.

``make_site(SiteLogicClass, params, index)`` gives the site logic of one site whose data
are 16^3 random volumes with a cubic lesion; each site has its own intensity offset and
scale (a domain shift), so sites that train apart end up with different weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.data.loader import PreparedCase
from engine.fl.base import SiteLogic
from engine.fl.site import SiteRuntime

SIDE = 16


class MemoryData:
    """The parts of ``SiteData`` a runtime uses: name, splits, num_train, batch."""

    def __init__(self, index: int, cases: dict[str, int]) -> None:
        self.name = f"site{index}"
        gen = torch.Generator().manual_seed(100 + index)
        self.splits = {split: [self._case(f"{split}{i}", index, gen) for i in range(n)] for split, n in cases.items()}

    @staticmethod
    def _case(case_id: str, index: int, gen: torch.Generator) -> PreparedCase:
        label = torch.zeros(1, SIDE, SIDE, SIDE)
        lo = int(torch.randint(2, 8, (1,), generator=gen))
        label[:, lo : lo + 6, lo : lo + 6, lo : lo + 5] = 1.0
        noise = torch.rand(1, SIDE, SIDE, SIDE, generator=gen)
        image = (0.2 + 0.15 * index) + (0.3 + 0.2 * index) * (0.4 * noise + 0.6 * label)
        return PreparedCase(case_id, image, label, item={})

    @property
    def num_train(self) -> int:
        return len(self.splits["train"])

    def batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = [self.splits["train"][int(i)] for i in rng.integers(self.num_train, size=2)]
        return torch.stack([c.image for c in chosen]), torch.stack([c.label for c in chosen])


def tiny_run_config(norm: Any = "instance", local_steps: int = 2) -> RunConfig:
    return RunConfig(
        rounds=3,
        seed=0,
        data=DataConfig(patch_size=(SIDE, SIDE, SIDE)),
        model=ModelConfig("unet", {"channels": [4, 8, 16], "strides": [2, 2], "norm": norm}),
        train=TrainConfig(local_steps=local_steps, lr=1e-3, device="cpu"),
    )


@pytest.fixture
def make_site(tmp_path: Path) -> Callable[..., SiteLogic]:
    """``make_site(logic_cls, params, index=0, norm="instance", cases=None)`` -> site logic."""

    def make(
        logic_cls: type[SiteLogic], params: Any, index: int = 0, *, norm: Any = "instance", cases: dict[str, int] | None = None
    ) -> SiteLogic:
        data = MemoryData(index, cases or {"train": 3, "val": 2, "test": 2})
        state_dir = tmp_path / f"site{index}"
        runtime = SiteRuntime(index, data, tiny_run_config(norm), state_dir, torch.device("cpu"))  # type: ignore[arg-type]
        return logic_cls(params, runtime)

    return make


@pytest.fixture
def tiny_config() -> Callable[..., RunConfig]:
    """``tiny_config(norm="instance", local_steps=2)``: the RunConfig of ``make_site``'s sites."""
    return tiny_run_config


def _drive(gen, respond):
    """Run a strategy's round generator against ``respond(messages) -> replies``; return its
    outcome and the message batches it sent."""
    sent = []
    messages = next(gen)
    while True:
        sent.append(messages)
        try:
            messages = gen.send(respond(messages))
        except StopIteration as stop:
            return stop.value, sent


@pytest.fixture
def drive() -> Callable[..., Any]:
    """``drive(strategy.round(rnd, model), respond)`` -> (outcome, batches sent)."""
    return _drive
