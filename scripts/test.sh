#!/usr/bin/env bash
# THE test command: installs missing packages, checks formatting, builds and lints everything,
# runs every test. Extra arguments go to every Rust test binary, as after `cargo test --`: a
# name filter (`scripts/test.sh transport`), `--exact`, `--nocapture`...; pytest runs whole.
#
# To be fast on a fresh clone and when nothing changed:
# - every cargo step uses the `dev` settings (the `test` profile inherits them unchanged, see
#   Cargo.toml), and clippy lints our crates while they compile (scripts/build-env.sh), so the
#   dependencies are compiled once, and never checked apart;
# - the Python package builds while the Rust workspace does;
# - the test binaries, the doc tests and pytest run side by side, at most
#   $SHMFRAME_TEST_JOBS at a time (default: twice the cores: most tests wait on child
#   processes), the longest first (as measured by the previous run). Each one's output is
#   printed whole when it ends.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/build-env.sh

bash scripts/setup.sh

# A test whose prerequisite (numpy, root, an RTP element...) is missing fails here instead of
# skipping; `SHMFRAME_ALLOW_SKIPS=1 scripts/test.sh` skips such tests with a notice.
export SHMFRAME_REQUIRE_ALL=1

# Cheapest checks first: a formatting slip fails in a second, not after the build.
echo "+ cargo fmt --all -- --check"
cargo fmt --all -- --check
echo "+ cargo fmt --manifest-path python/Cargo.toml -- --check"
cargo fmt --manifest-path python/Cargo.toml -- --check

export GST_PLUGIN_PATH="$target_dir/debug${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
echo "test: GST_PLUGIN_PATH=$GST_PLUGIN_PATH"
lint_while_building

work=$(mktemp -d)
# Runs a command in the background under `timeout`, which puts it in a process group of its
# own and passes a SIGTERM on to that whole group (a test's children too); its pid is kept in
# $work/running.PID while it runs, for stop_background.
start_bounded() {
    local seconds=$1
    shift
    timeout --kill-after=30 "$seconds" "$@" &
    touch "$work/running.$!"
    bounded_pid=$!
}
# Whatever still runs when this script stops (an error, ^C) is stopped with it.
stop_background() {
    local file
    for file in "$work"/running.*; do
        [[ -e $file ]] && kill "${file##*.}" 2>/dev/null
    done
    rm -rf "$work"
}
trap stop_background EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "+ bash scripts/python.sh --build-only (beside the cargo build; its output when it ends)"
start_bounded 3600 bash scripts/python.sh --build-only >"$work/python-build.log" 2>&1 </dev/null
python_build=$bounded_pid

# Builds the cdylib that gst-launch-1.0 loads and every other target (the examples as
# programs too), then the test binaries, examples included.
echo "+ cargo build --workspace --all-targets (clippy -D warnings as it compiles)"
cargo build --workspace --all-targets
echo "+ cargo test --workspace --all-targets --no-run (clippy -D warnings as it compiles)"
cargo test --workspace --all-targets --no-run --message-format=json-render-diagnostics \
    >"$work/artifacts.json"

python_status=0
wait "$python_build" || python_status=$?
rm "$work/running.$python_build"
cat "$work/python-build.log"
if ((python_status != 0)); then
    echo "test: scripts/python.sh --build-only failed (exit $python_status)" >&2
    exit 1
fi
# Tests that drive Python run the compiled package from the environment it was built into.
export SHMFRAME_PYTHON="$target_dir/pyenv/bin/python"

# One line per test run: its label (as the durations file and failures name it), the
# directory it runs in, then the command. cargo runs a test binary in its package's directory.
/usr/bin/python3 - "$work/artifacts.json" "$PWD" >"$work/runs" <<'EOF'
import json, os, sys
root = sys.argv[2]
for line in open(sys.argv[1]):
    msg = json.loads(line)
    if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
        continue
    if not msg["profile"]["test"]:
        continue
    target = msg["target"]
    label = "%s (%s)" % (os.path.relpath(target["src_path"], root), target["kind"][0])
    print("%s\t%s\t%s" % (label, os.path.dirname(msg["manifest_path"]), msg["executable"]))
