"""Every registered algorithm (plus Auto-FedAvg's softmax and layer-wise variants) on three
phantom sites for two rounds: the run-artefact contract of DESIGN.md, weight by weight and
byte by byte.

The expected values are computed here independently of the engine: alpha from the sites'
``dataset.json`` splits and from beta, bytes from the tensors in the saved model file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.torch import load_file

from engine.fl import STRATEGIES

pytestmark = pytest.mark.integration

K = 3
ROUNDS = 2
BETA_STEPS = 2
FLOAT32 = 4
FEDAVG_FAMILY = {"fedavg", "fedavg-even", "fedprox"}
KNOWN_WITHOUT_BETA = FEDAVG_FAMILY | {"local-only"}


def _variant_ids() -> list[str]:
    # Same table as conftest.variants(): every registered algorithm plus the extras.
    return list(STRATEGIES.names()) + ["auto-fedavg[softmax]", "auto-fedavg[layer]", "auto-fedavg[local-steps]"]


VARIANTS = _variant_ids()


def _has_global(run: Any) -> bool:
    return bool(STRATEGIES.get(run.algorithm).has_global_model)


def _model_bytes(path: Path) -> int:
    return sum(t.numel() * t.element_size() for t in load_file(str(path)).values())


def _train_sizes(site_dirs: list[Path], names: list[str]) -> list[int]:
    """n_k straight from each site's dataset.json (phantom sites carry fixed splits)."""
    by_name = {p.name: p for p in site_dirs}
    return [len(json.loads((by_name[n] / "dataset.json").read_text())["splits"]["train"]) for n in names]


def _flat(beta: Any) -> list[float]:
    return [float(x) for x in np.asarray(beta, dtype=float).ravel()]


@pytest.fixture(params=VARIANTS)
def run(request: pytest.FixtureRequest, demo_run: Any) -> Any:
    return demo_run(request.param)


def test_the_documented_algorithms_are_registered() -> None:
    assert set(STRATEGIES.names()) >= {"auto-fedavg", "fedavg", "fedavg-even", "fedprox", "local-only"}


# -- artefacts ---------------------------------------------------------------------------
def test_artefacts_exist_and_model_loads(run: Any) -> None:
    from engine.model.checkpoint import load_model

    out = run.out
    assert (out / "events.jsonl").is_file()
    assert (out / "results.json").is_file()
    sites = run.results["sites"]
    assert sites == ["site-1", "site-2", "site-3"]
    if _has_global(run):
        folders = [out]
        assert (out / "global_model.safetensors").is_file()
        assert (out / "model.json").is_file()
    else:
        folders = [out / "local_models" / s for s in sites]
        assert not (out / "global_model.safetensors").exists(), "local-only has no global model"
        for folder in folders:
            assert (folder / "model.json").is_file(), folder
    for folder in folders:
        network, card = load_model(folder)  # enough to predict without the run config
        assert card.network == "unet"
        assert card.patch_size == [32, 32, 16]
        assert card.target_spacing == [4.0, 4.0, 6.0]
        assert card.lesion_label == 1
        assert card.algorithm == run.algorithm
        assert sum(p.numel() for p in network.parameters()) > 0


def test_event_log_frames_the_rounds(run: Any) -> None:
    events = run.events
    assert events[0]["type"] == "run_started"
    assert events[0]["algorithm"] == run.algorithm
    assert events[0]["sites"] == ["site-1", "site-2", "site-3"]
    assert events[-1]["type"] == "run_finished"
    assert not [e for e in events if e["type"] in ("run_failed", "warning")]
    assert [e["round"] for e in run.rounds] == list(range(1, ROUNDS + 1))


