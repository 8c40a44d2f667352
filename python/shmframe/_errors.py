"""The exceptions of shmframe. Their texts are the Rust transport's error messages (its
``Display``), raised by the compiled module with the fields below set."""

from typing import Optional


class ShmFrameError(Exception):
    """Base class of every error this package raises."""


class InvalidName(ShmFrameError, ValueError):
    """The shm-name is not a valid segment name."""

    name: str


class InvalidConfig(ShmFrameError, ValueError):
    """A writer setting is out of range (depth, spare slots, perms, frame size, caps)."""


class SegmentNotFound(ShmFrameError, FileNotFoundError):
    """No segment of that name exists (yet)."""

    name: str


class ForeignFile(ShmFrameError):
    """A file exists at the path but is not a shmframe segment (it is never modified)."""

    path: Optional[str]


class NotAFile(ShmFrameError):
    """Something other than a regular file is at the path (it is never modified)."""

    path: str
    what: str


class NotReplaceable(ShmFrameError):
    """Another user's file at the path that this process may not take over."""

    path: str
    owner: int
    user: int
    stale: bool


class SparseSegment(ShmFrameError):
    """A segment file with holes: mapping it would fill the shm file system."""

    path: str
    size: int
    allocated: int


class VersionMismatch(ShmFrameError):
    """The segment has a layout version this build does not speak."""

    expected: int
    found: int


class CorruptSegment(ShmFrameError):
    """A header (or shared) field holds an impossible value."""

    field: str
    expected: str
    found: int


class TruncatedSegment(ShmFrameError):
    """The segment file is shorter than its header says."""

    field: str
    expected: int
    found: int


class PermissionDenied(ShmFrameError, PermissionError):
    """The segment's permissions do not let this process attach."""

    path: str


class WrongWriter(ShmFrameError, PermissionError):
    """The segment belongs to another user than the ``writer_uid`` the reader requires."""

    path: str
    expected: int
    found: int


class WriterExists(ShmFrameError):
    """A live writer holds the name."""

    name: str
    pid: int


class TooManyReaders(ShmFrameError):
    """The segment's reader table is full."""

    name: str
    max: int


class NoSpace(ShmFrameError, OSError):
    """The shm file system has less room than the segment needs."""

    directory: str
    needed: int
    available: int


class ReadersMissing(ShmFrameError, TimeoutError):
    """The writer waited for ``wanted`` readers before its first frame and only ``attached``
    came in time; it publishes from now on without waiting."""

    name: str
    wanted: int
    attached: int


class EndOfStream(ShmFrameError):
    """The writer ended the stream and every frame was read."""


class WriterGone(ShmFrameError):
    """The writer closed the segment (``clean``) or died. Open the name again to follow a new
    writer."""

    pid: int
    clean: bool


# Shown (in tracebacks and reprs) as the package's: they are all exported there.
for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, ShmFrameError):
        _cls.__module__ = "shmframe"
