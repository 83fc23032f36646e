"""Render resources/icons/fedseg-studio.svg to a PNG or a Windows .ico (Qt's SVG renderer).

    python icons.py OUT.ico [SIZE]      # the Windows executable's and installer's icon
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SVG = Path(__file__).resolve().parents[1] / "resources" / "icons" / "fedseg-studio.svg"


def render(out: Path, size: int = 256, svg: Path = SVG) -> Path:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _app = QGuiApplication.instance() or QGuiApplication([])
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    QSvgRenderer(str(svg)).render(painter)
    painter.end()
    out.parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(out)):
        raise SystemExit(f"icons.py: Qt could not write {out}")
    return out


if __name__ == "__main__":
    print(render(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 256))
