"""read(copy=False): a read-only numpy array over the frame's slot in shared memory that keeps
the slot pinned (the writer leaves it alone) until the array and every view of it are
garbage-collected, also after the reader is closed."""

import gc
import threading

import numpy as np
import pytest
from helpers import pattern, read_frame

import shmframe


def pins(writer: shmframe.Writer) -> int:
    return sum(int(r["pinned_slots"]) for r in writer.readers())


def test_a_zero_copy_array_is_read_only(shm_name):
    with shmframe.Writer(shm_name, 6, 4, "RGB", pace=False) as writer, shmframe.Reader(
        shm_name
    ) as reader:
        writer.write(pattern(writer.frame_layout, 0))
        _, frame, _ = read_frame(reader, copy=False)
        assert not frame.flags.writeable and not reader.last.data.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            frame[0, 0, 0] = 1
        with pytest.raises(ValueError):
            frame.flags.writeable = True  # the buffer itself is read-only
        copied = frame.copy()
        copied[0, 0, 0] = 1  # a copy is the caller's own
        # A copied read is writable, and the caller's to keep.
        writer.write(pattern(writer.frame_layout, 1))
        _, mine, _ = read_frame(reader, copy=True)
        mine[...] = 0
        assert mine.flags.writeable


def test_a_pinned_frame_survives_the_writer_lapping_the_ring(shm_name):
    with shmframe.Writer(
        shm_name, 16, 4, "GRAY8", depth=2, backpressure="drop-oldest", pace=False
    ) as writer, shmframe.Reader(shm_name, start="oldest") as reader:
        fl = writer.frame_layout
        writer.write(pattern(fl, 0))
        number, frame, _ = read_frame(reader, copy=False)
        assert number == 0 and pins(writer) == 1
        for n in range(1, 30):
            assert writer.write(pattern(fl, n)) == n
        # Without the pin, frame 0's slot would have been rewritten ~15 times.
        assert frame.tobytes() == fl.to_array(pattern(fl, 0)).tobytes()
        # With one of its two slots pinned the ring holds one frame: the newest.
        assert read_frame(reader)[0] == 29
        assert reader.last.data.tobytes() == pattern(fl, 29).tobytes()
        assert reader.frames_missed == 28


def test_the_pin_lasts_as_long_as_any_view_of_the_array(shm_name):
    with shmframe.Writer(shm_name, 8, 2, "GRAY8", depth=2, spare_slots=2, pace=False) as writer:
        reader = shmframe.Reader(shm_name, start="oldest")
        fl = writer.frame_layout
        writer.write(pattern(fl, 0))
        writer.write(pattern(fl, 1))
        _, first, _ = read_frame(reader, copy=False)
        _, second, _ = read_frame(reader, copy=False)
        assert pins(writer) == 2
        row = first[1]  # a view keeps the pin too
        del first
        gc.collect()
        assert pins(writer) == 2
        del second
        gc.collect()
        assert pins(writer) == 2  # reader.last refers to the last frame's data
        reader.release()
        gc.collect()
        assert pins(writer) == 1
        assert row.tobytes() == fl.to_array(pattern(fl, 0))[1].tobytes()
        # Closing the reader stops it counting for the writer, but leaves the pinned frame alone
        # and keeps its table entry (0) taken: a new reader gets entry 1 ...
        reader.close()
        assert writer.readers() == []
        for n in range(2, 20):
            writer.write(pattern(fl, n))
        assert row.tobytes() == fl.to_array(pattern(fl, 0))[1].tobytes()
        with shmframe.Reader(shm_name):
            assert [r["index"] for r in writer.readers()] == [1]
        # ... until the last array goes: then the entry is free again.
        del row
        gc.collect()
        with shmframe.Reader(shm_name):
            assert [r["index"] for r in writer.readers()] == [0]


def test_a_frame_pinned_under_block_uses_a_spare_slot_not_the_stream(shm_name):
    """Under block, a spare slot lets a reader hold a frame while the writer goes on."""
    with shmframe.Writer(
        shm_name, 8, 2, "GRAY8", depth=3, backpressure="block", spare_slots=1, pace=False
    ) as writer:
        reader = shmframe.Reader(shm_name, start="oldest")
        fl = writer.frame_layout
        writer.write(pattern(fl, 0))
        _, held, _ = read_frame(reader, copy=False)
        for n in range(1, 20):
            assert writer.write(pattern(fl, n)) == n
            assert read_frame(reader)[0] == n
        assert held.tobytes() == pattern(fl, 0).tobytes()
        assert (writer.frames_dropped, reader.frames_missed) == (0, 0)
        reader.close()
        del held


def test_without_spare_slots_a_block_writer_waits_until_the_array_is_collected(shm_name):
    with shmframe.Writer(
        shm_name, 8, 2, "GRAY8", depth=2, backpressure="block", pace=False,
    ) as writer:
        reader = shmframe.Reader(shm_name, start="oldest")
        fl = writer.frame_layout
        writer.write(pattern(fl, 0))
        _, held, _ = read_frame(reader, copy=False)
        writer.write(pattern(fl, 1))
        assert read_frame(reader)[0] == 1
        # Frame 2 needs the slot of frame 0, which `held` pins.
        written = []
        thread = threading.Thread(target=lambda: written.append(writer.write(pattern(fl, 2))))
        thread.start()
        thread.join(0.5)
        assert thread.is_alive() and written == []
        assert held.tobytes() == pattern(fl, 0).tobytes()
        del held
        gc.collect()
        thread.join(30)
        assert written == [2]
        assert read_frame(reader)[0] == 2
        assert reader.last.data.tobytes() == pattern(fl, 2).tobytes()
        reader.close()


def test_release_is_accepted_for_code_written_for_the_pure_python_module(shm_name):
    with shmframe.Writer(shm_name, 8, 2, "GRAY8", pace=False) as writer, shmframe.Reader(
        shm_name
    ) as reader:
        writer.write(pattern(writer.frame_layout, 0))
        _, frame, _ = read_frame(reader, copy=False)
        reader.release()
        assert np.array_equal(frame, pattern(writer.frame_layout, 0).reshape(2, 8))
