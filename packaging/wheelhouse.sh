#!/usr/bin/env bash
# An offline installation kit: every wheel FedSeg Studio needs, in one folder, and the commands
# to install from it (written to OUT_DIR/INSTALL.txt).
#
#   bash packaging/wheelhouse.sh OUT_DIR              # CPU torch
#   PROFILE=site-node bash packaging/wheelhouse.sh OUT_DIR   # CUDA torch (about 2.7 GB more)
#
# Wheels are per platform: build the kit with the same OS, CPU architecture and Python minor
# version as the workstations (PYTHON=python3.11 picks the interpreter). Everything is a wheel
# (packages published only as source are built into wheels here), so the offline install needs
# no compiler and no build tools.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(realpath -m "${1:?usage: wheelhouse.sh OUT_DIR}")
python=${PYTHON:-python3}
profile=${PROFILE:-reader}
torch_version=2.13.0
mkdir -p "$out"

run_pip=("$python" -m pip --disable-pip-version-check)
if [ "$profile" = site-node ]; then
  # As in the Makefile: a CPU wheel in this machine's find-links must not stand in for the CUDA one.
  run_pip=(env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "${run_pip[@]}")
fi

"$python" "$here/requirements.py" > "$out/requirements.txt"
cp "$here/constraints.txt" "$out/constraints.txt"
echo "wheelhouse: torch $torch_version ($profile) and FedSeg Studio's dependencies into $out"
"${run_pip[@]}" wheel --quiet --wheel-dir "$out" "torch==$torch_version"
"${run_pip[@]}" wheel --quiet --wheel-dir "$out" --find-links "$out" -c "$out/constraints.txt" -r "$out/requirements.txt"
PYTHON=$python bash "$here/project_wheel.sh" "$out" > /dev/null
version=$(cd "$out" && ls fedseg_studio-*.whl | sed -E 's/fedseg_studio-([^-]+)-.*/\1/')

cat > "$out/INSTALL.txt" <<TXT
FedSeg Studio $version offline installation ($profile, $(uname -s) $(uname -m), Python $("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])'))

On the workstation, with this folder at WHEELHOUSE (no network needed):

  python3 -m venv /opt/fedseg-studio/venv
  /opt/fedseg-studio/venv/bin/pip install --no-index --find-links WHEELHOUSE torch==$torch_version
  /opt/fedseg-studio/venv/bin/pip install --no-index --find-links WHEELHOUSE -c WHEELHOUSE/constraints.txt fedseg-studio==$version
  /opt/fedseg-studio/venv/bin/fedseg --version

Upgrade: the same two pip commands with the new kit and the new version (add --upgrade).
Uninstall: delete /opt/fedseg-studio/venv. Settings and run folders are not in it.
See docs/install.md.
TXT
du -sh "$out"
