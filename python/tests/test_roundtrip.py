"""Frames written by the package's Writer come out of its Reader byte for byte: every layout and
backpressure policy, every way of writing (an array, raw bytes, drawn in place) and reading
(copy, zero-copy), formats with padded rows, 16-bit byte orders and planes; and the policies
do what they promise when a reader falls behind."""

import os
import threading
import time

import numpy as np
import pytest
from helpers import pattern, read_frame

import shmframe

POLICIES = [
    ("ring", "block"),
    ("ring", "drop-oldest"),
    ("ring", "drop-newest"),
    ("double", "drop-oldest"),
]
# (format, width, height): odd widths pad RGB and GRAY8 rows; GRAY16_BE is byte-swapped.
FORMATS = [("RGB", 33, 7), ("GRAY8", 5, 3), ("GRAY16_BE", 6, 4), ("RGBA", 8, 2), ("NV12", 9, 5)]


def frame_array(layout: shmframe.FrameLayout, raw: np.ndarray) -> np.ndarray:
    """Frame content as a caller would pass it: shaped (and contiguous) for packed formats."""
    return np.ascontiguousarray(layout.to_array(raw)) if layout.packed else raw


@pytest.mark.parametrize("layout,backpressure", POLICIES)
@pytest.mark.parametrize("fmt,width,height", FORMATS)
@pytest.mark.parametrize("how", ["array", "bytes", "frame"])
@pytest.mark.parametrize("copy", [True, False])
def test_round_trip_byte_for_byte(shm_name, layout, backpressure, fmt, width, height, how, copy):
    with shmframe.Writer(
        shm_name, width, height, fmt, layout=layout, backpressure=backpressure, depth=3, pace=False
    ) as writer, shmframe.Reader(shm_name, start="oldest") as reader:
        fl = writer.frame_layout
        assert reader.caps == writer.caps
        for n in range(7):
            raw = pattern(fl, n)
            if how == "array":
                number = writer.write(frame_array(fl, raw), pts=1000 + n, flags=n)
            elif how == "bytes":
                number = writer.write(raw.tobytes(), pts=1000 + n, flags=n)
            else:
                with writer.frame(pts=1000 + n, flags=n) as dst:
                    dst[...] = frame_array(fl, raw)
                number = writer._last_frame
            assert number == n
            got_n, array, pts = read_frame(reader, copy=copy)
            assert (got_n, pts) == (n, 1000 + n)
            info = reader.last
            assert (info.number, info.flags, info.size, info.caps) == (n, n, fl.size, writer.caps)
            assert info.data.tobytes() == raw.tobytes()
            assert np.array_equal(array, fl.to_array(raw))
            if fl.packed:
                assert (array.shape, array.dtype) == (fl.shape, fl.dtype)
            assert array.flags.writeable == copy
            del array, info
        assert (reader.frames_read, reader.frames_missed) == (7, 0)
        assert (writer.frames_written, writer.frames_dropped, writer.head) == (7, 0, 7)


def test_gray16_be_values_are_stored_big_endian(shm_name):
    with shmframe.Writer(shm_name, 2, 1, "GRAY16_BE", pace=False) as writer, shmframe.Reader(
        shm_name
    ) as reader:
        writer.write(np.array([[0x0102, 0xA0B0]], np.uint16))  # native order: converted
        _, array, _ = read_frame(reader)
        assert reader.last.data.tobytes() == b"\x01\x02\xa0\xb0"
        assert array.tolist() == [[0x0102, 0xA0B0]]


def test_a_lagging_reader_under_drop_oldest_counts_exactly_what_it_missed(shm_name):
    with shmframe.Writer(
        shm_name, 4, 4, "GRAY8", depth=4, backpressure="drop-oldest", pace=False,
    ) as writer:
        reader = shmframe.Reader(shm_name, start="oldest")
        fl = writer.frame_layout
        for n in range(10):
            assert writer.write(pattern(fl, n)) == n
        # The ring holds the last 4 frames: 6..9; 0..5 were overwritten unread.
        numbers = [read_frame(reader)[0] for _ in range(4)]
        assert numbers == [6, 7, 8, 9]
        assert reader.last.data.tobytes() == pattern(fl, 9).tobytes()
        assert (reader.frames_read, reader.frames_missed) == (4, 6)
        assert writer.full_events >= 1
        reader.close()


def test_a_full_ring_under_drop_newest_drops_the_incoming_frames(shm_name):
    with shmframe.Writer(
        shm_name, 4, 4, "GRAY8", depth=4, backpressure="drop-newest", pace=False,
    ) as writer:
        reader = shmframe.Reader(shm_name, start="oldest")
        fl = writer.frame_layout
        outcomes = [writer.write(pattern(fl, n)) for n in range(7)]
        assert outcomes == [0, 1, 2, 3, None, None, None]
        assert writer.frames_dropped == 3
        assert [read_frame(reader)[0] for _ in range(4)] == [0, 1, 2, 3]
        assert reader.last.data.tobytes() == pattern(fl, 3).tobytes()
        assert reader.frames_missed == 0
        reader.close()


def test_double_hands_out_the_newest_frame(shm_name):
    with shmframe.Writer(shm_name, 4, 4, "GRAY8", layout="double", pace=False) as writer:
        reader = shmframe.Reader(shm_name)
        fl = writer.frame_layout
        for n in range(5):
            writer.write(pattern(fl, n))
        number, _, _ = read_frame(reader)
        assert number == 4
        assert reader.last.data.tobytes() == pattern(fl, 4).tobytes()
        assert reader.depth == 2 and reader.layout == "double"
        reader.close()


