"""shmframe for Python: read and write shmframe shared-memory video segments with numpy.

A shmframe segment (``/dev/shm/<name>``) carries raw video frames from one writer process to
any number of reader processes. ``shmframesink`` and ``shmframesrc`` are its GStreamer
elements; this module speaks the same format (docs/LAYOUT.md, version 1) with nothing but the
standard library and numpy, so a Python process can consume a GStreamer capture or feed a
GStreamer pipeline.

Reading (e.g. from ``gst-launch-1.0 videotestsrc ! shmframesink shm-name=cam0``)::

    import shmframe

    with shmframe.Reader("cam0", start="newest") as reader:
        while True:
            try:
                got = reader.read(timeout=1.0)       # None on timeout
            except shmframe.EndOfStream:
                break
            except shmframe.WriterGone:
                break                                # writer closed or crashed
            if got is None:
                continue
            number, frame, pts_ns = got              # frame: numpy array shaped from the caps
            print(number, frame.shape, reader.frames_missed)

Writing (read it with ``gst-launch-1.0 shmframesrc shm-name=cam1 ! videoconvert ! autovideosink``)::

    import numpy as np, shmframe

    with shmframe.Writer("cam1", 640, 480, "RGB", layout="ring", depth=4,
                         backpressure="block", fps=30, wait_for_readers=1) as writer:
        for i in range(300):                         # paced at fps, after a reader attached
            writer.write(np.full((480, 640, 3), i % 256, dtype=np.uint8))
        writer.end_of_stream()

Arrays: packed formats come as ``(height, width, channels)`` (RGB, BGR: 3 channels; RGBA, BGRA,
ARGB, ABGR, RGBx, BGRx, xRGB, xBGR: 4) or ``(height, width)`` (GRAY8 uint8, GRAY16_LE/BE and
RGB16/BGR16 uint16). Rows are padded to GStreamer's default stride (a multiple of 4 bytes), so
e.g. an RGB frame of odd width is a non-contiguous view (``np.ascontiguousarray`` if needed).
Planar formats (I420, YV12, NV12, NV21, Y42B, Y444) come as a 1-D uint8 array of the whole frame
in GStreamer's default layout; ``FrameLayout.split(buf)`` returns the planes as 2-D/3-D views
and ``FrameLayout.pack(planes)`` builds such a buffer for ``Writer.write``. Other formats are
returned as 1-D raw bytes.

Guarantees and limits (see docs/PYTHON.md): frames are never torn (a copy the writer overwrote
meanwhile is discarded and counted as missed); each reader has its own cursor and counts what
it missed; a reader or writer that dies is detected by the kernel releasing its lock. Python
has no compare-and-swap and no memory fences, so the few read-modify-write steps of the
protocol are done atomically by the kernel (``FUTEX_WAKE_OP``), the reader table entry is
claimed under an exclusive byte lock, and a wake-up lost in a race costs at most one bounded
wait slice (100 ms for readers, 20 ms for a blocked writer). Linux only (x86_64, aarch64).
"""

import ctypes
import errno
import fcntl
import mmap
import os
import platform
import re
import stat
import select
import struct
import time
import zlib

import numpy as np

__all__ = [
    "Reader",
    "Writer",
    "FrameLayout",
    "FrameInfo",
    "parse_caps",
    "caps_string",
    "segment_path",
    "ShmFrameError",
    "InvalidName",
    "SegmentNotFound",
    "ForeignFile",
    "NotAFile",
    "NotReplaceable",
    "SparseSegment",
    "VersionMismatch",
    "CorruptSegment",
    "TruncatedSegment",
    "WriterExists",
    "TooManyReaders",
    "EndOfStream",
    "WriterGone",
]

# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class ShmFrameError(Exception):
    """Base class of every error this module raises."""


# Error texts are the Rust transport's, word for word (tests/python_interop.rs checks it); these
# quote a name or a character the way Rust's `{:?}` does.
def _escaped(c, quote):
    specials = {"\\": "\\\\", "\0": "\\0", "\t": "\\t", "\r": "\\r", "\n": "\\n"}
    if c in specials:
        return specials[c]
    if c == quote:
        return "\\" + c
    return c if c.isprintable() else f"\\u{{{ord(c):x}}}"


def _quoted(text):
    return '"' + "".join(_escaped(c, '"') for c in text) + '"'


def _quoted_char(c):
    return "'" + _escaped(c, "'") + "'"


class InvalidName(ShmFrameError, ValueError):
    pass


class SegmentNotFound(ShmFrameError, FileNotFoundError):
    pass


class ForeignFile(ShmFrameError):
    """A file exists at the path but is not a shmframe segment (it is never modified)."""


class NotAFile(ShmFrameError):
    """Something other than a regular file is at the path (it is never modified)."""

    def __init__(self, path, what):
        self.path, self.what = path, what
        super().__init__(
            f"{path} is {what}, not a shmframe segment (segments are regular files); it was "
            f"left untouched: remove it or choose another shm-name"
        )


class NotReplaceable(ShmFrameError):
    """Another user's file at the path that this process may not take over."""

    def __init__(self, path, owner, user, stale):
        self.path, self.owner, self.user, self.stale = path, owner, user, stale
        if stale:
            text = (
                f"{path} was left by a writer that is gone, but it belongs to uid {owner} and "
                f"this process (uid {user}) may not replace it: remove it as uid {owner} or "
                f"root (rm {path}), or choose another shm-name"
            )
        else:
            text = (
                f"{path} belongs to uid {owner} and this process (uid {user}) may not open it "
                f"to check whether its writer is alive: if that writer is gone, remove it as "
                f"uid {owner} or root (rm {path}); otherwise choose another shm-name"
            )
        super().__init__(text)


class SparseSegment(ShmFrameError):
    """A segment file with holes: mapping it would fill the shm file system."""

    def __init__(self, path, size, allocated):
        self.path, self.size, self.allocated = path, size, allocated
        super().__init__(
            f"{path} is not fully allocated: the file has {size} bytes but only {allocated} "
            f"of them are backed by memory, and mapping it would fill the shm file system "
            f"(a shmframe writer allocates its whole segment before publishing it): remove "
            f"the file and restart the writer"
        )


class VersionMismatch(ShmFrameError):
    def __init__(self, expected, found):
        self.expected, self.found = expected, found
        super().__init__(
            f"segment layout version {found} is not supported by this build (expects version "
            f"{expected}); use the same shmframe version for writer and readers"
        )


class CorruptSegment(ShmFrameError):
    """A header (or shared) field holds an impossible value."""

    def __init__(self, field, expected, found):
        self.field, self.expected, self.found = field, expected, found
        super().__init__(
            f"corrupt segment header: field {field} expected {expected}, found {found}; the "
            f"segment was damaged or not written by shmframe: remove the file and restart the "
            f"writer"
        )


class TruncatedSegment(ShmFrameError):
    def __init__(self, what, expected, found):
        self.field, self.expected, self.found = what, expected, found
        super().__init__(
            f"truncated segment: {what} needs {expected} bytes, the file has {found}; a "
            f"shmframe writer never leaves a segment cut short: remove the file and restart "
            f"the writer"
        )


class WriterExists(ShmFrameError):
    def __init__(self, name, pid):
        self.name, self.pid = name, pid
        super().__init__(
            f"shm-name {_quoted(name)} is already used by a live writer (pid {pid}); stop it or "
            f"choose another shm-name"
        )


class TooManyReaders(ShmFrameError):
    pass


class NoSpace(ShmFrameError, OSError):
    def __init__(self, directory, needed, available):
        self.directory, self.needed, self.available = directory, needed, available
        super().__init__(
            f"the segment needs {needed} bytes ({-(-needed // (1 << 20))} MiB) but "
            f"{directory} has {available} bytes ({available >> 20} MiB) free; lower depth "
            f"or the frame size, remove segments no longer used, or give {directory} more "
            f"room (Docker: --shm-size)"
        )


class ReadersMissing(ShmFrameError, TimeoutError):
    """The writer waited for ``wanted`` readers before its first frame and only ``attached``
    came in time; it publishes from now on without waiting."""

    def __init__(self, name, wanted, attached, waited_s):
        self.name, self.wanted, self.attached = name, wanted, attached
        super().__init__(
            f"only {attached} of the {wanted} readers waited for attached to shm-name "
            f"{_quoted(name)} within {int(waited_s * 1000)} ms; the writer publishes from now "
            f"on without waiting for the others: start the readers first, or wait longer"
        )


class EndOfStream(ShmFrameError):
    """The writer ended the stream and every frame was read."""


class WriterGone(ShmFrameError):
    """The writer closed the segment (``clean``) or died. Open the name again to follow a new
    writer."""

    def __init__(self, pid, clean):
        self.pid, self.clean = pid, clean
        how = "closed the segment" if clean else "died"
        super().__init__(f"the writer (pid {pid}) {how}")


# ---------------------------------------------------------------------------------------------
# Layout constants (docs/LAYOUT.md, version 1). All integers are native-endian.
# ---------------------------------------------------------------------------------------------

MAGIC = b"SHMFRAME"
LAYOUT_VERSION = 1
PAGE = 4096
MAX_DEPTH = 1024
MAX_SPARE_SLOTS = 64
#: The head counter stays below this (an index entry keeps 48 bits for frame + 1).
HEAD_LIMIT = 1 << 48
MAX_READERS = 64
MAX_SLOT_CAPACITY = 256 << 20
MAX_NAME_LEN = 200
NO_TIME = 0xFFFF_FFFF_FFFF_FFFF

CAPS_OFFSET = 1024
CAPS_ENTRIES = 4
CAPS_ENTRY_SIZE = 1792
CAPS_CAPACITY = CAPS_ENTRY_SIZE - 24
HEADER_REGION = CAPS_OFFSET + CAPS_ENTRIES * CAPS_ENTRY_SIZE  # 8192
READER_ENTRY_SIZE = 128
SLOT_DESC_SIZE = 128
CONTROL_HEADER_SIZE = 64
WRITER_LOCK_BYTE = 0
READER_LOCK_BASE = 1

LAYOUT_DOUBLE, LAYOUT_RING = 1, 2
BP_BLOCK, BP_DROP_OLDEST, BP_DROP_NEWEST = 0, 1, 2
STATE_STARTING, STATE_RUNNING, STATE_EOS, STATE_CLOSED = 0, 1, 2, 3
READER_CLAIMING, READER_ACTIVE, READER_EVICTED = 0, 1, 2

# Header field offsets.
H_MAGIC, H_VERSION, H_LAYOUT, H_DEPTH, H_SLOT_COUNT = 0, 8, 12, 16, 20
H_BACKPRESSURE, H_MAX_READERS, H_PIN_WORDS, H_WRITER_PID = 24, 28, 32, 36
H_CONTROL_OFFSET, H_CONTROL_LEN, H_INDEX_OFFSET, H_DESC_OFFSET = 40, 48, 56, 64
H_DATA_OFFSET, H_SLOT_STRIDE, H_SLOT_CAPACITY, H_TOTAL_LEN = 72, 80, 88, 96
H_WRITER_START_TICKS, H_WRITER_SESSION, H_CREATED_REALTIME_NS = 104, 112, 120
H_READER_TIMEOUT_NS = 128
H_STREAM_STATE, H_FULL, H_HEARTBEAT_NS, H_HEAD, H_CLEAR_FLOOR = 136, 140, 144, 152, 160
H_CAPS_GEN, H_FRAMES_WRITTEN, H_FRAMES_DROPPED = 168, 176, 184
H_FULL_EVENTS, H_READERS_EVICTED = 192, 200

