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
    assert not [e for e in events if e["type"] == "run_failed"]
    warnings = [e["message"] for e in events if e["type"] == "warning"]
    if run.variant == "fedbn":  # the tiny U-Net's instance norm has no parameters: FedBN says it is FedAvg
        assert len(warnings) == 1 and "this run is FedAvg" in warnings[0]
    else:
        assert warnings == []
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


# -- personalised strategies (FedBN, Ditto) ---------------------------------------------------
PERSONALISED = ["ditto", "fedbn"]


@pytest.mark.parametrize("variant", PERSONALISED)
def test_personalised_runs_test_each_sites_best_personal_model(demo_run: Any, variant: str) -> None:
    """Each site validates its own model every round; the test uses the model of the site's
    own best validation round (first best), and results.json and model.json say so."""
    run = demo_run(variant)
    res, sites = run.results, ["site-1", "site-2", "site-3"]
    assert STRATEGIES.get(variant).personalised
    assert "personal model at its best validation round" in res["evaluated_model"]
    val = {s: [e["metrics"]["val_dice"][s] for e in run.rounds] for s in sites}
    assert res["personal_rounds"] == {s: 1 + val[s].index(max(val[s])) for s in sites}
    means = [e["metrics"]["mean_val_dice"] for e in run.rounds]
    assert res["best_round"] == 1 + means.index(max(means))  # the shared model saved
    assert "personal models" in json.loads((run.out / "model.json").read_text())["selected_by"]
    for s in sites:
        assert (run.out / "site-state" / s / f"best_personal.r{res['personal_rounds'][s]:05d}.safetensors").is_file()


def test_ditto_global_half_is_fedavg_and_v_k_stays_home(demo_run: Any) -> None:
    ditto, fedavg = demo_run("ditto"), demo_run("fedavg")
    key = [(e["alpha"], e["bytes_up"], e["bytes_down"]) for e in ditto.rounds]
    assert key == [(e["alpha"], e["bytes_up"], e["bytes_down"]) for e in fedavg.rounds]
    # same global copies, same best local models: the K x K matrix is FedAvg's
    assert ditto.results["local_matrix"] == fedavg.results["local_matrix"]
    for s in ditto.results["sites"]:
        assert (ditto.out / "site-state" / s / f"personal.r{ROUNDS:05d}.safetensors").is_file()


def test_fedbn_without_norm_parameters_is_fedavg(demo_run: Any) -> None:
    """The tiny U-Net's instance norm has affine=False: nothing stays local."""
    fedbn, fedavg = demo_run("fedbn"), demo_run("fedavg")
    assert [e["metrics"]["val_dice"] for e in fedbn.rounds] == [e["metrics"]["val_dice"] for e in fedavg.rounds]
    a, b = load_file(str(fedbn.out / "global_model.safetensors")), load_file(str(fedavg.out / "global_model.safetensors"))
    assert sorted(a) == sorted(b) and all(bool((a[k] == b[k]).all()) for k in a)
    assert not list((fedbn.out / "site-state" / "site-1").glob("norm.*"))


def test_fedbn_keeps_affine_instance_norms_at_each_site(
    loaded_phantoms: Any, tiny: Any, phantom_sites: list[Path], tmp_path: Path
) -> None:
    from engine.config import ModelConfig
    from engine.simulation import simulate_sites

    config = tiny("fedbn", {})
    config = config.replace(model=ModelConfig("unet", dict(config.model.args) | {"norm": ["instance", {"affine": True}]}))
    res = simulate_sites(loaded_phantoms, config, tmp_path / "run")
    sites, best = res["sites"], res["best_round"]
    kept = {s: load_file(str(tmp_path / "run" / "site-state" / s / f"norm.r{best:05d}.safetensors")) for s in sites}
    names = sorted(kept[sites[0]])
    assert len(names) == 2 * 6 and all(n.endswith((".N.weight", ".N.bias")) for n in names)  # 6 norm layers
    assert all(not bool((kept[sites[0]][n] == kept[sites[1]][n]).all()) for n in names), "each site trained its own"
    # the shared model's norm is the n_k / n average of the sites' (the policy for an unseen site)
    sizes = _train_sizes(phantom_sites, sites)
    shared = load_file(str(tmp_path / "run" / "global_model.safetensors"))
    for n in names:
        expected = sum(size * kept[s][n].double() for size, s in zip(sizes, sites)) / sum(sizes)
        assert np.allclose(shared[n].double().numpy(), expected.numpy(), atol=1e-6), n
    # a personal model of the best round = the shared weights + the site's own norms
    matching = [s for s in sites if res["personal_rounds"][s] == best]
    assert matching, res["personal_rounds"]
    for s in matching:
        personal = load_file(str(tmp_path / "run" / "site-state" / s / f"best_personal.r{best:05d}.safetensors"))
        assert all(bool((personal[n] == (kept[s][n] if n in kept[s] else shared[n])).all()) for n in shared), s


