#!/usr/bin/env bash
# Install (or upgrade) a built FedSeg Studio folder on a Linux workstation. No network needed.
#
#   ./install.sh                 # this user: ~/.local/opt/fedseg-studio, ~/.local/bin/fedseg, menu entry
#   sudo ./install.sh --system   # everyone: /opt/fedseg-studio, /usr/local/bin/fedseg, menu entry
#   ./install.sh --prefix DIR --bin-dir DIR [FOLDER]
#
# FOLDER is the built folder (default: the folder this script is in, as shipped in the
# .tar.gz). Upgrading replaces the installed folder in one rename, so an interrupted
# upgrade leaves the old version working. Settings and run folders are not touched.
# Remove with: PREFIX/uninstall.sh (or ./uninstall.sh --system).
set -euo pipefail

usage() { echo "usage: install.sh [--system] [--prefix DIR] [--bin-dir DIR] [FOLDER]" >&2; exit 2; }
die() { echo "install.sh: $*" >&2; exit 1; }

system=0 prefix="" bin_dir="" source=""
while [ $# -gt 0 ]; do
  case "$1" in
    --system) system=1 ;;
    --prefix) prefix=${2:?}; shift ;;
    --bin-dir) bin_dir=${2:?}; shift ;;
    -h|--help) usage ;;
    -*) usage ;;
    *) source=$1 ;;
  esac
  shift
done
source=$(cd "${source:-$(dirname "$0")}" && pwd)
[ -x "$source/fedseg" ] && [ -d "$source/_internal" ] || die "$source is not a built FedSeg Studio folder (no fedseg and _internal/ in it)"

if [ "$system" = 1 ]; then
  prefix=${prefix:-/opt/fedseg-studio} bin_dir=${bin_dir:-/usr/local/bin} data_home=/usr/share
else
  prefix=${prefix:-$HOME/.local/opt/fedseg-studio} bin_dir=${bin_dir:-$HOME/.local/bin} data_home=${XDG_DATA_HOME:-$HOME/.local/share}
fi
case "$prefix" in *[!A-Za-z0-9/._-]*) die "install folder '$prefix' must be ASCII letters, digits and / . _ - only (Qt, torch and Flower's children take it from PATH)";; esac

# The folder needs the glibc it was built against (glibc_floor.py wrote the number at build time).
need=$(cat "$source/glibc-required" 2>/dev/null || echo 2.34)
glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
if [ -n "$glibc" ] && [ "$(printf '%s\n%s\n' "$glibc" "$need" | sort -V | head -1)" != "$need" ]; then
  die "this system has glibc $glibc; this build of FedSeg Studio needs $need or newer (build it on the oldest distribution you run: docs/install.md)"
fi

# Copy beside the target, then swap: never a half-copied installation.
mkdir -p "$(dirname "$prefix")"
staging="$prefix.new.$$"
rm -rf "$staging"
if [ "$source" != "$prefix" ]; then
  cp -a "$source" "$staging"
  if [ -e "$prefix" ]; then
    [ -x "$prefix/fedseg" ] || die "$prefix exists and is not a FedSeg Studio folder; not replacing it"
    mv "$prefix" "$prefix.old.$$"
  fi
  mv "$staging" "$prefix"
  rm -rf "$prefix.old.$$"
fi

mkdir -p "$bin_dir" "$data_home/applications" "$data_home/icons/hicolor/scalable/apps"
ln -sfn "$prefix/fedseg" "$bin_dir/fedseg"
resources="$prefix/_internal/resources"
sed -e "s|^Exec=fedseg|Exec=$prefix/fedseg|" -e "s|^TryExec=fedseg|TryExec=$prefix/fedseg|" \
  "$resources/linux/fedseg-studio.desktop" > "$data_home/applications/fedseg-studio.desktop"
cp "$resources/icons/fedseg-studio.svg" "$data_home/icons/hicolor/scalable/apps/fedseg-studio.svg"
# What uninstall.sh removes (and nothing else).
printf 'prefix=%q\nbin_link=%q\ndesktop=%q\nicon=%q\n' "$prefix" "$bin_dir/fedseg" \
  "$data_home/applications/fedseg-studio.desktop" "$data_home/icons/hicolor/scalable/apps/fedseg-studio.svg" > "$prefix/install-info"
command -v update-desktop-database >/dev/null && update-desktop-database -q "$data_home/applications" 2>/dev/null || true

# The window needs Qt's X11 libraries (the command line and the headless demo do not).
missing=""
ldconfig=$(command -v ldconfig || echo /sbin/ldconfig)
if [ -x "$ldconfig" ]; then
  for lib in libxcb-cursor.so.0 libxcb-icccm.so.4 libxcb-keysyms.so.1 libxkbcommon-x11.so.0 libEGL.so.1 libfontconfig.so.1; do
    "$ldconfig" -p | grep -q "$lib" || missing="$missing $lib"
  done
fi
echo "installed $("$prefix/fedseg" --version) in $prefix"
echo "command: $bin_dir/fedseg; menu entry: FedSeg Studio"
case ":$PATH:" in *":$bin_dir:"*) ;; *) echo "note: $bin_dir is not on PATH; add it or run $prefix/fedseg";; esac
if [ -n "$missing" ]; then
  echo "note: the window needs these system libraries, not found:$missing"
  echo "      Debian/Ubuntu: sudo apt install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0 libegl1 libfontconfig1"
fi
