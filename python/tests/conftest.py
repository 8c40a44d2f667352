"""Fixtures of the shmframe package tests: unique segment names removed after each test (also
when it fails), child processes bounded in time and killed at the end, and the GStreamer
plugin built from this tree."""

import itertools
import os
import subprocess
from pathlib import Path
from typing import Callable, Iterator, List

import pytest
from helpers import CHILD_LIMIT_S, SHM_DIR, Child, plugin_dir

_counter = itertools.count()


@pytest.fixture
def shm_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """A segment name no other test (nor a second run) uses; its file is removed afterwards."""
    test = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    name = f"pytest-{test}-{os.getpid()}-{next(_counter)}"
    yield name
    for leftover in SHM_DIR.glob(f"*{name}*"):
        try:
            leftover.unlink()
        except (FileNotFoundError, IsADirectoryError):
            pass


@pytest.fixture
def spawn() -> Iterator[Callable[..., Child]]:
    """Starts children (``spawn(code, *args)``); every one still running is killed at the end."""
    children: List[Child] = []

    def start(code: str, *args: str) -> Child:
        child = Child(code, *args)
        children.append(child)
        return child

    yield start
    for child in children:
        child.kill()
        for stream in (child.proc.stdout, child.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def gst_launch(tmp_path: Path) -> Iterator[Callable[..., "subprocess.Popen[str]"]]:
    """Starts ``gst-launch-1.0`` pipelines with the plugin of this tree and a registry of the
    test's own; every one still running is killed at the end."""
    plugins = plugin_dir()
    procs: List["subprocess.Popen[str]"] = []

    def launch(pipeline: str) -> "subprocess.Popen[str]":
        env = dict(os.environ)
        env["GST_PLUGIN_PATH"] = str(plugins)
        env["GST_REGISTRY"] = str(tmp_path / "registry.bin")
        proc = subprocess.Popen(
            ["gst-launch-1.0", "-q", *pipeline.split()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        procs.append(proc)
        return proc

    yield launch
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=CHILD_LIMIT_S)