# -- input-side and gradient-scaling strategies (FedRDN, FedGS, HarmoFL) ------------------------
FLOAT64 = 8


def _card(run: Any) -> dict[str, Any]:
    return json.loads((run.out / "model.json").read_text())


def test_fedrdn_shares_statistics_once_then_sends_them_with_the_model(demo_run: Any, phantom_sites: list[Path]) -> None:
    """Round 1: one (mu, sigma) float64 pair up per site; every train message carries the
    K pairs ((K, 1) each). The server is FedAvg (n_k / n)."""
    run = demo_run("fedrdn")
    mb = run.results["communication"]["model_bytes"]
    per_message = 2 * K * FLOAT64
    first = (K * mb + K * 2 * FLOAT64, K * mb + K * per_message)
    later = (K * mb, K * mb + K * per_message)
    assert [(e["bytes_up"], e["bytes_down"]) for e in run.rounds] == [first] + [later] * (ROUNDS - 1)
    sizes = _train_sizes(phantom_sites, run.results["sites"])
    assert all(e["alpha"] == pytest.approx([n / sum(sizes) for n in sizes], abs=1e-9) for e in run.rounds)
    transform = _card(run)["input_transform"]
    assert transform["kind"] == "fedrdn" and transform["statistics"] == "body"
    stats = transform["site_stats"]
    assert sorted(stats) == ["site-1", "site-2", "site-3"]
    assert all(0 < s["mean"][0] < 1 and 0 < s["std"][0] < 1 for s in stats.values()), stats
    assert len({s["mean"][0] for s in stats.values()}) == K, "the phantom sites differ in intensity"


def test_fedgs_weights_steps_and_splits_dice_by_the_eval_threshold(demo_run: Any) -> None:
    """Equal local steps: s_k = 1/K. DiceS / DiceL are the test cases split at the same tau
    (eval.small_lesion_ratio, FedGS's default), recomputed here from the per-case results."""
    run = demo_run("fedgs")
    res = run.results
    assert all(e["alpha"] == pytest.approx([1 / K] * K, abs=1e-12) for e in run.rounds)
    mb = res["communication"]["model_bytes"]
    assert all(e["bytes_up"] == e["bytes_down"] == K * mb for e in run.rounds)
    tau = res["config"]["eval"]["small_lesion_ratio"]
    cases = [c for site in res["per_case"].values() for c in site]
    small = [c["dice"] for c in cases if c["lesion_voxels"] > 0 and c["total_voxels"] / c["lesion_voxels"] >= tau]
    large = [c["dice"] for c in cases if c["lesion_voxels"] > 0 and c["total_voxels"] / c["lesion_voxels"] < tau]
    assert small or large
    assert res["dice_small"] == (pytest.approx(float(np.mean(small)), abs=1e-12) if small else None)
    assert res["dice_large"] == (pytest.approx(float(np.mean(large)), abs=1e-12) if large else None)
    for site, summary in res["per_site_test"].items():
        assert {"dice_small", "dice_large", "n_small", "n_large"} <= set(summary), site


def test_harmofl_shares_one_amplitude_and_averages_uniformly(demo_run: Any) -> None:
    """r = 0: one float32 DC amplitude up per site in round 1, the reference down with
    every train message; models averaged 1/K; the reference in model.json and the checkpoint."""
    run = demo_run("harmofl")
    mb = run.results["communication"]["model_bytes"]
    first, later = (K * mb + K * FLOAT32, K * mb + K * FLOAT32), (K * mb, K * mb + K * FLOAT32)
    assert [(e["bytes_up"], e["bytes_down"]) for e in run.rounds] == [first] + [later] * (ROUNDS - 1)
    assert all(e["alpha"] == pytest.approx([1 / K] * K, abs=1e-12) for e in run.rounds)
    transform = _card(run)["input_transform"]
    assert transform["kind"] == "harmofl" and transform["r"] == 0.0
    reference = transform["reference"][0][0][0][0]  # (C, 1, 1, 1) with C = 1
    saved = load_file(str(next((run.out / "checkpoint").glob("strategy.r*.safetensors"))))["amplitude_reference"]
    assert saved.flatten().tolist() == pytest.approx([reference])
    patch = 32 * 32 * 16
    assert 0.0 < reference / patch < 1.0  # the mean intensity of a windowed [0, 1] patch