# Control header (offsets inside the control region).
C_FRAME_SEQ, C_FRAME_WAITERS, C_SPACE_SEQ, C_WRITER_WAITING, C_READERS_HWM = 0, 4, 8, 12, 16

# Reader entry fields.
R_PID, R_STATE, R_SESSION, R_HEARTBEAT_NS, R_CURSOR = 0, 4, 8, 16, 24
R_FRAMES_READ, R_FRAMES_MISSED, R_ATTACHED_NS, R_EVICTIONS = 32, 40, 48, 56

# Slot descriptor fields.
D_SEQ, D_FRAME, D_PTS, D_DTS, D_DURATION, D_SIZE = 0, 8, 16, 24, 32, 40
D_WRITE_TIME_NS, D_CAPS_GEN, D_FLAGS = 48, 56, 64

_BACKPRESSURE_CODES = {
    "block": BP_BLOCK,
    "drop-oldest": BP_DROP_OLDEST,
    "drop-newest": BP_DROP_NEWEST,
}
_LAYOUT_CODES = {"double": LAYOUT_DOUBLE, "ring": LAYOUT_RING}


def _page_round(n):
    return (n + PAGE - 1) & ~(PAGE - 1)


class Geometry:
    """Every offset and size of a segment: a pure function of layout, depth, slot count and
    slot capacity (docs/LAYOUT.md, "Regions")."""

    def __init__(self, layout, depth, slot_count, backpressure, slot_capacity):
        if layout == LAYOUT_DOUBLE:
            depth = 2
        if not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"depth {depth} is out of range: expected 1..={MAX_DEPTH}")
        if not depth <= slot_count <= depth + MAX_SPARE_SLOTS:
            raise ValueError(
                f"slot count {slot_count} is out of range: expected "
                f"{depth}..={depth + MAX_SPARE_SLOTS}"
            )
        if not 1 <= slot_capacity <= MAX_SLOT_CAPACITY:
            raise ValueError(
                f"slot size {slot_capacity} bytes is out of range: expected 1..={MAX_SLOT_CAPACITY}"
            )
        self.layout = layout
        self.depth = depth
        self.slot_count = slot_count
        self.backpressure = backpressure
        self.max_readers = MAX_READERS
        self.pin_words = (slot_count + 63) // 64
        self.control_offset = HEADER_REGION
        self.control_len = _page_round(
            CONTROL_HEADER_SIZE + MAX_READERS * READER_ENTRY_SIZE + MAX_READERS * self.pin_words * 8
        )
        self.index_offset = self.control_offset + self.control_len
        self.desc_offset = self.index_offset + depth * 8
        self.data_offset = _page_round(self.desc_offset + slot_count * SLOT_DESC_SIZE)
        self.slot_capacity = slot_capacity
        self.slot_stride = _page_round(slot_capacity)
        self.total_len = self.data_offset + slot_count * self.slot_stride

    # Offsets inside the control region.
    def reader_entry(self, i):
        return CONTROL_HEADER_SIZE + i * READER_ENTRY_SIZE

    def pin_word(self, reader, word):
        bitmaps = CONTROL_HEADER_SIZE + MAX_READERS * READER_ENTRY_SIZE
        return bitmaps + (reader * self.pin_words + word) * 8

    # Offsets inside the file.
    def index_entry(self, frame):
        return self.index_offset + (frame % self.depth) * 8

    def desc(self, slot):
        return self.desc_offset + slot * SLOT_DESC_SIZE

    def slot_data(self, slot):
        return self.data_offset + slot * self.slot_stride

    @classmethod
    def parse(cls, data, file_len):
        """Validates a header read from an untrusted file; raises naming field, expected value
        and found value. Mirrors ``Geometry::parse`` in transport/src/layout.rs."""
        if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
            if len(data) < len(MAGIC) and MAGIC.startswith(data):
                raise TruncatedSegment("header", HEADER_REGION, len(data))
            raise ForeignFile("not a shmframe segment (bad magic)")
        if len(data) < H_VERSION + 4:
            raise TruncatedSegment("header", HEADER_REGION, len(data))
        (version,) = struct.unpack_from("=I", data, H_VERSION)
        if version != LAYOUT_VERSION:
            raise VersionMismatch(LAYOUT_VERSION, version)
        if len(data) < HEADER_REGION or file_len < HEADER_REGION:
            raise TruncatedSegment("header", HEADER_REGION, min(len(data), file_len))

        def u32(off):
            return struct.unpack_from("=I", data, off)[0]

        def u64(off):
            return struct.unpack_from("=Q", data, off)[0]

        layout = u32(H_LAYOUT)
        if layout not in (LAYOUT_DOUBLE, LAYOUT_RING):
            raise CorruptSegment("layout", "1 (double) or 2 (ring)", layout)
        depth = u32(H_DEPTH)
        if not 1 <= depth <= MAX_DEPTH or (layout == LAYOUT_DOUBLE and depth != 2):
            raise CorruptSegment("depth", f"1..={MAX_DEPTH} (2 for double)", depth)
        slot_count = u32(H_SLOT_COUNT)
        if not depth <= slot_count <= depth + MAX_SPARE_SLOTS:
            raise CorruptSegment("slot_count", f"{depth}..={depth + MAX_SPARE_SLOTS}", slot_count)
        backpressure = u32(H_BACKPRESSURE)
        if backpressure > 2:
            raise CorruptSegment("backpressure", "0..=2", backpressure)
        max_readers = u32(H_MAX_READERS)
        if max_readers != MAX_READERS:
            raise CorruptSegment("max_readers", str(MAX_READERS), max_readers)
        pin_words = u32(H_PIN_WORDS)
        if pin_words != (slot_count + 63) // 64:
            raise CorruptSegment("pin_words", str((slot_count + 63) // 64), pin_words)
        slot_capacity = u64(H_SLOT_CAPACITY)
        if not 1 <= slot_capacity <= MAX_SLOT_CAPACITY:
            raise CorruptSegment("slot_capacity", f"1..={MAX_SLOT_CAPACITY}", slot_capacity)
        # Recompute the whole map from the validated inputs; a stored offset is only accepted
        # when it equals the recomputed one.
        geo = cls(layout, depth, slot_count, backpressure, slot_capacity)
        for field, off, want in (
            ("control_offset", H_CONTROL_OFFSET, geo.control_offset),
            ("control_len", H_CONTROL_LEN, geo.control_len),
            ("index_offset", H_INDEX_OFFSET, geo.index_offset),
            ("desc_offset", H_DESC_OFFSET, geo.desc_offset),
            ("data_offset", H_DATA_OFFSET, geo.data_offset),
            ("slot_stride", H_SLOT_STRIDE, geo.slot_stride),
            ("total_len", H_TOTAL_LEN, geo.total_len),
        ):
            found = u64(off)
            if found != want:
                raise CorruptSegment(field, str(want), found)
        if file_len < geo.total_len:
            raise TruncatedSegment("segment", geo.total_len, file_len)
        return geo


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------


def shm_dir():
    """Where segments live: /dev/shm, or $SHMFRAME_DIR (as in the Rust transport)."""
    return os.environ.get("SHMFRAME_DIR", "/dev/shm")


def validate_name(name):
    def invalid(why):
        return InvalidName(f"invalid shm-name {_quoted(str(name))}: {why}")

    if not isinstance(name, str) or not name:
        raise invalid('it is empty; set shm-name to e.g. "cam0"')
    if len(name.encode()) > MAX_NAME_LEN:
        raise invalid(
            f"it is {len(name.encode())} bytes long, the limit is {MAX_NAME_LEN}; choose a "
            f"shorter name"
        )
    if name.startswith("."):
        raise invalid(
            "it starts with '.'; start it with a letter, digit, '_' or '-', e.g. \"cam0\""
        )
    bad = next((c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))), None)
    if bad is not None:
        raise invalid(
            f"it contains {_quoted_char(bad)}; only letters, digits, '.', '_' and '-' are allowed"
        )


def segment_path(name):
    validate_name(name)
    return os.path.join(shm_dir(), name)


# ---------------------------------------------------------------------------------------------
# Linux primitives: OFD byte locks, futexes, fences
# ---------------------------------------------------------------------------------------------

F_OFD_GETLK, F_OFD_SETLK = 36, 37
F_RDLCK, F_WRLCK, F_UNLCK = 0, 1, 2
# struct flock on Linux x86_64 and aarch64: short l_type, short l_whence, (pad), off_t l_start,
# off_t l_len, pid_t l_pid, (pad) = 32 bytes.
_FLOCK = struct.Struct("=hh4xqqi4x")
assert _FLOCK.size == 32

_MACHINE = platform.machine()
_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}.get(_MACHINE)
if _SYS_FUTEX is None:
    raise ImportError(f"shmframe supports x86_64 and aarch64 Linux, not {_MACHINE}")
# x86_64 is TSO: loads are not reordered with loads, nor stores with stores, so only the
# store-then-load steps need a real fence. Weaker machines need one around the seqlock too.
_STRONGLY_ORDERED = _MACHINE in ("x86_64", "amd64")

FUTEX_WAIT, FUTEX_WAKE, FUTEX_WAKE_OP, FUTEX_PRIVATE_FLAG = 0, 1, 5, 128
FUTEX_OP_SET, FUTEX_OP_ADD, FUTEX_OP_OR = 0, 1, 2
FUTEX_OP_CMP_EQ = 0

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _lock_request(fd, cmd, kind, offset):
    return fcntl.fcntl(fd, cmd, _FLOCK.pack(kind, os.SEEK_SET, offset, 1, 0))


# Page tables for every slot made at mapping time, not by faults on each slot's first frame.
_MAP_SHARED_POPULATED = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


#: How long racing allocations are retried while the room they need is free (as in Rust).
_ALLOCATION_RACE_LIMIT_S = 5


def _reserve(fd, needed, path):
    """Allocates the whole segment now (tmpfs files are sparse: a write that later finds the
    file system full faults instead of failing), or raises NoSpace. The allocation decides;
    a segment larger than the whole file system is refused without trying."""
    st = os.fstatvfs(fd)
    if needed > st.f_blocks * st.f_frsize:
        raise NoSpace(shm_dir(), needed, st.f_bavail * st.f_frsize)
    deadline = time.monotonic() + _ALLOCATION_RACE_LIMIT_S
    while True:
        try:
            os.posix_fallocate(fd, 0, needed)
            return
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
        # What is free now plus what the failed allocation still holds.
        st = os.fstatvfs(fd)
        room = st.f_bavail * st.f_frsize + os.fstat(fd).st_blocks * 512
        if room < needed:
            raise NoSpace(shm_dir(), needed, room)
        # Another allocation was under way at the same moment: retry after a random pause.
        if time.monotonic() >= deadline:
            raise ShmFrameError(
                f"allocate {path}: no space left although {room} bytes are free now: other "
                f"processes kept allocating in {shm_dir()} for {_ALLOCATION_RACE_LIMIT_S}s; "
                f"try again"
            )
        time.sleep(0.001 + (_random_u64() % 20_000) / 1e6)


