"""Interop with the GStreamer elements built from this tree: frames a gst-launch-1.0 pipeline
writes with shmframesink come out of the package's Reader pixel for pixel (videotestsrc leaves
row padding undefined), and frames the package's Writer publishes come out of shmframesrc byte
for byte, padding included."""

from pathlib import Path

import numpy as np
import pytest
from helpers import CHILD_LIMIT_S, pattern

import shmframe

FRAMES = 12
# Odd width: RGB rows of 99 bytes padded to 100, as GStreamer lays them out.
CAPS = "video/x-raw,format=RGB,width=33,height=17,framerate=30/1"


def finish(proc, what: str) -> None:
    _, err = proc.communicate(timeout=CHILD_LIMIT_S)
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}): {err}"


def reference_frames(gst_launch, tmp_path: Path) -> list:
    """The pixels of the frames videotestsrc makes (pattern=ball moves: every frame differs),
    rows without their padding (videotestsrc leaves padding bytes as the memory had them)."""
    out = tmp_path / "reference.raw"
    ref = gst_launch(
        f"videotestsrc num-buffers={FRAMES} pattern=ball ! {CAPS} ! filesink location={out}"
    )
    finish(ref, "the reference pipeline")
    data = out.read_bytes()
    size = len(data) // FRAMES
    assert size == shmframe.FrameLayout("RGB", 33, 17).size
    fl = shmframe.FrameLayout("RGB", 33, 17)
    frames = [
        np.ascontiguousarray(fl.to_array(np.frombuffer(data, np.uint8, size, i * size))).tobytes()
        for i in range(FRAMES)
    ]
    assert len(set(frames)) == FRAMES
    return frames


@pytest.mark.parametrize("layout,backpressure", [("ring", "block"), ("ring", "drop-oldest")])
@pytest.mark.parametrize("copy", [True, False])
def test_a_gstreamer_writer_to_a_python_reader(
    shm_name, gst_launch, tmp_path, layout, backpressure, copy
):
    expected = reference_frames(gst_launch, tmp_path)
    # Live at 30 fps into a ring deeper than the stream: every frame is still held when the
    # reader attaches, and the writer keeps its name after EOS until the reader has read all.
    writer = gst_launch(
        f"videotestsrc is-live=true num-buffers={FRAMES} pattern=ball ! {CAPS} ! "
        f"shmframesink shm-name={shm_name} layout={layout} backpressure={backpressure} "
        f"depth={FRAMES + 4}"
    )
    with shmframe.Reader(shm_name, start="oldest", wait=CHILD_LIMIT_S) as reader:
        assert reader.caps is not None and shmframe.parse_caps(reader.caps) == ("RGB", 33, 17)
        got = []
        for number, frame, pts in reader.__iter__() if copy else iter_zero_copy(reader):
            assert frame.shape == (17, 33, 3) and pts is not None
            assert reader.last.size == 1700  # rows padded to 100 bytes
            got.append((number, np.ascontiguousarray(frame).tobytes()))
        assert reader.stream_state == "eos"
    assert [n for n, _ in got] == list(range(FRAMES))
    assert [data for _, data in got] == expected
    finish(writer, "the shmframesink pipeline")


def iter_zero_copy(reader):
    while True:
        try:
            got = reader.read(timeout=CHILD_LIMIT_S, copy=False)
        except shmframe.EndOfStream:
            return
        assert got is not None
        yield got


def test_a_python_writer_to_a_gstreamer_reader(shm_name, gst_launch, tmp_path):
    out = tmp_path / "received.raw"
    with shmframe.Writer(
        shm_name, 33, 17, "RGB", depth=4, backpressure="block", pace=False,
    ) as writer:
        reader = gst_launch(f"shmframesrc shm-name={shm_name} ! filesink location={out}")
        assert writer.wait_for_readers(1, timeout=CHILD_LIMIT_S)
        fl = writer.frame_layout
        for n in range(FRAMES):
            if n % 2:
                writer.write(np.ascontiguousarray(fl.to_array(pattern(fl, n))))
            else:
                with writer.frame() as dst:
                    dst[...] = fl.to_array(pattern(fl, n))
        writer.end_of_stream()
    finish(reader, "the shmframesrc pipeline")
    assert out.read_bytes() == b"".join(pattern(fl, n).tobytes() for n in range(FRAMES))
