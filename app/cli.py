"""``fedseg``: the engine's command line plus ``gui``, the desktop app (the default).

``fedseg`` alone opens the main window; on a machine without a display it says so in one
line and runs the headless Flower demo instead. ``fedseg gui ... --screenshot PNG`` lays
the window out with the given content, saves a picture of it and exits (docs, checks);
it needs no display (Qt's offscreen platform is used when there is none).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from engine import cli as engine_cli

SCREENSHOT_SIZE = (1600, 1000)
DESKTOP_ID = "fedseg-studio"
ICON = "icons/fedseg-studio.svg"
IDLE_TIMEOUT_S = 600  # a screenshot waits this long at most for loading and segmenting


def has_display() -> bool:
    """Whether Qt can open a window here (an explicit QT_QPA_PLATFORM counts as one)."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True  # Windows and macOS always have their own platform plugin


class GuiCommand:
    """``fedseg gui``: an :class:`engine.cli.Extension`."""

    name = "gui"

    def add_parser(self, sub) -> None:
        gui = sub.add_parser("gui", help="the desktop app (the default when no command is given)")
        gui.add_argument("--open", metavar="CT", help="a CT file or DICOM folder to show")
        gui.add_argument("--mask", metavar="LABEL", help="its ground-truth label map")
        gui.add_argument("--prediction", metavar="MASK", help="a predicted mask to overlay")
        gui.add_argument("--lesion-label", type=int, default=1, metavar="N", help="in a multi-label map, the lesion's label (default 1)")
        gui.add_argument("--model", metavar="DIR", help="segment the CT with this model folder (model.json + weights)")
        gui.add_argument("--run", metavar="RUN_DIR", help="replay a run folder (events.jsonl) into the plots")
        gui.add_argument("--screenshot", metavar="PNG", help="lay the window out, save a screenshot and exit")

    def run(self, args: argparse.Namespace) -> int:
        if args.screenshot is None and not has_display():
            print(
                "fedseg: no display here (DISPLAY is not set), so the app cannot open a window; "
                "running the headless demo instead (fedseg demo --headless)",
                file=sys.stderr,
                flush=True,
            )
            demo = engine_cli.build_parser().parse_args(["demo", "--headless"])
            return engine_cli.COMMANDS["demo"](demo)
        if args.screenshot is not None and not has_display():
            os.environ["QT_QPA_PLATFORM"] = "offscreen"
        if not args.open and (args.mask or args.prediction or args.model):
            raise_user_error("--mask, --prediction and --model need --open CT")
        return run_gui(args)


def raise_user_error(message: str) -> None:
    print(f"fedseg: error: {message}", file=sys.stderr)
    raise SystemExit(engine_cli.EXIT_USER_ERROR)


def run_gui(args: argparse.Namespace) -> int:
    from PySide6.QtCore import QSettings
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from app.resources import resource_path

    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    qt_app.setApplicationName("FedSeg Studio")
    qt_app.setOrganizationName("FedSeg Studio")
    qt_app.setDesktopFileName(DESKTOP_ID)  # Wayland and taskbars match the window to fedseg-studio.desktop
    qt_app.setWindowIcon(QIcon(str(resource_path(ICON))))
    errors: list[str] = []
    if args.screenshot:
        # a screenshot must not depend on (or change) the user's saved layout and recent files
        scratch = Path(tempfile.mkdtemp(prefix="fedseg-screenshot-")) / "settings.ini"
        window = MainWindow(QSettings(str(scratch), QSettings.Format.IniFormat), show_error=lambda _p, title, text: errors.append(f"{title}: {text}"))
        window.resize(*SCREENSHOT_SIZE)
    else:
        window = MainWindow()
    window.lesion_label = args.lesion_label
    window.show()
    if args.open:
        window.open_ct(args.open, args.mask)
        wait_idle(qt_app, window)
    if args.prediction and window.viewer.model.volume is not None:
        window.open_mask("prediction", args.prediction)
        wait_idle(qt_app, window)
    if args.model and window.viewer.model.volume is not None:
        window.segment(args.model)
        wait_idle(qt_app, window)
    if args.run:
        window.open_run(args.run)
    if not args.screenshot:
        return qt_app.exec()
    for _ in range(5):  # let layouts settle and pyqtgraph paint
        qt_app.processEvents()
        time.sleep(0.05)
    target = Path(args.screenshot)
    target.parent.mkdir(parents=True, exist_ok=True)
    saved = window.grab().save(str(target))
    window.close()
    if errors:
        print(f"fedseg: error: {errors[0]}", file=sys.stderr)
        return engine_cli.EXIT_USER_ERROR
    if not saved:
        print(f"fedseg: error: could not write {target}", file=sys.stderr)
        return engine_cli.EXIT_USER_ERROR
    print(f"saved {target}")
    return 0


def wait_idle(qt_app, window, timeout_s: float = IDLE_TIMEOUT_S) -> None:
    """Run the event loop until the window's background jobs have ended."""
    deadline = time.monotonic() + timeout_s
    while window.workers and time.monotonic() < deadline:
        qt_app.processEvents()
        time.sleep(0.01)
    qt_app.processEvents()


def main(argv: Sequence[str] | None = None) -> int:
    return engine_cli.main(argv, extensions=[GuiCommand()], default="gui")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
