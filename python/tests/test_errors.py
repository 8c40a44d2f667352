"""The exceptions: their classes and hierarchy (those the earlier pure-Python module raised, so
code catching them keeps working), the transport's texts (its Display, word for word), and
the fields code can act on."""

import os
import time
from pathlib import Path

import pytest
from helpers import SHM_DIR

import shmframe


def test_the_hierarchy_lets_callers_catch_by_builtin_kind():
    assert issubclass(shmframe.SegmentNotFound, FileNotFoundError)
    assert issubclass(shmframe.InvalidName, ValueError)
    assert issubclass(shmframe.InvalidConfig, ValueError)
    assert issubclass(shmframe.PermissionDenied, PermissionError)
    assert issubclass(shmframe.NoSpace, OSError)
    for name in shmframe.__all__:
        cls = getattr(shmframe, name)
        if isinstance(cls, type) and issubclass(cls, Exception):
            assert issubclass(cls, shmframe.ShmFrameError), name
            assert cls.__module__ == "shmframe"


def test_a_missing_segment(shm_name):
    with pytest.raises(FileNotFoundError) as missing:
        shmframe.Reader(shm_name)
    assert type(missing.value) is shmframe.SegmentNotFound
    assert missing.value.name == shm_name
    assert str(missing.value) == (
        f'no shmframe segment named "{shm_name}" exists (is its writer running?)'
    )


def test_segment_paths_and_limits_are_the_transports(shm_name):
    assert shmframe.segment_path(shm_name) == str(SHM_DIR / shm_name)
    with pytest.raises(shmframe.InvalidName):
        shmframe.segment_path("../etc")
    with pytest.raises(shmframe.InvalidName):
        shmframe.segment_path("x" * (shmframe.MAX_NAME_LEN + 1))
    assert shmframe.LAYOUT_VERSION == 3 and shmframe.MAX_READERS == 64
    with shmframe.Writer(shm_name, 4, 1, "GRAY8", pace=False) as writer, shmframe.Reader(
        shm_name
    ) as r:
        assert writer.path == r.path == str(SHM_DIR / shm_name)
        assert os.path.isfile(writer.path)
    assert shmframe.crc32(b"123456789") == 0xCBF43926


def test_an_invalid_name():
    with pytest.raises(shmframe.InvalidName) as invalid:
        shmframe.Writer("a/b", 4, 1, "GRAY8", pace=False)
    assert str(invalid.value) == (
        "invalid shm-name \"a/b\": it contains '/'; only letters, digits, '.', '_' and '-' are "
        "allowed"
    )


def test_a_live_writer_keeps_its_name(shm_name):
    with shmframe.Writer(shm_name, 4, 1, "GRAY8", pace=False):
        with pytest.raises(shmframe.WriterExists) as exists:
            shmframe.Writer(shm_name, 4, 1, "GRAY8", pace=False)
    assert (exists.value.name, exists.value.pid) == (shm_name, os.getpid())
    assert str(exists.value) == (
        f'shm-name "{shm_name}" is already used by a live writer (pid {os.getpid()}); stop it '
        "or choose another shm-name"
    )


def test_a_foreign_file_is_left_alone(shm_name):
    path = SHM_DIR / shm_name
    path.write_bytes(b"not a segment" * 100)
    with pytest.raises(shmframe.ForeignFile):
        shmframe.Reader(shm_name)
    assert path.read_bytes() == b"not a segment" * 100
    with pytest.raises(shmframe.ForeignFile) as foreign:
        shmframe.Writer(shm_name, 4, 1, "GRAY8", pace=False)
    assert foreign.value.path == str(path)
    assert str(foreign.value) == (
        f"{path} exists and is not a shmframe segment; it was left untouched: remove it or "
        "choose another shm-name"
    )


def test_a_directory_is_not_a_segment(shm_name):
    path: Path = SHM_DIR / shm_name
    path.mkdir()
    try:
        with pytest.raises(shmframe.NotAFile) as not_a_file:
            shmframe.Writer(shm_name, 4, 1, "GRAY8", pace=False)
        assert (not_a_file.value.path, not_a_file.value.what) == (str(path), "a directory")
        assert str(not_a_file.value) == (
            f"{path} is a directory, not a shmframe segment (segments are regular files); it "
            "was left untouched: remove it or choose another shm-name"
        )
    finally:
        path.rmdir()


def test_the_reader_table_holds_64(shm_name):
    with shmframe.Writer(shm_name, 4, 1, "GRAY8", pace=False):
        readers = [shmframe.Reader(shm_name) for _ in range(64)]
        with pytest.raises(shmframe.TooManyReaders) as full:
            shmframe.Reader(shm_name)
        assert (full.value.name, full.value.max) == (shm_name, 64)
        assert str(full.value) == (
            f'segment "{shm_name}" already has the maximum of 64 readers attached'
        )
        readers.pop().close()
        # The writer frees an entry when it sees the connection close, a moment after close().
        deadline = time.monotonic() + 5.0
        while True:
            try:
                readers.append(shmframe.Reader(shm_name))  # the freed entry is taken again
                break
            except shmframe.TooManyReaders:
                assert time.monotonic() < deadline, "the closed reader's entry was never freed"
                time.sleep(0.01)
        for reader in readers:
            reader.close()


def test_a_reader_requiring_another_writer_uid_is_refused_naming_both(shm_name):
    uid = os.getuid()
    other = uid + 1
    with shmframe.Writer(shm_name, 4, 1, "GRAY8") as writer:
        writer.write(bytes([7, 7, 7, 7]))
        with shmframe.Reader(shm_name, start="oldest", writer_uid=uid) as mine:
            number, frame, _ = mine.read(timeout=5.0) or (None, None, None)
            assert number == 0 and bytes(frame.tobytes()) == bytes([7, 7, 7, 7])
        with pytest.raises(PermissionError) as wrong:
            shmframe.Reader(shm_name, writer_uid=other, wait=1.0)
    assert type(wrong.value) is shmframe.WrongWriter
    path = str(SHM_DIR / shm_name)
    assert (wrong.value.path, wrong.value.expected, wrong.value.found) == (path, other, uid)
    assert str(wrong.value) == (
        f"{path} belongs to uid {uid}, but this reader accepts only a writer running as uid "
        f"{other}: start the writer as uid {other}, or set the reader's writer uid to {uid} "
        "(or unset it: any user the segment's permissions admit)"
    )
