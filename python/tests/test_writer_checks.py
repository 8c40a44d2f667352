"""What Writer.write and Writer.frame() accept, what they refuse (with which words), and the
zero-copy write: drawing straight into a slot."""

import numpy as np
import pytest
from helpers import pattern, read_frame

import shmframe


@pytest.fixture
def rgb(shm_name):
    """A 5x3 RGB writer (rows of 15 bytes padded to 16) and a reader of it."""
    with shmframe.Writer(shm_name, 5, 3, "RGB", depth=4, pace=False) as writer, shmframe.Reader(
        shm_name, start="oldest"
    ) as reader:
        yield writer, reader


@pytest.mark.parametrize(
    "array,text",
    [
        (
            np.zeros((5, 3, 3), np.uint8),
            "a RGB 5x3 frame must be an array of shape (3, 5, 3) (uint8) or 48 raw bytes; "
            "got shape (5, 3, 3) (uint8, 45 bytes)",
        ),
        (
            np.zeros(45, np.uint8),
            "a RGB 5x3 frame must be an array of shape (3, 5, 3) (uint8) or 48 raw bytes; "
            "got shape (45,) (uint8, 45 bytes)",
        ),
        (
            np.zeros((3, 16), np.uint8),  # 48 bytes, but not a frame's shape
            "a RGB 5x3 frame must be an array of shape (3, 5, 3) (uint8) or 48 raw bytes; "
            "got shape (3, 16) (uint8, 48 bytes)",
        ),
        (
            np.zeros(12, np.float32),  # 48 bytes of floats
            "a RGB 5x3 frame must be an array of shape (3, 5, 3) (uint8) or 48 raw bytes; "
            "got shape (12,) (float32, 48 bytes)",
        ),
        (
            b"\0" * 47,
            "a RGB 5x3 frame must be an array of shape (3, 5, 3) (uint8) or 48 raw bytes; "
            "got shape (47,) (uint8, 47 bytes)",
        ),
    ],
)
def test_a_frame_of_the_wrong_shape_is_refused_and_nothing_is_published(rgb, array, text):
    writer, reader = rgb
    with pytest.raises(ValueError) as refused:
        writer.write(array)
    assert str(refused.value) == text
    assert writer.head == 0 and reader.read(timeout=0.05) is None


def test_a_frame_of_the_wrong_dtype_is_refused(rgb):
    writer, reader = rgb
    with pytest.raises(TypeError) as refused:
        writer.write(np.zeros((3, 5, 3), np.float64))
    assert str(refused.value) == "RGB frames are uint8 arrays, got float64"
    assert writer.head == 0


def test_planar_frames_are_raw_bytes_of_their_size(shm_name):
    with shmframe.Writer(shm_name, 4, 2, "I420", pace=False) as writer:
        fl = writer.frame_layout
        with pytest.raises(ValueError) as refused:
            writer.write(np.zeros((2, 4), np.uint8))
        assert str(refused.value) == (
            f"a I420 4x2 frame must be a 1-D uint8 buffer or {fl.size} raw bytes; "
            "got shape (2, 4) (uint8, 8 bytes)"
        )
        planes = {"Y": np.full((2, 4), 16, np.uint8), "U": [[1, 2]], "V": [[3, 4]]}
        assert writer.write(fl.pack(planes)) == 0


def test_non_contiguous_arrays_of_the_right_shape_are_accepted(rgb):
    writer, reader = rgb
    fl = writer.frame_layout
    big = np.ascontiguousarray(fl.to_array(pattern(fl, 3)))
    strided = np.zeros((3, 10, 3), np.uint8)[:, ::2]
    strided[...] = big
    assert not strided.flags.c_contiguous
    assert writer.write(strided) == 0
    assert reader.read(timeout=5) is not None
    assert reader.last.data.tobytes() == pattern(fl, 3).tobytes()  # padding zeroed too


def test_drawing_in_place_publishes_when_the_block_ends(rgb):
    writer, reader = rgb
    fl = writer.frame_layout
    frame = writer.frame(pts=77, flags=5)
    with frame as dst:
        assert dst.shape == (3, 5, 3) and dst.flags.writeable
        assert reader.read(timeout=0.05) is None  # not published yet
        dst[...] = fl.to_array(pattern(fl, 9))
    assert frame.number == 0
    assert not dst.flags.writeable, "the slot's array stays writable after publishing"
    number, array, pts = read_frame(reader)
    assert (number, pts, reader.last.flags) == (0, 77, 5)
    assert reader.last.data.tobytes() == pattern(fl, 9).tobytes()


def test_an_exception_while_drawing_discards_the_frame(rgb):
    writer, reader = rgb
    with pytest.raises(RuntimeError, match="drawing failed"):
        with writer.frame() as dst:
            dst[...] = 1
            raise RuntimeError("drawing failed")
    assert writer.head == 0 and writer.frames_written == 0
    assert reader.read(timeout=0.05) is None
    assert writer.write(np.full((3, 5, 3), 2, np.uint8)) == 0  # the slot was given back
    assert read_frame(reader)[1].tolist() == np.full((3, 5, 3), 2).tolist()


def test_writing_while_a_frame_is_drawn_is_refused(rgb):
    writer, _ = rgb
    with writer.frame() as dst:
        with pytest.raises(shmframe.ShmFrameError) as refused:
            writer.write(np.zeros((3, 5, 3), np.uint8))
        dst[...] = 0
    assert str(refused.value) == (
        "a frame from writer.frame() is still being drawn: leave its with block first"
    )
    assert writer.head == 1


def test_a_frame_dropped_under_drop_newest_is_drawn_into_scratch_memory(shm_name):
    with shmframe.Writer(
        shm_name, 4, 1, "GRAY8", depth=2, backpressure="drop-newest", pace=False,
    ) as writer:
        reader = shmframe.Reader(shm_name, start="oldest")
        writer.write(b"\1\1\1\1")
        writer.write(b"\2\2\2\2")
        with writer.frame() as dst:
            dst[...] = 3
        assert writer.frames_dropped == 1
        assert [read_frame(reader)[1].tolist() for _ in range(2)] == [[[1] * 4], [[2] * 4]]
        assert reader.read(timeout=0.05) is None
        reader.close()


def test_a_closed_writer_and_reader_say_so(shm_name):
    writer = shmframe.Writer(shm_name, 4, 1, "GRAY8", pace=False)
    reader = shmframe.Reader(shm_name)
    reader.close()
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(shmframe.ShmFrameError, match="^writer is closed$"):
        writer.write(b"\0" * 4)
    with pytest.raises(shmframe.ShmFrameError, match="^reader is closed$"):
        reader.read(timeout=0)
    assert writer.closed and reader.closed


@pytest.mark.parametrize(
    "kwargs,text",
    [
        ({"layout": "triple"}, "layout must be 'ring' or 'double', got 'triple'"),
        (
            {"backpressure": "wait"},
            "backpressure must be one of block, drop-oldest, drop-newest, got 'wait'",
        ),
        (
            {"perms": 0o400},
            "invalid configuration: perms 400 must be an octal file mode of at most 0777 that "
            "includes 0600 (the writer and its readers need read and write access)",
        ),
    ],
)
def test_invalid_settings_are_value_errors(shm_name, kwargs, text):
    with pytest.raises(ValueError) as refused:
        shmframe.Writer(shm_name, 4, 1, "GRAY8", **kwargs, pace=False)
    assert str(refused.value) == text
