"""Auto-FedAvg aggregation weights alpha = gamma(beta) (ALGORITHMS.md 1.2, 1.5, 14)."""

from __future__ import annotations

import math

import pytest
import torch

from engine.fl.learned_weights import (
    DIRICHLET,
    SOFTMAX,
    aggregation_weights,
    dirichlet_mode,
    extra_communication_ratio,
    training_weights,
)


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# Auto-FedAvg paper, Fig. 3c: the published beta and the alpha printed next to them.
PAPER_FIG3C = [
    ((6.4, 8.0, 6.4), (0.303, 0.393, 0.303)),
    ((13.4, 6.0, 6.4), (0.544, 0.219, 0.237)),
    ((18.3, 5.3, 6.9), (0.629, 0.156, 0.215)),
]


@pytest.mark.parametrize(("beta", "alpha"), PAPER_FIG3C)
def test_mode_reproduces_paper_fig3c(beta, alpha):
    got = dirichlet_mode(_t(beta))
    assert got.shape == (3,)
    for g, a in zip(got.tolist(), alpha):
        assert abs(g - a) < 1e-3
    # and through the public dispatch used by the strategy
    assert torch.allclose(aggregation_weights(_t(beta), DIRICHLET), got)


def test_mode_is_not_the_mean():
    # (18.3, 5.3, 6.9): mean = beta / 30.5 = (0.600, 0.174, 0.226), far from the paper's alpha
    beta = _t((18.3, 5.3, 6.9))
    mode = dirichlet_mode(beta)
    mean = beta / beta.sum()
    assert abs(float(mode[0]) - 0.600) > 0.02
    assert abs(float(mean[0]) - 0.600) < 1e-3


def test_mode_of_equal_beta_is_uniform():
    assert torch.allclose(dirichlet_mode(_t((6.0, 6.0, 6.0))), torch.full((3,), 1 / 3, dtype=torch.float64))


def test_mode_matches_eq6_by_hand():
    # Eq. 6: (beta_k - 1) / (sum beta - K) = (1, 2, 5) / 8
    got = dirichlet_mode(_t((2.0, 3.0, 6.0)))
    assert torch.allclose(got, _t((1 / 8, 2 / 8, 5 / 8)), atol=1e-12)


def test_mode_clamps_components_at_or_below_one():
    got = dirichlet_mode(_t((0.5, 3.0, 3.0)))
    assert torch.allclose(got, _t((0.0, 0.5, 0.5)), atol=1e-12)
    assert (got >= 0).all()


def test_mode_of_all_ones_is_not_nan_and_falls_back_to_mean():
    got = dirichlet_mode(_t((1.0, 1.0, 1.0)))
    assert not torch.isnan(got).any()
    assert torch.allclose(got, torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-12)


def test_mode_all_below_one_falls_back_to_mean():
    # sum = 1.0, so the mean is beta itself; PyTorch's mode would be one-hot instead
    got = dirichlet_mode(_t((0.5, 0.2, 0.3)))
    assert torch.allclose(got, _t((0.5, 0.2, 0.3)), atol=1e-12)
    assert float(got.max()) < 1.0


