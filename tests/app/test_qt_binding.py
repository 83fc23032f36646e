"""The Qt binding must not leak references to Python's singletons.

PySide6 6.12.0 on Python 3.11 drops one reference to ``True`` per ``Signal.emit()`` and
one to ``None`` per call of a void method; the app emits thousands per minute (mouse
moves, plots) and the process aborts with "bool_dealloc". pyproject.toml excludes that
release; this test catches such a build if one comes back.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QLabel


class _Emitter(QObject):
    fired = Signal(int)


def test_signal_emit_and_void_methods_keep_their_references(qtbot) -> None:
    emitter = _Emitter()
    received: list[int] = []
    emitter.fired.connect(received.append)
    label = QLabel()
    qtbot.addWidget(label)
    true_before, none_before = sys.getrefcount(True), sys.getrefcount(None)
    for i in range(200):
        emitter.fired.emit(i)
        label.setText(str(i))
    assert received == list(range(200))
    # a leak loses 200 references; ordinary interpreter noise is a handful
    assert sys.getrefcount(True) > true_before - 50
    assert sys.getrefcount(None) > none_before - 50
