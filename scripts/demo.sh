#!/usr/bin/env bash
# Runs the camera fan-out demo: one writer process (a camera if /dev/video0 exists, else a test
# pattern) and three reader processes (statistics, PNG snapshots, recorder).
# Arguments go to the demo, e.g. `scripts/demo.sh --seconds 30 --out /tmp/shmframe-demo`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh

echo "+ cargo build --release --examples --lib"
cargo build --release --examples --lib
echo "+ cargo run --release --example demo -- $*"
exec cargo run --release --example demo -- "$@"