# -- round_finished ----------------------------------------------------------------------
def test_round_events_carry_alpha_beta_metrics_bytes(run: Any) -> None:
    sites = ["site-1", "site-2", "site-3"]
    for event in run.rounds:
        alpha = event["alpha"]
        if _has_global(run):
            assert len(alpha) == K, event
            assert all(a >= 0 for a in alpha), alpha
            assert abs(sum(alpha) - 1.0) < 1e-6, alpha
        else:
            assert alpha == []
        if run.algorithm == "auto-fedavg":
            assert isinstance(event["beta"], list) and len(event["beta"]) == K, event["beta"]
        elif run.algorithm in KNOWN_WITHOUT_BETA:
            assert event["beta"] is None
        metrics = event["metrics"]
        val = metrics["val_dice"]
        assert sorted(val) == sites, val
        assert all(v is not None and 0.0 <= v <= 1.0 for v in val.values()), val
        assert metrics["mean_val_dice"] == pytest.approx(float(np.mean(list(val.values()))), abs=1e-12)
        assert sorted(metrics["train_loss"]) == sites
        assert all(math.isfinite(v) for v in metrics["train_loss"].values())
        assert event["missing_sites"] == []
        assert event["bytes_down"] > 0 or (run.algorithm == "local-only" and event["round"] > 1)
        if run.algorithm == "local-only":
            assert event["bytes_up"] == 0, "a local-only site must never upload its model"
        else:
            assert event["bytes_up"] > 0


def test_fedavg_alpha_is_n_k_over_n(demo_run: Any, phantom_sites: list[Path]) -> None:
    run = demo_run("fedavg")
    sizes = _train_sizes(phantom_sites, run.results["sites"])
    assert len(set(sizes)) > 1, "sites of equal size cannot tell n_k/n from 1/K"
    expected = [n / sum(sizes) for n in sizes]
    for event in run.rounds:
        assert event["alpha"] == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("variant", ["fedavg-even"])
def test_fedavg_even_alpha_is_uniform(demo_run: Any, variant: str) -> None:
    for event in demo_run(variant).rounds:
        assert event["alpha"] == pytest.approx([1 / K] * K, abs=1e-9)


def test_fedprox_aggregates_like_fedavg(demo_run: Any) -> None:
    assert [e["alpha"] for e in demo_run("fedprox").rounds] == [e["alpha"] for e in demo_run("fedavg").rounds]


@pytest.mark.parametrize("variant", ["auto-fedavg", "auto-fedavg[softmax]", "auto-fedavg[layer]", "auto-fedavg[local-steps]"])
def test_auto_fedavg_alpha_follows_learned_beta(demo_run: Any, variant: str) -> None:
    """alpha = mode of Dir(beta) = (beta_k - 1) / (sum beta - K), or softmax(beta); for
    layer-wise weights the reported alpha is the mean over layers of the per-layer alpha."""
    run = demo_run(variant)
    for event in run.rounds:
        beta = np.asarray(event["beta"], dtype=float)
        assert beta.shape[0] == K
        if variant.endswith("[softmax]"):
            alpha = np.exp(beta) / np.exp(beta).sum(axis=0)
        else:
            assert (beta > 1.0).all(), beta  # Dirichlet beta is kept above 1
            alpha = (beta - 1.0) / (beta - 1.0).sum(axis=0, keepdims=True)
        if variant.endswith("[layer]"):
            assert beta.ndim == 2 and beta.shape[1] > 1, beta.shape
            alpha = alpha.mean(axis=1)
        else:
            assert beta.ndim == 1
        assert event["alpha"] == pytest.approx(alpha.tolist(), abs=1e-6)
        # beta starts at 6.0 everywhere; two Adam steps per round must have moved it
        assert np.abs(beta - 6.0).max() > 1e-4, "beta was not learned"
    # one beta_step event per message and round, at the last step the message covered
    steps = [(e["round"], e["step"]) for e in run.events if e["type"] == "beta_step"]
    per_message = run.params.get("beta_local_steps", 1)
    assert steps == [(r, s) for r in range(1, ROUNDS + 1) for s in range(per_message, BETA_STEPS + 1, per_message)]


# -- communication -----------------------------------------------------------------------
def test_model_bytes_match_the_saved_model(run: Any) -> None:
    comm = run.results["communication"]
    if _has_global(run):
        weights = run.out / "global_model.safetensors"
    else:
        weights = run.out / "local_models" / "site-1" / "global_model.safetensors"
    assert comm["model_bytes"] == _model_bytes(weights)
    assert comm["model_bytes"] > 1000
    assert comm["bytes_up"] == sum(e["bytes_up"] for e in run.rounds)
    assert comm["bytes_down"] == sum(e["bytes_down"] for e in run.rounds)


