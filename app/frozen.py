"""The entry point of the installed (PyInstaller) FedSeg Studio: one executable, every part.

A frozen folder has no Python interpreter and no console scripts, yet a federation
starts child processes (``engine/federation/programs.py``). So the executable decides
what it is from how it was started:

* under one of the names of Flower's programs that the SuperLink starts by name
  (``flower-superexec``, ``flwr-serverapp``: aliases of the executable in its folder), it is
  that program;
* ``fedseg -m MODULE ARGS`` runs one of FedSeg Studio's modules as ``python -m`` would
  (the SuperLink, SuperNode and site processes are started that way);
* anything else is the ``fedseg`` command line (``app.cli``).

In a development install ``python -m app.frozen ...`` behaves the same, which is how the
tests check it without building a bundle.
"""

from __future__ import annotations

import multiprocessing
import runpy
import sys
from collections.abc import Sequence

# `fedseg -m` runs only this program's own modules: a frozen folder holds no others worth running.
RUNNABLE_PACKAGES = ("engine", "app")


def run_module(module: str, args: Sequence[str]) -> int:
    """``python -m module args``: ``module`` runs as ``__main__`` with ``sys.argv[1:] == args``."""
    if module.split(".")[0] not in RUNNABLE_PACKAGES:
        print(f"fedseg: -m {module}: only FedSeg Studio's own modules ({', '.join(RUNNABLE_PACKAGES)}) can be run", file=sys.stderr)
        return 2
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        code = exit_.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    multiprocessing.freeze_support()  # a frozen child started by multiprocessing runs its target, not main()

    from engine.federation.programs import FLOWER_PROGRAMS, program_name, run_flower_program

    program = program_name(argv[0]) if argv else "fedseg"
    if program in FLOWER_PROGRAMS:
        return run_flower_program(program, argv[1:])
    if len(argv) >= 2 and argv[1] == "-m":
        if len(argv) < 3:
            print("fedseg: -m needs a module name", file=sys.stderr)
            return 2
        return run_module(argv[2], argv[3:])

    from app.cli import main as fedseg_main

    return fedseg_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
