"""Dirichlet numbers checked by hand (no Qt)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.plots.dirichlet import (
    CORNERS,
    HEIGHT,
    TRIANGLE_AREA_RATIO,
    barycentric_to_xy,
    beta_for_layer,
    dirichlet_mode,
    marginal_densities,
    marginal_means,
    simplex_density,
    simplex_grid,
    softmax,
    xy_to_barycentric,
)
from engine.fl import learned_weights


def test_barycentric_coordinates_round_trip_and_corners():
    np.testing.assert_allclose(barycentric_to_xy(np.eye(3)), CORNERS)
    np.testing.assert_allclose(barycentric_to_xy([1 / 3, 1 / 3, 1 / 3]), [0.5, HEIGHT / 3])
    weights = np.array([[0.2, 0.3, 0.5], [0.7, 0.1, 0.2]])
    np.testing.assert_allclose(xy_to_barycentric(barycentric_to_xy(weights)), weights)
    assert xy_to_barycentric([0.0, 0.5]).min() < 0  # left of the triangle: outside


def test_uniform_dirichlet_is_two_inside_and_nan_outside():
    image = simplex_density([1.0, 1.0, 1.0], resolution=120)
    inside = simplex_grid(120).inside
    np.testing.assert_allclose(image[inside], 2.0)  # Gamma(3) / Gamma(1)^3
    assert np.isnan(image[~inside]).all()
    assert image[0, 60] == pytest.approx(2.0)  # middle of the base
    assert np.isnan(image[-1, 0]) and np.isnan(image[-1, -1])  # beside the apex


@pytest.mark.parametrize("beta", [[1.0, 1.0, 1.0], [2.0, 3.0, 5.0], [6.0, 6.0, 6.0], [18.3, 5.3, 6.9]])
def test_density_integrates_to_one_over_the_simplex(beta):
    grid = simplex_grid(400)
    image = simplex_density(beta, resolution=400)
    # the drawn triangle is the standard simplex stretched by TRIANGLE_AREA_RATIO
    total = np.nansum(image) * grid.pixel_area / TRIANGLE_AREA_RATIO
    assert total == pytest.approx(1.0, abs=0.01)


def test_density_is_highest_at_the_mode():
    beta = [2.0, 3.0, 5.0]
    grid = simplex_grid(300)
    image = simplex_density(beta, resolution=300)
    peak = grid.weights[np.unravel_index(np.nanargmax(image), image.shape)]
    np.testing.assert_allclose(peak, [1 / 7, 2 / 7, 4 / 7], atol=0.01)


def test_mode_of_dir_2_3_5():
    mode = dirichlet_mode([2.0, 3.0, 5.0])
    np.testing.assert_allclose(mode.point, [1 / 7, 2 / 7, 4 / 7])
    assert mode.interior


def test_mode_on_the_boundary_and_without_mode():
    clamped = dirichlet_mode([0.5, 3.0, 2.0])
    np.testing.assert_allclose(clamped.point, [0.0, 2 / 3, 1 / 3])
    assert not clamped.interior and "boundary" in clamped.note
    flat = dirichlet_mode([0.5, 0.5, 1.0])
    np.testing.assert_allclose(flat.point, [0.25, 0.25, 0.5])  # the mean beta / sum(beta)
    assert not flat.interior and "mean" in flat.note


@pytest.mark.parametrize("beta", [[18.3, 5.3, 6.9], [0.5, 3.0, 2.0], [1.0, 1.0, 1.0], [0.3, 0.9, 0.5, 0.2], [6.0, 1.0, 2.0, 4.0, 9.0]])
def test_mode_marks_what_the_engine_aggregates_with(beta):
    engine = learned_weights.dirichlet_mode(torch.tensor(beta, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(dirichlet_mode(beta).point, engine, atol=1e-12)


def test_paper_fig3c_weights():
    np.testing.assert_allclose(dirichlet_mode([18.3, 5.3, 6.9]).point, [0.629, 0.156, 0.215], atol=1e-3)


def test_marginals_integrate_to_one_and_have_the_right_means():
    beta = [6.0, 1.5, 2.0, 4.0, 9.0]
    x = np.linspace(0.0, 1.0, 4001)
    dens = marginal_densities(beta, x)
    assert dens.shape == (5, x.size)
    np.testing.assert_allclose(np.trapezoid(dens, x, axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.trapezoid(dens * x, x, axis=1), np.array(beta) / sum(beta), atol=1e-4)
    np.testing.assert_allclose(marginal_means(beta), np.array(beta) / 22.5)


def test_marginal_by_hand():
    # Dir(1, 2): alpha_1 ~ Beta(1, 2), density 2 (1 - x); alpha_2 ~ Beta(2, 1), density 2 x
    x = np.array([0.0, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(marginal_densities([1.0, 2.0], x), [2 * (1 - x), 2 * x])


def test_unbounded_marginal_is_nan_not_inf():
    dens = marginal_densities([0.5, 2.0], np.array([0.0, 0.5]))
    assert np.isnan(dens[0, 0]) and np.isfinite(dens[0, 1])


def test_beta_of_a_layer():
    layered = [[2.0, 4.0], [6.0, 8.0], [1.5, 2.5]]  # K = 3 sites, P = 2 layers
    np.testing.assert_allclose(beta_for_layer(layered), [3.0, 7.0, 2.0])
    np.testing.assert_allclose(beta_for_layer(layered, 1), [4.0, 8.0, 2.5])
    np.testing.assert_allclose(beta_for_layer([1.0, 2.0, 3.0]), [1.0, 2.0, 3.0])


def test_softmax_by_hand():
    np.testing.assert_allclose(softmax([0.0, np.log(3.0)]), [0.25, 0.75])


def test_bad_beta_is_refused():
    with pytest.raises(ValueError, match="positive"):
        dirichlet_mode([1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="exactly 3 sites"):
        simplex_density([2.0, 2.0, 2.0, 2.0])
