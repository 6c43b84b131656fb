#!/usr/bin/env bash
# Makes the project's Python virtual environment (once) with the pinned packages of a requirements
# file, and prints its bin folder, for PATH:
#   PATH="$(scripts/venv.sh [REQUIREMENTS])":$PATH      (default scripts/requirements-test.txt)
# Stock Debian 12 and Ubuntu 24.04 refuse `pip install` into the system's Python (PEP 668, an
# "externally managed environment"), so every Python package the scripts need goes here instead:
# $STOWAGE_VENV, default .venv at the repository root (ignored by git). A requirements file is
# installed again only when it changed.
set -euo pipefail
usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  -*) echo "venv: unknown option $1" >&2; usage >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
requirements=$(realpath -- "${1:-$root/scripts/requirements-test.txt}")
venv=${STOWAGE_VENV:-$root/.venv}
if [ ! -x "$venv/bin/python3" ]; then
  python3 -m venv "$venv" >&2 || {
    echo "venv: cannot make a virtual environment; on Debian/Ubuntu: apt-get install python3-venv" >&2
    exit 1
  }
fi
stamp=$venv/.installed-$(basename "$requirements")
if ! cmp -s "$requirements" "$stamp" 2> /dev/null; then
  echo "venv: installing $(basename "$requirements") into $venv" >&2
  "$venv/bin/python3" -m pip install -q --disable-pip-version-check -r "$requirements" >&2
  cp "$requirements" "$stamp"
fi
echo "$venv/bin"
