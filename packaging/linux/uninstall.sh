#!/usr/bin/env bash
# Remove an installation made by install.sh: the folder, the fedseg link, the menu entry and
# the icon it wrote (read from PREFIX/install-info). Settings (~/.config/FedSeg Studio/) and
# run folders (~/FedSeg/runs, and wherever runs were saved) are kept: they are the user's.
#
#   ~/.local/opt/fedseg-studio/uninstall.sh      sudo /opt/fedseg-studio/uninstall.sh
set -euo pipefail
prefix=$(cd "$(dirname "$0")" && pwd)
info="$prefix/install-info"
[ -f "$info" ] || { echo "uninstall.sh: $info not found: $prefix was not installed by install.sh" >&2; exit 1; }
bin_link="" desktop="" icon=""
# shellcheck disable=SC1090  # written by install.sh: prefix, bin_link, desktop, icon
. "$info"
[ -L "$bin_link" ] && [ "$(readlink "$bin_link")" = "$prefix/fedseg" ] && rm -f "$bin_link"
rm -f "$desktop" "$icon"
cd /
rm -rf "$prefix"
echo "removed FedSeg Studio from $prefix (settings and run folders kept)"
