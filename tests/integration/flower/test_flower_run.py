"""Real federations over Flower on loopback: SuperLink (TLS + SuperNode authentication),
one ``fedseg site`` process (SuperNode + persistent executor) per phantom site.

* the same seed and data give the same alpha/beta trajectory, the same results and the
  same final weights over Flower as in the in-process simulation (1e-5);
* what a site sends (its ``outbox.jsonl``) holds only the model's parameter names and
  shapes, beta gradients, metrics and counts;
* a site that has not accepted model sharing makes an Auto-FedAvg run fail with its name;
* a site whose key is not registered never joins;
* every other registered strategy gives the simulation's numbers over Flower too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from engine.errors import FederationError
from engine.events import RoundFinished
from engine.fl import STRATEGIES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TOL = 1e-5


def _rounds(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "round_finished"]


def _close(a: Any, b: Any) -> bool:
    return torch.allclose(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), atol=TOL, rtol=0)


def test_flower_run_equals_the_simulation(flower_auto_fedavg: Any, demo_run: Any) -> None:
    fed, out = flower_auto_fedavg
    sim = demo_run("auto-fedavg")
    flower_events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    flower_rounds, sim_rounds = _rounds(flower_events), sim.rounds
    assert len(flower_rounds) == len(sim_rounds) == 2
    for mine, theirs in zip(flower_rounds, sim_rounds):
        assert _close(mine["alpha"], theirs["alpha"]), (mine["alpha"], theirs["alpha"])
        assert _close(mine["beta"], theirs["beta"]), (mine["beta"], theirs["beta"])
        assert mine["bytes_up"] == theirs["bytes_up"] and mine["bytes_down"] == theirs["bytes_down"]
        assert mine["missing_sites"] == []
    flower_steps = [e["beta"] for e in flower_events if e["type"] == "beta_step"]
    sim_steps = [e["beta"] for e in sim.events if e["type"] == "beta_step"]
    assert len(flower_steps) == len(sim_steps) > 0
    assert all(_close(a, b) for a, b in zip(flower_steps, sim_steps))
    mine, theirs = load_file(str(out / "global_model.safetensors")), load_file(str(sim.out / "global_model.safetensors"))
    assert mine.keys() == theirs.keys()
    assert max(float((mine[k] - theirs[k]).abs().max()) for k in mine) <= TOL
    results, expected = json.loads((out / "results.json").read_text()), sim.results
    for key in ("global_test_avg", "local_avg", "local_gen", "best_round"):
        assert results[key] == pytest.approx(expected[key], abs=TOL), key
    assert (out / "model.json").is_file()
    assert any(isinstance(e, RoundFinished) for e in fed.events)  # the session followed the run live


def test_a_site_sends_only_weights_beta_metrics_and_counts(flower_auto_fedavg: Any, phantom_sites: list[Path]) -> None:
    fed, out = flower_auto_fedavg
    model = load_file(str(out / "global_model.safetensors"))
    template = {name: list(t.shape) for name, t in model.items()}
    for site in phantom_sites:
        dataset = json.loads((site / "dataset.json").read_text())
        identifiers = {Path(entry["image"]).name.split(".")[0] for entry in dataset["training"]}
        lines = [json.loads(x) for x in (fed.root / "site-work" / site.name / "outbox.jsonl").read_text().splitlines()]
        kinds = {line["type"] for line in lines}
        assert {"train", "evaluate", "query.learn_beta_setup", "query.learn_beta_step", "query.best_local"} <= kinds
        for line in lines:
            for group, arrays in line["arrays"].items():
                if group == "arrays:beta":
                    assert {n: a["shape"] for n, a in arrays.items()} == {"grad": [len(phantom_sites)]}
                else:
                    assert group in ("arrays:local", "arrays:model"), group
                    assert {n: a["shape"] for n, a in arrays.items()} == template
            text = json.dumps(line["meta"])
            assert str(site) not in text and str(site.resolve()) not in text
            assert not [i for i in identifiers if i in text], f"{site.name} sent a case identifier"


def test_a_site_without_consent_refuses_auto_fedavg(federation: Any, phantom_sites: list[Path], tiny: Any) -> None:
    fed = federation(phantom_sites[:2], tiny("auto-fedavg", {"beta_steps": 1}, rounds=1))
    with pytest.raises(FederationError, match="site-2.*refused.*--allow-model-sharing"):
        fed.run(allow_model_sharing={"site-2": False})


def test_a_site_with_an_unregistered_key_cannot_join(federation: Any, phantom_sites: list[Path], tiny: Any) -> None:
    registered = phantom_sites[:2]
    fed = federation(phantom_sites, tiny("fedavg", rounds=1), registered=registered)
    fed.session.start()
    intruder = fed.start_site(phantom_sites[2])
    assert intruder.popen.wait(60) == 2  # `fedseg site` gives up with one line, exit 2
    site_log = fed.site_log(phantom_sites[2])
    assert "refused the key" in site_log and "Failed to activate SuperNode" in site_log, site_log
    assert "fedseg server register" in site_log and "Traceback" not in site_log
    assert "No SuperNode found with the given public key" in (fed.session.out_dir / "superlink.log").read_text()


@pytest.mark.parametrize("variant", [name for name in STRATEGIES.names() if name != "auto-fedavg"] + ["auto-fedavg[local-steps]"])
def test_every_strategy_runs_over_flower_as_in_the_simulation(variant: str, shared_federation: Any, tiny: Any, demo_run: Any) -> None:
    """No strategy module knows about Flower: each one's messages go through the same
    ClientApp handlers and FlowerTransport, and give the simulation's numbers (Auto-FedAvg
    itself: test_flower_run_equals_the_simulation; here also its several-beta-steps-per-
    message option). The runs follow each other on one SuperLink with the same sites."""
    sim = demo_run(variant)
    algorithm = sim.algorithm
    out = shared_federation.run_next(tiny(algorithm, sim.params), variant.replace("[", "-").rstrip("]"))
    mine = _rounds([json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()])
    assert [r["round"] for r in mine] == [r["round"] for r in sim.rounds] == [1, 2]
    for a, b in zip(mine, sim.rounds):
        assert _close(a["alpha"], b["alpha"]) and a["missing_sites"] == []
        assert (a["beta"] is None) == (b["beta"] is None) and (a["beta"] is None or _close(a["beta"], b["beta"]))
        assert a["bytes_up"] == b["bytes_up"] and a["bytes_down"] == b["bytes_down"]
    results = json.loads((out / "results.json").read_text())
    for key in ("global_test_avg", "local_avg", "local_gen"):
        expected = sim.results[key]
        assert results[key] == (None if expected is None else pytest.approx(expected, abs=TOL)), key
    if STRATEGIES.get(algorithm).has_global_model:
        final, expected = load_file(str(out / "global_model.safetensors")), load_file(str(sim.out / "global_model.safetensors"))
        assert max(float((final[k] - expected[k]).abs().max()) for k in expected) <= TOL
