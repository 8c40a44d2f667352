#!/usr/bin/env bash
# Fuzzes what a reader trusts from shared memory (see docs/FUZZING.md).
#   scripts/fuzz.sh [SECONDS [TARGET [libFuzzer options...]]]
# SECONDS defaults to 600, TARGET to segment_reader. Installs cargo-fuzz if it is missing. The
# toolchain is stable: RUSTC_BOOTSTRAP=1 lets it take the nightly flags cargo fuzz passes.
# Runs at nice 10 so other builds keep the machine. Exits non-zero when a crash is found; the
# input is then under fuzz/artifacts/TARGET/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${1:-600}
target=${2:-segment_reader}
shift $(($# > 2 ? 2 : $#))

if ! command -v cargo-fuzz >/dev/null; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
# Segments are opened from a private directory on tmpfs, removed when the run ends.
SHMFRAME_DIR=$(mktemp -d /dev/shm/shmframe-fuzz.XXXXXX)
export SHMFRAME_DIR
trap 'rm -rf "$SHMFRAME_DIR"' EXIT

mkdir -p "fuzz/corpus/$target"
cd fuzz
echo "+ nice -n 10 cargo fuzz run $target -- -max_total_time=$seconds $*"
nice -n 10 cargo fuzz run "$target" -- -max_total_time="$seconds" "$@"
