#!/usr/bin/env bash
# Set up the project's own virtual environment (idempotent), then run the app, the demo or the tests.
#   bash scripts/dev.sh app                          # the desktop app; the headless demo when there is no display
#   bash scripts/dev.sh demo [fedseg demo options]   # 3 phantom sites over a loopback Flower federation
#   bash scripts/dev.sh test [pytest options]
# torch==2.13.0 is installed before anything that depends on torch: on a CPU-only machine
# that picks the local CPU wheel instead of several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
venv=.venv
stamp=$venv/.fedseg-installed
want=$(cat pyproject.toml scripts/dev.sh | sha256sum | cut -d' ' -f1)

if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv"
  "$python" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing dependencies into $venv (torch first)"
  "$venv/bin/python" -m pip install --quiet "torch==2.13.0"
  "$venv/bin/python" -m pip install --quiet -e ".[test]"
  echo "$want" > "$stamp"
fi

task=${1:-}
shift || true
case "$task" in
  app)
    exec "$venv/bin/fedseg" "$@"
    ;;
  demo)
    exec "$venv/bin/fedseg" demo --headless "$@"
    ;;
  test)
    exec "$venv/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: bash scripts/dev.sh app|demo|test [options]" >&2
    exit 2
    ;;
esac
