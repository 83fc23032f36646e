#!/usr/bin/env bash
# Build the FedSeg Studio folder from this checkout, then use it the way a workstation would:
# from a bare environment (no virtual environment, PATH=/usr/bin:/bin, an empty HOME).
#   1. fedseg --version
#   2. fedseg demo --headless: a real Flower federation (SuperLink -> flower-superexec ->
#      flwr-serverapp, and three `fedseg -m` site processes with their SuperNodes), all
#      started from the folder itself
#   3. fedseg predict with the demo's model, then fedseg gui --screenshot (offscreen) of the
#      CT, its mask, the prediction and the run's plots
#   4. install.sh into a scratch HOME, the installed fedseg, uninstall.sh
# Takes 6-10 minutes on 2 cores (most of it the build). Run by hand and as the last CI step.
#
#   bash packaging/smoke_test.sh            # PROFILE=site-node for the CUDA folder, SKIP_BUILD=1 to reuse the folder
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
profile=${PROFILE:-reader}
rounds=${ROUNDS:-2}
bundle="$here/dist/$profile/fedseg-studio"
results="$here/dist/smoke-$profile"

clock() { date +%s; }
t0=$(clock)
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  make -C "$here" bundle PROFILE="$profile"
fi
built=$(( $(clock) - t0 ))
[ -x "$bundle/fedseg" ] || { echo "smoke_test: no built folder at $bundle" >&2; exit 1; }

scratch=$(mktemp -d)
rm -rf "$results" && mkdir -p "$results" "$scratch/home"
bare=(env -i "HOME=$scratch/home" PATH=/usr/bin:/bin LANG=C.UTF-8)
fedseg="$bundle/fedseg"
leftovers() { pgrep -f "$bundle/" || true; }

"${bare[@]}" "$fedseg" --version | tee "$results/version.txt"

t1=$(clock)
"${bare[@]}" "$fedseg" demo --headless --rounds "$rounds" --out "$scratch/demo" | tee "$results/demo.txt"
demo_s=$(( $(clock) - t1 ))
test -f "$scratch/demo/server/results.json" -a -f "$scratch/demo/server/global_model.safetensors"
sleep 1
[ -z "$(leftovers)" ] || { echo "smoke_test: processes of the folder outlived the demo: $(leftovers)" >&2; exit 1; }

image=$(ls "$scratch"/demo/sites/site-1/imagesTr/*.nii.gz | head -1)
label="${image/imagesTr/labelsTr}"
"${bare[@]}" "$fedseg" predict --model "$scratch/demo/server" --image "$image" --out "$scratch/predicted.nii.gz" | tee "$results/predict.txt"
"${bare[@]}" QT_QPA_PLATFORM=offscreen "$fedseg" gui --open "$image" --mask "$label" --prediction "$scratch/predicted.nii.gz" \
  --run "$scratch/demo/server" --screenshot "$results/screenshot.png" 2> "$results/gui.log"
test "$(stat -c %s "$results/screenshot.png")" -gt 20000

"${bare[@]}" bash "$bundle/install.sh" > "$results/install.txt"
"${bare[@]}" "$scratch/home/.local/bin/fedseg" algorithms | grep -q auto-fedavg
"${bare[@]}" "$scratch/home/.local/opt/fedseg-studio/uninstall.sh"
test ! -e "$scratch/home/.local/opt/fedseg-studio" -a ! -e "$scratch/home/.local/bin/fedseg"

size=$(du -sh "$bundle" | cut -f1)
archive=$(ls "$here/dist/$profile"/*.tar.gz 2>/dev/null | head -1)
cat > "$results/summary.txt" <<TXT
profile $profile: folder $size, archive $( [ -n "$archive" ] && du -h "$archive" | cut -f1 ); build ${built} s; demo ($rounds rounds, 3 sites) ${demo_s} s
TXT
cat "$results/summary.txt"
rm -rf "$scratch"
echo "smoke test passed: $results"
