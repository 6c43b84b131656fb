#!/usr/bin/env bash
# Installs the system packages Stowage builds and tests with, on Debian/Ubuntu. Idempotent.
#   coinor-libcbc-dev  COIN-OR CBC, the MILP solver behind `stowage plan` (linked via good_lp)
#   curl, and the linter for these scripts (the shellcheck package)
#   prometheus   for promtool, which lints the nodes' /metrics in the tests
set -euo pipefail

packages=(coinor-libcbc-dev pkg-config shellcheck curl prometheus)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
