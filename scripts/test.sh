#!/usr/bin/env bash
# THE test command: installs missing packages, builds everything, runs every test, then checks
# formatting and lints. Extra arguments go to `cargo test` (e.g. `scripts/test.sh transport`).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh

# cargo's target directory: target/ here unless CARGO_TARGET_DIR (or a cargo config) says
# otherwise. Tests that launch gst-launch-1.0 load the freshly built cdylib from its debug/.
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p' || true)
if [[ -z "$target_dir" ]]; then
    target_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}")
fi
export GST_PLUGIN_PATH="$target_dir/debug${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
echo "test: GST_PLUGIN_PATH=$GST_PLUGIN_PATH"

echo "+ cargo build --workspace --all-targets"
cargo build --workspace --all-targets
# Test output is also kept to print one total at the end.
results=$(mktemp)
trap 'rm -f "$results"' EXIT
echo "+ cargo test --workspace --doc"
cargo test --workspace --doc 2>&1 | tee -a "$results"
echo "+ cargo test --workspace --all-targets $*"
cargo test --workspace --all-targets "$@" 2>&1 | tee -a "$results"
echo "+ cargo fmt --all -- --check"
cargo fmt --all -- --check
echo "+ cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
# --all-targets lints examples without cfg(test); their tests are linted here.
echo "+ cargo clippy --workspace --examples --profile test -- -D warnings"
cargo clippy --workspace --examples --profile test -- -D warnings
totals=$(awk '/^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i + 1) ~ /^passed/) p += $i
            if ($(i + 1) ~ /^failed/) f += $i
        }
    } END { printf "%d passed, %d failed", p, f }' "$results")
echo "test: all checks passed"
echo "test: $totals"
