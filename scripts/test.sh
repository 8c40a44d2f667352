#!/usr/bin/env bash
# THE test command: installs missing packages, checks formatting, builds everything, runs every
# test, then lints. Extra arguments go to `cargo test` (e.g. `scripts/test.sh transport`).
#
# Every cargo step below uses the `dev` settings (the `test` profile inherits them unchanged,
# see Cargo.toml), so the dependencies are compiled once and checked once per fresh clone.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh

# A test whose prerequisite (numpy, root, an RTP element...) is missing fails here instead of
# skipping; `SHMFRAME_ALLOW_SKIPS=1 scripts/test.sh` skips such tests with a notice.
export SHMFRAME_REQUIRE_ALL=1

# Cheapest check first: a formatting slip fails in a second, not after the build.
echo "+ cargo fmt --all -- --check"
cargo fmt --all -- --check

# cargo's target directory: target/ here unless CARGO_TARGET_DIR (or a cargo config) says
# otherwise. Tests that launch gst-launch-1.0 load the freshly built cdylib from its debug/.
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p' || true)
if [[ -z "$target_dir" ]]; then
    target_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}")
fi
export GST_PLUGIN_PATH="$target_dir/debug${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
echo "test: GST_PLUGIN_PATH=$GST_PLUGIN_PATH"

# Builds the cdylib that gst-launch-1.0 loads (and every other target, as plain binaries).
echo "+ cargo build --workspace --all-targets"
cargo build --workspace --all-targets
# Test output is also kept to print one total at the end.
results=$(mktemp)
trap 'rm -f "$results"' EXIT
echo "+ cargo test --workspace --doc"
cargo test --workspace --doc 2>&1 | tee -a "$results"
echo "+ cargo test --workspace --all-targets $*"
cargo test --workspace --all-targets "$@" 2>&1 | tee -a "$results"
echo "+ cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
# --all-targets lints examples without cfg(test); their tests are linted here.
echo "+ cargo clippy --workspace --examples --profile test -- -D warnings"
cargo clippy --workspace --examples --profile test -- -D warnings
# The Python package (python/): built from the transport crate into a virtual environment,
# linted and type-checked, then its pytest suite against this tree's plugin.
echo "+ bash scripts/python.sh -q"
bash scripts/python.sh -q 2>&1 | tee -a "$results"
# cargo's "test result: ok. N passed; M failed; K ignored" lines and pytest's closing
# "N passed[, M failed][, K skipped] in S s" line.
totals=$(awk '/^test result:/ || /^[0-9]+ (passed|failed).* in [0-9.]+s/ {
        gsub(/[;,]/, " ")
        for (i = 1; i <= NF; i++) {
            if ($(i + 1) ~ /^passed/) p += $i
            if ($(i + 1) ~ /^failed/) f += $i
            if ($(i + 1) ~ /^(ignored|skipped)/) g += $i
        }
    } END { printf "%d passed, %d failed, %d ignored", p, f, g }' "$results")
echo "test: all checks passed"
echo "test: $totals"
