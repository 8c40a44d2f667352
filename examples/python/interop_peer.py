"""Test peer for tests/python_interop.rs: a reader or writer of the ``shmframe`` package
(``pip install ./python``) driven from the command line that prints one line per event, so the
Rust side can compare frame content.

    interop_peer.py read NAME [--start oldest|newest] [--wait S] [--timeout S] [--stall]
                              [--zero-copy] [--max-frames N] [--hold]
    interop_peer.py write NAME WIDTH HEIGHT FORMAT [--layout ring|double] [--depth N]
                              [--backpressure block|drop-oldest|drop-newest] [--frames N]
                              [--wait-readers K] [--wait S]
    interop_peer.py layout FORMAT:WxH ...

Output lines (space separated key=value fields after a keyword):
    opening NAME                                       (reader, before it looks for NAME)
    attached layout=L depth=D caps="..."             (reader attached)
    frame N raw=CRC pix=CRC shape=A,B,C dtype=T missed=M
    eos read=R missed=M | gone clean=0|1 | timeout
    holding read=R                                    (--hold: --max-frames read, last kept)
    written N raw=CRC pix=CRC | dropped                 (writer)
    layout FORMAT W H SIZE COMPONENT:OFFSET:STRIDE:ROWS:ROW_BYTES ...

``raw`` is the CRC-32 of the whole frame as stored (GStreamer's default layout, padding
included); ``pix`` the CRC-32 of the visible bytes of every plane in plane order, rows
concatenated without padding. Frame content written by ``write``: byte ``x`` of row ``y`` of
plane ``p`` of frame ``n`` is ``(n*29 + p*71 + y*7 + x*3) & 0xff``.
"""

import argparse
import sys
import time
import zlib

import numpy as np

import shmframe


def out(line):
    print(line, flush=True)


def pattern(frame, plane, rows, row_bytes):
    y = np.arange(rows, dtype=np.int64)[:, None]
    x = np.arange(row_bytes, dtype=np.int64)[None, :]
    return ((frame * 29 + plane * 71 + y * 7 + x * 3) & 0xFF).astype(np.uint8)


def pixel_crc(layout, buf):
    crc = 0
    for view in layout.split(buf).values():
        crc = zlib.crc32(np.ascontiguousarray(view).reshape(-1).view(np.uint8), crc)
    return crc & 0xFFFFFFFF


def cmd_read(a):
    deadline = time.monotonic() + a.timeout
    out(f"opening {a.name}")
    reader = shmframe.Reader(a.name, start=a.start, wait=a.wait)
    caps = reader.caps or ""
    out(f'attached layout={reader.layout} depth={reader.depth} caps="{caps}"')
    if a.stall:
        # Attached and never reading: holds a `block` writer up until killed.
        time.sleep(a.timeout)
        return 0
    count = 0
    held = None
    try:
        while a.max_frames is None or count < a.max_frames:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                out("timeout")
                return 2
            try:
                got = reader.read(timeout=remaining, copy=not a.zero_copy)
            except shmframe.EndOfStream:
                out(f"eos read={reader.frames_read} missed={reader.frames_missed}")
                return 0
            except shmframe.WriterGone as e:
                out(f"gone clean={int(e.clean)}")
                return 0
            if got is None:
                continue
            report(got, reader.last)
            count += 1
            # A zero-copy frame stays pinned while an array of it lives: only the last one,
            # with --hold.
            held = got if a.hold else None
            del got
        if a.hold:
            # The last frame read stays pinned (with --zero-copy) until the process ends.
            out(f"holding read={reader.frames_read}")
            time.sleep(max(0.0, deadline - time.monotonic()))
            return 0
        out(f"done read={reader.frames_read} missed={reader.frames_missed}")
        return 0
    finally:
        del held
        reader.close()


