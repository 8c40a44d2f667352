#!/usr/bin/env bash
# Instructions per call (valgrind callgrind: counted, not timed, so the figures hold on a busy
# machine) of the elements' per-frame functions, one process under callgrind and its peer
# running normally:
#
#   scripts/callgrind.sh writer-copy     # shmframesink render, camera-like 64x48 GRAY8 frames
#   scripts/callgrind.sh writer-pool     # upstream draws 320x240 GRAY8 into the sink's pool
#   scripts/callgrind.sh reader-zero-copy
#   scripts/callgrind.sh reader-copy
#   FRAMES=10000 PLUGIN_DIR=target/release scripts/callgrind.sh writer-copy
#
# Prints, per function: instructions per call including callees, and the calls (a reader
# slowed by valgrind may be evicted by a blocked writer and miss frames: figures are per call).
# Under valgrind GLib's slice allocator is plain malloc (as from GLib 2.76 on). Keeps the
# profile as callgrind.<scenario>.out for callgrind_annotate / kcachegrind.
set -euo pipefail

cd "$(dirname "$0")/.."
scenario=${1:?"usage: $0 writer-copy|writer-pool|reader-zero-copy|reader-copy"}
FRAMES=${FRAMES:-3000}
PLUGIN_DIR=${PLUGIN_DIR:-target/debug}
export GST_PLUGIN_PATH=$PWD/$PLUGIN_DIR
[ -e "$GST_PLUGIN_PATH/libgstshmframe.so" ] ||
    { echo "no $GST_PLUGIN_PATH/libgstshmframe.so: run cargo build first" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }

name="callgrind-$$"
out="callgrind.$scenario.out"
trap 'rm -f "/dev/shm/$name"' EXIT

camera="videotestsrc num-buffers=1 ! video/x-raw,format=GRAY8,width=64,height=48,framerate=1000/1 \
    ! imagefreeze num-buffers=$FRAMES ! identity drop-allocation=true"
drawn="videotestsrc pattern=black num-buffers=$FRAMES \
    ! video/x-raw,format=GRAY8,width=320,height=240,framerate=1000/1"
sink="shmframesink shm-name=$name backpressure=block wait-for-readers=1 sync=false"
reader_mode=zero-copy
case $scenario in
    writer-copy) source=$camera functions="BaseSinkImpl>::render Writer::write_with Input::of ClockCache::mapping" ;;
    writer-pool) source=$drawn functions="BaseSinkImpl>::render BufferPoolImpl>::acquire_buffer BufferPoolImpl>::release_buffer" ;;
    reader-zero-copy) source=$camera functions="PushSrcImpl>::create ShmFrameSrc::next_buffer PinnedBuffers::wrap" ;;
    reader-copy) source=$camera reader_mode=copy functions="PushSrcImpl>::create ShmFrameSrc::next_buffer FrameCopy::copy_pooled" ;;
    *) echo "unknown scenario $scenario" >&2; exit 1 ;;
esac
valgrind=(timeout 900 valgrind -q --tool=callgrind --callgrind-out-file="$out")
reader="shmframesrc shm-name=$name start=oldest copy-mode=$reader_mode ! fakesink sync=false"
# shellcheck disable=SC2086
if [[ $scenario == writer-* ]]; then
    timeout 900 gst-launch-1.0 -q $reader >/dev/null &
    "${valgrind[@]}" gst-launch-1.0 -q $source ! $sink >/dev/null
else
    "${valgrind[@]}" gst-launch-1.0 -q $reader >/dev/null &
    timeout 900 gst-launch-1.0 -q $source ! $sink >/dev/null
fi
wait

echo "# $scenario: $FRAMES frames, instructions per call (callgrind, $out)"
callgrind_annotate --inclusive=yes --tree=caller --threshold=100 "$out" 2>/dev/null | python3 -c '
import re, sys
wanted = sys.argv[1].split()
blocks = sys.stdin.read().split("\n\n")
for w in wanted:
    # A function can appear in several blocks (callgrind splits inlined code by file name):
    # the one with its callers and the largest inclusive cost is the function itself.
    found = []
    for b in blocks:
        lines = b.strip("\n").split("\n")
        star = [l for l in lines if re.search(r"\*\s", l) and w in l]
        calls = sum(int(c.replace(",", "")) for l in lines if " < " in l
                    for c in re.findall(r"\(([\d,]+)x\)", l))
        if star and calls:
            found.append((int(star[0].split()[0].replace(",", "")), calls))
    if found:
        total, calls = max(found)
        print(f"{w:40} {total / calls:10.0f} Ir/call  ({calls} calls)")
    else:
        print(f"{w:40} not found")
' "$functions"
