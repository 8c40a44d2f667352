"""The Python side of the project's bench (examples/bench.rs, group ``python``): a reader or a
writer of the ``shmframe`` package that measures itself and prints one line the bench parses.

    bench_peer.py read NAME FRAMES [--zero-copy]
        frames=N fps=F cpu=S lat=          (as the bench's GStreamer reader prints it)
    bench_peer.py write NAME WIDTH HEIGHT FORMAT FRAMES
        frames=N fps=F cpu=S

The reader attaches at the oldest frame (waiting up to 10 s for the segment) and reads FRAMES
frames, or until end of stream. Each frame is let go before the next read, as
``shmframesrc ! fakesink`` lets each buffer go: a zero-copy frame (``read(copy=False)``) is
then unpinned (``reader.release()`` drops the reader's own reference, ``reader.last``). fps
counts from the first frame to the last: (frames - 1) / span. cpu is the process's user + sys
seconds over that span.

The writer publishes FRAMES copies of one frame (an array prepared once, as a camera's
buffer) into a ring of its own, unpaced, with no reader attached: what ``Writer.write``
costs. fps = FRAMES / the time the writes took.
"""

import argparse
import resource
import sys
import time

import numpy as np

import shmframe


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def cmd_read(a: argparse.Namespace) -> int:
    reader = shmframe.Reader(a.name, start="oldest", wait=10.0)
    n, first, last, cpu_at_first = 0, 0, 0, 0.0
    deadline = time.monotonic() + 100.0
    while n < a.frames and time.monotonic() < deadline:
        try:
            got = reader.read(timeout=2.0 if n else 30.0, copy=not a.zero_copy)
        except (shmframe.EndOfStream, shmframe.WriterGone):
            break
        if got is None:
            break  # the writer stopped sending
        t = now_ns()
        if n == 0:
            first, cpu_at_first = t, cpu_seconds()
        last = t
        n += 1
        del got
        reader.release()
    cpu = cpu_seconds() - cpu_at_first if n else 0.0
    reader.close()
    span = (last - first) / 1e9
    fps = (n - 1) / span if n > 1 and span > 0 else 0.0
    print(f"frames={n} fps={fps:.2f} cpu={cpu:.6f} lat=", flush=True)
    return 0


def cmd_write(a: argparse.Namespace) -> int:
    layout = shmframe.FrameLayout(a.format, a.width, a.height)
    shape = layout.shape if layout.shape is not None else (layout.size,)
    frame = np.full(shape, 7, layout.dtype)
    with shmframe.Writer(
        a.name, a.width, a.height, a.format, backpressure="block", pace=False
    ) as writer:
        for _ in range(8):  # every slot faulted in, caches warm: as a running stream
            writer.write(frame)
        cpu_start, started = cpu_seconds(), now_ns()
        for _ in range(a.frames):
            writer.write(frame)
        took = (now_ns() - started) / 1e9
        cpu = cpu_seconds() - cpu_start
    print(f"frames={a.frames} fps={a.frames / took:.2f} cpu={cpu:.6f}", flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("read")
    r.add_argument("name")
    r.add_argument("frames", type=int)
    r.add_argument("--zero-copy", action="store_true")
    w = sub.add_parser("write")
    w.add_argument("name")
    w.add_argument("width", type=int)
    w.add_argument("height", type=int)
    w.add_argument("format")
    w.add_argument("frames", type=int)
    a = ap.parse_args()
    return cmd_read(a) if a.cmd == "read" else cmd_write(a)


if __name__ == "__main__":
    sys.exit(main())
