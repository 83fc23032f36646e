"""Demo tab: one click starts a three-site federation on this machine, on phantom data."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QButtonGroup, QComboBox, QFormLayout, QHBoxLayout, QLabel, QPushButton, QRadioButton, QSpinBox, QVBoxLayout, QWidget

from app.federation import jobs
from app.federation.model import DEMO
from app.federation.run_tab import ErrorDialog, RunTab
from app.workers import RunWorker
from engine.cli import DEMO_BETA_STEPS, DEMO_LOCAL_STEPS, DEMO_LR, DEMO_ROUNDS
from engine.config import RunConfig, StrategyConfig, TrainConfig
from engine.errors import FedSegError
from engine.fl import STRATEGIES

DEMO_SITES = 3


def default_runs_root() -> Path:
    return Path.home() / "FedSeg" / "runs"


def demo_base_config() -> RunConfig:
    """What ``fedseg simulate --demo`` runs: CPU-sized, 20 local steps, 5 β steps."""
    return RunConfig(
        rounds=DEMO_ROUNDS,
        train=TrainConfig(local_steps=DEMO_LOCAL_STEPS, lr=DEMO_LR),
        strategy=StrategyConfig("auto-fedavg", {"beta_steps": DEMO_BETA_STEPS}),
    )


def demo_config(base: RunConfig, algorithm: str, rounds: int) -> RunConfig:
    """``base`` with another algorithm and number of rounds; ``base``'s strategy
    parameters are kept when the algorithm is the same."""
    params = dict(base.strategy.params) if algorithm == base.strategy.name else {}
    if algorithm == "auto-fedavg":
        params.setdefault("beta_steps", DEMO_BETA_STEPS)
    return base.replace(rounds=rounds, strategy=StrategyConfig(algorithm, params))


def new_run_folder(root: Path, name: str) -> Path:
    """``root/name-YYYYmmdd-HHMMSS``, with a suffix if that exists already."""
    stem = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, n = root / stem, 1
    while folder.exists():
        n += 1
        folder = root / f"{stem}-{n}"
    return folder


class DemoPanel(RunTab):
    """Start/stop a local demo federation. ``runs_root`` and ``base_config`` may be
    changed before starting (tests use a tiny configuration)."""

    def __init__(self, show_error: ErrorDialog, parent: QWidget | None = None) -> None:
        super().__init__(show_error, parent)
        self.runs_root = default_runs_root()
        self.base_config = demo_base_config()

        intro = QLabel(
            f"Try federated training on this computer: {DEMO_SITES} synthetic hospitals (phantom CT, no patient data) "
            "train one lesion-segmentation network together."
        )
        intro.setWordWrap(True)
        self.simulation = QRadioButton("In-process simulation (fast)")
        self.simulation.setToolTip("All sites in this program, one after the other: the same algorithm code, no network")
        self.flower = QRadioButton("Flower on this machine (real federation)")
        self.flower.setToolTip(
            "A Flower SuperLink with TLS and site keys plus one SuperNode process per site, on loopback: "
            "exactly what hospitals run, slower to start"
        )
        self.simulation.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.simulation)
        group.addButton(self.flower)
        self.algorithm = QComboBox()
        for name in STRATEGIES.names():
            self.algorithm.addItem(name)
            self.algorithm.setItemData(self.algorithm.count() - 1, STRATEGIES.summary(name), Qt.ItemDataRole.ToolTipRole)
        self.algorithm.setCurrentText(self.base_config.strategy.name)
        self.algorithm.setToolTip("The federated algorithm; Auto-FedAvg learns how much each site counts")
        self.rounds = QSpinBox()
        self.rounds.setRange(1, 1000)
        self.rounds.setValue(self.base_config.rounds)
        self.rounds.setToolTip("Federated rounds: each site trains locally, then the models are combined")
        self.start_button = QPushButton("Start demo")
        self.start_button.setToolTip(f"Write {DEMO_SITES} phantom sites and start the federation; results go to a new folder under {self.runs_root}")
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop the demo within a second (the run folder keeps the last finished round)")
        self.stop_button.clicked.connect(self.stop)
        self.stop_button.setEnabled(False)

        form = QFormLayout()
        form.addRow("Runs on", self.simulation)
        form.addRow("", self.flower)
        form.addRow("Algorithm", self.algorithm)
        form.addRow("Rounds", self.rounds)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addStretch(1)

    def config(self) -> RunConfig:
        return demo_config(self.base_config, self.algorithm.currentText(), self.rounds.value())

    def start(self) -> None:
        try:
            config = self.config()
        except FedSegError as exc:
            self.show_error(self, "Demo", str(exc))
            return
        algorithm = config.strategy.name
        if self.flower.isChecked():
            out = new_run_folder(self.runs_root, f"flower-demo-{algorithm}")
            job = jobs.flower_demo(config, out)
        else:
            out = new_run_folder(self.runs_root, f"demo-{algorithm}")
            job = jobs.simulation_demo(config, out, sites=DEMO_SITES)
        self.worker = RunWorker(job)
        self.worker.ended.connect(self._ended)
        self._set_running(True)
        # in one process no site can go silent: it only waits for its turn
        self.started.emit(self.worker, DEMO, {}, self.flower.isChecked())
        self.worker.start()

    def stop(self) -> None:
        self._cancel(self.stop_button, "stopping the demo (Flower sites first finish the message in hand)")

    def set_locked(self, locked: bool) -> None:
        """Another tab runs something: nothing to start here meanwhile."""
        running = self.worker is not None
        self.start_button.setEnabled(not locked and not running)

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        for widget in (self.simulation, self.flower, self.algorithm, self.rounds):
            widget.setEnabled(not running)

    def _ended(self) -> None:
        self.worker = None
        self._set_running(False)
