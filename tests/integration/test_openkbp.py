"""One FedAvg round on the three real OpenKBP head-and-neck CT sites.

Settings come from ``resources/openkbp.toml`` (spacing, HU window, patch, label, lr,
algorithm), made cheaper for a test: two local steps and a 4-8-16 U-Net on the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.config import ModelConfig, TrainConfig, load_config
from engine.events import read_events

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SITES = ["site-a", "site-b", "site-c"]


def _in_unit(value: Any) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


@pytest.fixture(scope="module")
def openkbp_run(openkbp_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    from engine.simulation import simulate

    cfg = load_config(REPO / "resources" / "openkbp.toml")
    assert cfg.strategy.name == "fedavg" and cfg.rounds == 1 and cfg.data.lesion_label == 1
    cfg = cfg.replace(
        train=TrainConfig(**{**cfg.train.__dict__, "local_steps": 2, "device": "cpu"}),
        model=ModelConfig("unet", {"channels": [4, 8, 16], "strides": [2, 2]}),
    )
    out = tmp_path_factory.mktemp("openkbp-run")
    returned = simulate([openkbp_root / s for s in SITES], cfg, out)
    return out, returned


def test_openkbp_fedavg_round(openkbp_run: tuple[Path, dict[str, Any]], openkbp_root: Path) -> None:
    out, returned = openkbp_run
    results = json.loads((out / "results.json").read_text())
    assert results["algorithm"] == "fedavg"
    assert results["sites"] == SITES
    assert (out / "global_model.safetensors").is_file() and (out / "model.json").is_file()

    per_site = results["per_site_test_dice"]
    assert sorted(per_site) == SITES
    assert all(_in_unit(v) for v in per_site.values()), per_site
    assert _in_unit(results["global_test_avg"])
    # every test case of every site was scored (PTV70 is never empty in OpenKBP)
    for site in SITES:
        meta = json.loads((openkbp_root / site / "dataset.json").read_text())
        cases = results["per_case"][site]
        # cases leave a site as positions in its split, never as patient ids
        assert [c["case_id"] for c in cases] == [f"test-{i:03d}" for i in range(len(meta["splits"]["test"]))]
        assert all(_in_unit(c["dice"]) and c["lesion_voxels"] > 0 for c in cases), cases
    matrix = results["local_matrix"]
    assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
    assert all(_in_unit(v) for row in matrix for v in row), matrix
    assert _in_unit(results["local_avg"]) and _in_unit(results["local_gen"])
    for key in ("dice_small", "dice_large"):
        assert results[key] is None or _in_unit(results[key])

    (event,) = [e for e in read_events(out / "events.jsonl") if e["type"] == "round_finished"]
    assert sorted(event["metrics"]["val_dice"]) == SITES
    assert all(_in_unit(v) for v in event["metrics"]["val_dice"].values())
    # FedAvg weights n_k / n with the fixed OpenKBP train splits (22 / 10 / 7 in the README)
    n = [len(json.loads((openkbp_root / s / "dataset.json").read_text())["splits"]["train"]) for s in SITES]
    assert event["alpha"] == pytest.approx([k / sum(n) for k in n], abs=1e-9)
    assert returned["per_site_test_dice"] == per_site
