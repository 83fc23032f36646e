"""Synthetic run events for the plot tests, built with the engine's own Event classes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine.events import BetaStep, Event, RoundFinished, RoundStarted, RunStarted, SiteProgress

SITES3 = ["site-a", "site-b", "site-c"]


def mode(beta: list[float]) -> list[float]:
    b = np.asarray(beta, dtype=float)
    return ((b - 1) / (b.sum() - b.size)).tolist()


class EventFactory:
    """Builds the events of a small run; every value is chosen so a test can check it."""

    @staticmethod
    def started(sites: list[str] = SITES3, algorithm: str = "auto-fedavg", rounds: int = 5, params: dict[str, Any] | None = None, start_round: int = 1) -> RunStarted:
        config = {"rounds": rounds, "strategy": {"name": algorithm, "params": dict(params or {})}}
        return RunStarted(algorithm=algorithm, sites=list(sites), rounds=rounds, config=config, start_round=start_round)

    @staticmethod
    def finished(
        rnd: int,
        alpha: list[float],
        beta: list[Any] | None,
        dice: dict[str, float | None],
        *,
        up: int = 1_500_000,
        down: int = 4_500_000,
        missing: list[str] | None = None,
    ) -> RoundFinished:
        scores = [v for v in dice.values() if v is not None]
        metrics = {"val_dice": dice, "mean_val_dice": float(np.mean(scores)) if scores else None, "local_val_dice": dice, "train_loss": {}}
        return RoundFinished(round=rnd, alpha=alpha, beta=beta, metrics=metrics, bytes_up=up, bytes_down=down, seconds=1.0, missing_sites=missing or [])

    def auto_round(self, rnd: int, beta: list[float], sites: list[str] = SITES3, steps: int = 2) -> list[Event]:
        """round_started, site progress, ``steps`` beta steps ending at ``beta``, round_finished
        with alpha = mode(beta), Dice = rnd/10 + k/100 for site k, bytes = rnd MB up, 3 rnd MB down."""
        events: list[Event] = [RoundStarted(round=rnd, rounds=5), SiteProgress(round=rnd, site=sites[0], phase="train", step=1, total=1)]
        for s in range(1, steps + 1):
            events.append(BetaStep(round=rnd, step=s, beta=[b - 0.1 * (steps - s) for b in beta]))
        dice = {name: rnd / 10 + k / 100 for k, name in enumerate(sites)}
        events.append(self.finished(rnd, mode(beta), beta, dice, up=rnd * 1_000_000, down=3 * rnd * 1_000_000))
        return events

    def auto_run(self, betas: list[list[float]], sites: list[str] = SITES3, params: dict[str, Any] | None = None) -> list[Event]:
        """A run whose round r (1-based) ends with beta ``betas[r - 1]``."""
        events: list[Event] = [self.started(sites, params=params)]
        for rnd, beta in enumerate(betas, start=1):
            events += self.auto_round(rnd, beta, sites)
        return events


BETAS3 = [[6.0, 6.0, 6.0], [8.0, 5.0, 6.0], [18.3, 5.3, 6.9]]  # the last one: paper Fig. 3c, round 300


@pytest.fixture
def events() -> EventFactory:
    return EventFactory()


@pytest.fixture
def betas3() -> list[list[float]]:
    return [list(b) for b in BETAS3]
