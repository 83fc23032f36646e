"""The arrows of DESIGN.md: the engine never imports Qt, pyqtgraph or the app, and only
engine/federation/ imports Flower (checked on the source, so a lazy import counts too)."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "engine"
GUI = ("PySide6", "PyQt5", "PyQt6", "pyqtgraph", "app")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def roots(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_modules(path)}


def test_the_engine_never_imports_the_gui() -> None:
    offenders = {str(p.relative_to(ENGINE)): sorted(roots(p) & set(GUI)) for p in ENGINE.rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_engine_federation_imports_flower() -> None:
    files = [p for p in ENGINE.rglob("*.py") if "flwr" in roots(p)]
    assert files, "engine/federation/ imports Flower: the scan must see it"
    assert all(p.is_relative_to(ENGINE / "federation") for p in files), [str(p) for p in files]
