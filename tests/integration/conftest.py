"""Shared fixtures of the multi-site integration tests.

Everything is CPU-sized so that the whole integration set stays within a few minutes on
two cores: three phantom sites written once per session, a 4-8-16 U-Net, 32x32x16 patches
on a coarse 4x4x6 mm grid (a phantom case becomes 32x32x17 voxels, so a sliding-window
evaluation is two windows), two local steps, two rounds, two beta steps.

``demo_run(variant)`` runs one 3-site x 2-round federation per variant and caches it for
the session, so ``test_predict`` reuses the FedAvg run of ``test_demo_runs``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.config import DataConfig, EvalConfig, ModelConfig, RunConfig, StrategyConfig, TrainConfig
from engine.data.phantoms import make_demo_sites
from engine.events import read_events
from engine.fl import STRATEGIES

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
OPENKBP = SHARED / "data" / "openkbp-sites"

NUM_SITES = 3
ROUNDS = 2
BETA_STEPS = 2
TINY_NET = {"channels": [4, 8, 16], "strides": [2, 2]}

#: Strategy parameters per registered algorithm; anything not listed runs its defaults.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {"auto-fedavg": {"beta_steps": BETA_STEPS}}
#: Extra Auto-FedAvg variants on top of one run per registered algorithm.
EXTRA_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "auto-fedavg[softmax]": ("auto-fedavg", {"beta_steps": BETA_STEPS, "weights": "softmax"}),
    "auto-fedavg[layer]": ("auto-fedavg", {"beta_steps": BETA_STEPS, "aggregation": "layer"}),
    # both steps in one message per phase (the option for slow links)
    "auto-fedavg[local-steps]": ("auto-fedavg", {"beta_steps": BETA_STEPS, "beta_local_steps": BETA_STEPS}),
}


def variants() -> dict[str, tuple[str, dict[str, Any]]]:
    """Variant id -> (algorithm, params): every registered strategy, plus the extras."""
    found = {name: (name, dict(DEFAULT_PARAMS.get(name, {}))) for name in STRATEGIES.names()}
    found.update(EXTRA_VARIANTS)
    return found


def tiny_config(algorithm: str = "fedavg", params: dict[str, Any] | None = None, *, rounds: int = ROUNDS) -> RunConfig:
    return RunConfig(
        rounds=rounds,
        seed=0,
        data=DataConfig(target_spacing=(4.0, 4.0, 6.0), patch_size=(32, 32, 16)),
        model=ModelConfig("unet", dict(TINY_NET)),
        train=TrainConfig(local_steps=2, lr=1e-3, device="cpu"),
        eval=EvalConfig(),
        strategy=StrategyConfig(algorithm, dict(params or {})),
    )


@dataclass
class Run:
    """A finished run folder and what it wrote."""

    variant: str
    algorithm: str
    params: dict[str, Any]
    out: Path
    returned: dict[str, Any]

    @property
    def events(self) -> list[dict[str, Any]]:
        return read_events(self.out / "events.jsonl")

    @property
    def rounds(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "round_finished"]

    @property
    def results(self) -> dict[str, Any]:
        return json.loads((self.out / "results.json").read_text())



@pytest.fixture(scope="session")
def tiny() -> Callable[..., RunConfig]:
    """``tiny(algorithm, params, rounds=2)`` -> the CPU-sized RunConfig of these tests."""
    return tiny_config


@pytest.fixture(scope="session")
def phantom_sites(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three deterministic phantom sites (16, 8, 6 cases), written once per session."""
    return make_demo_sites(tmp_path_factory.mktemp("phantom-sites"), sites=NUM_SITES, seed=0)


@pytest.fixture(scope="session")
def loaded_phantoms(phantom_sites: list[Path]) -> list[Any]:
    """The phantom sites preprocessed once with the tiny data settings (every variant
    shares them through ``simulate_sites``; loading is a fifth of a tiny run)."""
    from engine.simulation import load_sites

    return load_sites(phantom_sites, tiny_config())


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory, loaded_phantoms: list[Any]) -> Callable[[str], Run]:
    """``demo_run(variant)`` -> a cached 3-site x 2-round :class:`Run` of that variant."""
    from engine.simulation import simulate_sites

    cache: dict[str, Run] = {}
    table = variants()

    def run(variant: str) -> Run:
        if variant not in cache:
            algorithm, params = table[variant]
            out = tmp_path_factory.mktemp("run-" + variant.replace("[", "-").replace("]", ""))
            returned = simulate_sites(loaded_phantoms, tiny_config(algorithm, params), out)
            cache[variant] = Run(variant, algorithm, params, out, returned)
        return cache[variant]

    return run


@pytest.fixture(scope="session")
def openkbp_root() -> Path:
    """The shared OpenKBP sites (read-only); skips when the ../shared checkout is absent."""
    if not all((OPENKBP / f"site-{s}" / "dataset.json").is_file() for s in "abc"):
        pytest.skip(f"shared OpenKBP data not found at {OPENKBP} (needs the ../shared checkout next to the repo)")
    return OPENKBP
