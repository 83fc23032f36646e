"""Weighted averages of model states (engine.fl.aggregate)."""

from __future__ import annotations

import pytest
import torch

from engine.fl.aggregate import layer_groups, normalise, weighted_average


def test_weighted_average_two_sites_by_hand():
    states = {0: {"w": torch.tensor([1.0, 2.0])}, 1: {"w": torch.tensor([3.0, 4.0])}}
    out = weighted_average(states, {0: 0.25, 1: 0.75})
    # 0.25 * 1 + 0.75 * 3 = 2.5 ; 0.25 * 2 + 0.75 * 4 = 3.5
    assert torch.equal(out["w"], torch.tensor([2.5, 3.5]))
    assert out["w"].dtype == torch.float32


def test_weighted_average_three_sites_several_tensors():
    states = {
        0: {"a": torch.tensor([[1.0, 0.0]]), "b": torch.tensor(3.0)},
        1: {"a": torch.tensor([[0.0, 2.0]]), "b": torch.tensor(6.0)},
        2: {"a": torch.tensor([[4.0, 4.0]]), "b": torch.tensor(-3.0)},
    }
    weights = {0: 0.5, 1: 0.25, 2: 0.25}
    out = weighted_average(states, weights)
    # a: (0.5*1 + 0 + 0.25*4, 0 + 0.25*2 + 0.25*4) = (1.5, 1.5); b: 1.5 + 1.5 - 0.75 = 2.25
    assert torch.allclose(out["a"], torch.tensor([[1.5, 1.5]]))
    assert out["a"].shape == (1, 2)
    assert torch.allclose(out["b"], torch.tensor(2.25))
    assert set(out) == {"a", "b"}


def test_weighted_average_keeps_dtype_and_uses_float64_accumulation():
    # float16 states: the result must be the float16 rounding of the exact (float64) sum;
    # accumulating in float16 rounds after every site and is off in the last bit for many values
    xs = [
        torch.linspace(0.1, 100, 2000).to(torch.float16),
        torch.linspace(100, 0.3, 2000).to(torch.float16),
        torch.linspace(3, 50, 2000).to(torch.float16),
    ]
    w = [0.1, 0.2, 0.7]
    exact = sum(wi * x.double() for wi, x in zip(w, xs)).to(torch.float16)
    rounded_each_step = torch.zeros(2000, dtype=torch.float16)
    for wi, x in zip(w, xs):
        rounded_each_step += wi * x.double()
    assert not torch.equal(rounded_each_step, exact)  # the hazard is real
    out = weighted_average({k: {"h": x} for k, x in enumerate(xs)}, dict(enumerate(w)))
    assert out["h"].dtype == torch.float16
    assert torch.equal(out["h"], exact)


def test_weighted_average_does_not_modify_inputs():
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])
    out = weighted_average({0: {"w": a}, 1: {"w": b}}, {0: 0.5, 1: 0.5})
    out["w"] += 100
    assert torch.equal(a, torch.tensor([1.0, 2.0]))
    assert torch.equal(b, torch.tensor([3.0, 4.0]))


def test_integer_tensors_are_copied_from_the_first_site():
    states = {
        2: {"w": torch.tensor([0.0]), "bn.num_batches_tracked": torch.tensor(9)},
        1: {"w": torch.tensor([2.0]), "bn.num_batches_tracked": torch.tensor(5)},
    }
    out = weighted_average(states, {1: 0.5, 2: 0.5})
    # "first" = the smallest site index, not insertion order
    assert out["bn.num_batches_tracked"].dtype == torch.int64
    assert int(out["bn.num_batches_tracked"]) == 5
    assert torch.allclose(out["w"], torch.tensor([1.0]))
    # a copy, not the same tensor object
    out["bn.num_batches_tracked"] += 1
    assert int(states[1]["bn.num_batches_tracked"]) == 5


def test_normalise_renormalises_over_replying_sites():
    assert normalise({0: 2.0, 1: 6.0}) == {0: 0.25, 1: 0.75}
    # site 1 missing: n = (2, -, 6) -> only 0 and 2 share the weight
    got = normalise({0: 2.0, 2: 6.0})
    assert got == pytest.approx({0: 0.25, 2: 0.75})
    assert sum(normalise({0: 1.0, 1: 1.0, 2: 1.0}).values()) == pytest.approx(1.0)
    assert normalise({3: 5.0}) == {3: 1.0}


def test_normalise_rejects_zero_sum():
    with pytest.raises(ValueError):
        normalise({0: 0.0, 1: 0.0})
    with pytest.raises(ValueError):
        normalise({})


def test_layer_groups_share_module_prefix():
    names = ["conv.weight", "conv.bias", "model.0.conv.weight", "model.0.conv.bias", "model.1.adn.N.weight", "fc.weight"]
    assert layer_groups(names) == [
        ["conv.weight", "conv.bias"],
        ["model.0.conv.weight", "model.0.conv.bias"],
        ["model.1.adn.N.weight"],
        ["fc.weight"],
    ]


def test_layer_groups_first_seen_order_and_non_adjacent_names():
    names = ["b.weight", "a.weight", "b.bias"]
    assert layer_groups(names) == [["b.weight", "b.bias"], ["a.weight"]]
    assert layer_groups([]) == []
