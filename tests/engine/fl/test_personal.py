"""The personalisation mechanism shared by FedBN and Ditto (engine.fl.personal).

A test site whose personal model of round t is chosen by the test (``ByRound``) makes the
validation Dice exact: a model with every tensor zero predicts background everywhere
(Dice 0 on a lesion case), the same with the output bias (-1, 1) predicts lesion
everywhere (Dice 2L / (L + N) for L lesion voxels of N).
"""

from __future__ import annotations

import json

import pytest
import torch

from engine.errors import FederationError
from engine.events import EventBus
from engine.fl.base import BEST_PERSONAL, PERSONAL, SiteLogic, Strategy
from engine.fl.coordinator import Coordinator
from engine.fl.fedavg import FedAvg
from engine.fl.personal import PersonalisedSite
from engine.fl.protocol import EVALUATE, ArrayDict, Message
from engine.fl.site import SiteInfo
from engine.simulation.transport import InProcessTransport

OUTPUT_BIAS = "model.2.1.conv.unit0.conv.bias"  # the last convolution of the tiny U-Net


def constant_model(template: ArrayDict, lesion: bool) -> ArrayDict:
    state = {k: torch.zeros_like(v) for k, v in template.items()}
    if lesion:
        state[OUTPUT_BIAS] = torch.tensor([-1.0, 1.0])
    return state


def everywhere_dice(site: PersonalisedSite, split: str) -> float:
    """Mean Dice of predicting lesion everywhere on ``split``, from the labels alone."""
    cases = site.runtime.data.splits[split]
    return sum(2 * float(c.label.sum()) / (float(c.label.sum()) + c.label.numel()) for c in cases) / len(cases)


class ByRound(PersonalisedSite):
    """Personal model of round t = ``models[t]`` (the received model when absent)."""

    models: dict[int, ArrayDict]

    def personal_weights(self, shared: ArrayDict, upto: int) -> ArrayDict:
        return self.models.get(upto, shared)


def evaluate(rnd: int, split: str, shared: ArrayDict, **config) -> Message:
    return Message(EVALUATE, rnd, arrays={"model": shared}, config={"split": split, **config})


def test_evaluate_messages_say_which_model_to_score():
    strategy = Strategy(None, [SiteInfo(0, "a", 1), SiteInfo(1, "b", 1)])
    model = {"w": torch.ones(2)}
    plain = strategy.evaluate_messages(3, model, "test")
    best = strategy.evaluate_messages(3, model, "test", use=BEST_PERSONAL)
    assert all(m.config == {"split": "test"} for m in plain.values())
    assert all(m.config == {"split": "test", "model": BEST_PERSONAL} for m in best.values())
    # the best shared model still goes along (fallback for a site that never validated)
    assert all(torch.equal(m.arrays["model"]["w"], model["w"]) for m in best.values())
    assert Strategy.personalised is False and FedAvg.personalised is False


def test_a_site_without_personal_model_refuses_a_personal_evaluation(make_site):
    site = make_site(SiteLogic, None)
    with pytest.raises(FederationError, match="keeps no personal model"):
        site.handle(evaluate(1, "val", site.runtime.weights(), model=PERSONAL))


def test_without_a_model_flag_the_received_model_is_scored_as_it_is(make_site):
    """The K x K matrix sends best local models to every site: they are tested unchanged."""
    site = make_site(ByRound, None)
    template = site.runtime.weights()
    site.models = {1: constant_model(template, False)}
    reply = site.handle(evaluate(1, "test", constant_model(template, True)))
    assert reply.metrics["dice"] == pytest.approx(everywhere_dice(site, "test"))
    assert site.runtime.store.load(BEST_PERSONAL) is None


