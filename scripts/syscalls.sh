#!/usr/bin/env bash
# System calls per frame of a shmframesink writer and a shmframesrc reader, in separate
# gst-launch-1.0 processes, counted by the kernel (perf's syscall tracepoints), not timed: the
# figures do not depend on how busy the machine is, only on who sleeps when.
#
#   scripts/syscalls.sh                 # 10,000 frames per scenario, plugin from target/debug
#   FRAMES=50000 scripts/syscalls.sh    # more frames
#   PLUGIN_DIR=target/release scripts/syscalls.sh
#
# Each scenario runs twice, with BASE (1,000) and BASE + FRAMES frames; the figures are the
# difference divided by FRAMES, so start-up and shutdown (plugin loading, caps, attaching)
# cancel out. Scenarios (320x240 GRAY8, camera-like copy path into the sink):
#   awake   the reader is awake when each frame is published: it spends 1 ms per frame
#           downstream (identity sleep-time), the writer publishes every 0.5 ms under
#           drop-oldest, so a frame is always waiting and the reader never sleeps on the
#           segment. A futex call per frame in the writer here is a wake nobody needed.
#   asleep  the writer publishes every 1 ms, the reader waits for each frame: one wake per
#           frame is the price of the reader sleeping.
#   unpaced backpressure=block, neither paced: as fast as the pair goes.
#   zero-copy  unpaced, upstream draws each frame into the sink's pool, the reader wraps the
#           slots (copy-mode=zero-copy): no copy on either side.
# Pacing is `identity sleep-time`, i.e. one clock_nanosleep per frame in the paced process:
# it is listed on its own line, so the futex figures are the transport's (and GStreamer's).
# Needs: gst-launch-1.0, perf with tracepoint access (root, or perf_event_paranoid <= -1).
set -euo pipefail

cd "$(dirname "$0")/.."
FRAMES=${FRAMES:-10000}
BASE=${BASE:-1000}
PLUGIN_DIR=${PLUGIN_DIR:-target/debug}
export GST_PLUGIN_PATH=$PWD/$PLUGIN_DIR
[ -e "$GST_PLUGIN_PATH/libgstshmframe.so" ] ||
    { echo "no $GST_PLUGIN_PATH/libgstshmframe.so: run cargo build first" >&2; exit 1; }
perf stat -e raw_syscalls:sys_enter true >/dev/null 2>&1 ||
    { echo "perf cannot count syscall tracepoints here (need root or perf_event_paranoid=-1)" >&2; exit 1; }

# Counted per process: every system call, futex wakes (FUTEX_WAKE, _BITSET, _OP, private or
# not) and other futex calls (waits) apart, futex_waitv (a writer waiting for room sleeps on
# its readers' words at once), and the other calls that matter on their own.
WAKE="op == 1 || op == 129 || op == 10 || op == 138 || op == 5 || op == 133"
COLUMNS=(all "futex wake" "futex wait" futex_waitv clock_nanosleep ppoll poll read write)
EVENTS=(-e raw_syscalls:sys_enter
    -e syscalls:sys_enter_futex --filter "$WAKE"
    -e syscalls:sys_enter_futex --filter "!($WAKE)")
for n in futex_waitv clock_nanosleep ppoll poll read write; do EVENTS+=(-e "syscalls:sys_enter_$n"); done

WORK=$(mktemp -d)
NAMES_MADE=()
cleanup() {
    for n in "${NAMES_MADE[@]}"; do rm -f "/dev/shm/$n"; done
    rm -rf "$WORK"
}
trap cleanup EXIT

CAPS="video/x-raw,format=GRAY8,width=320,height=240,framerate=1000/1"

# run SCENARIO FRAMES: counts into $WORK/SCENARIO-FRAMES-{writer,reader}.csv
run() {
    local scenario=$1 n=$2 name="syscalls-$$-$1-$2"
    local pace="" policy="backpressure=block" reader_work="" copy_mode=auto
    local source="videotestsrc num-buffers=1 ! $CAPS ! imagefreeze num-buffers=$n ! identity drop-allocation=true"
    case $scenario in
        awake) pace="! identity sleep-time=500" policy="backpressure=drop-oldest"
               reader_work="! identity sleep-time=1000" ;;
        asleep) pace="! identity sleep-time=1000" ;;
        unpaced) ;;
        zero-copy) source="videotestsrc pattern=black num-buffers=$n ! $CAPS" copy_mode=zero-copy ;;
    esac
    NAMES_MADE+=("$name")
    # shellcheck disable=SC2086
    timeout 300 perf stat -x, "${EVENTS[@]}" -o "$WORK/$scenario-$n-reader.csv" \
        gst-launch-1.0 -q shmframesrc shm-name="$name" start=oldest copy-mode=$copy_mode $reader_work \
        ! fakesink sync=false >/dev/null &
    local reader=$!
    # shellcheck disable=SC2086
    timeout 300 perf stat -x, "${EVENTS[@]}" -o "$WORK/$scenario-$n-writer.csv" \
        gst-launch-1.0 -q $source $pace \
        ! shmframesink shm-name="$name" $policy wait-for-readers=1 sync=false >/dev/null
    wait "$reader"
}

# count FILE K: the K-th counter (from 1, in the order of EVENTS) of a perf stat -x, file
count() {
    awk -F, -v k="$2" '/^[0-9<]/ && ++i == k { print ($1 ~ /^[0-9]+$/) ? $1 : 0 }' "$1"
}

echo "# System calls per frame (perf tracepoints; $FRAMES frames over a $BASE-frame baseline)"
echo
echo "plugin: $GST_PLUGIN_PATH, $(gst-launch-1.0 --gst-version | head -1), $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
header="| scenario | process |"
rule="|---|---|"
for c in "${COLUMNS[@]}"; do header+=" $c |"; rule+="---|"; done
echo "$header"
echo "$rule"
for scenario in awake asleep unpaced zero-copy; do
    run "$scenario" "$BASE"
    run "$scenario" $((BASE + FRAMES))
    for role in writer reader; do
        line="| $scenario | $role |"
        for k in $(seq ${#COLUMNS[@]}); do
            small=$(count "$WORK/$scenario-$BASE-$role.csv" "$k")
            large=$(count "$WORK/$scenario-$((BASE + FRAMES))-$role.csv" "$k")
            line+=" $(awk -v a="$small" -v b="$large" -v f="$FRAMES" 'BEGIN { printf "%.2f", (b - a) / f }') |"
        done
        echo "$line"
    done
done