def test_layerwise_mode_is_column_wise():
    # K = 3 sites, P = 2 layers; each column is its own simplex
    beta = _t([[6.0, 2.0], [6.0, 3.0], [6.0, 6.0]])
    got = dirichlet_mode(beta)
    assert got.shape == (3, 2)
    assert torch.allclose(got[:, 0], torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(got[:, 1], _t((1 / 8, 2 / 8, 5 / 8)), atol=1e-12)
    assert torch.allclose(got.sum(dim=0), torch.ones(2, dtype=torch.float64))


def test_layerwise_degenerate_column_falls_back_only_in_that_column():
    beta = _t([[1.0, 3.0], [1.0, 5.0]])
    got = dirichlet_mode(beta)
    assert torch.allclose(got[:, 0], _t((0.5, 0.5)), atol=1e-12)
    assert torch.allclose(got[:, 1], _t((2 / 6, 4 / 6)), atol=1e-12)


def test_softmax_with_equal_beta_is_uniform():
    for value in (0.0, 6.0, -3.0):
        got = aggregation_weights(torch.full((4,), value, dtype=torch.float64), SOFTMAX)
        assert torch.allclose(got, torch.full((4,), 0.25, dtype=torch.float64), atol=1e-12)


def test_softmax_by_hand():
    beta = _t((0.0, math.log(3.0)))
    got = aggregation_weights(beta, SOFTMAX)
    assert torch.allclose(got, _t((0.25, 0.75)), atol=1e-12)
    train = training_weights(beta.clone().requires_grad_(True), SOFTMAX)
    assert torch.allclose(train.detach(), _t((0.25, 0.75)), atol=1e-12)


def test_softmax_layerwise_is_column_wise():
    beta = _t([[0.0, 1.0], [0.0, 1.0 + math.log(4.0)]])
    got = aggregation_weights(beta, SOFTMAX)
    assert torch.allclose(got[:, 0], _t((0.5, 0.5)), atol=1e-12)
    assert torch.allclose(got[:, 1], _t((0.2, 0.8)), atol=1e-12)


def test_unknown_weight_kind_raises():
    with pytest.raises(ValueError, match="unknown weight kind"):
        aggregation_weights(_t((6.0, 6.0)), "dirichlet2")
    with pytest.raises(ValueError, match="unknown weight kind"):
        training_weights(_t((6.0, 6.0)), "dirichlet2")


def test_dirichlet_rsample_on_simplex_with_finite_nonzero_gradients():
    torch.manual_seed(0)
    beta = _t((6.0, 6.0, 6.0)).requires_grad_(True)
    alpha = training_weights(beta, DIRICHLET)
    assert alpha.shape == (3,)
    assert (alpha.detach() > 0).all() and (alpha.detach() < 1).all()
    assert abs(float(alpha.detach().sum()) - 1.0) < 1e-9
    # a loss that depends on which site gets the weight
    loss = (alpha * _t((1.0, 2.0, 3.0))).sum()
    (grad,) = torch.autograd.grad(loss, beta)
    assert torch.isfinite(grad).all()
    assert (grad.abs() > 0).any()
    assert float(grad.abs().sum()) > 1e-6


def test_dirichlet_rsample_is_random():
    torch.manual_seed(1)
    beta = _t((6.0, 6.0, 6.0))
    a = training_weights(beta, DIRICHLET)
    b = training_weights(beta, DIRICHLET)
    assert not torch.allclose(a, b)


def test_dirichlet_rsample_mean_approaches_beta_over_sum():
    torch.manual_seed(2)
    beta = _t((2.0, 4.0, 6.0))
    samples = torch.stack([training_weights(beta, DIRICHLET) for _ in range(4000)])
    assert torch.allclose(samples.mean(dim=0), beta / beta.sum(), atol=0.01)


def test_layerwise_rsample_columns_on_simplex_with_gradients():
    torch.manual_seed(3)
    beta = torch.full((3, 4), 6.0, dtype=torch.float64)
    beta[0, 2] = 20.0
    beta.requires_grad_(True)
    alpha = training_weights(beta, DIRICHLET)
    assert alpha.shape == (3, 4)
    assert (alpha > 0).all()
    assert torch.allclose(alpha.sum(dim=0), torch.ones(4, dtype=torch.float64), atol=1e-9)
    loss = (alpha * torch.arange(12, dtype=torch.float64).reshape(3, 4)).sum()
    (grad,) = torch.autograd.grad(loss, beta)
    assert grad.shape == (3, 4)
    assert torch.isfinite(grad).all()
    # every column received a gradient (each layer has its own Dirichlet)
    assert (grad.abs().sum(dim=0) > 0).all()


def test_layerwise_rsample_columns_are_independent_dirichlets():
    # column 1 is very concentrated on site 0, column 0 is uniform: the sample means differ
    torch.manual_seed(4)
    beta = _t([[5.0, 200.0], [5.0, 2.0], [5.0, 2.0]])
    samples = torch.stack([training_weights(beta, DIRICHLET) for _ in range(2000)])
    mean = samples.mean(dim=0)
    assert torch.allclose(mean[:, 0], torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02)
    assert abs(float(mean[0, 1]) - 200 / 204) < 0.01


def test_extra_communication_ratio():
    assert extra_communication_ratio(3, 10) == pytest.approx(0.1)
    assert extra_communication_ratio(3, 1) == pytest.approx(1.0)
    assert extra_communication_ratio(16, 10) == pytest.approx(0.75)
    # by its definition K(K-1) / (t0 * 2K)
    for k, t0 in [(2, 1), (4, 5), (7, 3)]:
        assert extra_communication_ratio(k, t0) == pytest.approx(k * (k - 1) / (t0 * 2 * k))
