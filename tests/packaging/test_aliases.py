"""aliases.py names the built executable after each Flower program the federation starts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from engine.federation.programs import FLOWER_PROGRAMS, program_name

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX symbolic links")


def test_every_flower_program_becomes_a_relative_link_to_fedseg(tmp_path: Path, packaging_script) -> None:
    aliases = packaging_script("aliases")
    (tmp_path / "fedseg").write_bytes(b"\x7fELF")
    made = aliases.make_aliases(tmp_path)
    made_again = aliases.make_aliases(tmp_path)  # a rebuild replaces them
    assert sorted(p.name for p in made) == sorted(FLOWER_PROGRAMS) == sorted(p.name for p in made_again)
    for alias in made:
        assert os.readlink(alias) == "fedseg"  # relative: the folder can move
        assert program_name(str(alias)) in FLOWER_PROGRAMS


def test_no_executable_no_aliases(tmp_path: Path, packaging_script) -> None:
    with pytest.raises(SystemExit, match="build the folder first"):
        packaging_script("aliases").make_aliases(tmp_path)
