"""shmframe for Python: read and write shmframe shared-memory video segments with numpy.

A shmframe segment (``/dev/shm/<name>``) carries raw video frames from one writer process to
any number of reader processes; ``shmframesink`` and ``shmframesrc`` are its GStreamer
elements. This package is the project's Rust transport compiled for Python (the protocol has
one implementation), with frames as numpy arrays shaped from the caps. See docs/PYTHON.md.

Reading::

    with shmframe.Reader("cam0", start="newest", wait=5.0) as reader:
        for number, frame, pts_ns in reader:        # until end of stream
            print(number, frame.shape, reader.frames_missed)

Writing::

    with shmframe.Writer("cam1", 640, 480, "RGB", backpressure="block") as writer:
        writer.write(np.zeros((480, 640, 3), np.uint8))
        with writer.frame() as frame:               # drawn straight into shared memory
            frame[...] = 255
        writer.end_of_stream()
"""

import time
import zlib
from types import TracebackType
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple, Type, Union

import numpy as np
import numpy.typing as npt

from . import _native
from ._errors import (
    CorruptSegment,
    EndOfStream,
    ForeignFile,
    InvalidConfig,
    InvalidName,
    NoSpace,
    ReadersMissing,
    NotAFile,
    NotReplaceable,
    PermissionDenied,
    SegmentNotFound,
    ShmFrameError,
    SparseSegment,
    TooManyReaders,
    TruncatedSegment,
    VersionMismatch,
    WriterExists,
    WriterGone,
    WrongWriter,
)
from ._layout import SUPPORTED_FORMATS, Fps, FrameLayout, Plane, caps_string, parse_caps
from ._native import (
    LAYOUT_VERSION,
    MAX_DEPTH,
    MAX_NAME_LEN,
    MAX_READERS,
    MAX_SLOT_CAPACITY,
    MAX_SPARE_SLOTS,
    segment_path,
)

__all__ = [
    "Reader",
    "Writer",
    "WriterFrame",
    "FrameLayout",
    "FrameInfo",
    "Geometry",
    "Plane",
    "parse_caps",
    "caps_string",
    "segment_path",
    "crc32",
    "SUPPORTED_FORMATS",
    "LAYOUT_VERSION",
    "MAX_DEPTH",
    "MAX_SPARE_SLOTS",
    "MAX_READERS",
    "MAX_SLOT_CAPACITY",
    "MAX_NAME_LEN",
    "ShmFrameError",
    "InvalidName",
    "InvalidConfig",
    "SegmentNotFound",
    "ForeignFile",
    "NotAFile",
    "NotReplaceable",
    "SparseSegment",
    "VersionMismatch",
    "CorruptSegment",
    "TruncatedSegment",
    "PermissionDenied",
    "WriterExists",
    "TooManyReaders",
    "NoSpace",
    "ReadersMissing",
    "EndOfStream",
    "WriterGone",
    "WrongWriter",
]

def crc32(data: npt.ArrayLike) -> int:
    """CRC-32 (zlib) of a buffer or array's bytes, in memory order."""
    return zlib.crc32(np.ascontiguousarray(data).reshape(-1).view(np.uint8).data) & 0xFFFFFFFF


#: What ``Reader.read`` returns: ``(frame_number, array, pts_ns)``.
Frame = Tuple[int, np.ndarray, Optional[int]]


class Geometry(NamedTuple):
    """How a segment is laid out (docs/LAYOUT.md), fixed by its writer: ``layout`` (``"ring"``
    or ``"double"``), ``depth`` (frames a reader can be behind), ``slot_count`` (``depth`` plus
    ``spare_slots``), ``backpressure`` (``"block"``, ``"drop-oldest"`` or ``"drop-newest"``),
    ``slot_capacity`` (the largest frame in bytes), ``slot_stride`` (bytes from one slot to the
    next), ``max_readers`` and ``segment_size`` (bytes)."""

    layout: str
    depth: int
    slot_count: int
    spare_slots: int
    backpressure: str
    slot_capacity: int
    slot_stride: int
    max_readers: int
    segment_size: int


class FrameInfo:
    """Everything known about the last frame read (``Reader.last``). Times in ns on
    CLOCK_MONOTONIC; None when the writer did not know them. ``data`` is the raw frame (1-D
    uint8; for ``read(copy=False)`` a read-only view that keeps the frame pinned)."""

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

    number: int
    pts: Optional[int]
    dts: Optional[int]
    duration: Optional[int]
    flags: int
    size: int
    caps_gen: int
    caps: Optional[str]
    write_time_ns: int
    missed_before: int
    data: np.ndarray

    def __repr__(self) -> str:
        return (
            f"FrameInfo(number={self.number}, pts={self.pts}, size={self.size}, "
            f"caps_gen={self.caps_gen}, missed_before={self.missed_before})"
        )


