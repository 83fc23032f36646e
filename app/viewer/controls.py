"""The viewer's side panel: W/L presets, per-overlay controls, difference mode, legend, measurements.

Every control writes to :class:`ViewerModel` and redraws itself from the model's signals
(with its own signals blocked), so keyboard shortcuts and tests that change the model keep
the panel in step.
"""

from __future__ import annotations

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QColorDialog,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from app.viewer.model import ROLES, ViewerModel
from app.viewer.overlay import DIFFERENCE_COLOURS, STYLES

__all__ = ["ControlPanel", "OverlayControls"]

CUSTOM_WINDOW = "Custom"


def _swatch(colour: tuple[int, int, int], text: str) -> str:
    hex_colour = QColor(*colour).name()
    return f'<span style="color:{hex_colour}">&#9632;</span>&nbsp;{text}'


class OverlayControls(QGroupBox):
    """Show/hide, colour, opacity and fill/outline of one overlay role."""

    def __init__(self, model: ViewerModel, role: str, parent: QWidget | None = None) -> None:
        super().__init__(role.capitalize(), parent)
        self.model, self.role = model, role
        self.visible_box = QCheckBox("Show")
        self.visible_box.setToolTip(f"Show or hide the {role} mask (H hides/shows all overlays)")
        self.colour_button = QPushButton()
        self.colour_button.setToolTip(f"Colour of the {role} mask")
        self.colour_button.setFixedWidth(40)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setToolTip(f"Opacity of the {role} mask (0 = transparent, 100 = opaque)")
        self.style_combo = QComboBox()
        self.style_combo.addItems([s.capitalize() for s in STYLES])
        self.style_combo.setToolTip("Fill: colour the whole lesion; Outline: only its contour")

        row = QHBoxLayout()
        row.addWidget(self.visible_box)
        row.addWidget(self.colour_button)
        row.addWidget(self.style_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.opacity_slider)

        self.visible_box.toggled.connect(lambda on: model.set_overlay(role, visible=on))
        self.opacity_slider.valueChanged.connect(lambda v: model.set_overlay(role, opacity=v / 100))
        self.style_combo.currentIndexChanged.connect(
            lambda i: model.set_overlay(role, style=STYLES[i])
        )
        self.colour_button.clicked.connect(self._choose_colour)
        model.overlay_changed.connect(self._sync)
        self._sync(role)

    def _choose_colour(self) -> None:
        chosen = QColorDialog.getColor(QColor(*self.model.overlay(self.role).colour), self)
        if chosen.isValid():
            self.model.set_overlay(self.role, colour=(chosen.red(), chosen.green(), chosen.blue()))

    def _sync(self, role: str) -> None:
        if role != self.role:
            return
        settings = self.model.overlay(role)
        with QSignalBlocker(self.visible_box), QSignalBlocker(self.opacity_slider), QSignalBlocker(
            self.style_combo
        ):
            self.visible_box.setChecked(settings.visible)
            self.opacity_slider.setValue(round(settings.opacity * 100))
            self.style_combo.setCurrentIndex(STYLES.index(settings.style))
        self.colour_button.setStyleSheet(f"background-color: {QColor(*settings.colour).name()}")


class ControlPanel(QWidget):
    """Everything beside the slice views, bound to one :class:`ViewerModel`."""

    #: the "Fit" button: zoom every view back to the whole slice.
    fit_requested = Signal()

    def __init__(self, model: ViewerModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.preset_combo = QComboBox()
        keys = ", ".join(f"{n}: {name}" for n, name in enumerate(model.presets, start=1))
        self.preset_combo.addItems([*model.presets, CUSTOM_WINDOW])
        self.preset_combo.setToolTip(
            f"Window/level preset (keys {keys}); right-drag in a view: horizontal = width, "
            "vertical = level"
        )
        self.window_label = QLabel()
        self.window_label.setToolTip("Current window width and level (centre), in HU")
        self.fit_button = QPushButton("Fit")
        self.fit_button.setToolTip("Zoom every view to the whole slice (Ctrl+wheel zooms, middle-drag pans)")
        self.overlay_controls = {role: OverlayControls(model, role) for role in ROLES}
        self.difference_box = QCheckBox("Difference (TP / FP / FN)")
        self.difference_box.setToolTip(
            "Colour agreement of prediction and truth (D): TP both, FP prediction only, "
            "FN truth only (missed); drawn with the prediction's opacity and fill/outline"
        )
        self.legend_label = QLabel()
        self.legend_label.setToolTip("Colours of the overlays")
        self.measurements_label = QLabel()
        self.measurements_label.setWordWrap(True)
        self.measurements_label.setToolTip("Lesion volume of each mask (mL) and Dice of prediction vs truth")

        form = QFormLayout()
        form.addRow("Window", self.preset_combo)
        form.addRow("", self.window_label)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        for controls in self.overlay_controls.values():
            layout.addWidget(controls)
        layout.addWidget(self.difference_box)
        layout.addWidget(self.legend_label)
        layout.addWidget(self.measurements_label)
        layout.addStretch(1)
        layout.addWidget(self.fit_button)

        self.preset_combo.textActivated.connect(self._on_preset_chosen)
        self.difference_box.toggled.connect(model.set_difference_mode)
        self.fit_button.clicked.connect(self.fit_requested)
        model.window_changed.connect(self._sync_window)
        model.difference_mode_changed.connect(self._sync_difference)
        for signal in (model.overlay_changed, model.mask_changed, model.difference_mode_changed):
            signal.connect(self._sync_legend)
        model.mask_changed.connect(self._sync_measurements)
        model.volume_changed.connect(self._sync_measurements)
        model.volume_changed.connect(self._sync_legend)
        self._sync_window()
        self._sync_legend()
        self._sync_measurements()

    def _on_preset_chosen(self, name: str) -> None:
        if name != CUSTOM_WINDOW:
            self.model.apply_preset(name)

    def _sync_window(self, *_: float) -> None:
        width, level = self.model.window
        with QSignalBlocker(self.preset_combo):
            self.preset_combo.setCurrentText(self.model.preset_name() or CUSTOM_WINDOW)
        self.window_label.setText(f"W {width:g}  L {level:g} HU")

    def _sync_difference(self, on: bool) -> None:
        with QSignalBlocker(self.difference_box):
            self.difference_box.setChecked(on)

    def _sync_legend(self, *_: object) -> None:
        model = self.model
        if model.difference_active:
            names = {"TP": "TP (both)", "FP": "FP (prediction only)", "FN": "FN (missed)"}
            entries = [_swatch(DIFFERENCE_COLOURS[key], text) for key, text in names.items()]
        else:
            entries = [
                _swatch(model.overlay(role).colour, role)
                for role in ROLES
                if model.mask(role) is not None and model.overlay(role).visible
            ]
        self.legend_label.setText("<br>".join(entries) if entries else "No overlay shown")

    def _sync_measurements(self, *_: object) -> None:
        self.measurements_label.setText(self.model.measurements().text())
