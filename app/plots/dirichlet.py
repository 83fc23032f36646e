"""The numbers behind the Dirichlet plots (numpy + scipy, no Qt).

Auto-FedAvg (Xia et al. 2021, section 3.3, Eq. 5-6) models the aggregation weights
alpha of K sites as alpha ~ Dir(beta) and aggregates with the mode of Dir(beta). The
paper's Fig. 3c draws Dir(beta) of K = 3 sites as a heat map on the 2-simplex at a few
rounds; :func:`simplex_density` computes that image and :func:`marginal_densities` the
Beta(beta_k, sum(beta) - beta_k) marginals that still work for any K.

Conventions
-----------
- The 2-simplex is drawn as an equilateral triangle of side 1: site 0 at (0, 0), site 1
  at (1, 0), site 2 at (1/2, sqrt(3)/2) (:data:`CORNERS`).
- Densities are scipy's ``dirichlet.pdf``: with respect to d alpha_1 d alpha_2 (the
  textbook normalisation, Dir(1, 1, 1) = 2). The triangle is that standard simplex
  stretched by :data:`TRIANGLE_AREA_RATIO` = sqrt(3)/2, so the density integrates to that
  ratio over the drawn triangle.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import stats

HEIGHT = float(np.sqrt(3.0) / 2.0)
CORNERS = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, HEIGHT]])
TRIANGLE_AREA_RATIO = HEIGHT  # (sqrt(3)/4) / (1/2): drawn triangle over standard simplex


def barycentric_to_xy(weights: np.ndarray) -> np.ndarray:
    """Points of the triangle for simplex weights of shape (..., 3)."""
    return np.asarray(weights, dtype=float) @ CORNERS


def xy_to_barycentric(xy: np.ndarray) -> np.ndarray:
    """Simplex weights (..., 3) of triangle points (..., 2); outside points get a
    negative component (see :data:`CORNERS`)."""
    xy = np.asarray(xy, dtype=float)
    w2 = xy[..., 1] / HEIGHT
    w1 = xy[..., 0] - 0.5 * w2
    return np.stack([1.0 - w1 - w2, w1, w2], axis=-1)


@dataclass(frozen=True)
class SimplexGrid:
    """Pixel centres of a raster over the triangle's bounding box.

    ``weights`` has shape (ny, nx, 3), row 0 at y = 0 (the base of the triangle);
    ``inside`` marks the pixels whose centre lies strictly inside the triangle.
    """

    nx: int
    ny: int
    weights: np.ndarray
    inside: np.ndarray

    @property
    def pixel_area(self) -> float:
        return (1.0 / self.nx) * (HEIGHT / self.ny)


@lru_cache(maxsize=4)
def simplex_grid(resolution: int = 200) -> SimplexGrid:
    """The raster used by :func:`simplex_density`; cached because only beta changes
    from round to round."""
    nx = int(resolution)
    ny = max(1, int(round(resolution * HEIGHT)))
    xs = (np.arange(nx) + 0.5) / nx
    ys = (np.arange(ny) + 0.5) * HEIGHT / ny
    grid_x, grid_y = np.meshgrid(xs, ys)  # (ny, nx)
    weights = xy_to_barycentric(np.stack([grid_x, grid_y], axis=-1))
    inside = np.all(weights > 1e-9, axis=-1)
    weights.setflags(write=False)
    inside.setflags(write=False)
    return SimplexGrid(nx, ny, weights, inside)


def simplex_density(beta: Any, resolution: int = 200) -> np.ndarray:
    """Dir(beta) on the triangle, K = 3.

    Parameters
    ----------
    beta : array-like of 3 positive floats
        The concentration.
    resolution : int
        Pixels along the base of the triangle.

    Returns
    -------
    numpy.ndarray
        (ny, nx) float image, row 0 at the base: the density at each pixel centre inside
        the triangle, NaN outside (pyqtgraph draws NaN transparent).
    """
    beta = _check_beta(beta)
    if beta.size != 3:
        raise ValueError(f"the simplex view needs exactly 3 sites, got beta of {beta.size}")
    grid = simplex_grid(resolution)
    image = np.full((grid.ny, grid.nx), np.nan)
    points = grid.weights[grid.inside]  # (N, 3)
    # scipy wants (K-1, N) and appends 1 - sum itself, so the columns sum to 1 exactly.
    image[grid.inside] = stats.dirichlet.pdf(points[:, :2].T, beta)
    return image


@dataclass(frozen=True)
class Mode:
    """Where the plots mark the mode of Dir(beta).

    ``interior`` is True when every beta_k > 1: then ``point`` is the true mode
    (beta_k - 1) / (sum(beta) - K) (paper Eq. 6). Otherwise Dir(beta) has no interior
    maximum (it is unbounded towards the faces with beta_k < 1) and ``point`` is what
    the engine aggregates with instead (engine.fl.learned_weights.dirichlet_mode):
    the clamped excess max(beta_k - 1, 0) normalised, a point on the boundary, or the
    mean beta / sum(beta) when no beta_k exceeds 1. ``note`` says which.
    """

    point: np.ndarray
    interior: bool
    note: str


def dirichlet_mode(beta: Any) -> Mode:
    """The mode of Dir(beta) (or the engine's boundary fallback, see :class:`Mode`)."""
    beta = _check_beta(beta)
    if np.all(beta > 1.0):
        return Mode((beta - 1.0) / (beta.sum() - beta.size), True, "mode")
    excess = np.clip(beta - 1.0, 0.0, None)
    if excess.sum() > 0:
        return Mode(excess / excess.sum(), False, "boundary: clamped mode (some beta <= 1)")
    return Mode(beta / beta.sum(), False, "no mode (all beta <= 1): mean shown")


def marginal_densities(beta: Any, x: np.ndarray) -> np.ndarray:
    """Beta(beta_k, sum(beta) - beta_k) densities of each alpha_k at ``x``.

    Returns
    -------
    numpy.ndarray
        (K, len(x)); non-finite values (beta_k < 1 at x = 0) are NaN.
    """
    beta = _check_beta(beta)
    rest = beta.sum() - beta
    with np.errstate(divide="ignore", invalid="ignore"):
        values = stats.beta.pdf(np.asarray(x, dtype=float)[None, :], beta[:, None], rest[:, None])
    return np.where(np.isfinite(values), values, np.nan)


def marginal_means(beta: Any) -> np.ndarray:
    """E[alpha_k] = beta_k / sum(beta)."""
    beta = _check_beta(beta)
    return beta / beta.sum()


def softmax(beta: Any) -> np.ndarray:
    """alpha = softmax(beta) (paper Eq. 4), the weights of the softmax mode."""
    beta = np.asarray(beta, dtype=float)
    shifted = np.exp(beta - beta.max())
    return shifted / shifted.sum()


def beta_for_layer(beta: Any, layer: int | None = None) -> np.ndarray:
    """One concentration vector (K,) out of an event's beta.

    Parameters
    ----------
    beta : list
        K floats (network-wise weights) or K lists of P floats (layer-wise: one simplex
        per layer p, the sites along axis 0, as in ``engine.fl.auto_fedavg``).
    layer : int or None
        For layer-wise beta: the layer; None averages beta over the layers (the plots
        say so in their titles).
    """
    values = np.asarray(beta, dtype=float)
    if values.ndim == 1:
        return values
    if values.ndim != 2:
        raise ValueError(f"beta must be (K,) or (K, layers), got shape {values.shape}")
    if layer is None:
        return values.mean(axis=1)
    return values[:, layer]


def _check_beta(beta: Any) -> np.ndarray:
    values = np.asarray(beta, dtype=float).ravel()
    if values.size < 2 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"beta must be >= 2 positive finite numbers, got {values.tolist()}")
    return values