class Reader:
    """Attaches to segment ``shm_name`` as a reader with its own cursor.

    ``start``: ``"newest"`` (the newest complete frame) or ``"oldest"`` (the oldest one the
    segment still holds). ``wait``: seconds to wait for the segment (and a live writer) to
    appear instead of raising ``SegmentNotFound`` / ``WriterGone`` at once. ``writer_uid``:
    the only user whose segment is accepted (None: any user the segment's permissions admit);
    a segment of another user raises ``WrongWriter``, so a reader that may read other users'
    segments (root) never follows someone else's writer by accident.
    """

    name: str
    path: str

    def __init__(
        self,
        shm_name: str,
        start: str = "newest",
        wait: float = 0.0,
        writer_uid: Optional[int] = None,
    ) -> None:
        self._native: Optional[_native.Reader] = None
        self.name = shm_name
        self.path = segment_path(shm_name)
        self._last: "Optional[Tuple[_native.InfoTuple, Optional[str], _native.Buffer]]" = None
        self._layouts: Dict[int, Tuple[Optional[str], Optional[FrameLayout]]] = {}
        self._native = _native.Reader(shm_name, start, float(wait), writer_uid)

    def _open(self) -> _native.Reader:
        if self._native is None or self._native.closed:
            raise ShmFrameError("reader is closed")
        return self._native

    def _layout_for(self, caps_gen: int) -> Tuple[Optional[str], Optional[FrameLayout]]:
        known = self._layouts.get(caps_gen)
        if known is not None:
            return known
        caps = self._open().caps_of(caps_gen)
        if caps is None and self._layouts:
            # The header keeps 4 caps generations: keep using the newest one known.
            return self._layouts[max(self._layouts)]
        layout = None
        if caps is not None:
            try:
                layout = FrameLayout(*parse_caps(caps))
            except ValueError:
                layout = None  # not raw video of a known format: frames stay 1-D bytes
        self._layouts[caps_gen] = (caps, layout)
        return caps, layout

    def read(self, timeout: Optional[float] = None, copy: bool = True) -> Optional[Frame]:
        """Waits up to ``timeout`` seconds (None: forever) for the next frame and returns
        ``(frame_number, array, pts_ns)``, or None on timeout. The GIL is released while
        waiting. ``reader.last`` has every other field (``FrameInfo``).

        ``copy=False`` returns a read-only array over the frame's slot in shared memory
        instead of a copy: the slot stays pinned (the writer leaves it alone) until that array
        and every view of it are garbage-collected.

        Raises ``EndOfStream`` once every frame was read after the writer's end of stream, and
        ``WriterGone`` when the writer closed the segment or died."""
        # Our reference to the last frame goes first: a zero-copy one would stay pinned for
        # the whole wait.
        self._last = None
        got = self._open().read(timeout, copy)
        if got is None:
            return None
        meta, buf = got
        caps_gen = meta[6]
        known = self._layouts.get(caps_gen)
        caps, layout = known if known is not None else self._layout_for(caps_gen)
        # FrameInfo (and its 1-D view of the bytes) is made when `last` is asked for: most
        # loops never do. The buffer keeps a zero-copy frame pinned meanwhile.
        self._last = (meta, caps, buf)
        if layout is None or layout.size > meta[5]:
            return meta[0], np.frombuffer(buf, np.uint8), meta[1]
        as_is = layout.contiguous_shape
        if as_is is not None:
            # The cheapest view: one array straight over the buffer.
            return meta[0], np.frombuffer(buf, layout.dtype, as_is[1]).reshape(as_is[0]), meta[1]
        return meta[0], layout.to_array(np.frombuffer(buf, np.uint8)), meta[1]

    @property
    def last(self) -> Optional[FrameInfo]:
        """Everything about the last frame read (None before the first, and once ``release``
        or the next ``read`` began)."""
        if self._last is None:
            return None
        (number, pts, dts, duration, flags, size, caps_gen, write_time, missed), caps, buf = (
            self._last
        )
        data = np.frombuffer(buf, np.uint8)
        info = FrameInfo()
        info.number, info.pts, info.dts, info.duration = number, pts, dts, duration
        info.flags, info.size, info.caps_gen, info.caps = flags, size, caps_gen, caps
        info.write_time_ns, info.missed_before, info.data = write_time, missed, data
        return info

    def release(self) -> None:
        """Drops the reader's own reference to the last frame (``reader.last``): a zero-copy
        frame's pin is released once that and every array of the frame are garbage-collected
        (``del frame``). ``read`` does this first."""
        self._last = None

    def __iter__(self) -> Iterator[Frame]:
        """Yields ``(frame_number, array, pts_ns)`` until end of stream (or the writer goes)."""
        while True:
            try:
                got = self.read(timeout=None)
            except (EndOfStream, WriterGone):
                return
            if got is not None:
                yield got

    @property
    def layout(self) -> str:
        """``"ring"`` or ``"double"``."""
        return self._open().layout

    @property
    def depth(self) -> int:
        return self._open().depth

    @property
    def geometry(self) -> "Geometry":
        """How the writer laid the segment out (``Geometry``)."""
        return Geometry(*self._open().geometry)

    @property
    def caps(self) -> Optional[str]:
        """The writer's current caps string (None if none was announced yet)."""
        return self._open().caps

    @property
    def frames_read(self) -> int:
        return self._open().frames_read

    @property
    def frames_missed(self) -> int:
        """Frames the writer overwrote before this reader got to them (and copies discarded as
        torn)."""
        return self._open().frames_missed

    @property
    def evictions(self) -> int:
        """How many times a ``block`` writer evicted this reader for stalling it."""
        return self._open().evictions

    @property
    def cursor(self) -> int:
        """The number of the next frame this reader reads."""
        return self._open().cursor

    @property
    def session(self) -> int:
        return self._open().session

    @property
    def writer_pid(self) -> int:
        return self._open().writer_pid

    @property
    def writer_session(self) -> int:
        return self._open().writer_session

    @property
    def writer_alive(self) -> bool:
        return self._open().writer_alive

    @property
    def stream_state(self) -> str:
        """``"starting"``, ``"running"``, ``"eos"`` or ``"closed"``."""
        return self._open().stream_state

    @property
    def closed(self) -> bool:
        return self._native is None or self._native.closed

    def close(self) -> None:
        """Detaches. Idempotent. Zero-copy arrays still alive keep their frames pinned (and the
        reader's table entry taken) until they are collected."""
        if self._native is not None:
            self._native.close()
        self._last = None

    def __enter__(self) -> "Reader":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()