@pytest.mark.parametrize("variant", ["fedrdn", "harmofl"])
def test_predict_repeats_the_input_transform(demo_run: Any, phantom_sites: list[Path], variant: str) -> None:
    """``predict_volume`` on a phantom CT feeds the network what training fed it: FedRDN
    windows normalised with the CT's own body statistics, HarmoFL windows at the reference mean."""
    import torch

    from engine.config import DataConfig
    from engine.data.transforms import preprocessing, to_meta
    from engine.io.readers import load_volume
    from engine.model.checkpoint import load_model
    from engine.model.inference import predict_volume
    from engine.training.intensity import intensity_stats

    network, card = load_model(demo_run(variant).out)
    volume = load_volume(next((phantom_sites[1] / "imagesTr").glob("*.nii.gz")))
    seen: list[torch.Tensor] = []
    network.register_forward_hook(lambda module, args, out: seen.append(args[0].detach().clone()))
    prediction = predict_volume(network, card, volume, torch.device("cpu"))
    assert prediction.mask.shape == volume.shape
    assert seen and all(tuple(w.shape[2:]) == tuple(card.patch_size) for w in seen)
    if variant == "harmofl":
        mean = card.input_transform["reference"][0][0][0][0] / float(np.prod(card.patch_size))
        assert all(torch.allclose(w.mean(dim=(2, 3, 4)), torch.full(w.shape[:2], mean), atol=1e-5) for w in seen)
    else:
        cfg = DataConfig(
            target_spacing=tuple(card.target_spacing),
            hu_window=tuple(card.hu_window),
            patch_size=tuple(card.patch_size),
        )
        image = preprocessing(cfg, with_label=False)({"image": to_meta(volume)})["image"].as_tensor()
        mu, sigma = intensity_stats([image])
        low, high = float(-mu / (sigma + 1e-8)), float((1.0 - mu) / (sigma + 1e-8))  # the HU window's ends
        assert min(float(w.min()) for w in seen) == pytest.approx(low, abs=1e-5)  # air is in the CT
        assert max(float(w.max()) for w in seen) <= high + 1e-5


# -- DEeR (federated LoRA) -----------------------------------------------------------------------
def _factor_bytes(state: dict[str, Any]) -> int:
    return sum(t.numel() * t.element_size() for n, t in state.items() if n.endswith(("lora_A", "lora_B")))


def test_deer_sends_w0_once_then_factors_and_reports_its_budget(demo_run: Any) -> None:
    """Down: W0 to every site in round 1, both factors in each half-round; up: each site's
    B update, then its A update (the trained factor only)."""
    run = demo_run("deer")
    mb = run.results["communication"]["model_bytes"]
    both = _factor_bytes(load_file(str(next((run.out / "checkpoint").glob("global.r*.safetensors")))))
    assert 0 < both
    expected = [(K * mb + 2 * K * both, K * both), (2 * K * both, K * both)]
    assert [(e["bytes_down"], e["bytes_up"]) for e in run.rounds] == expected
    privacy = run.results["privacy"]
    assert privacy["dp"] is True and privacy["delta"] == pytest.approx(1 / K)
    assert 0 < privacy["epsilon"] <= privacy["target_epsilon"] and privacy["noise_multiplier"] > 0


def test_deer_fine_tunes_an_init_model_with_w0_frozen(
    demo_run: Any, loaded_phantoms: list[Any], tiny: Any, tmp_path: Path
) -> None:
    """From FedAvg's model: the saved model is W0 + B A on every convolution (s = 1) and W0
    everywhere else (biases, PReLU slopes)."""
    import torch

    from engine.simulation import simulate_sites

    init = demo_run("fedavg").out
    out = tmp_path / "deer"
    results = simulate_sites(loaded_phantoms, tiny("deer", {"dp": False, "lr": 0.1}).replace(init_model=str(init)), out)
    assert results["config"]["init_model"] == str(init) and results["privacy"] == {"dp": False}
    start = load_file(str(init / "global_model.safetensors"))
    final = load_file(str(out / "global_model.safetensors"))
    best = load_file(str(next((out / "checkpoint").glob("best.r*.safetensors"))))
    assert final.keys() == start.keys()
    moved = 0.0
    for name, w0 in start.items():
        if w0.dim() != 5:
            assert torch.equal(final[name], w0), name
            continue
        prefix = name[: -len(".weight")] + ".parametrizations.weight."
        assert torch.equal(best[prefix + "original"], w0), name
        b, a = best[prefix + "0.lora_B"].double(), best[prefix + "0.lora_A"].double()
        assert torch.allclose(final[name].double(), w0.double() + (b @ a).reshape(w0.shape), atol=1e-6, rtol=0), name
        moved = max(moved, float((final[name] - w0).abs().max()))
    assert moved > 1e-5


