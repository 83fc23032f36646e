"""Print the runtime requirements of pyproject.toml, one per line (for pip install -r).

Used by the Makefile and wheelhouse.sh so that the dependency list has one home: pyproject.toml.
"""

import sys
import tomllib
from pathlib import Path

if __name__ == "__main__":
    pyproject = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "pyproject.toml")
    with pyproject.open("rb") as file:
        print("\n".join(tomllib.load(file)["project"]["dependencies"]))
