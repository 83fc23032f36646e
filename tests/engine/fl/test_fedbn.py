"""FedBN: normalisation tensors, chosen by module type, stay at each site (ALGORITHMS.md 7).

ALGORITHMS.md 14: "BN parameters differ across clients after aggregation and every other
tensor is identical" is checked on real sites (tiny U-Net with affine instance norm,
trained on their own shifted data) and a real FedBN server round.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn

from engine.fl import STRATEGIES, build_strategy
from engine.fl.base import BEST_PERSONAL, PERSONAL
from engine.fl.fedavg import FedAvg
from engine.fl.fedbn import KEPT, FedBN, FedBNSite, norm_state_names
from engine.fl.protocol import EVALUATE, TRAIN, Message
from engine.fl.site import SiteInfo
from engine.model.networks import build_network
from engine.simulation.transport import InProcessTransport

AFFINE_IN = ["instance", {"affine": True}]
TINY = {"channels": [4, 8, 16], "strides": [2, 2]}


def test_norm_tensors_are_chosen_by_module_type_not_by_name():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.Conv3d(1, 2, 1)  # called "bn" but a convolution
            self.features = nn.Sequential(nn.Conv3d(2, 2, 1), nn.BatchNorm3d(2), nn.GroupNorm(1, 2))
            self.head = nn.LayerNorm(4)

    names = norm_state_names(Net())
    assert names == [
        "features.1.weight", "features.1.bias",
        "features.1.running_mean", "features.1.running_var", "features.1.num_batches_tracked",
        "features.2.weight", "features.2.bias",
        "head.weight", "head.bias",
    ]  # fmt: skip


def test_monai_unet_norms():
    # MONAI's default instance norm: affine=False, no running statistics -> nothing to keep
    assert norm_state_names(build_network("unet", TINY)) == []
    network = build_network("unet", TINY | {"norm": AFFINE_IN})
    layers = [m for m in network.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert len(layers) == 6  # 3 down, 3 up
    affine = norm_state_names(network)
    assert len(affine) == 2 * 6 and all(n.endswith((".N.weight", ".N.bias")) for n in affine)  # gamma, beta
    batch = norm_state_names(build_network("unet", TINY | {"norm": "batch"}))
    assert sum(n.endswith("running_var") for n in batch) == 6 and len(batch) == 5 * 6


def test_registered_and_personalised():
    assert STRATEGIES.get("fedbn") is FedBN
    assert FedBN.personalised and issubclass(FedBN, FedAvg) and FedBN.site_logic is FedBNSite
    assert isinstance(build_strategy("fedbn", {}, [SiteInfo(0, "a", 1)]), FedBN)


def _round(sites, strategy, rnd, shared):
    """One FedBN round through the in-process transport: sites train, the server aggregates."""
    transport = InProcessTransport({s.runtime.index: s for s in sites})
    gen = strategy.round(rnd, shared)
    messages = next(gen)
    try:
        gen.send(transport.exchange(messages))
    except StopIteration as stop:
        return stop.value, messages
    raise AssertionError("FedBN's round is one exchange")


def test_norm_tensors_differ_across_sites_after_aggregation_and_all_else_is_shared(make_site):
    sites = [make_site(FedBNSite, None, index=k, norm=AFFINE_IN) for k in range(3)]
    initial = sites[0].runtime.weights()
    norm = set(sites[0].local_names)
    assert len(norm) == 12
    strategy = FedBN(FedBN.Params(), [s.runtime.info for s in sites])
    outcome, sent = _round(sites, strategy, 1, initial)
    assert all(torch.equal(m.arrays["global"][k], initial[k]) for m in sent.values() for k in initial)
    shared = outcome.global_state
    personal = [s.personal_weights(shared, 1) for s in sites]  # what each site validates after round 1
    for name in shared:
        if name in norm:  # each site's own, trained apart: different across sites and from the average
            assert all(not torch.equal(personal[i][name], personal[j][name]) for i, j in ((0, 1), (0, 2), (1, 2))), name
            assert all(not torch.equal(p[name], shared[name]) for p in personal), name
        else:
            assert all(torch.equal(p[name], shared[name]) for p in personal), name
    # the server averaged the norm tensors too (n_k / n): the shared model's policy for an unseen site
    kept = [s.runtime.store.load(KEPT)[0] for s in sites]
    n = torch.tensor([float(s.runtime.data.num_train) for s in sites])
    for name in norm:
        expected = sum(w * k[name].double() for w, k in zip(n / n.sum(), kept))
        assert torch.allclose(shared[name].double(), expected, atol=1e-6), name


def test_next_round_trains_from_shared_weights_plus_own_norms(make_site):
    site = make_site(FedBNSite, None, norm=AFFINE_IN)
    initial = site.runtime.weights()
    site.handle(Message(TRAIN, 1, {"global": initial}))
    own = site.runtime.store.load(KEPT)[0]
    shared = {k: v + 0.5 for k, v in initial.items()}  # some new global model
    start = site.start_weights(Message(TRAIN, 2, {"global": shared}))
    assert all(torch.equal(start[k], own[k] if k in own else shared[k]) for k in shared)
    # a round 2 redone after a crash starts from round 1's norms even though round 2 saved its own
    site.handle(Message(TRAIN, 2, {"global": shared}))
    assert site.runtime.store.load(KEPT)[2] == 2
    again = site.start_weights(Message(TRAIN, 2, {"global": shared}))
    assert all(torch.equal(again[k], start[k]) for k in shared)


def test_validation_and_test_use_the_personal_model(make_site):
    site = make_site(FedBNSite, None, norm=AFFINE_IN)
    initial = site.runtime.weights()
    site.handle(Message(TRAIN, 1, {"global": initial}))
    personal = site.personal_weights(initial, 1)
    reply = site.handle(Message(EVALUATE, 1, {"model": initial}, {"split": "val", "model": PERSONAL}))
    expected = [c.dice for c in site.runtime.evaluate("val", personal)]
    assert [c["dice"] for c in reply.metrics["cases"]] == pytest.approx(expected)
    assert site.runtime.store.load(BEST_PERSONAL)[1]["round"] == 1


def test_without_norm_parameters_fedbn_is_fedavg_and_says_so(make_site, caplog):
    with caplog.at_level(logging.WARNING, logger="engine.fl.fedbn"):
        site = make_site(FedBNSite, None)  # MONAI's default instance norm
    assert site.local_names == []
    assert "this run is FedAvg" in caplog.text and "affine" in caplog.text
    initial = site.runtime.weights()
    site.handle(Message(TRAIN, 1, {"global": initial}))
    assert site.runtime.store.load(KEPT) is None
    assert site.personal_weights(initial, 1) is initial