def report(got, info):
    """Prints the ``frame`` line of a frame read, after checking its array against its raw
    bytes."""
    number, array, _pts = got
    raw = info.data
    layout = shmframe.FrameLayout(*shmframe.parse_caps(info.caps))
    # The shaped array must show exactly the visible pixels of the raw frame.
    if layout.packed:
        assert array.shape == layout.shape, (array.shape, layout.shape)
        visible = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        pix = zlib.crc32(visible) & 0xFFFFFFFF
        assert pix == pixel_crc(layout, raw)
    else:
        pix = pixel_crc(layout, raw)
    shape = ",".join(str(d) for d in array.shape)
    out(
        f"frame {number} raw={zlib.crc32(raw) & 0xFFFFFFFF} pix={pix} shape={shape} "
        f"dtype={array.dtype} missed={info.missed_before}"
    )


def cmd_write(a):
    layout = shmframe.FrameLayout(a.format, a.width, a.height)
    with shmframe.Writer(
        a.name,
        a.width,
        a.height,
        a.format,
        layout=a.layout,
        depth=a.depth,
        backpressure=a.backpressure,
        pace=False,
        wait_for_readers=a.wait_readers,
        wait_for_readers_timeout=a.wait,
    ) as writer:
        out(f"created caps=\"{writer.caps}\"")
        for n in range(a.frames):
            planes = [pattern(n, p, pl.rows, pl.row_bytes) for p, pl in enumerate(layout.planes)]
            if layout.packed:
                frame = planes[0].view(layout.dtype).reshape(layout.shape)
            else:
                frame = layout.pack([pl.reshape(p.shape) for pl, p in zip(planes, layout.planes)])
            # The frame as stored: padding zero.
            stored = np.zeros(layout.size, np.uint8)
            if layout.packed:
                layout.to_array(stored)[...] = frame
            else:
                stored[...] = frame
            try:
                number = writer.write(frame)
            except shmframe.ReadersMissing as missing:
                out(f"timeout waiting for readers: {missing}")
                return 2
            if number is None:
                out("dropped")
                continue
            raw = zlib.crc32(stored) & 0xFFFFFFFF
            out(f"written {number} raw={raw} pix={pixel_crc(layout, stored)}")
            if a.interval_ms:
                time.sleep(a.interval_ms / 1000)
        writer.end_of_stream()
        out(f"eos written={writer.frames_written} dropped={writer.frames_dropped}")
        if a.linger:
            # Keep the segment (and its name) until every reader has detached.
            deadline = time.monotonic() + a.linger
            while writer.reader_count() > 0 and time.monotonic() < deadline:
                time.sleep(0.005)
    return 0


def cmd_layout(a):
    for spec in a.specs:
        fmt, dims = spec.split(":")
        w, h = (int(v) for v in dims.split("x"))
        layout = shmframe.FrameLayout(fmt, w, h)
        planes = " ".join(
            f"{p.component}:{p.offset}:{p.stride}:{p.rows}:{p.row_bytes}" for p in layout.planes
        )
        out(f"layout {fmt} {w} {h} {layout.size} {planes}")
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("read")
    r.add_argument("name")
    r.add_argument("--start", default="oldest")
    r.add_argument("--wait", type=float, default=10.0)
    r.add_argument("--timeout", type=float, default=30.0)
    r.add_argument("--stall", action="store_true")
    r.add_argument("--zero-copy", action="store_true")
    r.add_argument("--max-frames", type=int)
    r.add_argument("--hold", action="store_true")
    w = sub.add_parser("write")
    w.add_argument("name")
    w.add_argument("width", type=int)
    w.add_argument("height", type=int)
    w.add_argument("format")
    w.add_argument("--layout", default="ring")
    w.add_argument("--depth", type=int, default=4)
    w.add_argument("--backpressure", default="block")
    w.add_argument("--frames", type=int, default=10)
    w.add_argument("--wait-readers", type=int, default=0)
    w.add_argument("--wait", type=float, default=10.0)
    w.add_argument("--interval-ms", type=float, default=0)
    w.add_argument("--linger", type=float, default=0)
    lay = sub.add_parser("layout")
    lay.add_argument("specs", nargs="+")
    a = ap.parse_args()
    return {"read": cmd_read, "write": cmd_write, "layout": cmd_layout}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
