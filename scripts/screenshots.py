#!/usr/bin/env python
"""The screenshots of docs/app.md, from generated phantom data only (no patient data).

Generates three phantom sites, trains Auto-FedAvg on them for a few rounds in one process
(``simulate_sites``), then lays the main window out in each documented state and saves
it. Run it on a real display or under Xvfb for the platform's true rendering
(``xvfb-run -s "-screen 0 1920x1200x24" .venv/bin/python scripts/screenshots.py``);
without a display it falls back to Qt's offscreen platform.

    python scripts/screenshots.py [--out docs/screenshots] [--rounds 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.cli import wait_idle  # noqa: E402
from app.main_window import MainWindow  # noqa: E402
from engine.config import DataConfig, ModelConfig, RunConfig, StrategyConfig, TrainConfig  # noqa: E402
from engine.data.phantoms import make_demo_sites  # noqa: E402
from engine.simulation import load_sites, simulate_sites  # noqa: E402


def trained_run(work: Path, rounds: int) -> tuple[list[Path], Path]:
    sites = make_demo_sites(work / "sites", sites=3, seed=0)
    config = RunConfig(
        rounds=rounds,
        data=DataConfig(target_spacing=(2.0, 2.0, 2.5), patch_size=(48, 48, 32)),
        model=ModelConfig("unet", {"channels": [8, 16, 32], "strides": [2, 2]}),
        train=TrainConfig(local_steps=25, lr=3e-3, device="cpu"),
        strategy=StrategyConfig("auto-fedavg", {"beta_steps": 5}),
    )
    run = work / "run"
    simulate_sites(load_sites(sites, config), config, run)
    return sites, run


def settle(app: QApplication, seconds: float = 0.3) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs/screenshots")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fedseg-shots-"))
    sites, run = trained_run(work, args.rounds)
    case = sorted((sites[1] / "imagesTr").glob("*.nii.gz"))[0]
    label = sites[1] / "labelsTr" / case.name

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow(QSettings(str(work / "settings.ini"), QSettings.Format.IniFormat), show_error=lambda _p, t, m: print(f"{t}: {m}"))
    window.resize(1600, 1000)
    window.show()
    args.out.mkdir(parents=True, exist_ok=True)

    def shot(name: str) -> None:
        settle(app)
        path = args.out / f"{name}.png"
        window.grab().save(str(path))
        print("saved", path)

    window.open_ct(case, label)
    wait_idle(app, window)
    lesion = np.argwhere(window.viewer.model.mask("truth")).mean(axis=0).round().astype(int)
    window.viewer.model.set_cursor(*lesion)  # the crosshair on the lesion, as a reader would
    window.segment(run)
    wait_idle(app, window)
    window.open_run(run)
    window.plots.tabs.setCurrentIndex(0)
    shot("main-window")
    window.viewer.model.set_difference_mode(True)
    window.plots.tabs.setCurrentIndex(1)
    shot("difference-and-dirichlet")
    window.viewer.model.set_difference_mode(False)
    window.plots.tabs.setCurrentIndex(2)
    panel = window.federation
    panel.tabs.setCurrentIndex(1)  # Join
    panel.join.data.setText(str(sites[0]))
    panel.join.check_button.click()
    deadline = time.monotonic() + 120
    while not panel.join.cases.text().strip("-") and time.monotonic() < deadline:
        settle(app, 0.1)
    shot("join")
    panel.tabs.setCurrentIndex(2)  # Host
    window.plots.tabs.setCurrentIndex(3)
    shot("host")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