@pytest.mark.parametrize("variant", sorted(FEDAVG_FAMILY))
def test_fedavg_moves_2k_models_per_round(demo_run: Any, variant: str) -> None:
    run = demo_run(variant)
    mb = run.results["communication"]["model_bytes"]
    for event in run.rounds:
        assert event["bytes_down"] == K * mb
        assert event["bytes_up"] == K * mb
        assert event["bytes_up"] + event["bytes_down"] == 2 * K * mb


@pytest.mark.parametrize("variant", ["auto-fedavg", "auto-fedavg[softmax]", "auto-fedavg[layer]", "auto-fedavg[local-steps]"])
def test_auto_fedavg_moves_k_k_minus_1_extra_models(demo_run: Any, variant: str) -> None:
    """t0 = 1: FedAvg's 2K models, plus K(K-1) peer models down once per round, plus
    ceil(S/m) small beta messages each way (beta down, dL/dbeta up; float32, one per
    site; m = beta_local_steps steps per message)."""
    run = demo_run(variant)
    mb = run.results["communication"]["model_bytes"]
    messages = -(-BETA_STEPS // run.params.get("beta_local_steps", 1))
    for event in run.rounds:
        beta_bytes = len(_flat(event["beta"])) * FLOAT32
        beta_traffic = messages * K * beta_bytes
        assert beta_traffic < mb, "beta messages must be small next to a model"
        assert event["bytes_down"] == K * mb + K * (K - 1) * mb + beta_traffic
        assert event["bytes_up"] == K * mb + beta_traffic


def test_local_only_sends_the_initial_model_once(demo_run: Any) -> None:
    run = demo_run("local-only")
    mb = run.results["communication"]["model_bytes"]
    assert [(e["bytes_down"], e["bytes_up"]) for e in run.rounds] == [(K * mb, 0)] + [(0, 0)] * (ROUNDS - 1)


# -- results.json ------------------------------------------------------------------------
def _dice(value: Any) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


def test_results_json_contract(run: Any) -> None:
    res = run.results
    assert res["algorithm"] == run.algorithm
    assert res["rounds"] == ROUNDS
    for key in ("global_test_avg", "local_avg", "local_gen", "local_matrix", "dice_small", "dice_large", "communication", "wall_time_s"):
        assert key in res, key
    if _has_global(run):
        assert _dice(res["global_test_avg"]), res["global_test_avg"]
        per_site = res["per_site_test_dice"]
        assert sorted(per_site) == ["site-1", "site-2", "site-3"]
        assert all(_dice(v) for v in per_site.values()), per_site
        assert res["global_test_avg"] == pytest.approx(float(np.mean(list(per_site.values()))), abs=1e-12)
        assert res["best_round"] in range(1, ROUNDS + 1)
        assert any(_dice(res[k]) for k in ("dice_small", "dice_large"))
        for key in ("dice_small", "dice_large"):
            assert res[key] is None or _dice(res[key])
    else:
        assert res["global_test_avg"] is None
    matrix = res["local_matrix"]
    assert len(matrix) == K and all(len(row) == K for row in matrix), matrix
    assert all(_dice(v) for row in matrix for v in row), matrix
    m = np.asarray(matrix)
    assert res["local_avg"] == pytest.approx(float(np.diag(m).mean()), abs=1e-12)
    assert res["local_gen"] == pytest.approx(float(m[~np.eye(K, dtype=bool)].mean()), abs=1e-12)
    assert set(res["communication"]) >= {"bytes_up", "bytes_down", "model_bytes"}
    assert isinstance(res["wall_time_s"], float) and res["wall_time_s"] > 0
    # the value simulate() returned is what it wrote
    assert json.loads(json.dumps(run.returned["local_matrix"])) == matrix
    assert run.returned["communication"] == res["communication"]
