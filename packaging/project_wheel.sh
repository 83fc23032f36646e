#!/usr/bin/env bash
# FedSeg Studio's own wheel, built into OUT_DIR from a clean copy of this checkout.
#   bash packaging/project_wheel.sh OUT_DIR
# Not in place: a build inside the checkout leaves build/lib behind, and modules deleted
# since would ship in every later wheel. PYTHON picks the interpreter (default python3);
# PIP_WHEEL_ARGS adds pip options (the tests pass --no-build-isolation: no index needed).
set -euo pipefail
out=$(realpath -m "${1:?usage: project_wheel.sh OUT_DIR}")
python=${PYTHON:-python3}
root=$(cd "$(dirname "$0")/.." && pwd)
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -r "$root"/pyproject.toml "$root"/README.md "$root"/engine "$root"/app "$root"/resources "$src"/
find "$src" -name __pycache__ -prune -exec rm -rf {} +
# shellcheck disable=SC2086  # PIP_WHEEL_ARGS is a list of options
"$python" -m pip wheel --quiet --disable-pip-version-check --no-deps ${PIP_WHEEL_ARGS:-} --wheel-dir "$out" "$src"
ls "$out"/fedseg_studio-*.whl
