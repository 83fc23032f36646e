"""Give the built folder's executable the names of Flower's programs (run after PyInstaller).

The SuperLink starts ``flower-superexec`` and that starts ``flwr-serverapp``, by name from
PATH; the frozen ``fedseg`` is each of them when started under its name (app/frozen.py).
POSIX: relative symbolic links (the folder can move). Windows: copies of ``fedseg.exe``
(links need privileges there); each copy costs the executable's size, not the folder's.

    python aliases.py dist/reader/fedseg-studio
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's engine/, as the build uses

from engine.federation.programs import FLOWER_PROGRAMS  # noqa: E402

WINDOWS = sys.platform == "win32"


def make_aliases(bundle: Path, executable: str = "fedseg") -> list[Path]:
    suffix = ".exe" if WINDOWS else ""
    target = bundle / f"{executable}{suffix}"
    if not target.is_file():
        raise SystemExit(f"aliases.py: {target} does not exist: build the folder first")
    made = []
    for name in FLOWER_PROGRAMS:
        alias = bundle / f"{name}{suffix}"
        if alias.exists() or alias.is_symlink():
            alias.unlink()
        if WINDOWS:
            shutil.copy2(target, alias)
        else:
            os.symlink(target.name, alias)
        made.append(alias)
    return made


if __name__ == "__main__":
    for path in make_aliases(Path(sys.argv[1])):
        print(f"alias {path.name} -> fedseg")
