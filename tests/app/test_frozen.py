"""app/frozen.py: the installed executable is Flower's programs under their names, runs
``-m MODULE`` like Python, and is the ``fedseg`` command line otherwise."""

from __future__ import annotations

import sys

import pytest

from app.frozen import main


@pytest.fixture(autouse=True)
def _keep_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # main() rewrites it, as a program start would


def test_under_a_flower_name_it_is_that_program(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["/opt/fedseg-studio/flower-superexec", "--version"])
    assert exit_.value.code == 0
    assert "Flower version: 1.41.0" in capsys.readouterr().out


def test_dash_m_runs_the_module_with_its_arguments(capsys) -> None:
    assert main(["/opt/fedseg-studio/fedseg", "-m", "engine.cli", "algorithms"]) == 0
    assert "auto-fedavg" in capsys.readouterr().out


def test_dash_m_passes_the_modules_exit_code_and_message(tmp_path, capsys) -> None:
    assert main(["fedseg", "-m", "engine.cli", "check-site", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "Traceback" not in err


def test_dash_m_runs_only_fedseg_studios_own_modules(capsys) -> None:
    assert main(["fedseg", "-m", "http.server"]) == 2
    assert "only FedSeg Studio's own modules" in capsys.readouterr().err
    assert main(["fedseg", "-m"]) == 2


def test_otherwise_it_is_the_fedseg_command_line(capsys) -> None:
    assert main(["fedseg.exe", "algorithms"]) == 0
    assert "deer" in capsys.readouterr().out
