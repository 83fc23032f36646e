"""Mask slices -> RGBA, checked pixel by pixel on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest

from app.viewer.overlay import (
    DIFFERENCE_COLOURS,
    OverlaySettings,
    difference_rgba,
    mask_outline,
    overlay_rgba,
)

RED = OverlaySettings(colour=(255, 0, 0), opacity=1.0, style="fill")


def square(shape=(7, 7), box=(slice(1, 6), slice(1, 6))) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[box] = True
    return mask


def test_outline_is_the_ring_of_a_filled_square():
    outline = mask_outline(square())
    expected = square()
    expected[2:5, 2:5] = False  # the 3x3 interior is not on the contour
    np.testing.assert_array_equal(outline, expected)


def test_outline_closes_at_the_image_border_and_of_an_empty_mask_is_empty():
    full = np.ones((4, 5), dtype=bool)
    outline = mask_outline(full)
    assert outline[0].all() and outline[-1].all() and outline[:, 0].all() and outline[:, -1].all()
    assert not outline[1:-1, 1:-1].any()
    assert not mask_outline(np.zeros((4, 5), dtype=bool)).any()


def test_fill_colours_the_mask_and_leaves_the_rest_transparent():
    settings = OverlaySettings(colour=(10, 20, 30), opacity=0.5, style="fill")
    rgba = overlay_rgba([(square(), settings)], (7, 7))
    assert rgba.shape == (7, 7, 4) and rgba.dtype == np.uint8
    np.testing.assert_array_equal(rgba[3, 3], [10, 20, 30, 128])
    np.testing.assert_array_equal(rgba[0, 0], [0, 0, 0, 0])
    assert np.count_nonzero(rgba[..., 3]) == 25


def test_outline_style_draws_only_the_contour():
    settings = OverlaySettings(colour=(0, 255, 0), opacity=1.0, style="outline")
    rgba = overlay_rgba([(square(), settings)], (7, 7))
    assert rgba[3, 3, 3] == 0  # centre of the square: not drawn
    np.testing.assert_array_equal(rgba[1, 3], [0, 255, 0, 255])
    assert np.count_nonzero(rgba[..., 3]) == 25 - 9


def test_hidden_or_missing_layers_give_alpha_zero():
    hidden = OverlaySettings(colour=(255, 0, 0), opacity=1.0, visible=False)
    rgba = overlay_rgba([(square(), hidden), (None, RED)], (7, 7))
    assert rgba.shape == (7, 7, 4)
    assert not rgba[..., 3].any()


def test_overlapping_layers_are_composited_top_over_bottom():
    bottom = OverlaySettings(colour=(0, 0, 255), opacity=1.0)
    top = OverlaySettings(colour=(255, 0, 0), opacity=0.5)
    both = square()
    rgba = overlay_rgba([(both, bottom), (both, top)], (7, 7))
    # 50 % red over opaque blue: (127.5, 0, 127.5), alpha 1.
    np.testing.assert_array_equal(rgba[3, 3], [128, 0, 128, 255])
    # Two half-transparent layers: alpha = 1 - 0.5 * 0.5 = 0.75.
    half_blue = OverlaySettings(colour=(0, 0, 255), opacity=0.5)
    rgba = overlay_rgba([(both, half_blue), (both, top)], (7, 7))
    assert rgba[3, 3, 3] == round(0.75 * 255)
    # straight colour: red weight 0.5, blue 0.25 -> 2/3 red, 1/3 blue
    np.testing.assert_array_equal(rgba[3, 3, :3], [170, 0, 85])


def test_difference_mode_colours_tp_fp_fn():
    truth = np.array([[1, 1, 0, 0]], dtype=bool)
    prediction = np.array([[0, 1, 1, 0]], dtype=bool)
    rgba = difference_rgba(truth, prediction, opacity=1.0)
    np.testing.assert_array_equal(rgba[0, 0, :3], DIFFERENCE_COLOURS["FN"])  # truth only: missed
    np.testing.assert_array_equal(rgba[0, 1, :3], DIFFERENCE_COLOURS["TP"])
    np.testing.assert_array_equal(rgba[0, 2, :3], DIFFERENCE_COLOURS["FP"])  # prediction only
    np.testing.assert_array_equal(rgba[..., 3], [[255, 255, 255, 0]])


def test_difference_outline_draws_each_region_contour():
    truth = square()
    prediction = square()
    rgba = difference_rgba(truth, prediction, opacity=0.6, style="outline")
    # Both masks agree: only the TP ring is drawn, with alpha 0.6.
    np.testing.assert_array_equal(rgba[1, 1], [*DIFFERENCE_COLOURS["TP"], 153])
    assert rgba[3, 3, 3] == 0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="style"):
        OverlaySettings(colour=(1, 2, 3), style="dotted")
    with pytest.raises(ValueError, match="opacity"):
        OverlaySettings(colour=(1, 2, 3), opacity=1.5)
