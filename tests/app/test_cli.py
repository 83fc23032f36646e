"""``fedseg`` / ``fedseg gui``: the default command, the no-display fallback, screenshots."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtGui import QImage

from app import cli
from engine import cli as engine_cli


def test_a_display_is_an_x_or_wayland_server_or_an_explicit_qt_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.sys, "platform", "linux")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    assert not cli.has_display()
    monkeypatch.setenv("DISPLAY", ":99")
    assert cli.has_display()
    monkeypatch.delenv("DISPLAY")
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert cli.has_display()


def test_without_a_display_fedseg_says_so_and_runs_the_headless_demo(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(cli, "has_display", lambda: False)
    ran: list[bool] = []
    monkeypatch.setitem(engine_cli.COMMANDS, "demo", lambda args: ran.append(args.headless) or 0)
    assert cli.main([]) == 0
    assert ran == [True]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no display" in err and "fedseg demo --headless" in err


def test_the_help_lists_gui_with_the_engines_commands(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "gui" in out and "simulate" in out and "demo" in out


def test_a_screenshot_shows_the_ct_and_its_mask(phantom, tmp_path: Path, capsys) -> None:
    ct, label, _, _ = phantom
    png = tmp_path / "shot.png"
    assert cli.main(["gui", "--open", str(ct), "--mask", str(label), "--screenshot", str(png)]) == 0
    image = QImage(str(png))
    assert image.width() >= cli.SCREENSHOT_SIZE[0] and image.height() >= cli.SCREENSHOT_SIZE[1]
    # the viewer area holds CT greys and the green truth overlay, not an empty state
    colours = {image.pixelColor(x, y).name() for x in range(400, 1100, 7) for y in range(60, 900, 7)}
    assert len(colours) > 50
    assert any(int(c[3:5], 16) > int(c[1:3], 16) + 40 for c in colours)  # green-dominant pixels


def test_a_missing_ct_gives_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    code = cli.main(["gui", "--open", str(tmp_path / "nope.nii.gz"), "--screenshot", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == engine_cli.EXIT_USER_ERROR
    assert err.count("\n") == 1 and "nope.nii.gz" in err and "Traceback" not in err


def test_a_mask_without_a_ct_is_a_usage_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["gui", "--mask", "m.nii.gz", "--screenshot", str(tmp_path / "x.png")])
    assert stop.value.code == engine_cli.EXIT_USER_ERROR
    assert "need --open CT" in capsys.readouterr().err
