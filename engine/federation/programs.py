"""The programs a federation starts, found without a virtual environment's ``bin/`` on PATH.

A federation is several processes. The coordinator starts the SuperLink and each site
its site process and SuperNode, all as ``python -m`` modules of ours. The SuperLink starts
``flower-superexec``, which starts ``flwr-serverapp`` for each run, both *by name* from PATH
(Flower 1.41, ``flwr/superlink/cli/flower_superlink.py`` and
``flwr/supercore/superexec/executor/subprocess_executor.py``).

* Development install: Flower's programs are console scripts beside the interpreter, and
  ``python -m`` is the interpreter's own.
* Frozen install (PyInstaller folder, ``sys.frozen``): there is no interpreter and there
  are no console scripts. Its one executable plays every part (``app/frozen.py``):
  ``fedseg -m MODULE ARGS`` runs ``MODULE`` as ``python -m`` would, and the folder holds
  aliases of the executable named after Flower's programs (:data:`FLOWER_PROGRAMS`;
  symbolic links, copies on Windows); started under one of those names it runs that
  program (:func:`run_flower_program`).

Either way the programs live in :func:`programs_dir`, and :func:`flower_env` puts that
folder first on the children's PATH, so the SuperLink's by-name starts find ours and never
another installation's.
"""

from __future__ import annotations

import difflib
import importlib
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.errors import FederationError

# Flower's programs that Flower itself starts by name (name -> "module:function", from flwr's
# entry points). The SuperLink and SuperNode are ours to start, as modules (superlink.py,
# supernode.py), and a site answers its tasks in-process (executor.py): no flwr-clientapp.
# Each name is one more copy of the executable on Windows.
FLOWER_PROGRAMS = {
    "flower-superexec": "flwr.supercore.cli:flower_superexec",
    "flwr-serverapp": "flwr.superlink.cli:flwr_serverapp",
}
FLOWER_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


def frozen() -> bool:
    """True in a PyInstaller folder: ``sys.executable`` is FedSeg Studio, not Python."""
    return bool(getattr(sys, "frozen", False))


def programs_dir() -> Path:
    """The folder of this installation's programs: the interpreter's ``bin/`` (``Scripts\\``),
    or the frozen folder holding the executable and its aliases."""
    return Path(sys.executable).resolve().parent if frozen() else Path(sys.executable).parent


def python_module(module: str, *args: str) -> list[str]:
    """``python -m module args`` for this installation (the frozen executable accepts ``-m``)."""
    return [sys.executable, "-m", module, *args]


def program_name(argv0: str) -> str:
    """The program a path names: ``/opt/x/flower-superexec`` and ``flower-superexec.exe``
    both name ``flower-superexec``."""
    name = Path(argv0).name
    return name[:-4] if name.lower().endswith(".exe") else name


def _check_name(name: str) -> None:
    if name not in FLOWER_PROGRAMS:
        close = difflib.get_close_matches(name, FLOWER_PROGRAMS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{name!r} is not one of Flower's programs {sorted(FLOWER_PROGRAMS)}{hint}")


def flower_program(name: str) -> str:
    """The path of Flower's program ``name`` in this installation.

    Beside the interpreter (or the frozen executable) first; a development install whose
    scripts went elsewhere (``pip install --user``) falls back to PATH. Raises
    :class:`FederationError` when neither has it, naming the folder looked in.
    """
    _check_name(name)
    folder = programs_dir()
    for candidate in (folder / name, folder / f"{name}.exe"):
        if candidate.exists():
            return str(candidate)
    if not frozen() and (found := shutil.which(name)):
        return found
    raise FederationError(
        f"{name} is not in {folder}: the installation is incomplete "
        + ("(the folder's Flower aliases are missing; rebuild or reinstall it)" if frozen() else "(reinstall flwr)")
    )


def check_flower_programs() -> None:
    """Raise :class:`FederationError` now, naming the folder, if a program the SuperLink will
    start by name is missing: otherwise the run would just never start."""
    for name in FLOWER_PROGRAMS:
        flower_program(name)


def flower_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for Flower's processes: no telemetry, no update checks, and this
    installation's programs first on PATH (the SuperLink starts its helpers by name)."""
    env = dict(os.environ)
    env.update(FLOWER_ENV)
    env["PATH"] = str(programs_dir()) + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update(extra)
    return env


def run_flower_program(name: str, args: Sequence[str]) -> int:
    """Run Flower's program ``name`` in this process, as its console script would.

    ``sys.argv[0]`` becomes the program's name: Flower reads it (its exit events are
    chosen by ``sys.argv[0].endswith(...)``) and argparse shows it in usage lines.
    """
    _check_name(name)
    module, function = FLOWER_PROGRAMS[name].split(":")
    sys.argv = [name, *args]
    result = getattr(importlib.import_module(module), function)()
    return result if isinstance(result, int) else 0