def _try_lock_byte(fd, offset, exclusive):
    """Takes an OFD lock on one byte without blocking. OFD locks belong to the open file
    description, so the kernel drops them when the holder dies, however it dies."""
    try:
        _lock_request(fd, F_OFD_SETLK, F_WRLCK if exclusive else F_RDLCK, offset)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


def _unlock_byte(fd, offset):
    try:
        _lock_request(fd, F_OFD_SETLK, F_UNLCK, offset)
    except OSError:
        pass


def _byte_is_locked(fd, offset, exclusive):
    """Whether another open file description holds a lock on ``offset`` conflicting with a
    write lock (``exclusive``: any lock) or a read lock (only a write lock)."""
    try:
        res = _lock_request(fd, F_OFD_GETLK, F_WRLCK if exclusive else F_RDLCK, offset)
    except OSError:
        return True  # Treating a peer as alive is the safe error.
    return _FLOCK.unpack(res)[0] != F_UNLCK


def _futex_wait(addr, expected, timeout_s):
    """Sleeps while the shared u32 at ``addr`` equals ``expected``, at most ``timeout_s``.
    Returns on a wake, a value change, a signal or the timeout: callers re-check."""
    timeout_s = max(0.0, timeout_s)
    ts = _Timespec(int(timeout_s), int((timeout_s - int(timeout_s)) * 1e9))
    _syscall(
        ctypes.c_long(_SYS_FUTEX),
        ctypes.c_void_p(addr),
        ctypes.c_long(FUTEX_WAIT),
        ctypes.c_long(expected & 0xFFFFFFFF),
        ctypes.byref(ts),
        ctypes.c_void_p(0),
        ctypes.c_long(0),
    )


IN_CREATE, IN_MOVED_TO, IN_Q_OVERFLOW = 0x100, 0x80, 0x4000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
_INOTIFY_EVENT = struct.Struct("=iIII")  # wd, mask, cookie, len; then the NUL-padded name


class _NameWatch:
    """Wakes a reader waiting for its segment as soon as the name appears in the shm directory
    (created, or renamed into place as writers publish segments), as the Rust subscriber does.
    ``wait`` returns on that, or after ``timeout_s``; callers look at the name either way."""

    def __init__(self, path):
        self.fd = None
        self.name = os.fsencode(os.path.basename(path))
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.fd = fd
        directory = os.fsencode(os.path.dirname(path) or ".")
        if _libc.inotify_add_watch(fd, directory, IN_CREATE | IN_MOVED_TO) < 0:
            err = ctypes.get_errno()
            self.close()
            raise OSError(err, "inotify_add_watch")

    def wait(self, timeout_s):
        deadline = time.monotonic() + max(0.0, timeout_s)
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(max(1, int(left * 1000))):
                return False
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                continue
            at = 0
            while at + _INOTIFY_EVENT.size <= len(data):
                _, mask, _, length = _INOTIFY_EVENT.unpack_from(data, at)
                at += _INOTIFY_EVENT.size
                name = data[at : at + length].split(b"\0", 1)[0]
                at += length
                if mask & IN_Q_OVERFLOW or name == self.name:
                    return True

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _futex_op(addr, op, oparg, nr_wake, private=False):
    """Atomically ``*addr = *addr <op> oparg`` (FUTEX_WAKE_OP: the kernel performs it as a
    locked read-modify-write, a full memory barrier), then wakes up to ``nr_wake`` waiters on
    ``addr`` (the kernel may wake one even when ``nr_wake`` is 0: every waiter re-checks)."""
    encoded = ((op & 0xF) << 28) | ((FUTEX_OP_CMP_EQ & 0xF) << 24) | ((oparg & 0xFFF) << 12)
    # cmparg 0xFFF = -1: the old value never equals it in practice, so nobody is woken twice.
    encoded |= 0xFFF
    cmd = FUTEX_WAKE_OP | (FUTEX_PRIVATE_FLAG if private else 0)
    r = _syscall(
        ctypes.c_long(_SYS_FUTEX),
        ctypes.c_void_p(addr),
        ctypes.c_long(cmd),
        ctypes.c_long(nr_wake),
        ctypes.c_void_p(0),  # nr_wake2 (passed in the timeout slot)
        ctypes.c_void_p(addr),
        ctypes.c_long(encoded),
    )
    if r < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"futex(FUTEX_WAKE_OP): {os.strerror(err)}")


def _atomic_add(addr, delta):
    """Atomic ``*addr += delta`` on a shared u32 (-2048 < delta < 2048)."""
    _futex_op(addr, FUTEX_OP_ADD, delta, 0)


def _kick(addr):
    """Bumps a shared wait word and wakes everyone waiting on it (the transport's ``kick``)."""
    _futex_op(addr, FUTEX_OP_ADD, 1, 0x7FFFFFFF)


_fence_word = ctypes.c_uint32(0)
_FENCE_ADDR = ctypes.addressof(_fence_word)


def _fence():
    """A full memory barrier. Python has none, so this asks the kernel for an atomic
    read-modify-write (which is one) on a private word: a system call, ~1 us."""
    _futex_op(_FENCE_ADDR, FUTEX_OP_ADD, 0, 0, private=True)


def _ordering_fence():
    """Acquire/release ordering between plain loads or between plain stores: free on x86_64
    (TSO), a full fence elsewhere."""
    if not _STRONGLY_ORDERED:
        _fence()


def _monotonic_ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def _random_u64():
    while True:
        v = int.from_bytes(os.urandom(8), "little")
        if v:
            return v


def _process_start_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


# ---------------------------------------------------------------------------------------------
# Caps and frame layouts
# ---------------------------------------------------------------------------------------------


def _ru(n, m):
    return (n + m - 1) // m * m


def _ceil_half(n):
    return (n + 1) // 2


# name -> (bytes per pixel, channels or None for 2-D, numpy dtype)
_PACKED = {
    "RGB": (3, 3, "u1"),
    "BGR": (3, 3, "u1"),
    "RGBA": (4, 4, "u1"),
    "BGRA": (4, 4, "u1"),
    "ARGB": (4, 4, "u1"),
    "ABGR": (4, 4, "u1"),
    "RGBx": (4, 4, "u1"),
    "BGRx": (4, 4, "u1"),
    "xRGB": (4, 4, "u1"),
    "xBGR": (4, 4, "u1"),
    "GRAY8": (1, None, "u1"),
    "GRAY16_LE": (2, None, "<u2"),
    "GRAY16_BE": (2, None, ">u2"),
    "RGB16": (2, None, "=u2"),
    "BGR16": (2, None, "=u2"),
}
_PLANAR = ("I420", "YV12", "NV12", "NV21", "Y42B", "Y444")
SUPPORTED_FORMATS = tuple(_PACKED) + _PLANAR


class Plane:
    """One plane of a frame in GStreamer's default layout: ``rows`` rows of ``row_bytes``
    visible bytes, ``stride`` bytes apart, from ``offset``; ``shape`` is its array shape."""

    def __init__(self, component, offset, stride, rows, row_bytes, shape):
        self.component, self.offset, self.stride = component, offset, stride
        self.rows, self.row_bytes, self.shape = rows, row_bytes, shape

    def __repr__(self):
        return (
            f"Plane({self.component}, offset={self.offset}, stride={self.stride}, "
            f"rows={self.rows}, row_bytes={self.row_bytes})"
        )


