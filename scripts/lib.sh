# shellcheck shell=bash
# Sourced by the scripts: their usage (their own header comment), paths given on the command line
# read from the folder the script was called from, and the release build of `stowage`.
caller=$PWD
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
script=$(basename "$0" .sh)

# Prints the script's header comment: every comment line after the shebang, up to the first line
# that is not one.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

# Refuses the command line: says why and where the usage is, exits 2.
refuse() {
  echo "$script: $1 (usage: $0 --help)" >&2
  exit 2
}

# For scripts that take positional arguments only: --help prints the usage and exits; any other
# option is refused.
positional_only() {
  local a
  for a in "$@"; do
    case "$a" in
      -h | --help) usage; exit 0 ;;
      -*) refuse "unknown option $a" ;;
    esac
  done
}

# A path from the command line, made absolute against the caller's folder.
from_caller() {
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s\n' "$caller/$1" ;;
  esac
}

# Builds target/release/stowage if needed and prints its path ($STOWAGE_BIN when set). The first
# build compiles every dependency (about 40 CPU-minutes, 2.5 GB in target/release): Cargo's
# progress shows then; later builds are quiet.
release_binary() {
  if [ -n "${STOWAGE_BIN:-}" ]; then
    printf '%s\n' "$STOWAGE_BIN"
    return
  fi
  local bin=$root/target/release/stowage
  if [ -x "$bin" ]; then
    cargo build --release --locked -q --manifest-path "$root/Cargo.toml" >&2
  else
    echo "$script: building stowage (release; the first build takes about 40 CPU-minutes and 2.5 GB in target/)" >&2
    cargo build --release --locked --manifest-path "$root/Cargo.toml" >&2
  fi
  printf '%s\n' "$bin"
}
