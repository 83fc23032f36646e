"""Form pieces shared by the panels: a path field, and a strategy's settings form
generated from its params dataclass (so a new strategy needs no GUI code)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, get_type_hints

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox, QWidget

from engine.errors import ConfigError

#: Friendly labels and tooltips of known parameters; others show their field name.
#: Field name (or ``ParamsClass.field`` where two strategies mean different things) ->
#: (label, tooltip) of the Host panel's settings form.
PARAM_LABELS: dict[str, tuple[str, str]] = {
    "weights": ("Weights", "How β becomes the aggregation weights α: Dirichlet (mode of Dir(β)) or softmax(β)"),
    "aggregation": ("Granularity", "One weight per site for the whole network, or one per layer"),
    "t0": ("t0", "Rounds between two weight-learning (β) phases"),
    "beta_steps": ("S (β steps)", "β gradient steps per weight-learning phase"),
    "beta_local_steps": ("β steps per message", "1 is the paper; m > 1 lets each site take m steps per message (S/m messages): for slow links"),
    "beta_lr": ("β learning rate", "Step size of the server's β optimiser"),
    "beta_init": ("β initial value", "Starting concentration; 6 gives uniform weights (FedAvg-even) at first"),
    "beta_optimizer": ("β optimiser", "Adam (default) or plain SGD, which is the paper's averaging of the sites' β steps"),
    "mu": ("μ (proximal weight)", "Weight of the proximal term (μ/2)‖w − w_global‖² in local training"),
    "lam": ("λ (personal proximal weight)", "How strongly each site's personal model is pulled to the global model"),
    "lr_per": ("Personal learning rate", "Adam step size of each site's personal model"),
    "weight_decay_per": ("Personal weight decay", "Adam weight decay of each site's personal model"),
    "sample": ("Statistics drawn per", "image: a random site's statistics for every image (the paper); batch: one draw per batch"),
    "statistics": ("Intensity statistics over", "body: voxels above air only (CT); all: every voxel"),
    "tau": ("τ (small-lesion threshold)", "A patch is 'small-lesion' when voxels / lesion voxels ≥ τ; 0: the DiceS threshold of eval"),
    "log_base": ("l (log base)", "Difficulty δ = tanh((log_l a⁻¹)²) of a small-lesion patch; 0: l = τ"),
    "weighting": ("Site weights", "steps: τ_k / Σ τ_j (the reference); cases: n_k / n"),
    "HarmoFLParams.alpha": ("α (perturbation radius)", "Radius of the sharpness-aware weight perturbation; 0 turns it off"),
    "r": ("r (low-frequency window)", "Amplitude window as a share of the shortest patch side; 0 = the mean intensity only"),
    "HarmoFLParams.momentum": ("Amplitude momentum", "Moving-average momentum of the reference amplitude (computed once, before round 1)"),
    "rank": ("LoRA rank r", "Rank of the adapters added to every convolution"),
    "lora_alpha": ("LoRA α", "Adapter scale s = α / r"),
    "DEeRParams.lr": ("Learning rate (SGD)", "Step size of the adapters' SGD"),
    "DEeRParams.momentum": ("SGD momentum", "Momentum of the adapters' SGD"),
    "DEeRParams.weight_decay": ("Weight decay", "Weight decay of the adapters' SGD"),
    "dp": ("Differential privacy", "Clip each site's update and add the regulated noise; off: the no-DP ablation"),
    "epsilon": ("Privacy ε", "Target privacy budget; the noise multiplier is computed by Opacus' RDP accountant"),
    "delta": ("Privacy δ", "0: 1/K"),
    "clip": ("Clip C", "Bound on the Frobenius norm of each site's update"),
    "accounting": ("Accounting", "paper: the reference code's sample rate and steps; client: formal client-level count"),
    "l0": ("L₀ (initial Fourier window)", "Share of each kernel-spectrum axis whose amplitude is averaged at the first aggregation"),
    "l_end": ("L at the last round", "Window share reached after the last round; the shared part grows linearly to it"),
    "alpha1": ("α1 (recover threshold)", "The deputy learns from the personal model while its training Dice < α1 × the personal model's"),
    "alpha2": ("α2 (sublimate threshold)", "The personal model learns from the deputy once the deputy's Dice ≥ α2 × the personal model's"),
    "epochs": ("Local epochs (DET blocks)", "Blocks per round; the transfer stage is chosen at the start of each"),
    "rho": ("ρ (kept local)", "Fraction of each tensor's most style-sensitive entries that stays at the site"),
    "mask_every": ("Mask every R rounds", "Rounds between two recomputations of the sensitive-parameter masks"),
    "fisher_batches": ("Fisher minibatches", "Minibatches per diagonal Fisher estimate"),
    "bank_size": ("Style bank size", "Amplitude windows each site shares once (no phase, no anatomy)"),
    "norm_local": ("Keep norm layers local", "Normalisation layers are always personal (FedBN-like)"),
}
INT_RANGE = 1_000_000_000  # wide on purpose: the engine validates and its message is shown


def parse_float(name: str, text: str) -> float:
    """``text`` as a number, or a :class:`ConfigError` naming the field."""
    try:
        return float(text.strip())
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {text.strip()!r}") from None


def field_choices(params_cls: type, name: str) -> list[str] | None:
    """The allowed values of a text field, read from the engine's own validation.

    Strategies check choices with :func:`engine.registry.check_choice`, whose message
    ends in ``"; allowed: a, b"``; asking it about an impossible value keeps the list in
    one place (the strategy) instead of copying it here.
    """
    try:
        params_cls(**{name: "\x00"})
    except ConfigError as exc:
        _, found, allowed = str(exc).partition("; allowed: ")
        if found:
            return [value.strip() for value in allowed.split(",")]
    except Exception:  # noqa: BLE001 - any other refusal means "no fixed list"
        return None
    return None


class ParamsForm(QWidget):
    """Editors for every field of a params dataclass, with its defaults."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.layout_ = QFormLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.editors: dict[str, QWidget] = {}
        self._readers: dict[str, Callable[[], Any]] = {}
        self.prefix = "strategy.params."

    def set_params(self, params_cls: type) -> None:
        """Rebuild the editors for ``params_cls`` (a dataclass with defaults)."""
        while self.layout_.rowCount():
            self.layout_.removeRow(0)
        self.editors.clear()
        self._readers.clear()
        fields = dataclasses.fields(params_cls) if dataclasses.is_dataclass(params_cls) else ()
        if not fields:
            hint = QLabel("This algorithm has no settings.")
            hint.setEnabled(False)
            self.layout_.addRow(hint)
            return
        hints = get_type_hints(params_cls)
        for f in fields:
            editor, reader = self._editor(params_cls, f.name, hints.get(f.name), f.default)
            label, tip = PARAM_LABELS.get(f"{params_cls.__name__}.{f.name}") or PARAM_LABELS.get(f.name, (f.name, ""))
            editor.setToolTip(f"{tip}\n(default {f.default!r}; config key {self.prefix}{f.name})".strip())
            self.editors[f.name] = editor
            self._readers[f.name] = reader
            self.layout_.addRow(label, editor)

    def _editor(self, params_cls: type, name: str, hint: Any, default: Any) -> tuple[QWidget, Callable[[], Any]]:
        if hint is bool:
            box = QCheckBox()
            box.setChecked(bool(default))
            box.toggled.connect(self.changed)
            return box, box.isChecked
        if hint is int:
            spin = QSpinBox()
            spin.setRange(-INT_RANGE, INT_RANGE)
            spin.setValue(int(default))
            spin.valueChanged.connect(self.changed)
            return spin, spin.value
        choices = field_choices(params_cls, name) if hint is str else None
        if choices:
            combo = QComboBox()
            combo.addItems(choices)
            combo.setCurrentText(str(default))
            combo.currentTextChanged.connect(self.changed)
            return combo, combo.currentText
        edit = QLineEdit(repr(default) if hint is float else str(default))
        edit.textChanged.connect(self.changed)
        if hint is float:
            return edit, lambda: parse_float(self.prefix + name, edit.text())
        return edit, edit.text

    def values(self) -> dict[str, Any]:
        """Every field's value; a field that does not parse raises :class:`ConfigError`."""
        return {name: read() for name, read in self._readers.items()}


