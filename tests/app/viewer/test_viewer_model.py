"""ViewerModel: cursor, window/level, masks, measurements and readout, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from app.viewer.measurements import dice_coefficient
from app.viewer.presets import load_window_presets
from engine.errors import ConfigError, VolumeError

SHAPE = (40, 30, 20)  # the ramp phantom of conftest.py


def test_volume_puts_cursor_in_the_centre_and_clamps_moves(model, qtbot):
    assert model.cursor == (20, 15, 10)
    with qtbot.waitSignal(model.cursor_changed) as signal:
        model.set_cursor(100, -5, 3)
    assert model.cursor == (39, 0, 3)
    assert signal.args == [39, 0, 3]


def test_scroll_moves_only_the_slice_axis_of_the_orientation(model):
    model.scroll("axial", 2)
    assert model.cursor == (20, 15, 12)
    model.scroll("coronal", -3)
    assert model.cursor == (20, 12, 12)
    model.scroll("sagittal", 100)
    assert model.cursor == (39, 12, 12)
    assert model.slice_index("sagittal") == 39 and model.slice_count("axial") == 20
    with pytest.raises(ValueError, match="did you mean 'axial'"):
        model.scroll("axail", 1)


def test_presets_come_from_the_toml_and_unknown_names_suggest(model):
    assert model.presets == {
        "lung": (1500.0, -600.0),
        "soft tissue": (400.0, 40.0),
        "liver": (150.0, 90.0),
        "bone": (2500.0, 480.0),
        "brain": (80.0, 40.0),
    }
    model.apply_preset("bone")
    assert model.window == (2500.0, 480.0) and model.preset_name() == "bone"
    model.adjust_window(10, -5)
    assert model.window == (2510.0, 475.0) and model.preset_name() is None
    with pytest.raises(ValueError, match=r"unknown window preset 'lugn' \(did you mean 'lung'\?\)"):
        model.apply_preset("lugn")


def test_window_width_stays_positive(model):
    model.set_window(-50, 10)
    assert model.window == (1.0, 10.0)


def test_bad_preset_file_names_file_and_preset(tmp_path):
    bad = tmp_path / "presets.toml"
    bad.write_text('[[preset]]\nname = "lung"\nwidth = 0\nlevel = -600\n')
    with pytest.raises(ConfigError, match=r"presets.toml: preset 1 \('lung'\): 'width' must be > 0"):
        load_window_presets(bad)
    bad.write_text('[[preset]]\nname = "lung"\nwidth = 10\n')
    with pytest.raises(ConfigError, match="'level' must be a number"):
        load_window_presets(bad)


def test_mask_of_another_shape_is_a_one_line_volume_error(model, make_volume):
    with pytest.raises(VolumeError) as info:
        model.set_mask("prediction", np.zeros((40, 30, 21), dtype=np.uint8))
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        "prediction mask: mask shape (40, 30, 21) does not match the CT shape (40, 30, 20)"
    )
    labelled = make_volume(np.zeros((4, 4, 4), dtype=np.uint8), path="/data/case1_pred.nii.gz")
    with pytest.raises(VolumeError, match=r"^/data/case1_pred.nii.gz: mask shape \(4, 4, 4\)"):
        model.set_mask("truth", labelled)
    with pytest.raises(ValueError, match="did you mean 'truth'"):
        model.set_mask("truht", None)


def test_masks_become_boolean_and_a_new_volume_clears_them(model, ramp_volume):
    labels = np.zeros(SHAPE, dtype=np.int16)
    labels[1, 1, 1] = 2
    probabilities = np.full(SHAPE, 0.4, dtype=np.float32)
    probabilities[2, 2, 2] = 0.7
    model.set_mask("truth", labels)
    model.set_mask("prediction", probabilities)
    assert model.mask("truth").dtype == bool and np.count_nonzero(model.mask("truth")) == 1
    assert np.flatnonzero(model.mask("prediction")).tolist() == [np.ravel_multi_index((2, 2, 2), SHAPE)]
    model.set_volume(ramp_volume)
    assert model.mask("truth") is None and model.mask("prediction") is None


def test_measurements_volume_in_ml_and_dice_by_hand(model):
    # voxel = 0.8 * 0.8 * 2.5 mm^3 = 1.6 mm^3 = 0.0016 mL
    truth = np.zeros(SHAPE, dtype=bool)
    truth[0:10, 0:10, 0:5] = True  # 500 voxels
    prediction = np.zeros(SHAPE, dtype=bool)
    prediction[5:15, 0:10, 0:5] = True  # 500 voxels, 250 shared with truth
    model.set_mask("truth", truth)
    first = model.measurements()
    assert first.volume_ml == {"truth": pytest.approx(0.8)} and first.dice is None
    model.set_mask("prediction", prediction)
    result = model.measurements()
    assert result.volume_ml["prediction"] == pytest.approx(0.8)
    assert result.dice == pytest.approx(2 * 250 / 1000)
    assert result.text() == "truth 0.80 mL | prediction 0.80 mL | Dice 0.500"


def test_dice_edge_cases():
    empty = np.zeros((3, 3), dtype=bool)
    one = empty.copy()
    one[1, 1] = True
    assert dice_coefficient(empty, empty) == 1.0
    assert dice_coefficient(one, empty) == 0.0
    assert dice_coefficient(one, one) == 1.0


def test_readout_gives_world_mm_voxel_and_hu(model):
    # origin (-10, 20, 30), spacing (0.8, 0.8, 2.5); HU = -500 + 40 k + 3 j + i
    text = model.readout(5, 10, 4)
    assert text == "-6.0, 28.0, 40.0 mm | voxel 5, 10, 4 | -305 HU"


def test_overlay_toggles_and_difference_mode(model, qtbot):
    with qtbot.waitSignal(model.overlay_changed) as signal:
        model.toggle_overlay("truth")
    assert signal.args == ["truth"] and not model.overlay("truth").visible
    model.toggle_all_overlays()  # one hidden, one shown -> some shown -> hide all
    assert not model.overlay("truth").visible and not model.overlay("prediction").visible
    model.toggle_all_overlays()
    assert model.overlay("truth").visible and model.overlay("prediction").visible
    model.set_difference_mode(True)
    assert model.difference_mode and not model.difference_active  # no masks yet
    model.set_mask("truth", np.ones(SHAPE, dtype=bool))
    model.set_mask("prediction", np.ones(SHAPE, dtype=bool))
    assert model.difference_active


def test_slices_are_image_rows_by_columns_and_contiguous(model):
    model.set_cursor(3, 4, 5)
    axial, coronal, sagittal = (model.ct_slice(o) for o in ("axial", "coronal", "sagittal"))
    # rows = screen vertical axis, columns = horizontal: axial (Y, X), coronal (Z, X), sagittal (Z, Y)
    assert axial.shape == (30, 40) and coronal.shape == (20, 40) and sagittal.shape == (20, 30)
    assert axial[8, 7] == -500 + 40 * 5 + 3 * 8 + 7
    assert coronal[8, 7] == -500 + 40 * 8 + 3 * 4 + 7
    assert sagittal[8, 7] == -500 + 40 * 8 + 3 * 7 + 3
    assert all(a.flags.c_contiguous for a in (axial, coronal, sagittal))
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[7, 8, 5] = 1
    model.set_mask("truth", labels)
    assert model.mask("truth")[7, 8, 5] and model.mask("truth").shape == SHAPE
    assert np.argwhere(model.mask_slice("truth", "axial")).tolist() == [[8, 7]]


def test_the_lesion_of_a_multi_label_map_is_its_lesion_label_and_of_a_binary_map_any_label() -> None:
    from app.viewer.measurements import lesion_mask

    organs = np.array([0, 1, 2, 3, 1, 10], dtype=np.uint8)  # OpenKBP: 1 = PTV70, others organs
    assert lesion_mask(organs).tolist() == [False, True, False, False, True, False]
    assert lesion_mask(organs, lesion_label=3).tolist() == [False, False, False, True, False, False]
    assert lesion_mask(np.array([0, 255, 255, 0])).tolist() == [False, True, True, False]
    assert not lesion_mask(np.zeros(4, np.uint8)).any()