class FrameLayout:
    """Where the bytes of a ``format`` frame of ``width`` x ``height`` are, in GStreamer's
    default ``GstVideoInfo`` layout (the layout shmframe frames are stored in): plane offsets,
    strides (rows padded to 4 bytes), total ``size``. ``tests/python_interop.rs`` checks these
    against gst_video."""

    def __init__(self, fmt, width, height):
        if fmt not in SUPPORTED_FORMATS:
            raise ValueError(
                f"format {fmt!r} is not supported; expected one of {', '.join(SUPPORTED_FORMATS)}"
            )
        if width < 1 or height < 1:
            raise ValueError(f"frame size {width}x{height} must be at least 1x1")
        self.format, self.width, self.height = fmt, width, height
        w, h = width, height
        if fmt in _PACKED:
            bpp, channels, dtype = _PACKED[fmt]
            stride = w * 4 if bpp == 4 else _ru(w * bpp, 4)
            shape = (h, w, channels) if channels else (h, w)
            self.dtype = np.dtype(dtype)
            self.shape = shape
            self.bytes_per_pixel = bpp
            self.planes = [Plane("packed", 0, stride, h, w * bpp, shape)]
            self.size = stride * h
            return
        self.dtype = np.dtype("u1")
        self.shape = None
        self.bytes_per_pixel = None
        cw, ch = _ceil_half(w), _ceil_half(h)
        if fmt in ("I420", "YV12"):
            s0, s1 = _ru(w, 4), _ru(_ru(w, 2) // 2, 4)
            o1 = s0 * _ru(h, 2)
            o2 = o1 + s1 * (_ru(h, 2) // 2)
            self.size = o2 + s1 * (_ru(h, 2) // 2)
            u_off, v_off = (o1, o2) if fmt == "I420" else (o2, o1)
            self.planes = [
                Plane("Y", 0, s0, h, w, (h, w)),
                Plane("U", u_off, s1, ch, cw, (ch, cw)),
                Plane("V", v_off, s1, ch, cw, (ch, cw)),
            ]
        elif fmt in ("NV12", "NV21"):
            s0 = _ru(w, 4)
            o1 = s0 * _ru(h, 2)
            self.size = o1 + s0 * (_ru(h, 2) // 2)
            self.planes = [
                Plane("Y", 0, s0, h, w, (h, w)),
                Plane("UV" if fmt == "NV12" else "VU", o1, s0, ch, cw * 2, (ch, cw, 2)),
            ]
        elif fmt == "Y42B":
            s0, s1 = _ru(w, 4), _ru(w, 8) // 2
            o1 = s0 * h
            o2 = o1 + s1 * h
            self.size = o2 + s1 * h
            self.planes = [
                Plane("Y", 0, s0, h, w, (h, w)),
                Plane("U", o1, s1, h, cw, (h, cw)),
                Plane("V", o2, s1, h, cw, (h, cw)),
            ]
        elif fmt == "Y444":
            s = _ru(w, 4)
            self.size = 3 * s * h
            self.planes = [Plane(c, k * s * h, s, h, w, (h, w)) for k, c in enumerate("YUV")]

    @property
    def packed(self):
        return self.shape is not None

    def __repr__(self):
        return f"FrameLayout({self.format}, {self.width}x{self.height}, size={self.size})"

    def _plane_view(self, buf, plane):
        buf = np.asarray(buf).reshape(-1).view(np.uint8)
        if plane.shape == self.shape:  # packed
            itemsize = self.dtype.itemsize
            strides = (plane.stride, self.bytes_per_pixel, 1) if len(plane.shape) == 3 else (
                plane.stride,
                itemsize,
            )
            return np.ndarray(plane.shape, self.dtype, buf, plane.offset, strides)
        strides = (plane.stride, 2, 1) if len(plane.shape) == 3 else (plane.stride, 1)
        return np.ndarray(plane.shape, np.uint8, buf, plane.offset, strides)

    def to_array(self, buf):
        """The frame as the array ``Reader.read`` returns: shaped for packed formats (a view of
        ``buf``, non-contiguous when rows are padded), ``buf`` itself (1-D) otherwise."""
        if self.packed:
            return self._plane_view(buf, self.planes[0])
        return np.asarray(buf).reshape(-1)

    def split(self, buf):
        """Views of each plane of a packed planar buffer, keyed by component: ``{"Y": (h, w),
        "U": (ceil(h/2), ceil(w/2)), "V": ...}`` for I420/YV12, ``{"Y", "UV": (ceil(h/2),
        ceil(w/2), 2)}`` for NV12 (``"VU"`` for NV21), full-height chroma for Y42B/Y444. For a
        packed format: ``{"packed": array}``."""
        buf = np.asarray(buf).reshape(-1)
        if buf.nbytes < self.size:
            raise ValueError(f"buffer of {buf.nbytes} bytes is smaller than a {self} frame")
        return {p.component: self._plane_view(buf, p) for p in self.planes}

    def pack(self, planes, out=None):
        """A frame buffer (1-D uint8, ``size`` bytes, padding zeroed) from a dict of planes as
        ``split`` returns them (or a list in the same order)."""
        if out is None:
            out = np.zeros(self.size, np.uint8)
        if isinstance(planes, dict):
            planes = [planes[p.component] for p in self.planes]
        if len(planes) != len(self.planes):
            raise ValueError(f"{self.format} has {len(self.planes)} planes, got {len(planes)}")
        for p, src in zip(self.planes, planes):
            src = np.asarray(src)
            if src.shape != p.shape:
                raise ValueError(f"plane {p.component}: expected shape {p.shape}, got {src.shape}")
            self._plane_view(out, p)[...] = src
        return out

    def checked(self, array):
        """``array`` as a numpy array, if it is a frame of this layout: shaped like ``to_array``
        returns it (packed formats: exactly ``shape``, of ``dtype`` or an unsigned type of the
        same width), or the raw frame, ``size`` bytes as a 1-D uint8 array or a bytes-like
        object. Anything else is refused naming what was expected and what came, even when its
        byte count matches: a transposed array, or 16-bit samples for an 8-bit format, would
        reach readers as a scrambled frame."""
        if isinstance(array, (bytes, bytearray, memoryview)):
            array = np.frombuffer(array, np.uint8)
        a = np.asarray(array)
        if self.packed and a.shape == self.shape:
            same_width_uint = a.dtype.kind == "u" and a.dtype.itemsize == self.dtype.itemsize
            if a.dtype == self.dtype or same_width_uint:
                return a
        if a.shape == (self.size,) and a.dtype == np.uint8:
            return a
        raw = f"{self.size} raw bytes (shape ({self.size},), dtype uint8)"
        if self.packed:
            want = f"shape {self.shape}, dtype {self.dtype}, or {raw}"
        else:
            want = f"{raw}, e.g. from FrameLayout.pack"
        raise ValueError(
            f"a {self.format} {self.width}x{self.height} frame must be {want}; got shape "
            f"{a.shape}, dtype {a.dtype}"
        )

    def write_into(self, array, dst):
        """Copies ``array`` (a frame as ``checked`` accepts it) into the 1-D uint8 buffer
        ``dst`` in the default layout."""
        a = self.checked(array)
        if a.shape != self.shape:  # the raw frame
            dst[: self.size] = a
            return
        p = self.planes[0]
        if p.stride != p.row_bytes:
            # Zero the row padding too: frames are then byte-for-byte deterministic.
            rows = np.ndarray((p.rows, p.stride), np.uint8, dst, 0, (p.stride, 1))
            rows[:, p.row_bytes :] = 0
        self._plane_view(dst, p)[...] = a


_CAPS_FIELD = r"(?:^|[,;])\s*{name}\s*=\s*(?:\([A-Za-z0-9_]+\))?\s*\"?([^,;\"]+)\"?"


def parse_caps(caps):
    """``(format, width, height)`` of a ``video/x-raw`` caps string (the first structure)."""
    caps = caps.strip()
    if not caps.startswith("video/x-raw"):
        raise ValueError(f"caps {caps!r} are not video/x-raw")
    out = []
    for field in ("format", "width", "height"):
        m = re.search(_CAPS_FIELD.format(name=field), caps)
        if not m:
            raise ValueError(f"caps {caps!r} have no {field} field")
        out.append(m.group(1).strip())
    return out[0], int(out[1]), int(out[2])


def caps_string(fmt, width, height, fps=30):
    """The caps string a Python writer announces (as ``gst_caps_to_string`` prints it)."""
    num, den = (fps, 1) if isinstance(fps, int) else fps
    return (
        f"video/x-raw, format=(string){fmt}, width=(int){width}, height=(int){height}, "
        f"framerate=(fraction){num}/{den}"
    )


# ---------------------------------------------------------------------------------------------
# The shared mapping
# ---------------------------------------------------------------------------------------------


class _Views:
    """Word views of a mapped segment. Aligned 4/8-byte numpy element loads and stores are
    single machine loads/stores (single-copy atomic on x86_64 and aarch64)."""

    def __init__(self, whole, control, geo):
        self.u8 = np.frombuffer(whole, np.uint8, count=geo.total_len)
        self.u32 = self.u8.view(np.uint32)
        self.u64 = self.u8.view(np.uint64)
        if control is None:
            c8 = self.u8[geo.control_offset : geo.control_offset + geo.control_len]
        else:
            c8 = np.frombuffer(control, np.uint8, count=geo.control_len)
        self.c32 = c8.view(np.uint32)
        self.c64 = c8.view(np.uint64)
        self.ctrl_addr = c8.ctypes.data


def _read_caps(v, gen):
    """Caps string of generation ``gen`` from the caps table (a seqlock), or None if gone."""
    if gen == 0:
        return None
    base = CAPS_OFFSET + (gen % CAPS_ENTRIES) * CAPS_ENTRY_SIZE
    for _ in range(100):
        s1 = int(v.u64[base >> 3])
        if s1 & 1:
            time.sleep(0)
            continue
        _ordering_fence()
        stored_gen = int(v.u64[(base + 8) >> 3])
        length = int(v.u64[(base + 16) >> 3])
        if length > CAPS_CAPACITY:
            _ordering_fence()
            if int(v.u64[base >> 3]) == s1:
                raise CorruptSegment("caps length", f"0..={CAPS_CAPACITY}", length)
            continue
        raw = v.u8[base + 24 : base + 24 + length].tobytes()
        _ordering_fence()
        if int(v.u64[base >> 3]) != s1:
            continue
        if stored_gen != gen:
            return None
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise CorruptSegment("caps string", "UTF-8 text", length) from None
    return None


class FrameInfo:
    """Everything known about the last frame read (``Reader.last``). Times in ns on
    CLOCK_MONOTONIC; None when the writer did not know them."""

    __slots__ = (
        "number",
        "pts",
        "dts",
        "duration",
        "flags",
        "size",
        "caps_gen",
        "caps",
        "write_time_ns",
        "missed_before",
        "data",
    )

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw.get(k))

    def __repr__(self):
        return (
            f"FrameInfo(number={self.number}, pts={self.pts}, size={self.size}, "
            f"caps_gen={self.caps_gen}, missed_before={self.missed_before})"
        )


def _time(v):
    return None if v == NO_TIME else v


def _describe(path, mode):
    """What a file of ``mode`` at ``path`` is, in words (as the Rust transport says it)."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        try:
            target = os.readlink(path)
        except OSError:
            return "a symbolic link"
        if not os.path.exists(path):
            return f"a symbolic link to {target} (which does not exist)"
        return f"a symbolic link to {target}"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a regular file"


def _not_found(name):
    return SegmentNotFound(
        f"no shmframe segment named {_quoted(name)} exists (is its writer running?)"
    )


def _permission_denied(path, e):
    return ShmFrameError(
        f"permission denied on {path}: {e.strerror} (os error {e.errno}); a reader needs read "
        f"and write access, which the writer's perms property grants (default 0600: the "
        f"writer's user only): run the reader as that user, or start the writer with "
        f"perms=0660 (its group) or perms=0666 (everyone)"
    )


def _open_segment_file(path, name, write):
    """Opens the file at a segment path without ever blocking (a FIFO) or following a symbolic
    link, and refuses anything but a regular file; checked before opening (opening some
    devices has effects) and on the descriptor (the path may have changed meanwhile)."""

    def check(mode):
        if not stat.S_ISREG(mode):
            raise NotAFile(path, _describe(path, mode))

    try:
        check(os.lstat(path).st_mode)
        flags = os.O_RDWR if write else os.O_RDONLY
        fd = os.open(path, flags | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise _not_found(name) from None
    except PermissionError as e:
        raise _permission_denied(path, e) from None
    except OSError:
        try:
            check(os.lstat(path).st_mode)
        except FileNotFoundError:
            raise _not_found(name) from None
        raise
    try:
        check(os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _foreign(path):
    return ForeignFile(
        f"{path} exists and is not a shmframe segment; it was left untouched: remove it or "
        f"choose another shm-name"
    )


def _segment_holder(fd, path):
    """The writer pid a segment file's header names; a file that is not a segment is refused."""
    data = os.pread(fd, min(os.fstat(fd).st_size, HEADER_REGION), 0)
    if data[: len(MAGIC)] != MAGIC:
        raise _foreign(path)
    return struct.unpack_from("=I", data, H_WRITER_PID)[0] if len(data) >= 40 else 0


def _open_segment(name):
    path = segment_path(name)
    fd = _open_segment_file(path, name, write=True)
    try:
        st = os.fstat(fd)
        data = os.pread(fd, min(st.st_size, HEADER_REGION), 0)
        try:
            geo = Geometry.parse(data, st.st_size)
        except ForeignFile:
            raise _foreign(path) from None
        # Mapping a file with holes (populated) would allocate them, filling the file system.
        if st.st_blocks * 512 < st.st_size:
            raise SparseSegment(path, st.st_size, st.st_blocks * 512)
        return path, fd, geo
    except BaseException:
        os.close(fd)
        raise


def _other_owner(path):
    """(owner, this user) if ``path`` belongs to another user, else None."""
    try:
        owner = os.lstat(path).st_uid
    except OSError:
        return None
    return (owner, os.geteuid()) if owner != os.geteuid() else None


def _still_named(fd, path):
    """Whether ``path`` still names the open file ``fd``."""
    try:
        a, b = os.fstat(fd), os.lstat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


_TEMP_PREFIX = ".shmframe-new-"


def _reclaim_orphaned_temp_files():
    """Removes temporary files of writers that died while building a segment: a builder holds
    its temporary file's writer lock from creation to rename, and the kernel drops the lock
    when it dies (as in the Rust transport)."""
    try:
        entries = os.listdir(shm_dir())
    except OSError:
        return
    for entry in entries:
        if not entry.startswith(_TEMP_PREFIX):
            continue
        path = os.path.join(shm_dir(), entry)
        try:
            fd = _open_segment_file(path, "", write=True)
        except (ShmFrameError, OSError):
            continue
        try:
            if _try_lock_byte(fd, WRITER_LOCK_BYTE, True) and _still_named(fd, path):
                os.unlink(path)
        except OSError:
            pass
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------


class _ClosedOnExit:
    """``with`` support and a last-resort ``close()`` when garbage-collected."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Reader(_ClosedOnExit):
    """Attaches to segment ``shm_name`` as a reader with its own cursor.

    ``start``: ``"newest"`` (the newest complete frame) or ``"oldest"`` (the oldest one the
    segment still holds). ``wait``: seconds to wait for the segment to appear (and for a live
    writer) instead of raising ``SegmentNotFound`` / ``WriterGone`` at once; a reader that had
    to wait starts at the oldest frame still held, whatever ``start`` says (the writer began
    after it).
    """

    #: Longest single sleep: writer liveness is re-checked and the heartbeat refreshed this often.
    WAIT_SLICE_S = 0.1

    def __init__(self, shm_name, start="newest", wait=0.0):
        if start not in ("newest", "oldest"):
            raise ValueError(f"start must be 'newest' or 'oldest', got {start!r}")
        self.name = shm_name
        self._fd = None
        self._mm = self._cmm = self._v = None
        self._index = None
        deadline = time.monotonic() + wait
        watch = None
        try:
            while True:
                try:
                    self._attach(start)
                    return
                except (SegmentNotFound, WriterGone):
                    self._release_mapping()
                    if time.monotonic() >= deadline:
                        raise
                    # The writer we will find began its stream after we started waiting: read
                    # it from its oldest frame still held, so nothing published before we
                    # attach is lost.
                    start = "oldest"
                except BaseException:
                    self.close()
                    raise
                if watch is None:
                    try:
                        watch = _NameWatch(segment_path(self.name))
                        continue  # look again: the name may have appeared before the watch
                    except OSError:
                        watch = False  # no inotify: poll only
                # The name is re-checked every 20 ms anyway, in case an event is missed.
                if watch:
                    watch.wait(min(0.02, max(0.0, deadline - time.monotonic())))
                else:
                    time.sleep(0.02)
        finally:
            if watch:
                watch.close()

    def _attach(self, start):
        self.path, self._fd, geo = _open_segment(self.name)
        self.geometry = geo
        self._mm = mmap.mmap(self._fd, geo.total_len, _MAP_SHARED_POPULATED, mmap.PROT_READ)
        self._cmm = mmap.mmap(
            self._fd,
            geo.control_len,
            mmap.MAP_SHARED,
            mmap.PROT_READ | mmap.PROT_WRITE,
            offset=geo.control_offset,
        )
        self._v = _Views(self._mm, self._cmm, geo)
        v = self._v
        self._checked_head()  # a header check, before liveness and before claiming an entry
        self.writer_pid = int(v.u32[H_WRITER_PID >> 2])
        self.writer_session = int(v.u64[H_WRITER_SESSION >> 3])
        if not _byte_is_locked(self._fd, WRITER_LOCK_BYTE, False):
            raise WriterGone(self.writer_pid, bool(v.u32[H_STREAM_STATE >> 2] == STATE_CLOSED))
        self._index = self._claim_entry()
        self.session = _random_u64()
        head = self._checked_head()
        tail = self._oldest_held(head)
        self.cursor = tail if start == "oldest" else max(head - 1, tail, 0)
        e = geo.reader_entry(self._index)
        now = _monotonic_ns()
        c64 = v.c64
        c64[(e + R_SESSION) >> 3] = self.session
        c64[(e + R_HEARTBEAT_NS) >> 3] = now
        c64[(e + R_ATTACHED_NS) >> 3] = now
        c64[(e + R_CURSOR) >> 3] = self.cursor
        c64[(e + R_FRAMES_READ) >> 3] = 0
        c64[(e + R_FRAMES_MISSED) >> 3] = 0
        _ordering_fence()
        v.c32[(e + R_STATE) >> 2] = READER_ACTIVE
        _fence()
        # A writer waiting for readers stores writer_waiting and then counts the table: store
        # then load on both sides, so either it sees us or we see it waiting and wake it.
        if v.c32[C_WRITER_WAITING >> 2] != 0:
            _kick(v.ctrl_addr + C_SPACE_SEQ)
        self.frames_read = 0
        self.frames_missed = 0
        self._missed_since_last = 0
        self._caps_cache = {}
        self._pinned = []
        self._last_liveness_check = time.monotonic()
        self.last = None

    def _claim_entry(self):
        """Claims a free reader entry.

        The Rust transport claims with "read-lock byte 1+i, then compare-and-swap pid 0 -> own
        pid". Python has no compare-and-swap, so two plain claimers could both see pid 0 and
        both store. Instead this takes an EXCLUSIVE lock on byte 1+i: it conflicts with every
        other claimer's lock (a Rust reader always locks before its CAS, another Python reader
        also locks exclusively), so while we hold it nobody else can be claiming entry i. Under
        the lock we check pid == 0 and store ours; after a full fence makes the store visible
        we downgrade the lock to the READ lock the protocol specifies (a lock conversion is
        atomic: the byte is never unlocked in between). A Rust claimer that locks after that
        sees our pid and its CAS fails. An entry that has a pid while we hold its lock belongs
        to a dead reader (a live one holds its read lock): we take it over, clearing its pins,
        so dead readers never fill the table."""
        v, geo, pid = self._v, self.geometry, os.getpid()
        for i in range(geo.max_readers):
            e = geo.reader_entry(i)
            lock = READER_LOCK_BASE + i
            if not _try_lock_byte(self._fd, lock, True):
                continue
            for w in range(geo.pin_words):
                v.c64[geo.pin_word(i, w) >> 3] = 0
            v.c32[(e + R_STATE) >> 2] = READER_CLAIMING
            v.c32[(e + R_PID) >> 2] = pid
            _fence()
            if not _try_lock_byte(self._fd, lock, False):  # downgrade: never fails
                raise ShmFrameError(f"could not downgrade the lock on byte {lock}")
            # readers_hwm = max(readers_hwm, i + 1). There is no atomic max here; an atomic OR
            # (by the kernel) never lowers the value and yields at least i + 1. It may overshoot
            # (up to 127); everyone clamps it to max_readers.
            if v.c32[C_READERS_HWM >> 2] < i + 1:
                _futex_op(v.ctrl_addr + C_READERS_HWM, FUTEX_OP_OR, i + 1, 0)
            return i
        raise TooManyReaders(
            f"segment {_quoted(self.name)} already has the maximum of {geo.max_readers} readers "
            f"attached"
        )

    # -- shared fields --

    def _h64(self, off):
        return int(self._v.u64[off >> 3])

    def _h32(self, off):
        return int(self._v.u32[off >> 2])

    def _checked_head(self):
        """The writer's head counter; a corrupt segment when outside its range (HEAD_LIMIT)."""
        head = self._h64(H_HEAD)
        if head >= HEAD_LIMIT:
            raise CorruptSegment("head", f"a frame count below 2^48 ({HEAD_LIMIT})", head)
        return head

    def _oldest_held(self, head):
        floor = self._h64(H_CLEAR_FLOOR)
        return min(max(head - self.geometry.depth, floor, 0), head)

    def _entry(self, field):
        return self.geometry.reader_entry(self._index) + field

    # -- public state --

    @property
    def layout(self):
        return "double" if self.geometry.layout == LAYOUT_DOUBLE else "ring"

    @property
    def depth(self):
        return self.geometry.depth

    @property
    def caps(self):
        """The writer's current caps string (None if none announced yet)."""
        return _read_caps(self._v, self._h64(H_CAPS_GEN))

    @property
    def writer_alive(self):
        return _byte_is_locked(self._fd, WRITER_LOCK_BYTE, False)

    @property
    def stream_state(self):
        return ("starting", "running", "eos", "closed")[min(self._h32(H_STREAM_STATE), 3)]

    @property
    def evictions(self):
        return self._h64_ctrl(self._entry(R_EVICTIONS))

    def _h64_ctrl(self, off):
        return int(self._v.c64[off >> 3])

    # -- reading --

    def _skip_to(self, target):
        if target > self.cursor:
            n = target - self.cursor
            self.frames_missed += n
            self._missed_since_last += n
            self.cursor = target

    def _publish_progress(self):
        v = self._v
        c64 = v.c64
        c64[self._entry(R_FRAMES_READ) >> 3] = self.frames_read
        c64[self._entry(R_FRAMES_MISSED) >> 3] = self.frames_missed
        c64[self._entry(R_HEARTBEAT_NS) >> 3] = _monotonic_ns()
        c64[self._entry(R_CURSOR) >> 3] = self.cursor
        # Store cursor, then load writer_waiting: a store-load pair that needs a full fence (the
        # writer does the mirror image: store writer_waiting, then load cursors).
        _fence()
        if v.c32[C_WRITER_WAITING >> 2] != 0:
            _kick(v.ctrl_addr + C_SPACE_SEQ)

    def _rejoin_if_evicted(self):
        v = self._v
        if v.c32[self._entry(R_STATE) >> 2] == READER_EVICTED:
            # The writer evicted us for stalling it: rejoin at the oldest frame still held. Only
            # the writer sets EVICTED (from ACTIVE) and only we leave it, so a plain store is safe.
            self._skip_to(self._oldest_held(self._checked_head()))
            v.c64[self._entry(R_CURSOR) >> 3] = self.cursor
            _fence()
            v.c32[self._entry(R_STATE) >> 2] = READER_ACTIVE

    def _locate(self, n):
        """(slot, seq, descriptor words) of frame ``n`` if its slot still holds it."""
        v, geo = self._v, self.geometry
        entry = int(v.u64[geo.index_entry(n) >> 3])
        if entry >> 16 == 0 or (entry >> 16) - 1 != n:
            return None
        slot = entry & 0xFFFF
        if slot >= geo.slot_count:
            raise CorruptSegment("index slot", f"0..{geo.slot_count}", slot)
        d = geo.desc(slot) >> 3
        s1 = int(v.u64[d])
        if s1 & 1:
            return None
        _ordering_fence()
        words = [int(x) for x in v.u64[d + 1 : d + 9]]
        frame, size = words[0], words[4]
        if frame != n:
            return None
        if size > geo.slot_capacity:
            _ordering_fence()
            if int(v.u64[d]) == s1:
                raise CorruptSegment("slot size", f"0..={geo.slot_capacity}", size)
            return None
        return slot, s1, words

    def _seq_unchanged(self, slot, s1):
        _ordering_fence()
        return int(self._v.u64[self.geometry.desc(slot) >> 3]) == s1

    def _try_read(self, n, copy):
        found = self._locate(n)
        if found is None:
            return None
        slot, s1, words = found
        size = words[4]
        off = self.geometry.slot_data(slot)
        if copy:
            data = self._v.u8[off : off + size].copy()
            # Seqlock: if the writer touched the slot while we copied, discard the copy.
            if not self._seq_unchanged(slot, s1):
                return None
        else:
            self._pin(slot)
            # Full fence between setting our pin bit and re-reading seq: the writer marks the
            # slot (seq odd) and then checks pins, so one of us sees the other.
            _fence()
            if int(self._v.u64[self.geometry.desc(slot) >> 3]) != s1:
                self._unpin(slot)
                return None
            data = self._v.u8[off : off + size]  # read-only: the mapping is PROT_READ
        _, pts, dts, duration, _, write_time, caps_gen, flags = words
        return FrameInfo(
            number=n,
            pts=_time(pts),
            dts=_time(dts),
            duration=_time(duration),
            flags=flags,
            size=size,
            caps_gen=caps_gen,
            write_time_ns=write_time,
            data=data,
        )

    def _pin(self, slot):
        off = self.geometry.pin_word(self._index, slot // 64) >> 3
        # Only this reader writes its own bitmap (and the writer, once we are dead).
        self._v.c64[off] = int(self._v.c64[off]) | (1 << (slot % 64))
        self._pinned.append(slot)

    def _unpin(self, slot):
        self._pinned.remove(slot)
        if slot in self._pinned:
            return
        off = self.geometry.pin_word(self._index, slot // 64) >> 3
        self._v.c64[off] = int(self._v.c64[off]) & ~(1 << (slot % 64)) & 0xFFFF_FFFF_FFFF_FFFF
        _fence()
        if self._v.c32[C_WRITER_WAITING >> 2] != 0:
            _kick(self._v.ctrl_addr + C_SPACE_SEQ)

    def release(self):
        """Releases the frames returned by ``read(copy=False)``: their arrays must not be used
        afterwards (the writer reuses the memory). ``read`` and ``close`` call this."""
        while self._pinned:
            self._unpin(self._pinned[-1])

    def _layout_for(self, gen):
        if gen not in self._caps_cache:
            caps = _read_caps(self._v, gen)
            layout = None
            if caps is not None:
                try:
                    layout = FrameLayout(*parse_caps(caps))
                except ValueError:
                    layout = None
            if caps is None and self._caps_cache:
                # Caps history rolled over (only 4 generations are kept): keep the latest known.
                return self._caps_cache[max(self._caps_cache)]
            self._caps_cache[gen] = (caps, layout)
        return self._caps_cache[gen]

    def read(self, timeout=None, copy=True):
        """Waits up to ``timeout`` seconds (None: forever) for the next frame and returns
        ``(frame_number, array, pts_ns)``, or None on timeout. ``pts_ns`` is an absolute
        CLOCK_MONOTONIC time (compare with ``time.clock_gettime_ns(time.CLOCK_MONOTONIC)``), or
        None if unknown. ``reader.last`` has every other field (``FrameInfo``).

        ``copy=False`` returns a read-only view into shared memory instead of a copy: the slot
        is pinned (the writer leaves it alone) until ``release()``, the next ``read`` or
        ``close``. A writer without spare slots may have to drop frames while a slot is pinned.
        A pin that leaves the writer no slot for longer than its reader timeout gets this reader
        evicted; its pins then stop counting and held views may change.

        Raises ``EndOfStream`` once every frame was read after the writer's end of stream, and
        ``WriterGone`` when the writer closed the segment or died."""
        self._check_open()
        self.release()
        deadline = None if timeout is None else time.monotonic() + timeout
        geo = self.geometry
        while True:
            self._rejoin_if_evicted()
            head = self._checked_head()
            tail = self._oldest_held(head)
            if geo.layout == LAYOUT_DOUBLE and head > 0:
                tail = max(tail, head - 1)  # latest-frame semantics
            self._skip_to(tail)
            if self.cursor < head:
                info = self._try_read(self.cursor, copy)
                if info is None:
                    self._skip_to(self.cursor + 1)  # overwritten (or torn): a miss
                    continue
                info.missed_before = self._missed_since_last
                self._missed_since_last = 0
                self.frames_read += 1
                self.cursor += 1
                self._publish_progress()
                info.caps, layout = self._layout_for(info.caps_gen)
                self.last = info
                if layout is not None and layout.size <= info.size:
                    array = layout.to_array(info.data)
                else:
                    array = info.data
                return info.number, array, info.pts
            self._publish_progress()
            state = self._h32(H_STREAM_STATE)
            now = time.monotonic()
            gone = None
            if state in (STATE_EOS, STATE_CLOSED):
                gone = state
            elif now - self._last_liveness_check >= self.WAIT_SLICE_S:
                self._last_liveness_check = now
                if not self.writer_alive:
                    gone = "dead"
            if gone is not None:
                # `head` was loaded before the state: the writer may have published more frames
                # and then ended the stream since. It changes the state only after its last
                # head store, so a head loaded now is final: read what is left first.
                _ordering_fence()
                if self._h64(H_HEAD) != head:
                    continue
                if gone == STATE_EOS:
                    raise EndOfStream(
                        f"end of stream on {self.name!r} after {self.frames_read} frames"
                    )
                raise WriterGone(self.writer_pid, gone == STATE_CLOSED)
            if deadline is not None and now >= deadline:
                return None
            remaining = self.WAIT_SLICE_S if deadline is None else deadline - now
            self._wait_for_frame(head, min(remaining, self.WAIT_SLICE_S))

    def _wait_for_frame(self, seen_head, max_s):
        v = self._v
        seq = int(v.c32[C_FRAME_SEQ >> 2])
        # frame_waiters += 1 atomically (and a full fence): the writer stores head, then loads
        # frame_waiters; we increment, then re-load head. One of us sees the other.
        _atomic_add(v.ctrl_addr + C_FRAME_WAITERS, 1)
        try:
            state = self._h32(H_STREAM_STATE)
            if state in (STATE_STARTING, STATE_RUNNING) and self._h64(H_HEAD) == seen_head:
                _futex_wait(v.ctrl_addr + C_FRAME_SEQ, seq, max_s)
        finally:
            _atomic_add(v.ctrl_addr + C_FRAME_WAITERS, -1)
        v.c64[self._entry(R_HEARTBEAT_NS) >> 3] = _monotonic_ns()

    def __iter__(self):
        """Yields ``(frame_number, array, pts_ns)`` until end of stream (or the writer goes)."""
        while True:
            try:
                got = self.read(timeout=None)
            except (EndOfStream, WriterGone):
                return
            if got is not None:
                yield got

    # -- lifetime --

    def _check_open(self):
        if self._v is None:
            raise ShmFrameError("reader is closed")

    def close(self):
        """Detaches (docs/LAYOUT.md "Detaching") and unmaps. Idempotent."""
        if self._v is not None and self._index is not None:
            v, e = self._v, self.geometry.reader_entry(self._index)
            for w in range(self.geometry.pin_words):
                v.c64[self.geometry.pin_word(self._index, w) >> 3] = 0
            self._pinned = []
            v.c32[(e + R_STATE) >> 2] = READER_CLAIMING
            v.c64[(e + R_SESSION) >> 3] = 0
            _ordering_fence()
            v.c32[(e + R_PID) >> 2] = 0
            _fence()
            _unlock_byte(self._fd, READER_LOCK_BASE + self._index)
            _kick(v.ctrl_addr + C_SPACE_SEQ)
            self._index = None
        self._release_mapping()

    def _release_mapping(self):
        self._v = None
        for m in (self._mm, self._cmm):
            if m is not None:
                try:
                    m.close()
                except BufferError:
                    pass  # a zero-copy array still refers to it; freed with that array
        self._mm = self._cmm = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._index = None


# ---------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------


class Writer(_ClosedOnExit):
    """Creates segment ``shm_name`` and publishes frames of ``format`` (a GStreamer format name,
    see ``SUPPORTED_FORMATS``) at ``width`` x ``height``.

    ``layout``: ``"ring"`` (``depth`` numbered frames, read in order by every reader) or
    ``"double"`` (latest frame only). ``backpressure`` (ring): ``"block"`` (wait for the slowest
    live reader; a dead one is detected, a stalled one evicted after ``reader_timeout`` s),
    ``"drop-oldest"`` (overwrite) or ``"drop-newest"`` (drop the incoming frame). ``perms``:
    file mode (must include 0o600). ``fps``: the frame rate (int or (num, den)) announced in
    the caps and, with ``pace`` (default), kept by ``write``, which waits until each frame is
    due, as a live source would; ``pace=False`` writes as fast as the readers allow.
    ``spare_slots``: extra slots so readers pinning frames (zero-copy) do not cost drops.
    ``wait_for_readers``: the first ``write`` waits until this many readers are attached (as
    ``shmframesink wait-for-readers``), for at most ``wait_for_readers_timeout`` seconds
    (None: for ever); readers started first then get the stream from its first frame, every
    frame under ``block``. When the timeout runs out that ``write`` raises ``ReadersMissing``
    (the frame is not published) and later ones publish without waiting.

    Fails with ``WriterExists`` (naming the pid) if a live writer holds the name, with
    ``ForeignFile`` if a non-shmframe file is in the way; a dead writer's segment is replaced.
    """

    #: Longest single sleep while blocked, so reader liveness and stalls are re-checked.
    BLOCKED_WAIT_SLICE_S = 0.02
    HOUSEKEEPING_INTERVAL_NS = 100_000_000

    def __init__(
        self,
        shm_name,
        width,
        height,
        format,  # noqa: A002 - the GStreamer word
        layout="ring",
        depth=4,
        backpressure="drop-oldest",
        perms=0o600,
        fps=30,
        spare_slots=0,
        reader_timeout=1.0,
        pace=True,
        wait_for_readers=0,
        wait_for_readers_timeout=None,
    ):
        self._fd = None
        self._mm = self._v = None
        self._closed = True
        if layout not in _LAYOUT_CODES:
            raise ValueError(f"layout must be 'ring' or 'double', got {layout!r}")
        if backpressure not in _BACKPRESSURE_CODES:
            raise ValueError(
                f"backpressure must be one of {', '.join(_BACKPRESSURE_CODES)}, "
                f"got {backpressure!r}"
            )
        if perms & ~0o777 or perms & 0o600 != 0o600:
            raise ValueError(
                f"perms {perms:o} must be an octal file mode of at most 0777 that includes 0600"
            )
        self.name = shm_name
        self.path = segment_path(shm_name)
        self.frame_layout = FrameLayout(format, width, height)
        self.caps = caps_string(format, width, height, fps)
        if len(self.caps.encode()) > CAPS_CAPACITY:
            raise ValueError(f"caps string exceeds {CAPS_CAPACITY} bytes")
        fps_num, fps_den = (fps, 1) if isinstance(fps, int) else fps
        self._duration = fps_den * 1_000_000_000 // fps_num if fps_num > 0 else NO_TIME
        self._pace = pace and self._duration != NO_TIME
        self._next_due = None
        self._readers_awaited = wait_for_readers
        self._readers_wait_timeout = wait_for_readers_timeout
        layout_code = _LAYOUT_CODES[layout]
        bp = BP_DROP_OLDEST if layout_code == LAYOUT_DOUBLE else _BACKPRESSURE_CODES[backpressure]
        depth = 2 if layout_code == LAYOUT_DOUBLE else depth
        if not 0 <= spare_slots <= MAX_SPARE_SLOTS:
            raise ValueError(
                f"spare slots {spare_slots} is out of range: expected 0..={MAX_SPARE_SLOTS}"
            )
        slots = depth + spare_slots
        self.geometry = geo = Geometry(layout_code, depth, slots, bp, self.frame_layout.size)
        self.backpressure = bp
        self.session = _random_u64()
        self._reader_timeout_ns = int(reader_timeout * 1e9)
        self._slot_frame = [None] * geo.slot_count
        self._watch = {}
        self._last_housekeeping = 0
        self._create(perms)
        self._closed = False

    # -- creation --

    def _new_temp_file(self, perms):
        """A new temporary file holding its writer lock, which tells other writers its builder
        is alive; if another writer took it for an orphan before the lock, a new one."""
        for _attempt in range(8):
            tmp = os.path.join(
                shm_dir(), f"{_TEMP_PREFIX}{self.name}-{os.getpid()}-{_random_u64():x}"
            )
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, perms)
            if _try_lock_byte(fd, WRITER_LOCK_BYTE, True) and _still_named(fd, tmp):
                return tmp, fd
            if _still_named(fd, tmp):
                os.unlink(tmp)
            os.close(fd)
        raise ShmFrameError("create a temporary segment file: it was taken away 8 times in a row")

    def _create(self, perms):
        geo = self.geometry
        _reclaim_orphaned_temp_files()
        tmp, fd = self._new_temp_file(perms)
        self._fd = fd
        try:
            os.fchmod(fd, perms)  # the umask may have narrowed the mode
            os.ftruncate(fd, geo.total_len)
            _reserve(fd, geo.total_len, tmp)
            prot = mmap.PROT_READ | mmap.PROT_WRITE
            self._mm = mmap.mmap(fd, geo.total_len, _MAP_SHARED_POPULATED, prot)
            self._v = _Views(self._mm, None, geo)
            self._init_header()
            self._publish_name(tmp)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            self._release_mapping()
            raise

    def _init_header(self):
        geo, pid = self.geometry, os.getpid()
        head = struct.pack(
            "=8sIIIIIIII" + "Q" * 12,
            MAGIC,
            LAYOUT_VERSION,
            geo.layout,
            geo.depth,
            geo.slot_count,
            geo.backpressure,
            geo.max_readers,
            geo.pin_words,
            pid,
            geo.control_offset,
            geo.control_len,
            geo.index_offset,
            geo.desc_offset,
            geo.data_offset,
            geo.slot_stride,
            geo.slot_capacity,
            geo.total_len,
            _process_start_ticks(pid),
            self.session,
            time.time_ns(),
            self._reader_timeout_ns,
        )
        assert len(head) == H_STREAM_STATE
        self._mm[0 : len(head)] = head
        self._v.u64[H_HEARTBEAT_NS >> 3] = _monotonic_ns()
        # Caps generation 1 (the file is still private: plain writes are fine).
        raw = self.caps.encode()
        base = CAPS_OFFSET + (1 % CAPS_ENTRIES) * CAPS_ENTRY_SIZE
        self._mm[base + 24 : base + 24 + len(raw)] = raw
        self._v.u64[(base + 8) >> 3] = 1
        self._v.u64[(base + 16) >> 3] = len(raw)
        self._v.u64[base >> 3] = 2  # seqlock word: even, written once
        self._v.u64[H_CAPS_GEN >> 3] = 1

    def _publish_name(self, tmp):
        """Makes the built file visible under its name without ever replacing a live writer's
        segment: ``link`` fails if the name exists (atomic no-replace, like the Rust writer's
        renameat2(RENAME_NOREPLACE))."""
        for _attempt in range(8):
            try:
                os.link(tmp, self.path)
                os.unlink(tmp)
                return
            except FileExistsError:
                pass
            if self._reclaim_if_stale(tmp):
                return
        raise ShmFrameError(f"create {self.path}: the name kept changing under us; retried 8 times")

    def _reclaim_if_stale(self, tmp):
        """True: the dead writer's segment at the path was replaced by ``tmp``. False: the path
        changed meanwhile (retry). Raises for a live writer or a foreign file."""
        try:
            fd = _open_segment_file(self.path, self.name, write=True)
        except SegmentNotFound:
            return False
        except ShmFrameError as e:
            if "permission denied" not in str(e) or _other_owner(self.path) is None:
                raise
            raise self._not_ours() from None
        try:
            pid = _segment_holder(fd, self.path)
            if not _try_lock_byte(fd, WRITER_LOCK_BYTE, True):
                raise WriterExists(self.name, pid)
            # We hold the dead writer's lock: make sure the path still names this very file.
            if not _still_named(fd, self.path):
                return False
            try:
                os.rename(tmp, self.path)
            except PermissionError:
                # The shm directory is sticky: only a file's owner (or root) may replace it.
                if _other_owner(self.path) is None:
                    raise
                owner, user = _other_owner(self.path)
                raise NotReplaceable(self.path, owner, user, True) from None
            return True
        finally:
            os.close(fd)

    def _not_ours(self):
        """Why another user's file we may not open for writing cannot be taken over: reading
        it, if allowed, tells whether a live writer holds it (as in the Rust transport)."""
        owner, user = _other_owner(self.path)
        try:
            fd = _open_segment_file(self.path, self.name, write=False)
        except ShmFrameError:
            return NotReplaceable(self.path, owner, user, False)
        try:
            pid = _segment_holder(fd, self.path)
            if _byte_is_locked(fd, WRITER_LOCK_BYTE, False):
                return WriterExists(self.name, pid)
            return NotReplaceable(self.path, owner, user, True)
        except ShmFrameError as e:
            return e
        finally:
            os.close(fd)

    # -- shared fields --

    def _h64(self, off):
        return int(self._v.u64[off >> 3])

    def _set64(self, off, value):
        self._v.u64[off >> 3] = value

    def _add64(self, off, delta=1):
        # Only the writer writes header counters: a plain read-modify-write is exact.
        self._v.u64[off >> 3] = int(self._v.u64[off >> 3]) + delta

    def _c32(self, off):
        return int(self._v.c32[off >> 2])

    def _c64(self, off):
        return int(self._v.c64[off >> 3])

    def _kick_frames(self):
        _kick(self._v.ctrl_addr + C_FRAME_SEQ)

    def _readers_hwm(self):
        return min(self._c32(C_READERS_HWM), MAX_READERS)

    # -- stats --

    @property
    def frames_written(self):
        return self._h64(H_FRAMES_WRITTEN)

    @property
    def frames_dropped(self):
        return self._h64(H_FRAMES_DROPPED)

    @property
    def full_events(self):
        return self._h64(H_FULL_EVENTS)

    @property
    def head(self):
        return self._h64(H_HEAD)

    def reader_count(self):
        """Readers currently attached (after a liveness check)."""
        self._check_readers(False)
        geo = self.geometry
        return sum(
            1
            for i in range(self._readers_hwm())
            if self._c32(geo.reader_entry(i) + R_PID) != 0
            and self._c32(geo.reader_entry(i) + R_STATE) != READER_CLAIMING
        )

    # -- backpressure --

    def _slowest_cursor(self):
        if self.geometry.layout == LAYOUT_DOUBLE:
            return None
        floor = self._h64(H_CLEAR_FLOOR)
        slowest = None
        for i in range(self._readers_hwm()):
            e = self.geometry.reader_entry(i)
            if self._c32(e + R_PID) != 0 and self._c32(e + R_STATE) == READER_ACTIVE:
                c = max(self._c64(e + R_CURSOR), floor)
                slowest = c if slowest is None else min(slowest, c)
        return slowest

    def _ring_full_for(self, n):
        depth = self.geometry.depth
        if n < depth:
            return False
        slowest = self._slowest_cursor()
        return slowest is not None and slowest <= n - depth

    def _slot_pinned(self, slot):
        geo = self.geometry
        word, bit = slot // 64, 1 << (slot % 64)
        for r in range(self._readers_hwm()):
            e = geo.reader_entry(r)
            # An evicted reader's pins do not count (docs/LAYOUT.md, eviction).
            if self._c32(e + R_PID) == 0 or self._c32(e + R_STATE) == READER_EVICTED:
                continue
            if self._c64(geo.pin_word(r, word)) & bit:
                return True
        return False

    def _free_slot(self, n):
        """A slot frame ``n`` may overwrite: not pinned, not holding a frame that stays in the
        ring after ``n`` is published (under ``block``, none a counted reader still needs)."""
        keep_from = max(n + 1 - self.geometry.depth, 0)
        slowest = self._slowest_cursor() if self.backpressure == BP_BLOCK else None

        def candidate(s):
            f = self._slot_frame[s]
            return f is None or (f < keep_from and (slowest is None or slowest > f))

        order = sorted(
            (s for s in range(len(self._slot_frame)) if candidate(s)),
            key=lambda s: -1 if self._slot_frame[s] is None else self._slot_frame[s],
        )
        for s in order:
            if not self._slot_pinned(s):
                return s
        if self.backpressure == BP_DROP_OLDEST:
            # Pins (zero-copy readers) can leave no slot outside the window: sacrifice the
            # oldest unpinned frame of the window, as a shorter ring would (readers count it
            # missed). Block waits instead; drop-newest drops.
            everything = sorted(
                range(len(self._slot_frame)),
                key=lambda s: -1 if self._slot_frame[s] is None else self._slot_frame[s],
            )
            for s in everything:
                if not self._slot_pinned(s):
                    return s
        return None

    def _wait_until(self, ready):
        """Blocks until ``ready()`` gives a value, re-checking reader liveness every slice."""
        v = self._v
        for w in self._watch.values():
            w["progress_ns"] = max(w["progress_ns"], _monotonic_ns())
        try:
            while True:
                seq = self._c32(C_SPACE_SEQ)
                v.c32[C_WRITER_WAITING >> 2] = 1
                # Store writer_waiting, then load the readers' cursors: needs a full fence (the
                # readers store their cursor, then load writer_waiting).
                _fence()
                got = ready()
                if got is not None:
                    return got
                self._check_readers(True)
                got = ready()
                if got is not None:
                    return got
                _futex_wait(v.ctrl_addr + C_SPACE_SEQ, seq, self.BLOCKED_WAIT_SLICE_S)
        finally:
            v.c32[C_WRITER_WAITING >> 2] = 0

    def wait_for_readers(self, count, timeout=None):
        """Waits until at least ``count`` live readers are attached (woken by each reader that
        attaches, in bounded slices). True once they are, False after ``timeout`` seconds
        (None: wait for ever)."""
        self._check_open()
        v = self._v
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                seq = self._c32(C_SPACE_SEQ)
                v.c32[C_WRITER_WAITING >> 2] = 1
                # Store writer_waiting, then count the readers: needs a full fence (an attaching
                # reader stores its entry, then loads writer_waiting).
                _fence()
                if self.reader_count() >= count:
                    return True
                left = self.BLOCKED_WAIT_SLICE_S
                if deadline is not None:
                    left = min(left, deadline - time.monotonic())
                    if left <= 0:
                        return False
                _futex_wait(v.ctrl_addr + C_SPACE_SEQ, seq, left)
        finally:
            v.c32[C_WRITER_WAITING >> 2] = 0

    def _await_readers(self):
        """The wait of ``wait_for_readers`` before the first frame, unless it is over."""
        wanted = self._readers_awaited
        if not wanted:
            return
        started = time.monotonic()
        all_attached = self.wait_for_readers(wanted, self._readers_wait_timeout)
        self._readers_awaited = 0
        if not all_attached:
            raise ReadersMissing(self.name, wanted, self.reader_count(), time.monotonic() - started)

    def _keep_pace(self):
        """Waits until the next frame is due at ``fps``; a writer that fell behind starts a new
        schedule from now rather than catching up in a burst."""
        now = _monotonic_ns()
        due = self._next_due
        if due is not None and now < due:
            time.sleep((due - now) / 1e9)
        else:
            due = now
        self._next_due = due + self._duration
    def _pins_in_the_way(self, reader, keep_from):
        """Whether ``reader`` pins a slot the writer could take but for pins (holding no frame,
        or one older than ``keep_from``)."""
        geo = self.geometry
        for word in range(geo.pin_words):
            bits = self._c64(geo.pin_word(reader, word))
            for s in range(word * 64, min(word * 64 + 64, len(self._slot_frame))):
                f = self._slot_frame[s]
                if bits >> (s % 64) & 1 and (f is None or f < keep_from):
                    return True
        return False

    def _check_readers(self, blocked):
        """Frees entries of dead readers (their lock is gone); when ``blocked`` (the writer
        waits, or pins leave it no slot), evicts readers that hold it up for longer than the
        reader timeout: by a cursor that does not advance (not under drop-oldest), or by pins
        that keep it from a slot (docs/LAYOUT.md, eviction)."""
        v, geo = self._v, self.geometry
        now = _monotonic_ns()
        self._last_housekeeping = now
        head, depth, floor = self._h64(H_HEAD), geo.depth, self._h64(H_CLEAR_FLOOR)
        keep_from = max(head + 1 - depth, 0)
        for i in range(self._readers_hwm()):
            e = geo.reader_entry(i)
            pid, state = self._c32(e + R_PID), self._c32(e + R_STATE)
            if pid == 0:
                self._watch.pop(i, None)
                continue
            lock = READER_LOCK_BASE + i
            if _try_lock_byte(self._fd, lock, True):
                # The reader's process is gone (the kernel dropped its lock). Our write lock
                # keeps anyone from claiming the entry meanwhile (readers looking for an entry
                # free dead ones too, under the same lock), so plain stores free it safely.
                if self._c32(e + R_PID) != 0:
                    for w in range(geo.pin_words):
                        v.c64[geo.pin_word(i, w) >> 3] = 0
                    v.c32[(e + R_STATE) >> 2] = READER_CLAIMING
                    v.c64[(e + R_SESSION) >> 3] = 0
                    _fence()
                    v.c32[(e + R_PID) >> 2] = 0
                _unlock_byte(self._fd, lock)
                self._watch.pop(i, None)
                continue
            if state == READER_CLAIMING:
                continue
            session = self._c64(e + R_SESSION)
            cursor = self._c64(e + R_CURSOR)
            w = self._watch.get(i)
            if w is None or w["known"] != (pid, session):
                w = self._watch[i] = {
                    "known": (pid, session),
                    "cursor": cursor,
                    "progress_ns": now,
                    "pins_since": None,
                }
            if cursor != w["cursor"]:
                w["cursor"], w["progress_ns"] = cursor, now
            if not self._pins_in_the_way(i, keep_from):
                w["pins_since"] = None
            elif w["pins_since"] is None:
                w["pins_since"] = now
            timeout = self._reader_timeout_ns
            behind = (
                self.backpressure != BP_DROP_OLDEST
                and head >= depth
                and max(cursor, floor) <= head - depth
            )
            stalled_behind = behind and now - w["progress_ns"] > timeout
            pins_since = w["pins_since"]
            stalled_pinning = pins_since is not None and now - pins_since > timeout
            if blocked and state == READER_ACTIVE and (stalled_behind or stalled_pinning):
                # Only the writer moves ACTIVE -> EVICTED; the reader moves it back.
                v.c32[(e + R_STATE) >> 2] = READER_EVICTED
                v.c64[(e + R_EVICTIONS) >> 3] = self._c64(e + R_EVICTIONS) + 1
                self._add64(H_READERS_EVICTED)

    # -- publishing --

    def write(self, array, pts=None, duration=None, flags=0):
        """Publishes one frame: ``array`` shaped like ``Reader.read`` returns it (packed
        formats), or ``FrameLayout.size`` raw bytes (any format; planar buffers from
        ``FrameLayout.pack``). ``pts`` defaults to CLOCK_MONOTONIC now (ns). Returns the frame
        number, or None if the frame was dropped (``drop-newest`` on a full ring, or every slot
        pinned). Waits first for the readers of ``wait_for_readers`` (the first time) and, with
        ``pace``, until the frame is due at ``fps``."""
        self._check_open()
        # Refused before a slot is taken, so a wrong array costs no frame already held.
        array = self.frame_layout.checked(array)
        self._await_readers()
        if self._pace:
            self._keep_pace()
        geo = self.geometry
        if _monotonic_ns() - self._last_housekeeping >= self.HOUSEKEEPING_INTERVAL_NS:
            self._check_readers(False)
        n = self._h64(H_HEAD)
        full = self._ring_full_for(n)
        if full and self.backpressure == BP_DROP_NEWEST:
            self._count_full()
            self._add64(H_FRAMES_DROPPED)
            return None
        if full and self.backpressure == BP_BLOCK:
            self._count_full()
        while True:
            slot = None if full else self._free_slot(n)
            if slot is None and self.backpressure == BP_BLOCK:
                # Full ring, or every slot pinned: wait for readers (evicting stalled ones).
                slot = self._wait_until(
                    lambda: None if self._ring_full_for(n) else self._free_slot(n)
                )
            elif slot is None and full:
                slot = self._free_slot(n)  # drop-oldest / double: overwrite
            if slot is None:
                # Pins leave no slot: evict readers whose pins have done so for too long.
                self._check_readers(True)
                slot = self._free_slot(n)
            if slot is None:
                self._add64(H_FRAMES_DROPPED)
                return None
            d = geo.desc(slot) >> 3
            seq = int(self._v.u64[d])
            # Mark the slot as being written, then re-check pins: a reader pins by setting its
            # bit and then checking seq; the full fence orders our store before our loads.
            self._v.u64[d] = seq | 1
            _fence()
            if self._slot_pinned(slot):
                self._v.u64[d] = (seq | 1) + 1
                continue
            break
        self._slot_frame[slot] = None
        try:
            off = geo.slot_data(slot)
            self.frame_layout.write_into(array, self._v.u8[off : off + geo.slot_capacity])
        except BaseException:
            # Give the slot back unpublished (as the Rust writer's release()).
            self._v.u64[d + 1] = NO_TIME
            _ordering_fence()
            self._v.u64[d] = (seq | 1) + 1
            raise
        now = _monotonic_ns()
        self._v.u64[d + 1 : d + 9] = np.array(
            [
                n,
                now if pts is None else pts,
                NO_TIME,
                self._duration if duration is None else duration,
                self.frame_layout.size,
                now,
                self._h64(H_CAPS_GEN),
                flags,
            ],
            dtype=np.uint64,
        )
        _ordering_fence()
        self._v.u64[d] = (seq | 1) + 1  # even again: the slot is complete
        _ordering_fence()
        self._v.u64[geo.index_entry(n) >> 3] = ((n + 1) << 16) | slot
        self._slot_frame[slot] = n
        self._set64(H_HEARTBEAT_NS, now)
        self._add64(H_FRAMES_WRITTEN)
        if int(self._v.u32[H_STREAM_STATE >> 2]) != STATE_RUNNING:
            self._v.u32[H_STREAM_STATE >> 2] = STATE_RUNNING
        _ordering_fence()
        self._set64(H_HEAD, n + 1)
        # Always wake (one system call, an atomic bump of frame_seq): checking frame_waiters
        # first would need a full fence after the head store, which costs the same.
        self._kick_frames()
        if full and self.backpressure == BP_DROP_OLDEST:
            self._count_full()
        self._v.u32[H_FULL >> 2] = 1 if self._ring_full_for(n + 1) else 0
        return n

    def _count_full(self):
        self._add64(H_FULL_EVENTS)
        self._v.u32[H_FULL >> 2] = 1

    def clear(self):
        """Empties the ring: every reader skips to the next frame written (counting the skipped
        frames as missed)."""
        self._check_open()
        self._set64(H_CLEAR_FLOOR, self._h64(H_HEAD))
        self._v.u32[H_FULL >> 2] = 0
        _fence()
        self._kick_frames()

    def end_of_stream(self):
        """Readers get ``EndOfStream`` once they have read every frame."""
        self._check_open()
        self._v.u32[H_STREAM_STATE >> 2] = STATE_EOS
        _fence()
        self._kick_frames()

    # -- lifetime --

    def _check_open(self):
        if self._closed:
            raise ShmFrameError("writer is closed")

    def close(self):
        """Marks the stream closed (unless it ended with EOS: readers still draining must see
        EOS) and removes the name if it still names our segment. Idempotent."""
        if self._closed:
            return
        self._closed = True
        v = self._v
        if int(v.u32[H_STREAM_STATE >> 2]) != STATE_EOS:
            v.u32[H_STREAM_STATE >> 2] = STATE_CLOSED
            _fence()
        self._kick_frames()
        _kick(v.ctrl_addr + C_SPACE_SEQ)
        try:
            st_ours = os.fstat(self._fd)
            st_path = os.stat(self.path)
            if (st_ours.st_dev, st_ours.st_ino) == (st_path.st_dev, st_path.st_ino):
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._release_mapping()

    def _release_mapping(self):
        self._v = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass
            self._mm = None
        if self._fd is not None:
            os.close(self._fd)  # releases the writer lock
            self._fd = None


def crc32(data):
    """CRC-32 (zlib) of a buffer or array's bytes, as the interop tests use."""
    return zlib.crc32(np.ascontiguousarray(data).reshape(-1).view(np.uint8)) & 0xFFFFFFFF
