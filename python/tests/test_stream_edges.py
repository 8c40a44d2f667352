"""The ends of a stream as a reader sees them: end of stream after the last frame, a writer that
closes or dies, a new writer under the same name, and a reader killed without detaching."""

import os
import signal
import time

import pytest
from helpers import pattern, read_frame

import shmframe

#: A writer child: publishes `count` frames from `first` on (GRAY8 8x2, content pattern(n)),
#: then ends the stream (`eos`), closes (`close`; both after a reader attached) or lingers.
WRITER = """
name, first, count, then = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
w = shmframe.Writer(name, 8, 2, "GRAY8", depth=64, backpressure="drop-oldest", pace=False)
if then != "linger":
    assert w.wait_for_readers(1, timeout=30)
for n in range(first, first + count):
    w.write(np.array([(n * 29 + y * 7 + x * 3) & 0xFF for y in range(2) for x in range(8)],
                     np.uint8))
print("written", os.getpid(), flush=True)
if then == "eos":
    w.end_of_stream()
    w.close()
elif then == "close":
    w.close()
else:
    time.sleep(120)  # killed by the test
"""


def child_frame(n: int) -> bytes:
    return pattern(shmframe.FrameLayout("GRAY8", 8, 2), n).tobytes()


def test_end_of_stream_comes_after_the_last_frame(shm_name, spawn):
    child = spawn(WRITER, shm_name, "0", "5", "eos")
    reader = shmframe.Reader(shm_name, start="oldest", wait=30)
    assert child.readline().startswith("written")
    assert [(number, frame.tobytes()) for number, frame, _ in reader] == [
        (n, child_frame(n)) for n in range(5)
    ]
    with pytest.raises(shmframe.EndOfStream) as eos:
        reader.read(timeout=5)
    assert str(eos.value) == f"end of stream on {shm_name!r} after 5 frames"
    assert reader.stream_state == "eos"
    reader.close()
    child.finish()


def test_a_writer_closing_without_eos_is_gone_cleanly(shm_name, spawn):
    child = spawn(WRITER, shm_name, "0", "3", "close")
    reader = shmframe.Reader(shm_name, start="oldest", wait=30)
    numbers = []
    with pytest.raises(shmframe.WriterGone) as gone:
        while True:
            got = reader.read(timeout=30)
            assert got is not None
            numbers.append(got[0])
            assert reader.last.data.tobytes() == child_frame(got[0])
    assert gone.value.clean is True and gone.value.pid == child.pid
    assert str(gone.value) == f"the writer (pid {child.pid}) closed the segment"
    assert numbers == [0, 1, 2]
    child.finish()
    reader.close()


def test_a_killed_writer_is_gone_uncleanly_and_a_new_one_is_followed(shm_name, spawn):
    first = spawn(WRITER, shm_name, "0", "4", "linger")
    assert first.readline().startswith("written")
    reader = shmframe.Reader(shm_name, start="oldest")
    assert [read_frame(reader)[0] for _ in range(4)] == [0, 1, 2, 3]
    first.kill()
    with pytest.raises(shmframe.WriterGone) as gone:
        reader.read(timeout=30)
    assert (gone.value.clean, gone.value.pid) == (False, first.pid)
    assert str(gone.value) == f"the writer (pid {first.pid}) died"
    reader.close()
    # The dead writer's segment is still there: opening it says so (at once without wait) ...
    with pytest.raises(shmframe.WriterGone):
        shmframe.Reader(shm_name)
    # ... and a new writer replaces it; a reader waiting for the name follows it.
    second = spawn(WRITER, shm_name, "100", "3", "linger")
    reader = shmframe.Reader(shm_name, start="oldest", wait=30)
    assert reader.writer_pid == second.pid
    numbers = [read_frame(reader)[0] for _ in range(3)]
    assert numbers == [0, 1, 2]  # a new segment numbers its frames from 0 again
    assert reader.last.data.tobytes() == child_frame(102)
    second.kill()
    reader.close()


def test_waiting_for_a_segment_that_appears_later(shm_name, spawn):
    started = time.monotonic()
    with pytest.raises(shmframe.SegmentNotFound):
        shmframe.Reader(shm_name, wait=0.2)
    assert time.monotonic() - started >= 0.2
    child = spawn("time.sleep(0.5)\n" + WRITER, shm_name, "0", "2", "linger")
    reader = shmframe.Reader(shm_name, start="oldest", wait=30)
    assert reader.writer_pid == child.pid and reader.writer_alive
    assert read_frame(reader)[0] == 0
    reader.close()


def test_a_killed_reader_is_detected_and_its_entry_and_pins_reclaimed(shm_name, spawn):
    """A reader process killed while it holds a zero-copy frame no longer holds up a `block`
    writer, and its table entry is free for the next reader."""
    with shmframe.Writer(
        shm_name, 8, 2, "GRAY8", depth=2, backpressure="block", pace=False,
    ) as writer:
        child = spawn(
            """
            r = shmframe.Reader(sys.argv[1], start="oldest")
            number, frame, _ = r.read(timeout=30, copy=False)
            print("holding", number, flush=True)
            time.sleep(120)
            """,
            shm_name,
        )
        assert writer.wait_for_readers(1, timeout=30)
        writer.write(pattern(writer.frame_layout, 0))
        assert child.readline() == "holding 0"
        (entry,) = writer.readers()
        assert (entry["pid"], entry["pinned_slots"], entry["cursor"]) == (child.pid, 1, 1)
        # The reader is at 1 and the ring holds 2: frame 1 fits, frame 2 would block.
        writer.write(pattern(writer.frame_layout, 1))
        os.kill(child.pid, signal.SIGKILL)
        child.kill()
        started = time.monotonic()
        for n in range(2, 12):
            assert writer.write(pattern(writer.frame_layout, n)) == n
        # Detected by the kernel dropping its lock, well before the 1 s reader timeout.
        assert time.monotonic() - started < 0.9
        assert writer.readers() == [] and writer.reader_count() == 0
        assert writer.readers_evicted == 0
        reader = shmframe.Reader(shm_name, start="oldest")
        (entry,) = writer.readers()
        assert entry["index"] == 0 and entry["pid"] == os.getpid()
        assert read_frame(reader)[0] == 10
        reader.close()


def test_iteration_ends_when_the_writer_goes(shm_name, spawn):
    child = spawn(WRITER, shm_name, "0", "3", "linger")
    assert child.readline().startswith("written")
    reader = shmframe.Reader(shm_name, start="oldest")
    seen = []
    for number, frame, _ in reader:
        seen.append((number, frame.tobytes()))
        if number == 2:
            child.kill()
    assert seen == [(n, child_frame(n)) for n in range(3)]
    assert not reader.writer_alive
    assert reader.stream_state == "running"  # a killed writer never said anything else
    reader.close()
