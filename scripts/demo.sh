#!/usr/bin/env bash
# The main job on the embedded default, end to end: plan the example catalog (models.toml),
# print the cost table, and write plan.json and plan.svg under out/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -q
mkdir -p out
./target/release/stowage plan --catalog models.toml --out out/plan.json --svg out/plan.svg