_LAYOUTS = ("ring", "double")
_BACKPRESSURES = ("block", "drop-oldest", "drop-newest")


class Writer:
    """Creates segment ``shm_name`` and publishes frames of ``format`` (a GStreamer format name,
    see ``SUPPORTED_FORMATS``) at ``width`` x ``height``.

    ``layout``: ``"ring"`` (``depth`` numbered frames, read in order by every reader) or
    ``"double"`` (latest frame only). ``backpressure`` (ring): ``"block"`` (wait for the slowest
    live reader; a dead one is detected, a stalled one evicted after ``reader_timeout`` s),
    ``"drop-oldest"`` (overwrite) or ``"drop-newest"`` (drop the incoming frame). ``perms``:
    file mode (must include 0o600). ``fps``: announced frame rate (int or (num, den)).
    ``spare_slots``: extra slots so readers pinning frames (zero-copy) do not cost drops.
    ``pace``: ``write`` waits until each frame is due at ``fps``, as a live source would
    (``False``: as fast as the readers allow). ``wait_for_readers``: the first ``write`` (or
    ``frame()``) waits until this many readers are attached, for at most
    ``wait_for_readers_timeout`` seconds (None: for ever), then raises ``ReadersMissing``.

    Fails with ``WriterExists`` (naming the pid) if a live writer holds the name, with
    ``ForeignFile`` if a non-shmframe file is in the way; a dead writer's segment is replaced.
    """

    name: str
    path: str
    frame_layout: FrameLayout
    caps: str

    def __init__(
        self,
        shm_name: str,
        width: int,
        height: int,
        format: str,  # noqa: A002 - the GStreamer word
        layout: str = "ring",
        depth: int = 4,
        backpressure: str = "drop-oldest",
        perms: int = 0o600,
        fps: Fps = 30,
        spare_slots: int = 0,
        reader_timeout: float = 1.0,
        pace: bool = True,
        wait_for_readers: int = 0,
        wait_for_readers_timeout: Optional[float] = None,
    ) -> None:
        self._native: Optional[_native.Writer] = None
        if layout not in _LAYOUTS:
            raise ValueError(f"layout must be 'ring' or 'double', got {layout!r}")
        if backpressure not in _BACKPRESSURES:
            raise ValueError(
                f"backpressure must be one of {', '.join(_BACKPRESSURES)}, got {backpressure!r}"
            )
        self.name = shm_name
        self.path = segment_path(shm_name)
        self.frame_layout = FrameLayout(format, width, height)
        self.caps = caps_string(format, width, height, fps)
        fps_num, fps_den = (fps, 1) if isinstance(fps, int) else fps
        self._duration = fps_den * 1_000_000_000 // fps_num if fps_num > 0 else None
        self._pace = pace and self._duration is not None
        self._next_due: Optional[int] = None
        self._awaiting_readers = wait_for_readers > 0
        self._native = _native.Writer(
            shm_name,
            self.frame_layout.size,
            layout,
            depth,
            backpressure,
            perms,
            spare_slots,
            float(reader_timeout),
            wait_for_readers,
            None if wait_for_readers_timeout is None else float(wait_for_readers_timeout),
            # In the segment from its creation: no reader ever finds it without caps.
            self.caps,
        )
        fl = self.frame_layout
        # Arrays `write` hands over as they are: the frame's own shape and dtype, unpadded.
        self._as_is = (fl.shape, fl.dtype) if fl.packed and not fl.padded else None

    def _open(self) -> _native.Writer:
        if self._native is None or self._native.closed:
            raise ShmFrameError("writer is closed")
        return self._native

    def _keep_pace(self) -> None:
        """The waits before a frame: the first time for the readers of ``wait_for_readers``,
        and with ``pace`` until the frame is due at ``fps`` (a writer that fell behind starts
        a new schedule from now rather than catching up in a burst)."""
        if self._awaiting_readers:
            self._open().await_readers()
            self._awaiting_readers = False
        if not self._pace or self._duration is None:
            return
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        due = self._next_due
        if due is not None and now < due:
            time.sleep((due - now) / 1e9)
        else:
            due = now
        self._next_due = due + self._duration

    def _times(self, pts: Optional[int], duration: Optional[int]) -> Tuple[int, Optional[int]]:
        if pts is None:
            pts = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        return pts, self._duration if duration is None else duration

    def _refuse(self, a: np.ndarray) -> ValueError:
        fl = self.frame_layout
        want = (
            f"an array of shape {fl.shape} ({fl.dtype})" if fl.packed else "a 1-D uint8 buffer"
        )
        return ValueError(
            f"a {fl.format} {fl.width}x{fl.height} frame must be {want} or {fl.size} raw "
            f"bytes; got shape {a.shape} ({a.dtype}, {a.nbytes} bytes)"
        )

    def write(
        self,
        array: Union[npt.ArrayLike, bytes, bytearray, memoryview],
        pts: Optional[int] = None,
        duration: Optional[int] = None,
        flags: int = 0,
    ) -> Optional[int]:
        """Publishes one frame: ``array`` shaped and typed as ``Reader.read`` returns it
        (packed formats), or the raw frame: ``FrameLayout.size`` bytes (a bytes-like object or
        a 1-D uint8 array; planar buffers from ``FrameLayout.pack``). ``pts`` defaults to
        CLOCK_MONOTONIC now (ns), ``duration`` to one frame at ``fps``. Waits (GIL released)
        under ``block``. Returns the frame number, or None if the frame was dropped."""
        writer = self._open()
        as_is = self._as_is
        if (
            as_is is not None
            and type(array) is np.ndarray
            and array.shape == as_is[0]
            and array.dtype == as_is[1]
            and array.flags.c_contiguous
        ):
            # The common case, checked in as few steps as possible: per frame they count.
            if self._pace or self._awaiting_readers:
                self._keep_pace()
            if pts is None:
                pts = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            if duration is None:
                duration = self._duration
            if array.dtype.itemsize == 1:
                return writer.write(array, pts, duration, flags)
            return writer.write(array.reshape(-1).view(np.uint8), pts, duration, flags)
        fl = self.frame_layout
        if isinstance(array, (bytes, bytearray, memoryview)):
            a = np.frombuffer(array, np.uint8)
        else:
            a = np.asarray(array)
        if fl.packed and a.shape == fl.shape:
            same_width_uint = a.dtype.kind == "u" and a.dtype.itemsize == fl.dtype.itemsize
            if a.dtype != fl.dtype and not same_width_uint:
                raise TypeError(f"{fl.format} frames are {fl.dtype} arrays, got {a.dtype}")
            if a.dtype == fl.dtype and not fl.padded and a.flags.c_contiguous:
                self._keep_pace()
                pts, duration = self._times(pts, duration)
                return writer.write(a.reshape(-1).view(np.uint8), pts, duration, flags)
            # Padded rows or another byte order: numpy lays the pixels out in the slot.
            with self.frame(pts, duration, flags) as dst:
                dst[...] = a
            return self._last_frame
        if a.ndim == 1 and a.dtype == np.uint8 and a.size == fl.size:
            self._keep_pace()
            pts, duration = self._times(pts, duration)
            return writer.write(np.ascontiguousarray(a), pts, duration, flags)
        raise self._refuse(a)

    def frame(
        self, pts: Optional[int] = None, duration: Optional[int] = None, flags: int = 0
    ) -> "WriterFrame":
        """``with writer.frame() as arr:`` draws the next frame straight into its slot in
        shared memory (zero-copy). ``arr`` is shaped as ``write`` takes it (a 1-D buffer for
        planar formats: see ``FrameLayout.split``) and holds what the slot held before: write
        every pixel. The frame is published when the block ends, discarded if it raises; the
        array must not be used afterwards. ``pts``, ``duration`` as in ``write``."""
        return WriterFrame(self, pts, duration, flags)

    _last_frame: Optional[int] = None

    def clear(self) -> None:
        """Empties the ring: every reader skips to the next frame written (counting the skipped
        frames as missed)."""
        self._open().clear()

    def end_of_stream(self) -> None:
        """Readers get ``EndOfStream`` once they have read every frame."""
        self._open().end_of_stream()

    def wait_for_readers(self, count: int = 1, timeout: Optional[float] = None) -> bool:
        """Waits (GIL released) up to ``timeout`` seconds (None: forever) until at least
        ``count`` readers are attached; False on timeout."""
        return self._open().wait_for_readers(count, timeout)

    def reader_count(self) -> int:
        """Readers currently attached (after a liveness check)."""
        return self._open().reader_count()

    def readers(self) -> List[Dict[str, Union[int, bool]]]:
        """The readers attached now, one dict each: ``index`` (table entry), ``pid``,
        ``cursor``, ``lag``, ``frames_read``, ``frames_missed``, ``evicted``, ``pinned_slots``
        (slots it holds pinned: zero-copy frames)."""
        return self._open().readers()

    @property
    def frames_written(self) -> int:
        return self._open().frames_written

    @property
    def frames_dropped(self) -> int:
        return self._open().frames_dropped

    @property
    def full_events(self) -> int:
        """Frames that found the ring full: one per write, however long it waited."""
        return self._open().full_events

    @property
    def readers_evicted(self) -> int:
        return self._open().readers_evicted

    @property
    def head(self) -> int:
        """Frames published so far: the number of the next frame."""
        return self._open().head

    @property
    def geometry(self) -> "Geometry":
        """How this writer laid its segment out (``Geometry``)."""
        return Geometry(*self._open().geometry)

    @property
    def closed(self) -> bool:
        return self._native is None or self._native.closed

    def close(self) -> None:
        """Marks the stream closed (unless it ended with EOS: readers still draining must see
        EOS) and removes the name if it still names our segment. After EOS it first waits
        (GIL released, at most ``reader_timeout``) for attached readers to read to the end.
        Idempotent."""
        if self._native is not None:
            self._native.close()

    def __enter__(self) -> "Writer":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()