def test_site_keeps_the_personal_model_of_its_best_validation_round_and_tests_it(make_site):
    site = make_site(ByRound, None)
    template = site.runtime.weights()
    background, lesion = constant_model(template, False), constant_model(template, True)
    site.models = {1: background, 2: lesion, 3: background}
    d_val = everywhere_dice(site, "val")
    assert 0.0 < d_val < 1.0
    dice = [site.handle(evaluate(r, "val", background, model=PERSONAL)).metrics["dice"] for r in (1, 2, 3)]
    assert dice == [0.0, pytest.approx(d_val), 0.0]  # each round validates that round's personal model
    state, meta, rnd = site.runtime.store.load(BEST_PERSONAL)
    assert (rnd, meta["round"]) == (2, 2) and meta["val_dice"] == pytest.approx(d_val)
    assert torch.equal(state[OUTPUT_BIAS], lesion[OUTPUT_BIAS])
    # the final test: the received (background) model is ignored, round 2's model is tested
    reply = site.handle(evaluate(4, "test", background, model=BEST_PERSONAL))
    assert reply.metrics["dice"] == pytest.approx(everywhere_dice(site, "test"))
    assert reply.metrics["personal_round"] == 2
    assert reply.metrics["personal_val_dice"] == pytest.approx(d_val)
    assert [c["case_id"] for c in reply.metrics["cases"]] == ["test-000", "test-001"]
    # PERSONAL: the personal model built from the message (round 4: the received one)
    assert site.handle(evaluate(4, "test", lesion, model=PERSONAL)).metrics["dice"] == pytest.approx(everywhere_dice(site, "test"))
    assert site.handle(evaluate(3, "test", lesion, model=PERSONAL)).metrics["dice"] == 0.0


def test_a_test_before_any_validation_uses_the_personal_model_of_the_message(make_site):
    site = make_site(ByRound, None, cases={"train": 2, "val": 0, "test": 2})
    lesion = constant_model(site.runtime.weights(), True)
    site.models = {}
    assert site.handle(evaluate(1, "val", lesion, model=PERSONAL)).metrics["dice"] is None  # no validation cases
    assert site.runtime.store.load(BEST_PERSONAL) is None
    reply = site.handle(evaluate(2, "test", lesion, model=BEST_PERSONAL))
    assert reply.metrics["dice"] == pytest.approx(everywhere_dice(site, "test"))
    assert reply.metrics["personal_round"] is None


class PersonalFedAvg(FedAvg):
    name = "personal-test"
    summary = "FedAvg whose sites evaluate ByRound personal models"
    site_logic = ByRound
    personalised = True


def test_coordinator_tests_each_sites_best_personal_model(make_site, tiny_config, tmp_path):
    """Site 0's personal model is best in round 1, site 1's in round 2: the results test
    each at its own round, average them, and say so."""
    sites = [make_site(ByRound, None, index=k) for k in (0, 1)]
    template = sites[0].runtime.weights()
    background, lesion = constant_model(template, False), constant_model(template, True)
    sites[0].models = {1: lesion, 2: background}
    sites[1].models = {1: background, 2: lesion}
    infos = [s.runtime.info for s in sites]
    strategy = PersonalFedAvg(None, infos)
    config = tiny_config().replace(rounds=2)
    transport = InProcessTransport({s.runtime.index: s for s in sites})
    out = tmp_path / "run"
    results = Coordinator(config, strategy, transport, infos, out, EventBus(), template).run()
    assert results["personal_rounds"] == {"site0": 1, "site1": 2}
    assert "personal model at its best validation round" in results["evaluated_model"]
    d_test = [everywhere_dice(s, "test") for s in sites]
    assert list(results["per_site_test_dice"].values()) == pytest.approx(d_test)
    assert results["global_test_avg"] == pytest.approx(sum(d_test) / 2)
    # the shared model of the best round (mean of the personal validation Dice) is saved
    d_val = [everywhere_dice(s, "val") for s in sites]
    assert results["best_round"] == (1 if d_val[0] >= d_val[1] else 2)
    assert results["best_mean_val_dice"] == pytest.approx(max(d_val) / 2)
    card = json.loads((out / "model.json").read_text())
    assert "personal models" in card["selected_by"]
    assert json.loads((out / "results.json").read_text())["personal_rounds"] == {"site0": 1, "site1": 2}
