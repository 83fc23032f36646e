"""Slice views driven by real mouse/wheel/key events; checked on image data and rendered pixels."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

SHAPE = (40, 30, 20)  # the ramp phantom of conftest.py: HU = -500 + 40 k + 3 j + i


def hu(i, j, k):
    return -500 + 40 * k + 3 * j + i


def brightness(view) -> np.ndarray:
    # min over RGB: grey CT pixels keep their value, the yellow crosshair/labels drop out
    return view.rendered_image().min(axis=2).astype(float)


def test_wheel_scrolls_slices_and_ctrl_wheel_zooms(viewer, mouse):
    axial = viewer.views["axial"]
    centre = QPoint(axial.width() // 2, axial.height() // 2)
    mouse.wheel(axial, centre, notches=2)
    assert viewer.model.cursor == (20, 15, 12)
    assert axial.image_item.image[0, 0] == hu(0, 0, 12)
    mouse.wheel(axial, centre, notches=-1)
    assert axial.image_item.image[0, 0] == hu(0, 0, 11)
    before = axial.view_box.viewRange()[0]
    mouse.wheel(axial, centre, notches=3, modifiers=Qt.KeyboardModifier.ControlModifier)
    after = axial.view_box.viewRange()[0]
    assert viewer.model.cursor[2] == 11  # Ctrl+wheel does not scroll...
    assert after[1] - after[0] < before[1] - before[0]  # ...it zooms in


def test_arrow_and_page_keys_scroll_the_focused_view(viewer, qtbot):
    coronal = viewer.views["coronal"]
    coronal.setFocus()
    qtbot.keyClick(coronal, Qt.Key.Key_Up)
    assert viewer.model.cursor == (20, 16, 10)
    np.testing.assert_array_equal(coronal.image_item.image, viewer.model.ct_slice("coronal"))
    assert coronal.image_item.image[0, 0] == hu(0, 16, 0)
    qtbot.keyClick(coronal, Qt.Key.Key_PageDown)
    assert viewer.model.cursor == (20, 6, 10)
    assert "Coronal  7/30" in coronal.slice_label.toPlainText()


@pytest.mark.parametrize(
    ("preset", "expected_grey"),
    [("soft tissue", (-75 + 160) / 400 * 255), ("lung", (-75 + 1350) / 1500 * 255), ("brain", 0)],
)
def test_window_preset_sets_levels_and_rendered_grey(viewer, mouse, preset, expected_grey):
    axial = viewer.views["axial"]
    viewer.model.apply_preset(preset)
    width, level = viewer.model.presets[preset]
    np.testing.assert_allclose(axial.image_item.levels, [level - width / 2, level + width / 2])
    # voxel (10, 5) of slice 10 holds -75 HU, away from the crosshair through (20, 15)
    pixel = mouse.pixel(axial, axial.view_position((10, 5, 10)))
    grey = axial.rendered_image()[pixel.y(), pixel.x()]
    assert grey[0] == grey[1] == grey[2]
    assert abs(float(grey[0]) - expected_grey) <= 1.5


def test_right_drag_widens_the_window_and_raises_the_level(viewer, mouse):
    axial = viewer.views["axial"]
    viewer.model.apply_preset("soft tissue")
    start = QPoint(axial.width() // 3, axial.height() // 3)
    mouse.drag(axial, start, start + QPoint(40, -20), Qt.MouseButton.RightButton)
    width, level = viewer.model.window
    assert width > 400 and level > 40
    assert viewer.model.cursor == (20, 15, 10)  # the right button does not move the cursor


def test_click_in_axial_moves_the_other_views(viewer, mouse):
    axial, coronal, sagittal = (viewer.views[o] for o in ("axial", "coronal", "sagittal"))
    mouse.click(axial, mouse.pixel(axial, axial.view_position((30, 7, 10))))
    assert viewer.model.cursor == (30, 7, 10)
    assert coronal.image_item.image[0, 0] == hu(0, 7, 0)  # coronal now shows j = 7
    assert sagittal.image_item.image[0, 0] == hu(30, 0, 0)  # sagittal shows i = 30
    assert coronal.v_line.value() == pytest.approx(30.5 * 0.8)
    assert sagittal.v_line.value() == pytest.approx(7.5 * 0.8)
    assert axial.image_item.image[0, 0] == hu(0, 0, 10)  # the axial slice stays


def test_left_drag_follows_the_mouse_and_middle_drag_pans(viewer, mouse):
    sagittal = viewer.views["sagittal"]
    start = mouse.pixel(sagittal, sagittal.view_position((20, 5, 3)))
    end = mouse.pixel(sagittal, sagittal.view_position((20, 25, 16)))
    mouse.drag(sagittal, start, end, Qt.MouseButton.LeftButton)
    assert viewer.model.cursor == (20, 25, 16)
    before = sagittal.view_box.viewRange()
    mouse.drag(sagittal, start, end, Qt.MouseButton.MiddleButton)
    assert viewer.model.cursor == (20, 25, 16)
    assert sagittal.view_box.viewRange() != before


def test_hover_reports_world_voxel_and_hu(viewer, mouse, qtbot):
    axial = viewer.views["axial"]
    pixel = mouse.pixel(axial, axial.view_position((5, 10, 10)))
    with qtbot.waitSignal(viewer.status_message) as signal:
        mouse.move(axial, pixel)
    # origin (-10, 20, 30) mm, spacing (0.8, 0.8, 2.5) mm
    assert signal.args == ["-6.0, 28.0, 55.0 mm | voxel 5, 10, 10 | -65 HU"]
    with qtbot.waitSignal(viewer.status_message) as signal:
        mouse.move(axial, QPoint(1, 1))  # outside the image (the view is letterboxed)
    assert signal.args == [""]


def test_anisotropic_voxels_keep_true_proportions(viewer, make_volume):
    array = np.full(SHAPE, -1000.0, dtype=np.float32)
    array[10:20, :, 5:9] = 1000.0  # 10 x 0.8 mm = 8 mm wide, 4 x 2.5 mm = 10 mm high
    viewer.set_volume(make_volume(array))
    rows, cols = np.nonzero(brightness(viewer.views["coronal"]) > 240)  # label is 230
    width, height = cols.max() - cols.min() + 1, rows.max() - rows.min() + 1
    assert width / height == pytest.approx(8 / 10, rel=0.05)


# RAS+: i increases to the patient's Right, j Anterior, k Superior. Markers on the LEFT
# (low i), ANTERIOR (high j) and SUPERIOR (high k) side of the phantom.
MARKERS = {
    "left": (slice(0, 10), slice(None), slice(None)),
    "anterior": (slice(None), slice(22, 30), slice(None)),
    "superior": (slice(None), slice(None), slice(15, 20)),
}


@pytest.mark.parametrize(
    ("marker", "orientation", "screen_side"),
    [
        ("left", "axial", "right"),  # patient's right on screen left, so left on the right
        ("anterior", "axial", "top"),
        ("left", "coronal", "right"),
        ("superior", "coronal", "top"),
        ("anterior", "sagittal", "left"),  # Slicer: anterior on the screen's left
        ("superior", "sagittal", "top"),
    ],
)
def test_radiological_convention(viewer, make_volume, marker, orientation, screen_side):
    array = np.full(SHAPE, -1000.0, dtype=np.float32)
    array[MARKERS[marker]] = 1000.0
    viewer.set_volume(make_volume(array))
    image = brightness(viewer.views[orientation])
    rows, cols = image.shape
    halves = {
        "left": image[:, : cols // 2],
        "right": image[:, cols // 2 :],
        "top": image[: rows // 2],
        "bottom": image[rows // 2 :],
    }
    opposite = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}[screen_side]
    # the marker fills about half of its side; the other side is air (black) but for the
    # small grey slice label in the top-left corner
    assert halves[screen_side].mean() > 40
    assert halves[opposite].mean() < 15
