"""Start-up shared by the Qt benchmarks (``gui_latency.py``, ``viewer_redraw.py``).

Import it before anything imports PySide6: it puts the repository on ``sys.path`` and,
when there is no screen, selects Qt's offscreen platform (with ``DISPLAY`` set, e.g.
under ``xvfb-run``, the real X11 platform is measured). :func:`application` gives the
process's one QApplication.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtWidgets import QApplication  # noqa: E402 - after the platform is chosen


def application() -> QApplication:
    """The running QApplication, made on first use."""
    return QApplication.instance() or QApplication([])