EOF
printf '%s\t%s\t%s\n' "doc tests" "$PWD" "cargo test --workspace --doc --" \
    "pytest python/tests" "$PWD" "bash scripts/python.sh --tests-only -q" >>"$work/runs"

# Seconds each run took last time (label<TAB>seconds): the longest start first, unknown ones
# before all.
durations="$target_dir/test-durations.tsv"
touch "$durations"
awk -F'\t' 'FILENAME == ARGV[1] { took[$1] = $2; next }
    { print ($1 in took ? took[$1] : 1e9) "\t" $0 }' "$durations" "$work/runs" |
    sort -t$'\t' -k1,1 -g -r | cut -f2- >"$work/order"

# Runs one test command ($1 label, $2 directory, $3 the command: a test binary, or words to
# split), then its arguments, output to a file; then prints that output whole, once no other
# run is printing.
run_one() {
    local label=$1 dir=$2 out started status=0 command
    if [[ -x $3 ]]; then
        command=("$3")
    else
        read -ra command <<<"$3"
    fi
    shift 3
    out="$work/out.$BASHPID"
    started=$SECONDS
    # A run that hangs is stopped after SHMFRAME_TEST_TIMEOUT seconds (SIGTERM: segments are
    # removed), and fails.
    cd "$dir"
    start_bounded "${SHMFRAME_TEST_TIMEOUT:-1200}" "${command[@]}" "$@" >"$out" 2>&1 </dev/null
    wait "$bounded_pid" || status=$?
    rm "$work/running.$bounded_pid"
    {
        flock 9
        echo "=== $label: exit $status in $((SECONDS - started)) s"
        cat "$out"
        printf '%s\t%s\n' "$label" "$((SECONDS - started))" >>"$work/took"
        if ((status != 0)); then
            printf '%s (exit %s)\n' "$label" "$status" >>"$work/failed"
        fi
    } 9>"$work/print.lock"
}

jobs_max=${SHMFRAME_TEST_JOBS:-$((2 * $(nproc)))}
echo "+ the test runs below, $jobs_max at a time: $(wc -l <"$work/order") (Rust test binaries" \
    "with the arguments: $*; the doc tests; pytest)"
touch "$work/took" "$work/failed"
tests_started=$SECONDS
running=0
while IFS=$'\t' read -r label dir command; do
    if ((running >= jobs_max)); then
        wait -n || true
        running=$((running - 1))
    fi
    if [[ $label == "pytest python/tests" ]]; then
        run_one "$label" "$dir" "$command" &
    else
        run_one "$label" "$dir" "$command" "$@" &
    fi
    running=$((running + 1))
done <"$work/order"
wait
echo "test: the test runs took $((SECONDS - tests_started)) s"
if (($# == 0)); then
    sort -t$'\t' -k1,1 "$work/took" >"$durations"
fi

# cargo's "test result: ok. N passed; M failed; K ignored" lines and pytest's closing
# "N passed[, M failed][, K skipped] in S s" line.
totals=$(cat "$work"/out.* | awk '/^test result:/ || /^[0-9]+ (passed|failed).* in [0-9.]+s/ {
        gsub(/[;,]/, " ")
        for (i = 1; i <= NF; i++) {
            if ($(i + 1) ~ /^passed/) p += $i
            if ($(i + 1) ~ /^failed/) f += $i
            if ($(i + 1) ~ /^(ignored|skipped)/) g += $i
        }
    } END { printf "%d passed, %d failed, %d ignored", p, f, g }')
if [[ -s "$work/failed" ]]; then
    echo "test: FAILED:" >&2
    sed 's/^/test:   /' "$work/failed" >&2
    echo "test: $totals"
    exit 1
fi
echo "test: all checks passed"
echo "test: $totals"
