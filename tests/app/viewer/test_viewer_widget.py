"""ViewerWidget: empty state, overlays in the views, shortcuts, controls, drops, errors."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from app.viewer.overlay import DIFFERENCE_COLOURS
from app.viewer.widget import EMPTY_TEXT, ViewerWidget
from engine.errors import VolumeError

SHAPE = (40, 30, 20)  # the ramp phantom of conftest.py; cursor starts at (20, 15, 10)


def block(i, j, k) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[i, j, k] = 1
    return mask


TRUTH = block(slice(10, 20), slice(10, 20), slice(5, 15))
PREDICTION = block(slice(15, 25), slice(10, 20), slice(5, 15))


def voxel_order(image: np.ndarray) -> np.ndarray:
    """An ImageItem image (rows = vertical, columns = horizontal) indexed [i, j] in axial."""
    return image.swapaxes(0, 1)


def alpha(viewer, orientation="axial") -> np.ndarray:
    return voxel_order(viewer.views[orientation].overlay_item.image[..., 3])


def test_empty_state_until_a_volume_is_set(qtbot, ramp_volume):
    widget = ViewerWidget()
    qtbot.addWidget(widget)
    assert widget.stack.currentWidget() is widget.empty_label
    assert widget.empty_label.text() == EMPTY_TEXT == "Open a CT (File > Open or drop a file here)"
    widget.set_volume(ramp_volume)
    assert widget.stack.currentWidget() is not widget.empty_label
    assert widget.views["axial"].image_item.image.shape == (30, 40)  # rows Y, columns X


def test_h_hides_and_shows_every_overlay(viewer, qtbot):
    viewer.set_mask("truth", TRUTH)
    assert alpha(viewer)[12, 12] > 0 and alpha(viewer)[5, 5] == 0
    qtbot.keyClick(viewer.views["axial"], Qt.Key.Key_H)
    for orientation in viewer.views:
        assert not alpha(viewer, orientation).any()
    assert not viewer.controls.overlay_controls["truth"].visible_box.isChecked()
    qtbot.keyClick(viewer.views["axial"], Qt.Key.Key_H)
    assert alpha(viewer)[12, 12] > 0


def test_show_checkbox_hides_one_overlay(viewer):
    viewer.set_mask("truth", TRUTH)
    viewer.set_mask("prediction", PREDICTION)
    viewer.model.set_overlay("prediction", style="fill")
    assert alpha(viewer)[22, 12] > 0
    viewer.controls.overlay_controls["prediction"].visible_box.setChecked(False)
    assert not viewer.model.overlay("prediction").visible
    assert alpha(viewer)[12, 12] > 0  # truth only
    assert alpha(viewer)[22, 12] == 0  # prediction only: hidden


def test_fill_and_outline_from_the_style_combo(viewer):
    viewer.set_mask("truth", TRUTH)
    image = alpha(viewer)  # default: fill
    assert image[10:20, 10:20].all() and not image[:10].any()
    viewer.controls.overlay_controls["truth"].style_combo.setCurrentIndex(1)  # "Outline"
    assert viewer.model.overlay("truth").style == "outline"
    image = alpha(viewer)
    assert image[10, 15] > 0 and image[19, 15] > 0 and image[15, 10] > 0  # contour
    assert not image[11:19, 11:19].any()  # inside
    assert np.count_nonzero(image) == 100 - 64


def test_opacity_slider_and_colour_reach_the_rendered_pixel(viewer, mouse):
    viewer.set_mask("truth", TRUTH)
    controls = viewer.controls.overlay_controls["truth"]
    controls.opacity_slider.setValue(100)
    assert viewer.model.overlay("truth").opacity == 1.0
    viewer.model.set_overlay("truth", colour=(10, 20, 250))
    assert "#0a14fa" in controls.colour_button.styleSheet()
    axial = viewer.views["axial"]
    pixel = mouse.pixel(axial, axial.view_position((12, 12, 10)))
    assert axial.rendered_image()[pixel.y(), pixel.x()].tolist() == [10, 20, 250]
    viewer.model.set_overlay("truth", opacity=0.3)
    assert controls.opacity_slider.value() == 30


def test_d_toggles_difference_colours(viewer, qtbot):
    viewer.set_mask("truth", TRUTH)
    viewer.set_mask("prediction", PREDICTION)
    viewer.model.set_overlay("prediction", style="fill")
    qtbot.keyClick(viewer.views["axial"], Qt.Key.Key_D)
    assert viewer.controls.difference_box.isChecked()
    rgb = voxel_order(viewer.views["axial"].overlay_item.image[..., :3])
    assert tuple(rgb[12, 12]) == DIFFERENCE_COLOURS["FN"]  # truth only
    assert tuple(rgb[17, 12]) == DIFFERENCE_COLOURS["TP"]
    assert tuple(rgb[22, 12]) == DIFFERENCE_COLOURS["FP"]  # prediction only
    assert "FP (prediction only)" in viewer.controls.legend_label.text()
    qtbot.keyClick(viewer.views["axial"], Qt.Key.Key_D)
    assert tuple(voxel_order(viewer.views["axial"].overlay_item.image)[12, 12, :3]) == (0, 200, 80)


@pytest.mark.parametrize(("key", "preset"), [(Qt.Key.Key_1, "lung"), (Qt.Key.Key_4, "bone"), (Qt.Key.Key_5, "brain")])
def test_number_keys_apply_presets(viewer, qtbot, key, preset):
    qtbot.keyClick(viewer.views["sagittal"], key)
    assert viewer.model.window == viewer.model.presets[preset]
    assert viewer.controls.preset_combo.currentText() == preset
    width, level = viewer.model.presets[preset]
    assert viewer.views["sagittal"].image_item.levels.tolist() == [level - width / 2, level + width / 2]


def test_preset_combo_and_custom_window(viewer):
    combo = viewer.controls.preset_combo
    combo.textActivated.emit("liver")
    assert viewer.model.window == (150.0, 90.0)
    viewer.model.adjust_window(50, 0)
    assert combo.currentText() == "Custom"
    assert viewer.controls.window_label.text() == "W 200  L 90 HU"


def test_arrow_keys_on_the_widget_scroll_the_last_used_view(viewer, mouse, qtbot):
    sagittal = viewer.views["sagittal"]
    mouse.click(sagittal, mouse.pixel(sagittal, sagittal.view_position((20, 15, 10))))
    qtbot.keyClick(viewer, Qt.Key.Key_Up)
    assert viewer.model.cursor == (21, 15, 10)


def test_legend_and_measurements_labels(viewer):
    assert viewer.controls.measurements_label.text() == "No mask loaded"
    viewer.set_mask("truth", TRUTH)
    viewer.set_mask("prediction", PREDICTION)
    # 1000 voxels of 1.6 mm^3 each = 1.6 mL; overlap 500 -> Dice 0.5
    assert viewer.controls.measurements_label.text() == "truth 1.60 mL | prediction 1.60 mL | Dice 0.500"
    legend = viewer.controls.legend_label.text()
    assert "#00c850" in legend and "truth" in legend and "prediction" in legend


def test_wrong_mask_shape_raises_volume_error_naming_both_shapes(viewer):
    with pytest.raises(VolumeError, match=r"mask shape \(40, 30, 19\) does not match the CT shape \(40, 30, 20\)"):
        viewer.set_mask("truth", np.zeros((40, 30, 19), dtype=np.uint8))
    assert viewer.model.mask("truth") is None


def test_dropped_files_are_announced(viewer, qtbot, tmp_path):
    paths = [str(tmp_path / "ct.nii.gz"), str(tmp_path / "mask.nii.gz")]
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(p) for p in paths])
    enter = QDragEnterEvent(  # QPoint here, QPointF for the drop (PySide6 6.11's signatures)
        viewer.rect().center(), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(viewer, enter)
    assert enter.isAccepted()
    drop = QDropEvent(
        QPointF(viewer.rect().center()), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    with qtbot.waitSignal(viewer.files_dropped) as signal:
        QApplication.sendEvent(viewer, drop)
    assert signal.args == [paths]