class WriterFrame:
    """The context manager of ``Writer.frame()``. After the block, ``number`` is the frame's
    number (None if it was dropped or discarded)."""

    number: Optional[int]

    def __init__(
        self, writer: Writer, pts: Optional[int], duration: Optional[int], flags: int
    ) -> None:
        self._writer = writer
        self._pts: Optional[int] = pts
        self._duration: Optional[int] = duration
        self._flags = flags
        self._leased = False
        self._array: Optional[np.ndarray] = None
        self.number = None

    def __enter__(self) -> np.ndarray:
        fl = self._writer.frame_layout
        native = self._writer._open()
        self._writer._keep_pace()
        # The frame's default pts is when it is due: before the slot is waited for, as `write`.
        self._pts, self._duration = self._writer._times(self._pts, self._duration)
        slot = native.lease(fl.size)
        self._leased = slot is not None
        if slot is None:
            # Dropped (drop-newest, full ring): the caller draws into scratch memory.
            buf = np.zeros(fl.size, np.uint8)
        else:
            buf = np.frombuffer(memoryview(slot), np.uint8)
            fl.zero_padding(buf)
        self._array = fl.to_array(buf)
        return self._array

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self._array is not None:
            self._array.flags.writeable = False
            self._array = None
        if not self._leased:
            self.number = None
        elif exc_type is None:
            self.number = self._writer._open().publish(self._pts, self._duration, self._flags)
        else:
            self._writer._open().discard()
        self._writer._last_frame = self.number
