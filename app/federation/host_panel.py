"""Host tab: coordinate a federation (SuperLink + the chosen algorithm).

The algorithm's settings are generated from its params dataclass; every edit rebuilds
the :class:`~engine.config.RunConfig` and shows the engine's validation message inline,
and Start/Resume stay disabled while there is one. Resume restarts on the same output
folder, which the engine continues from its last checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QListWidget, QPushButton, QSpinBox, QVBoxLayout, QWidget

from app.federation import jobs
from app.federation.fields import INT_RANGE, ParamsForm, PathField, parse_float
from app.federation.model import HOST
from app.federation.run_tab import ErrorDialog, RunTab
from app.workers import RunWorker
from engine.config import FederationConfig, RunConfig, StrategyConfig, TrainConfig, from_dict
from engine.errors import FedSegError
from engine.events import count_lines
from engine.fl import STRATEGIES

EVENTS = "events.jsonl"


def _choose_key_file(parent: QWidget) -> str:
    chosen, _ = QFileDialog.getOpenFileName(parent, "A site's public key", "", "Site public keys (*.pub);;All files (*)")
    return chosen


def _spin(value: int, tip: str) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(-INT_RANGE, INT_RANGE)  # the engine, not the widget, says what is allowed
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin


def _line(text: str, tip: str) -> QLineEdit:
    edit = QLineEdit(text)
    edit.setToolTip(tip)
    return edit


class HostPanel(RunTab):
    """``base_config`` holds what the form does not show (data, model, evaluation)."""

    def __init__(self, show_error: ErrorDialog, parent: QWidget | None = None) -> None:
        super().__init__(show_error, parent)
        self.choose_key_file: Callable[[QWidget], str] = _choose_key_file
        self.base_config = RunConfig()
        self._locked = False
        base, fed = self.base_config, self.base_config.federation

        self.algorithm = QComboBox()
        self.algorithm.addItems(STRATEGIES.names())
        self.algorithm.setToolTip("The federated algorithm every site runs")
        self.params = ParamsForm()
        self.rounds = _spin(base.rounds, "Federated rounds")
        self.local_steps = _spin(base.train.local_steps, "Training steps at each site per round")
        self.lr = _line(repr(base.train.lr), "Sites' learning rate (Adam)")
        self.sites = _spin(fed.sites, "Sites that must join before round 1")
        self.min_sites = _spin(fed.min_sites, "A round goes on without a silent site if this many replied")
        self.reply_timeout = _line(f"{fed.reply_timeout_s:g}", "Seconds to wait for a site's reply; a site silent longer is shown offline")
        self.listen = _line(fed.host, "Address the coordinator listens on (0.0.0.0: every interface; 127.0.0.1 behind a proxy)")
        self.port = _spin(fed.port, "TCP port sites connect to (HTTPS)")
        self.certificates = PathField("folder with ca.pem, server.pem, server.key (fedseg certs)", folder=True)
        self.certificates.setToolTip("The coordinator's TLS certificates; give ca.pem to every site")
        self.site_keys = PathField("folder of registered site keys (*.pub)", folder=True)
        self.site_keys.setToolTip("Only sites whose public key is here may join")
        self.keys_list = QListWidget()
        self.keys_list.setMaximumHeight(90)
        self.keys_list.setToolTip("Registered site keys; a site's key takes effect when the coordinator (re)starts")
        self.add_key_button = QPushButton("Add key…")
        self.add_key_button.setToolTip("Register a site's public key (the .pub file the site sent you)")
        self.add_key_button.clicked.connect(self.add_key)
        self.out = PathField("run folder (the same folder resumes)", folder=True)
        self.out.setToolTip("Where the run is written: events, checkpoints, results, the global model")
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color:#b00000")
        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Start the coordinator and a new run in the output folder")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop the coordinator; the run can be resumed from its last finished round")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Restart the coordinator on the output folder's run, after its last finished round")
        self.start_button.clicked.connect(lambda: self.start(resume=False))
        self.resume_button.clicked.connect(lambda: self.start(resume=True))
        self.stop_button.clicked.connect(self.stop)

        algorithm_box = QGroupBox("Algorithm")
        algorithm_form = QFormLayout(algorithm_box)
        algorithm_form.addRow("Algorithm", self.algorithm)
        algorithm_form.addRow(self.params)
        run_box = QGroupBox("Run")
        run_form = QFormLayout(run_box)
        for label, widget in (
            ("Rounds", self.rounds), ("Local steps", self.local_steps), ("Learning rate", self.lr),
            ("Sites", self.sites), ("Minimum sites", self.min_sites), ("Reply timeout (s)", self.reply_timeout),
            ("Listen on", self.listen), ("Port", self.port), ("Certificates", self.certificates), ("Output folder", self.out),
        ):  # fmt: skip
            run_form.addRow(label, widget)
        keys_box = QGroupBox("Site keys")
        keys_layout = QVBoxLayout(keys_box)
        keys_layout.addWidget(self.site_keys)
        keys_layout.addWidget(self.keys_list)
        keys_layout.addWidget(self.add_key_button)
        buttons = QHBoxLayout()
        for button in (self.start_button, self.stop_button, self.resume_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        for widget in (algorithm_box, run_box, keys_box, self.error):
            layout.addWidget(widget)
        layout.addLayout(buttons)
        layout.addStretch(1)

        self.algorithm.currentTextChanged.connect(self._algorithm_changed)
        self.params.changed.connect(self.validate)
        for spin in (self.rounds, self.local_steps, self.sites, self.min_sites, self.port):
            spin.valueChanged.connect(self.validate)
        for edit in (self.lr, self.reply_timeout, self.listen):
            edit.textChanged.connect(self.validate)
        self.out.changed.connect(self.validate)
        self.site_keys.changed.connect(self.refresh_keys)
        self.algorithm.setCurrentText(base.strategy.name)
        self._algorithm_changed(self.algorithm.currentText())
        self.refresh_keys()

    # -- the configuration -------------------------------------------------------------------
    def config(self) -> RunConfig:
        """The run configuration of the form; raises the engine's ConfigError."""
        base = self.base_config
        strategy = StrategyConfig(self.algorithm.currentText(), self.params.values())
        train = TrainConfig(**{**base.train.__dict__, "local_steps": self.local_steps.value(), "lr": parse_float("train.lr", self.lr.text())})
        federation = FederationConfig(
            sites=self.sites.value(),
            min_sites=self.min_sites.value(),
            reply_timeout_s=parse_float("federation.reply_timeout_s", self.reply_timeout.text()),
            host=self.listen.text().strip(),
            port=self.port.value(),
            certificates=self.certificates.text(),
            site_keys=self.site_keys.text(),
        )
        return base.replace(rounds=self.rounds.value(), strategy=strategy, train=train, federation=federation)

    def validate(self) -> str | None:
        """Show the engine's message for the form's values; return it (None: valid)."""
        try:
            self.config()
            message = None
        except FedSegError as exc:
            message = str(exc)
        self.error.setText(message or "")
        self.error.setVisible(bool(message))
        self._update_buttons(valid=message is None)
        return message

    def _algorithm_changed(self, name: str) -> None:
        self.params.set_params(STRATEGIES.get(name).Params)
        self.algorithm.setToolTip(STRATEGIES.summary(name))
        self.validate()

    # -- site keys ---------------------------------------------------------------------------------
    def refresh_keys(self) -> None:
        from engine.federation.server import site_key_files

        self.keys_list.clear()
        folder = self.site_keys.text()
        keys = site_key_files(Path(folder)) if folder else []
        self.keys_list.addItems([key.name for key in keys])
        if not keys:
            hint = "Choose the site keys folder first" if not folder else "No site keys yet: add each site's .pub file"
            self.keys_list.addItem(hint)
            self.keys_list.item(0).setFlags(Qt.ItemFlag.NoItemFlags)  # greyed: a hint, not a key
        self.add_key_button.setEnabled(bool(folder))

    def add_key(self) -> None:
        from engine.federation.server import add_site_key

        chosen = self.choose_key_file(self)
        if not chosen:
            return
        try:
            add_site_key(chosen, Path(self.site_keys.text()))
        except FedSegError as exc:
            self.show_error(self, "Add site key", str(exc))
        self.refresh_keys()

    # -- start / stop / resume ---------------------------------------------------------------------
    def start(self, *, resume: bool = False) -> None:
        try:
            config, out = self._run_settings(resume)
        except FedSegError as exc:
            self.show_error(self, "Resume" if resume else "Start", str(exc))
            return
        job = jobs.host(config, out, Path(self.certificates.text()), Path(self.site_keys.text()))
        self.worker = RunWorker(job)
        self.worker.ended.connect(self._ended)
        self._update_buttons(valid=True)
        self.started.emit(self.worker, HOST, {}, True)
        self.worker.start()

    def _run_settings(self, resume: bool) -> tuple[RunConfig, Path]:
        from engine.errors import CheckpointError, ConfigError

        config = self.config()
        if not self.out.text():
            raise ConfigError("Output folder: choose where the run is written")
        out = Path(self.out.text())
        has_run = count_lines(out / EVENTS) > 0
        if resume and not has_run:
            raise CheckpointError(f"{out}: holds no run to resume; press Start for a new one")
        if not resume and has_run:
            raise CheckpointError(f"{out}: holds a run already; press Resume to continue it, or choose another folder")
        saved = out / "run.json"
        if resume and saved.is_file():  # the run goes on with its own settings; only where it listens may change
            values = json.loads(saved.read_text())["config"]
            config = from_dict(RunConfig, values).replace(federation=config.federation)
        return config, out

    def stop(self) -> None:
        self._cancel(self.stop_button, "stopping the coordinator; Resume continues after the last finished round")

    def set_locked(self, locked: bool) -> None:
        self._locked = locked
        self.validate()

    def _ended(self) -> None:
        self.worker = None
        self.validate()

    def _update_buttons(self, *, valid: bool) -> None:
        running = self.worker is not None
        self.start_button.setEnabled(valid and not running and not self._locked)
        self.resume_button.setEnabled(valid and not running and not self._locked)
        self.stop_button.setEnabled(running and not self.worker.token.is_set())
        tip = self.error.text() or "Start the coordinator and a new run in the output folder"
        self.start_button.setToolTip(tip)
