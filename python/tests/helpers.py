"""Helpers of the shmframe package tests."""

import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import shmframe

#: Where segments live: as the transport decides it (SHMFRAME_DIR overrides /dev/shm).
SHM_DIR = Path(os.environ.get("SHMFRAME_DIR", "/dev/shm"))
#: Longest a child process may run: generous for a loaded 2-core machine.
CHILD_LIMIT_S = 60.0


class Child:
    """A Python child process running ``code`` (with ``shmframe`` and numpy imported), its
    output captured; killed when the test ends if still running."""

    def __init__(self, code: str, *args: str) -> None:
        script = "import os, sys, time\nimport numpy as np\nimport shmframe\n" + textwrap.dedent(
            code
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-c", script, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def readline(self, limit_s: float = CHILD_LIMIT_S) -> str:
        """The child's next output line (fails the test if none comes within the limit)."""
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            if not sel.select(limit_s):
                pytest.fail(f"child {self.pid} printed nothing within {limit_s} s")
        finally:
            sel.close()
        return self.proc.stdout.readline().strip()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(CHILD_LIMIT_S)

    def finish(self, limit_s: float = CHILD_LIMIT_S) -> str:
        """Waits for the child to exit successfully; returns the rest of its output."""
        try:
            out, err = self.proc.communicate(timeout=limit_s)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"child {self.pid} did not finish within {limit_s} s")
        assert self.proc.returncode == 0, f"child failed ({self.proc.returncode}): {err}"
        return out


def plugin_dir() -> Path:
    """The directory of the shmframe plugin built from this tree (``cargo build``), from
    GST_PLUGIN_PATH. A missing plugin fails the test: it never passes silently."""
    for entry in os.environ.get("GST_PLUGIN_PATH", "").split(":"):
        if entry and (Path(entry) / "libgstshmframe.so").is_file():
            return Path(entry)
    pytest.fail(
        "the shmframe GStreamer plugin was not found on GST_PLUGIN_PATH: run `cargo build` and "
        "export GST_PLUGIN_PATH=<worktree>/target/debug (scripts/python.sh does both)"
    )


def pattern(layout: shmframe.FrameLayout, n: int) -> np.ndarray:
    """Frame ``n``'s content: the raw frame bytes (padding zero), distinct for every frame."""
    buf = np.zeros(layout.size, np.uint8)
    for k, p in enumerate(layout.planes):
        y = np.arange(p.rows, dtype=np.int64)[:, None]
        x = np.arange(p.row_bytes, dtype=np.int64)[None, :]
        rows = ((n * 29 + k * 71 + y * 7 + x * 3) & 0xFF).astype(np.uint8)
        view = np.ndarray((p.rows, p.row_bytes), np.uint8, buf, p.offset, (p.stride, 1))
        view[...] = rows
    return buf


def wait_until(cond: Callable[[], bool], limit_s: float = 10.0) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def read_frame(
    reader: shmframe.Reader, timeout: float = 10.0, copy: bool = True
) -> shmframe.Frame:
    got = reader.read(timeout=timeout, copy=copy)
    assert got is not None, f"no frame within {timeout} s"
    return got
