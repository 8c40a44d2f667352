"""Waiting never holds the GIL: other Python threads run while a read waits for a frame, while a
block writer waits for room, and while a writer waits for readers."""

import signal
import textwrap
import threading
import time
from typing import Callable

import pytest
from helpers import Child, pattern

import shmframe


def python_work_while(wait: Callable[[], object], seconds: float = 0.5) -> int:
    """Runs ``wait`` in a thread and counts loop iterations of pure Python in this one for
    ``seconds`` while it is still waiting. Returns the count (checks the wait was still on)."""
    done = threading.Event()

    def run() -> None:
        wait()
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(0.05)  # let it start waiting
    count = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        count += 1
    assert not done.is_set(), "the wait ended before the measurement did: it proves nothing"
    return count


def test_a_waiting_read_lets_other_threads_run(shm_name):
    with shmframe.Writer(shm_name, 4, 1, "GRAY8", pace=False) as writer:
        reader = shmframe.Reader(shm_name)
        got = []
        count = python_work_while(lambda: got.append(reader.read(timeout=30)))
        # Holding the GIL for the wait would leave this thread a handful of iterations at
        # most (one per switch interval of 5 ms, were the GIL ever handed over).
        assert count > 100_000, count
        writer.write(pattern(writer.frame_layout, 0))
        assert wait_for(lambda: got != [])
        assert got[0] is not None and got[0][0] == 0
        reader.close()


def test_a_blocked_writer_lets_other_threads_run(shm_name):
    with shmframe.Writer(
        shm_name, 4, 1, "GRAY8", depth=2, backpressure="block", pace=False,
    ) as writer:
        reader = shmframe.Reader(shm_name, start="oldest")
        fl = writer.frame_layout
        writer.write(pattern(fl, 0))
        writer.write(pattern(fl, 1))
        written = []
        # The ring is full and the reader live: frame 2 waits for it (or its 1 s timeout).
        writer_thread = lambda: written.append(writer.write(pattern(fl, 2)))  # noqa: E731
        count = python_work_while(writer_thread, seconds=0.3)
        assert count > 50_000, count
        assert reader.read(timeout=5) is not None
        assert wait_for(lambda: written == [2])
        reader.close()


def test_waiting_for_readers_lets_other_threads_run(shm_name):
    with shmframe.Writer(shm_name, 4, 1, "GRAY8", pace=False) as writer:
        result = []
        count = python_work_while(
            lambda: result.append(writer.wait_for_readers(1, timeout=30))
        )
        assert count > 100_000, count
        with shmframe.Reader(shm_name):
            assert wait_for(lambda: result == [True])


def wait_for(cond: Callable[[], bool], limit_s: float = 30.0) -> bool:
    deadline = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_a_reader_used_by_a_second_thread_while_it_waits_refuses(shm_name):
    with shmframe.Writer(shm_name, 4, 1, "GRAY8", pace=False) as writer:
        reader = shmframe.Reader(shm_name)
        got = []
        thread = threading.Thread(target=lambda: got.append(reader.read(timeout=30)))
        thread.start()
        time.sleep(0.1)
        with pytest.raises(RuntimeError, match="^Already mutably borrowed$"):
            reader.frames_read
        writer.write(b"\7" * 4)  # the writer is another object: free to use
        thread.join(30)
        assert got[0] is not None and got[0][1].tolist() == [[7] * 4]
        assert reader.frames_read == 1
        reader.close()


def ctrl_c(child: Child, limit_s: float) -> str:
    """Sends Ctrl-C (SIGINT) to `child`, waiting in shmframe, and returns the line it prints
    then, which must come within `limit_s`: a wait slice (100 ms) or two on an idle machine,
    the limits allow for a loaded one."""
    sent = time.monotonic()
    child.proc.send_signal(signal.SIGINT)
    line = child.readline()
    took = time.monotonic() - sent
    assert took < limit_s, f"{line!r} after {took:.2f} s"
    return line


def test_ctrl_c_interrupts_a_read_that_waits_forever(shm_name, spawn):
    with shmframe.Writer(shm_name, 4, 1, "GRAY8", pace=False):
        child = spawn(
            """
            r = shmframe.Reader(sys.argv[1])
            print("reading", flush=True)
            try:
                r.read(timeout=None)
            except KeyboardInterrupt:
                print("interrupted", r.frames_read, flush=True)
            """,
            shm_name,
        )
        assert child.readline() == "reading"
        time.sleep(0.2)  # inside the wait
        assert ctrl_c(child, limit_s=5) == "interrupted 0"
        child.finish()