class PathField(QWidget):
    """A line edit with a Browse button, for a file or a folder."""

    changed = Signal(str)
    chosen = Signal(str)  # picked with Browse (a typed path ends with editingFinished)

    def __init__(self, placeholder: str, *, folder: bool, caption: str = "", file_filter: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.folder = folder
        self.caption = caption or placeholder
        self.file_filter = file_filter
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.edit.textChanged.connect(self.changed)
        browse = QPushButton("Browse…")
        browse.setToolTip(f"Choose the {'folder' if folder else 'file'}")
        browse.clicked.connect(self.browse)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit, 1)
        layout.addWidget(browse)

    def text(self) -> str:
        return self.edit.text().strip()

    def setText(self, text: str) -> None:  # noqa: N802 - Qt naming, like QLineEdit
        self.edit.setText(text)

    def setToolTip(self, text: str) -> None:  # noqa: N802
        super().setToolTip(text)
        self.edit.setToolTip(text)

    def browse(self) -> None:
        if self.folder:
            chosen = QFileDialog.getExistingDirectory(self, self.caption, self.text())
        else:
            chosen, _ = QFileDialog.getOpenFileName(self, self.caption, self.text(), self.file_filter)
        if chosen:
            self.setText(chosen)
            self.chosen.emit(chosen)
