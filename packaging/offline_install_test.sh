#!/usr/bin/env bash
# Install FedSeg Studio from a wheelhouse folder exactly as INSTALL.txt says, with no index and
# none of this machine's pip configuration, then use it from a bare environment (the virtual
# environment's bin/ is not on PATH): versions, a CT segmented by a trained model, a screenshot
# of the window, and a real Flower federation of one round.
#
#   bash packaging/offline_install_test.sh WHEELHOUSE [WORK_DIR]
set -euo pipefail
wheelhouse=$(realpath "${1:?usage: offline_install_test.sh WHEELHOUSE [WORK_DIR]}")
work=$(realpath -m "${2:-$(mktemp -d)}")
python=${PYTHON:-python3}
mkdir -p "$work"
venv="$work/venv"
offline=(env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1)
version=$(cd "$wheelhouse" && ls fedseg_studio-*.whl | sed -E 's/fedseg_studio-([^-]+)-.*/\1/')

start=$(date +%s)
rm -rf "$venv"
"$python" -m venv "$venv"
"${offline[@]}" "$venv/bin/pip" install --quiet --no-index --find-links "$wheelhouse" "torch==2.13.0"
"${offline[@]}" "$venv/bin/pip" install --quiet --no-index --find-links "$wheelhouse" -c "$wheelhouse/constraints.txt" "fedseg-studio==$version"
echo "installed from $wheelhouse in $(( $(date +%s) - start )) s; venv $(du -sh "$venv" | cut -f1)"

bare=(env -i "HOME=$work/home" PATH=/usr/bin:/bin LANG=C.UTF-8)
fedseg="$venv/bin/fedseg"
"${bare[@]}" "$fedseg" --version
"${bare[@]}" "$fedseg" make-demo-sites "$work/sites" --sites 1 --seed 3 > /dev/null
image=$(ls "$work"/sites/*/imagesTr/*.nii.gz | head -1)
label=$(ls "$work"/sites/*/labelsTr/*.nii.gz | head -1)
"${bare[@]}" "$fedseg" demo --headless --rounds 1 --out "$work/demo" | tail -2
test -f "$work/demo/server/results.json"
"${bare[@]}" "$fedseg" predict --model "$work/demo/server" --image "$image" --out "$work/predicted.nii.gz"
"${bare[@]}" QT_QPA_PLATFORM=offscreen "$fedseg" gui --open "$image" --mask "$label" --prediction "$work/predicted.nii.gz" \
  --run "$work/demo/server" --screenshot "$work/screenshot.png" 2>/dev/null
test "$(stat -c %s "$work/screenshot.png")" -gt 20000
echo "offline install OK: $work (screenshot $work/screenshot.png)"