def test_ctrl_c_interrupts_an_open_whose_writer_does_not_answer(shm_name, spawn, tmp_path):
    # A writer that is stopped (SIGSTOP) answers no hello: the reader's handshake would wait
    # 5 s for it, and Ctrl-C must not.
    close_flag = tmp_path / "close"
    writer = spawn(
        """
        with shmframe.Writer(sys.argv[1], 4, 1, "GRAY8", pace=False):
            print("ready", flush=True)
            # Told to close by a file, not a signal: any of the process's threads (numpy's
            # too) may take a signal, and a sleeping main thread would not hear of it.
            while not os.path.exists(sys.argv[2]):
                time.sleep(0.02)
        print("closed", flush=True)
        """,
        shm_name,
        str(close_flag),
    )
    assert writer.readline() == "ready"
    writer.proc.send_signal(signal.SIGSTOP)
    try:
        child = spawn(
            """
            print("opening", flush=True)
            try:
                shmframe.Reader(sys.argv[1])
                print("opened", flush=True)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
            except shmframe.ShmFrameError as e:
                print("failed", e, flush=True)
            """,
            shm_name,
        )
        assert child.readline() == "opening"
        time.sleep(0.5)  # inside the handshake
        # Well under the handshake's own limit of 5 s.
        assert ctrl_c(child, limit_s=2.5) == "interrupted"
        child.finish()
    finally:
        writer.proc.send_signal(signal.SIGCONT)
        close_flag.touch()
    # Closed cleanly: its segment and socket are gone.
    assert writer.readline() == "closed"
    writer.finish()


def test_a_writer_collected_after_eos_lingers_without_the_gil(shm_name):
    writer = shmframe.Writer(shm_name, 4, 1, "GRAY8", reader_timeout=1.0, pace=False)
    reader = shmframe.Reader(shm_name, start="oldest")
    writer.write(b"\1" * 4)
    writer.end_of_stream()
    # The reader has not read frame 0: the writer keeps the name for it, up to 1 s.
    held = [writer]
    del writer
    count = python_work_while(held.clear, seconds=0.3)
    assert count > 50_000, count
    assert read_frame_number(reader) == 0
    reader.close()


def read_frame_number(reader: shmframe.Reader) -> int:
    got = reader.read(timeout=5)
    assert got is not None
    return got[0]


# A child writer blocked in one of these, with a live reader (this process) that does not
# read and a reader timeout longer than the test: nothing but the signal ends the wait.
BLOCKED_WRITES = {
    "write on a full ring": """
        w.write(b"\\0" * 4)
        w.write(b"\\1" * 4)
        print("blocking", flush=True)
        w.write(b"\\2" * 4)
    """,
    "frame() on a full ring": """
        w.write(b"\\0" * 4)
        w.write(b"\\1" * 4)
        print("blocking", flush=True)
        with w.frame() as arr:
            arr[...] = 2
    """,
    "the first write waiting for a second reader": """
        print("blocking", flush=True)
        w.write(b"\\0" * 4)
    """,
}


@pytest.mark.parametrize("blocked_in", list(BLOCKED_WRITES))
def test_ctrl_c_interrupts_a_blocked_writer(shm_name, spawn, blocked_in):
    code = (
        'w = shmframe.Writer(sys.argv[1], 4, 1, "GRAY8", depth=2, backpressure="block",\n'
        "                    pace=False, reader_timeout=600.0,\n"
        "                    wait_for_readers=int(sys.argv[2]))\n"
        'print("created", flush=True)\n'
        "try:\n"
        "    while w.reader_count() < 1:\n"
        "        time.sleep(0.005)\n"
        + textwrap.indent(textwrap.dedent(BLOCKED_WRITES[blocked_in]).strip("\n"), "    ")
        + "\n"
        '    print("not blocked", flush=True)\n'
        "except KeyboardInterrupt:\n"
        '    print("interrupted", w.frames_written, flush=True)\n'
        "w.close()\n"
    )
    child = spawn(code, shm_name, "2" if "second reader" in blocked_in else "0")
    assert child.readline() == "created"
    with shmframe.Reader(shm_name, start="oldest", wait=30):
        assert child.readline() == "blocking"
        time.sleep(0.5)  # well inside the wait
        assert child.proc.poll() is None
        expected = 0 if "second reader" in blocked_in else 2
        assert ctrl_c(child, limit_s=5) == f"interrupted {expected}"
        child.finish()
