"""The programs a federation starts come from this installation: the interpreter's folder
in a development install, the executable's own aliases in a frozen folder, never PATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import FederationError
from engine.federation import programs
from engine.federation.programs import FLOWER_PROGRAMS, check_flower_programs, flower_env, flower_program, program_name, python_module


def test_python_module_runs_a_module_of_this_installation() -> None:
    done = subprocess.run(python_module("engine.cli", "algorithms"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "auto-fedavg" in done.stdout and "fedprox" in done.stdout


def test_flower_programs_are_found_beside_the_interpreter() -> None:
    path = Path(flower_program("flower-superexec"))
    assert path.parent == Path(sys.executable).parent
    done = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=120)
    assert "Flower version: 1.41.0" in done.stdout


def test_an_unknown_program_name_suggests_the_closest() -> None:
    with pytest.raises(ValueError, match="did you mean 'flower-superexec'"):
        flower_program("flower-superexc")


@pytest.mark.parametrize(("argv0", "name"), [("/opt/fs/flower-superexec", "flower-superexec"), ("C:\\FedSeg\\flwr-serverapp.exe", "flwr-serverapp"), ("fedseg", "fedseg")])
def test_program_name_is_the_file_name_without_exe(argv0: str, name: str) -> None:
    assert program_name(argv0.replace("\\", "/")) == name


@pytest.fixture
def frozen_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A frozen installation: sys.executable is the folder's `fedseg`, with Flower aliases."""
    folder = tmp_path / "fedseg-studio"
    folder.mkdir()
    (folder / "fedseg").write_text("")
    for name in FLOWER_PROGRAMS:
        (folder / name).symlink_to("fedseg")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(folder / "fedseg"))
    return folder


def test_a_frozen_folder_starts_its_own_aliases(frozen_folder: Path) -> None:
    assert flower_program("flower-superexec") == str(frozen_folder / "flower-superexec")
    assert python_module("engine.federation.supernode", "--x")[:3] == [str(frozen_folder / "fedseg"), "-m", "engine.federation.supernode"]
    # the SuperLink finds flower-superexec and flwr-serverapp by name: the folder comes first
    assert flower_env()["PATH"].split(os.pathsep)[0] == str(frozen_folder.resolve())


def test_a_frozen_folder_without_its_aliases_fails_clearly_rather_than_use_path(frozen_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "venv-bin"
    elsewhere.mkdir()
    (elsewhere / "flwr-serverapp").write_text("#!/bin/sh\n")
    (elsewhere / "flwr-serverapp").chmod(0o755)
    monkeypatch.setenv("PATH", str(elsewhere))
    (frozen_folder / "flwr-serverapp").unlink()
    with pytest.raises(FederationError, match=r"flwr-serverapp is not in .*fedseg-studio.*aliases"):
        check_flower_programs()  # what start_superlink asks before starting anything


def test_run_flower_program_names_itself_like_its_console_script(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # run_flower_program replaces it
    with pytest.raises(SystemExit) as exit_:
        programs.run_flower_program("flwr-serverapp", [])  # its --token is required
    assert exit_.value.code == 2
    assert "usage: flwr-serverapp" in capsys.readouterr().err
