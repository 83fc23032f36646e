"""glibc_floor.py: the newest GLIBC_2.x version any ELF file of a folder asks for."""

from __future__ import annotations

import sys
from pathlib import Path


def test_the_newest_glibc_version_needed_wins(tmp_path: Path, packaging_script) -> None:
    floor = packaging_script("glibc_floor").glibc_floor
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "liba.so").write_bytes(b"\x7fELF....GLIBC_2.17\x00GLIBC_2.34\x00")
    (tmp_path / "libb.so").write_bytes(b"\x7fELF....GLIBC_2.28\x00GLIBCXX_3.4.99\x00GLIBC_2.2.5\x00")
    (tmp_path / "notes.txt").write_bytes(b"GLIBC_2.99\x00")  # not an ELF file
    (tmp_path / "link.so").symlink_to(tmp_path / "lib" / "liba.so")
    assert floor(tmp_path) == (2, 34)


def test_a_real_interpreter_needs_a_real_glibc(tmp_path: Path, packaging_script) -> None:
    floor = packaging_script("glibc_floor").glibc_floor
    (tmp_path / "python").write_bytes(Path(sys.executable).resolve().read_bytes())
    major, minor = floor(tmp_path)
    assert major == 2 and 2 <= minor <= 60