def test_block_waits_for_the_slowest_reader_and_loses_nothing(shm_name):
    frames = 40
    with shmframe.Writer(
        shm_name, 16, 8, "GRAY8", depth=2, backpressure="block", pace=False,
    ) as writer:
        reader = shmframe.Reader(shm_name, start="oldest")
        fl = writer.frame_layout
        got = []

        def consume():
            for _ in range(frames):
                time.sleep(0.002)  # slower than the writer
                number, array, _ = read_frame(reader)
                got.append((number, array.tobytes()))

        thread = threading.Thread(target=consume)
        thread.start()
        for n in range(frames):
            assert writer.write(pattern(fl, n)) == n
        thread.join(60)
        assert not thread.is_alive()
        assert [n for n, _ in got] == list(range(frames))
        assert all(data == fl.to_array(pattern(fl, n)).tobytes() for n, data in got)
        assert (writer.frames_dropped, reader.frames_missed) == (0, 0)
        assert writer.full_events >= 1, "the writer never had to wait: the test proves nothing"
        reader.close()


@pytest.mark.parametrize("how", ["write", "frame"])
def test_a_write_waiting_for_room_counts_one_full_event_however_long_it_waits(shm_name, how):
    """The binding makes a blocked call again every 100 ms to handle signals: still, one write
    (or ``frame()``) that waits is one full-ring event, as in the Rust writer."""
    with shmframe.Writer(
        shm_name, 4, 4, "GRAY8", depth=2, backpressure="block", pace=False, reader_timeout=60.0
    ) as writer:
        reader = shmframe.Reader(shm_name, start="oldest")
        fl = writer.frame_layout
        assert [writer.write(pattern(fl, n)) for n in range(2)] == [0, 1]
        assert writer.full_events == 0
        written = []

        def write_frame_2() -> None:
            if how == "write":
                written.append(writer.write(pattern(fl, 2)))
            else:
                with writer.frame() as dst:
                    dst[...] = frame_array(fl, pattern(fl, 2))
                written.append(writer._last_frame)

        thread = threading.Thread(target=write_frame_2)
        thread.start()
        time.sleep(0.55)  # five slices and more
        assert thread.is_alive(), "the write should wait for the reader"
        assert read_frame(reader)[0] == 0
        thread.join(60)
        assert not thread.is_alive()
        assert written == [2]
        assert writer.full_events == 1
        reader.close()


def test_frames_cross_processes_byte_for_byte(shm_name, spawn):
    """A writer in another process (block, waiting for the reader), read to its end of stream."""
    writer = spawn(
        """
        name = sys.argv[1]
        with shmframe.Writer(name, 33, 7, "RGB", depth=4, backpressure="block", pace=False) as w:
            assert w.wait_for_readers(1, timeout=30)
            for n in range(50):
                raw = np.array([(n * 29 + y * 7 + x * 3) & 0xFF for y in range(7)
                                for x in range(100)], np.uint8)
                assert w.write(raw) == n
            w.end_of_stream()
        print("done", flush=True)
        """,
        shm_name,
    )
    reader = shmframe.Reader(shm_name, start="oldest", wait=30)
    fl = shmframe.FrameLayout("RGB", 33, 7)
    numbers = []
    for number, frame, _ in reader:
        raw = np.array(
            [(number * 29 + y * 7 + x * 3) & 0xFF for y in range(7) for x in range(100)], np.uint8
        )
        assert reader.last.data.tobytes() == raw.tobytes()
        assert np.array_equal(frame, fl.to_array(raw))
        numbers.append(number)
    assert numbers == list(range(50))
    assert reader.writer_pid == writer.pid
    reader.close()
    assert "done" in writer.finish()


@pytest.mark.parametrize(
    "kwargs,layout,depth,slots,backpressure",
    [
        ({"depth": 5, "spare_slots": 2, "backpressure": "block"}, "ring", 5, 7, "block"),
        ({"depth": 3, "backpressure": "drop-newest"}, "ring", 3, 3, "drop-newest"),
        # A double buffer has two slots and never waits, whatever it is given.
        ({"layout": "double", "depth": 9, "backpressure": "block"}, "double", 2, 2, "drop-oldest"),
    ],
)
def test_reader_and_writer_tell_the_segments_geometry(
    shm_name, kwargs, layout, depth, slots, backpressure
):
    with shmframe.Writer(shm_name, 33, 7, "RGB", **kwargs, pace=False) as writer, shmframe.Reader(
        shm_name
    ) as reader:
        geometry = reader.geometry
        assert isinstance(geometry, shmframe.Geometry)
        assert geometry == writer.geometry
        assert geometry.layout == layout == reader.layout
        assert geometry.depth == depth == reader.depth
        assert geometry.slot_count == slots
        assert geometry.spare_slots == slots - depth
        assert geometry.backpressure == backpressure
        # RGB rows of 33 pixels are padded to 100 bytes: the slot holds exactly one frame.
        assert geometry.slot_capacity == writer.frame_layout.size == 700
        assert geometry.slot_stride >= geometry.slot_capacity
        assert geometry.max_readers == shmframe.MAX_READERS
        assert geometry.segment_size == os.stat(writer.path).st_size
        assert geometry.segment_size >= slots * geometry.slot_stride
    with pytest.raises(shmframe.ShmFrameError, match="^reader is closed$"):
        reader.geometry
