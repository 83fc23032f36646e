"""The oldest glibc a built Linux folder runs on, written to FOLDER/glibc-required.

A PyInstaller folder carries every library but glibc, and each carried library asks for the
glibc symbol versions it was linked against: the folder needs the newest of them. That is
the build machine's libpython and libstdc++ as much as the wheels' own floors (PySide6 6.11:
2.34; torch: 2.28), so build on the oldest distribution the workstations run. install.sh
refuses an older system with this number rather than fail at the first import.

    python glibc_floor.py dist/reader/fedseg-studio      # prints e.g. 2.36
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

VERSION_NEED = re.compile(rb"GLIBC_2\.(\d+)(?:\.\d+)?\x00")  # entries of .dynstr; not GLIBCXX_


def glibc_floor(folder: Path) -> tuple[int, int]:
    newest = (2, 0)
    for path in folder.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        with path.open("rb") as file:
            if file.read(4) != b"\x7fELF":
                continue
            found = [(2, int(minor)) for minor in VERSION_NEED.findall(file.read())]
        newest = max([newest, *found])
    return newest


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    major, minor = glibc_floor(folder)
    (folder / "glibc-required").write_text(f"{major}.{minor}\n")
    print(f"{major}.{minor}")
