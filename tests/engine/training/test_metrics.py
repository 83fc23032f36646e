"""Segmentation and run metrics (engine.training.metrics), checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import wilcoxon

from engine.training.metrics import (
    CaseResult,
    case_dice,
    local_matrix_metrics,
    mean_or_none,
    per_site_dice,
    summarize_cases,
    wilcoxon_p,
)


def mask(shape=(1, 4, 4, 2), on=()) -> torch.Tensor:
    m = torch.zeros(shape)
    for idx in on:
        m[(0, *idx)] = 1.0
    return m


def test_case_dice_two_of_three_overlap():
    # prediction 3 voxels, label 3 voxels, 2 shared: 2*2 / (3+3) = 2/3
    pred = mask(on=[(0, 0, 0), (0, 1, 0), (0, 2, 0)])
    label = mask(on=[(0, 1, 0), (0, 2, 0), (3, 3, 1)])
    assert case_dice(pred, label) == pytest.approx(2 / 3, abs=1e-6)


def test_case_dice_unequal_sizes():
    # prediction 1 voxel inside a 4-voxel label: 2*1 / (1+4) = 0.4
    pred = mask(on=[(1, 1, 1)])
    label = mask(on=[(1, 1, 1), (1, 2, 1), (2, 1, 1), (2, 2, 1)])
    assert case_dice(pred, label) == pytest.approx(0.4, abs=1e-6)
    assert case_dice(label, pred) == pytest.approx(0.4, abs=1e-6)


def test_case_dice_perfect_and_disjoint():
    label = mask(on=[(0, 0, 0), (3, 3, 1)])
    assert case_dice(label.clone(), label) == pytest.approx(1.0)
    assert case_dice(mask(on=[(1, 1, 0)]), label) == pytest.approx(0.0)


def test_case_dice_both_empty_is_one():
    assert case_dice(mask(), mask()) == 1.0


def test_case_dice_empty_prediction_of_nonempty_lesion_is_zero():
    assert case_dice(mask(), mask(on=[(2, 2, 0)])) == 0.0
    # and a false positive on an empty label
    assert case_dice(mask(on=[(2, 2, 0)]), mask()) == 0.0


def test_case_result_inverse_fraction_and_is_small():
    small = CaseResult("a", 0.5, lesion_voxels=2, total_voxels=1000)  # a^-1 = 500
    large = CaseResult("b", 0.9, lesion_voxels=100, total_voxels=1000)  # a^-1 = 10
    empty = CaseResult("c", 1.0, lesion_voxels=0, total_voxels=1000)
    assert small.inverse_fraction == 500
    assert large.inverse_fraction == 10
    assert math.isinf(empty.inverse_fraction)
    assert small.is_small(400) and not small.is_small(501)
    assert small.is_small(500)  # the threshold itself counts as small (a^-1 >= tau)
    assert not large.is_small(400) and large.is_small(10)
    assert not empty.is_small(400)  # no lesion: neither small nor large
    assert small.to_dict() == {"case_id": "a", "dice": 0.5, "lesion_voxels": 2, "total_voxels": 1000}


def test_summarize_cases_small_large_split():
    cases = [
        CaseResult("s1", 0.2, 1, 1000),  # a^-1 1000 -> small
        CaseResult("s2", 0.4, 2, 1000),  # 500 -> small
        CaseResult("l1", 0.8, 100, 1000),  # 10 -> large
        CaseResult("l2", 0.9, 5, 1000),  # 200 -> large at tau 400
        CaseResult("e", 1.0, 0, 1000),  # empty: only in the overall mean
    ]
    got = summarize_cases(cases, 400)
    assert got["dice"] == pytest.approx((0.2 + 0.4 + 0.8 + 0.9 + 1.0) / 5)
    assert got["dice_small"] == pytest.approx(0.3)
    assert got["dice_large"] == pytest.approx(0.85)
    assert got["n_small"] == 2 and got["n_large"] == 2
    # a lower threshold moves l2 (200) into the small group
    lower = summarize_cases(cases, 150)
    assert lower["dice_small"] == pytest.approx((0.2 + 0.4 + 0.9) / 3)
    assert lower["dice_large"] == pytest.approx(0.8)


def test_summarize_cases_without_small_lesions_and_empty_list():
    got = summarize_cases([CaseResult("l", 0.7, 500, 1000)], 400)
    assert got["dice_small"] is None and got["n_small"] == 0
    assert got["dice_large"] == pytest.approx(0.7)
    none = summarize_cases([], 400)
    assert none == {"dice": None, "dice_small": None, "dice_large": None, "n_small": 0, "n_large": 0}


def test_mean_or_none_and_per_site_dice():
    assert mean_or_none([]) is None
    assert mean_or_none([0.5, 1.0]) == pytest.approx(0.75)
    got = per_site_dice({"a": [CaseResult("x", 0.2, 1, 10), CaseResult("y", 0.6, 1, 10)], "b": []})
    assert got == {"a": pytest.approx(0.4), "b": None}


def test_local_matrix_metrics_3x3_by_hand():
    m = [
        [0.60, 0.40, 0.30],
        [0.50, 0.70, 0.20],
        [0.10, 0.35, 0.80],
    ]
    got = local_matrix_metrics(m)
    # diagonal (0.6 + 0.7 + 0.8) / 3 = 0.7; off-diagonal (0.4+0.3+0.5+0.2+0.1+0.35) / 6 = 1.85 / 6
    assert got["local_avg"] == pytest.approx(0.7)
    assert got["local_gen"] == pytest.approx(1.85 / 6)


def test_local_matrix_metrics_paper_row_check():
    # Auto-FedAvg Table 2, local-only rows I/II/III on sites I/II/III:
    # local avg = (59.82 + 59.95 + 65.85)/3 = 61.87; local gen = mean of the 6 others = 48.79
    m = [[59.82, 61.82, 51.80], [41.92, 59.95, 50.18], [34.50, 52.54, 65.85]]
    got = local_matrix_metrics(m)
    assert got["local_avg"] == pytest.approx(61.87, abs=0.005)
    assert got["local_gen"] == pytest.approx(48.79, abs=0.005)


def test_local_matrix_metrics_leave_out_a_site_that_could_not_be_tested():
    nan = float("nan")
    m = [[0.60, 0.40, nan], [nan, nan, nan], [0.10, nan, 0.80]]  # site 2 lost: no model, no test
    got = local_matrix_metrics(m)
    assert got["local_avg"] == pytest.approx(0.7)
    assert got["local_gen"] == pytest.approx(0.25)
    assert all(math.isnan(v) for v in local_matrix_metrics([[nan, nan], [nan, nan]]).values())


def test_local_matrix_metrics_edge_cases():
    one = local_matrix_metrics([[0.5]])
    assert one["local_avg"] == 0.5 and math.isnan(one["local_gen"])
    with pytest.raises(ValueError, match="square"):
        local_matrix_metrics([[0.1, 0.2]])
    with pytest.raises(ValueError, match="square"):
        local_matrix_metrics([0.1, 0.2])


def test_wilcoxon_p_equals_scipy():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 0.9, size=12)
    b = a + rng.normal(0.03, 0.02, size=12)
    expected = wilcoxon(a, b).pvalue  # scipy defaults: two-sided, zero_method "wilcox"
    assert wilcoxon_p(list(a), list(b)) == pytest.approx(expected, rel=1e-12)
    assert 0.0 < wilcoxon_p(a, b) < 0.05  # a consistent shift is detected


def test_wilcoxon_p_drops_zero_differences_like_scipy_default():
    # three pairs are equal: scipy's default zero_method "wilcox" drops them (9 pairs remain)
    rng = np.random.default_rng(1)
    a = rng.uniform(0.5, 0.9, 12)
    b = a + rng.normal(0.02, 0.03, 12)
    b[[2, 5, 7]] = a[[2, 5, 7]]
    expected = wilcoxon(a, b).pvalue
    assert wilcoxon_p(a, b) == pytest.approx(expected, rel=1e-12)
    assert wilcoxon_p(a, b) == pytest.approx(wilcoxon(np.delete(a, [2, 5, 7]), np.delete(b, [2, 5, 7])).pvalue, rel=1e-12)


def test_wilcoxon_p_exact_small_sample_by_hand():
    # all 6 differences positive with distinct ranks: exact two-sided p = 2 / 2^6 = 0.03125
    a = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    b = [x + d for x, d in zip(a, [0.011, 0.022, 0.033, 0.044, 0.055, 0.066])]
    assert wilcoxon_p(a, b) == pytest.approx(0.03125, rel=1e-9)


def test_wilcoxon_p_identical_inputs_is_one():
    a = [0.3, 0.5, 0.7, 0.9]
    assert wilcoxon_p(a, list(a)) == 1.0
    assert wilcoxon_p([], []) == 1.0


def test_wilcoxon_p_length_mismatch():
    with pytest.raises(ValueError, match="length"):
        wilcoxon_p([0.1, 0.2], [0.1])
