#!/usr/bin/env bash
# Installs the system packages Stowage builds and tests with, on Debian/Ubuntu. Idempotent.
#   coinor-libcbc-dev  COIN-OR CBC, the MILP solver behind `stowage plan` (linked via good_lp)
#   protobuf-compiler  protoc, for the KServe v2 gRPC service's code (build.rs, tonic)
#   curl, and the linter for these scripts (the shellcheck package)
#   prometheus   for promtool, which lints the nodes' /metrics in the tests
#   python3-venv where the machine's python3 cannot make a virtual environment (scripts/venv.sh)
#   nodejs, npm  where the machine has no npm: the tests' schema packages (tests/clients)
set -euo pipefail
case "${1:-}" in
  -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  ?*) echo "setup: takes no arguments (see --help)" >&2; exit 2 ;;
esac

packages=(coinor-libcbc-dev pkg-config protobuf-compiler shellcheck curl prometheus)
python3 -c 'import ensurepip, venv' 2> /dev/null || packages+=(python3-venv)
command -v npm > /dev/null || packages+=(nodejs npm)
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