# -- PRR-FL and pFL-ResFIM (personalised: per-site deputies, per-parameter masks) -----------------
@pytest.mark.parametrize("variant", ["prrfl", "resfim"])
def test_prrfl_and_resfim_test_each_sites_best_personal_model(demo_run: Any, variant: str) -> None:
    test_personalised_runs_test_each_sites_best_personal_model(demo_run, variant)


def _prefixed(tensors: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {n[len(prefix):]: t for n, t in tensors.items() if n.startswith(prefix)}


def test_prrfl_sends_each_site_its_own_deputy(demo_run: Any) -> None:
    """FedAvg's traffic (one model down and one up per site) and weights 1/K; the server's
    checkpoint holds K deputies: conv kernels mixed per site by PFA, all else the 1/K average."""
    run = demo_run("prrfl")
    mb = run.results["communication"]["model_bytes"]
    assert all(e["bytes_up"] == e["bytes_down"] == K * mb for e in run.rounds)
    assert all(e["alpha"] == pytest.approx([1 / K] * K, abs=1e-12) for e in run.rounds)
    saved = load_file(str(next((run.out / "checkpoint").glob("strategy.r*.safetensors"))))
    deputies = [_prefixed(saved, f"deputy.{k}.") for k in range(K)]
    shared = load_file(str(next((run.out / "checkpoint").glob("global.r*.safetensors"))))
    assert all(sorted(d) == sorted(shared) for d in deputies)
    kernels = [n for n, t in shared.items() if t.dim() == 5]
    assert kernels and len(kernels) < len(shared)
    for name, value in shared.items():
        if name in kernels:
            assert not bool((deputies[0][name] == deputies[1][name]).all()), name
        else:
            for d in deputies:
                assert np.allclose(d[name].numpy(), value.numpy(), atol=1e-6), name
    for s in run.results["sites"]:
        assert (run.out / "site-state" / s / f"personal.r{ROUNDS:05d}.safetensors").is_file()


def test_resfim_uploads_only_shared_entries_and_mask_bits(demo_run: Any, phantom_sites: list[Path]) -> None:
    """Defaults rho = 0.1, r = 0.1, bank_size = 4, mask_every = 5. Round 1: one bank of 4
    float32 3^3 windows up per site (32x32x16 patches: half-width 1), the other K - 1 banks
    down to each; every train reply is floor-(1 - rho) of each tensor plus one bit per entry."""
    run = demo_run("resfim")
    model = load_file(str(run.out / "global_model.safetensors"))
    mb = run.results["communication"]["model_bytes"]
    bank = 4 * 3**3 * FLOAT32
    numels = [t.numel() for t in model.values()]
    upload = sum(FLOAT32 * (n - math.floor(0.1 * n + 1e-9)) + -(-n // 8) for n in numels)
    assert upload < mb
    first = (K * bank + K * upload, K * mb + K * (K - 1) * bank)
    later = (K * upload, K * mb)
    assert [(e["bytes_up"], e["bytes_down"]) for e in run.rounds] == [first] + [later] * (ROUNDS - 1)
    sizes = _train_sizes(phantom_sites, run.results["sites"])
    assert all(e["alpha"] == pytest.approx([n / sum(sizes) for n in sizes], abs=1e-9) for e in run.rounds)
    # the personal model of the best round: the site's own entries where its mask is set, the shared model elsewhere
    import torch

    res = run.results
    matching = [s for s in res["sites"] if res["personal_rounds"][s] == res["best_round"]]
    assert matching, res["personal_rounds"]
    for s in matching:
        state = run.out / "site-state" / s
        kept = load_file(str(state / f"personal.r{res['best_round']:05d}.safetensors"))
        personal = load_file(str(state / f"best_personal.r{res['best_round']:05d}.safetensors"))
        own, mask = _prefixed(kept, "own/"), _prefixed(kept, "mask/")
        for name, value in model.items():
            keep = mask[name].bool()
            assert int(keep.sum()) == math.floor(0.1 * value.numel() + 1e-9), name
            assert torch.equal(personal[name], torch.where(keep, own[name], value)), name
