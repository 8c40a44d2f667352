"""The Python attacker of tests/hostile_reader.rs: attaches to segment NAME as an ordinary
reader through the shmframe package, reads a frame, then for SECONDS attacks everything it can
reach, as the Rust attacker there does: the regular-file descriptors the package gave it (and
the same files re-opened read-write through /proc/self/fd) are mapped writable and scribbled
over, written at every page, truncated to nothing and grown to a terabyte; its shared mappings
are written at every page through /proc/self/mem (made writable with mprotect where they are
not); every file of the shm directory is opened read-write, write-only and read-only and
attacked the same way; sockets get garbage and silent connections. Prints ATTACKING when it
starts and a SUMMARY line of what succeeded.

Usage: python hostile_reader.py NAME SECONDS
"""

import ctypes
import errno
import mmap
import os
import socket
import stat
import sys
import time
from typing import Dict, List, Set, Tuple

import shmframe

MAX_SCRIBBLE = 64 << 20
SHM_DIR = os.environ.get("SHMFRAME_DIR", "/dev/shm")
LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def scribble_and_truncate(fd: int, tried: Dict[str, int]) -> None:
    try:
        size = os.fstat(fd).st_size
    except OSError:
        return
    length = min(size, MAX_SCRIBBLE)
    if length > 0:
        try:
            area = mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except (OSError, ValueError):
            pass
        else:
            tried["mapped_writable"] += 1
            area[:] = os.urandom(length)
            area.close()
        for offset in range(0, length, 4096):
            try:
                if os.pwrite(fd, os.urandom(64), offset) > 0:
                    tried["pages_written"] += 1
            except OSError:
                pass
    try:
        os.ftruncate(fd, 0)
        tried["truncated"] += 1
        time.sleep(0.02)
    except OSError:
        pass
    try:
        os.ftruncate(fd, 1 << 40)
        tried["truncated"] += 1
    except OSError:
        pass
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass


def send_garbage(sock: socket.socket, tried: Dict[str, int]) -> None:
    for length in (1, 7, 64, 512):
        try:
            if sock.send(os.urandom(length), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL) > 0:
                tried["garbage_sent"] += 1
        except OSError:
            pass


def open_descriptors() -> Set[int]:
    """The descriptors this process has open (not the one that listed them, closed since)."""
    open_now = set()
    for entry in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(entry))
        except OSError:
            continue
        open_now.add(int(entry))
    return open_now


def attack_descriptors(fds: Set[int], tried: Dict[str, int]) -> None:
    for fd in fds:
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode):
            scribble_and_truncate(fd, tried)
            try:
                again = os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                continue
            tried["reopened_for_writing"] += 1
            scribble_and_truncate(again, tried)
            os.close(again)
        elif stat.S_ISSOCK(mode):
            sock = socket.socket(fileno=os.dup(fd))
            send_garbage(sock, tried)
            sock.close()


def attack_shared_mappings(own: Set[int], tried: Dict[str, int]) -> None:
    """Every shared mapping but those the interpreter had before attaching (`own`: their
    start addresses): made writable with mprotect where read-only, if the kernel lets it (only
    if the descriptor mapped was writable), and every page written with garbage through
    /proc/self/mem, which fails instead of raising SIGBUS past the end of a truncated file."""
    try:
        mem = os.open("/proc/self/mem", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return
    for start, end, perms in shared_mappings():
        if start in own:
            continue
        length = min(end - start, MAX_SCRIBBLE)
        made_writable = perms[1] != "w" and (
            LIBC.mprotect(start, length, mmap.PROT_READ | mmap.PROT_WRITE) == 0
        )
        tried["made_writable"] += int(made_writable)
        for offset in range(0, length, 4096):
            try:
                os.pwrite(mem, os.urandom(min(4096, length - offset)), start + offset)
                tried["mapped_pages_written"] += 1
            except OSError:
                pass
        if made_writable:
            LIBC.mprotect(start, length, mmap.PROT_READ)
    os.close(mem)


def shared_mappings() -> List[Tuple[int, int, str]]:
    found = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if fields[1].endswith("s"):
                found.append((start, end, fields[1]))
    return found


def attack_shm_directory(tried: Dict[str, int], silent: List[socket.socket]) -> None:
    for entry in os.listdir(SHM_DIR):
        path = os.path.join(SHM_DIR, entry)
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode):
            for how in (os.O_RDWR, os.O_WRONLY, os.O_RDONLY):
                try:
                    fd = os.open(path, how | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
                except OSError:
                    continue
                if how != os.O_RDONLY:
                    tried["opened_for_writing"] += 1
                scribble_and_truncate(fd, tried)
                os.close(fd)
        elif stat.S_ISSOCK(mode):
            for kind in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET, socket.SOCK_DGRAM):
                sock = socket.socket(socket.AF_UNIX, kind | socket.SOCK_NONBLOCK)
                try:
                    sock.connect(path)
                except OSError as e:
                    if e.errno != errno.EINPROGRESS:
                        sock.close()
                        continue
                tried["connected"] += 1
                send_garbage(sock, tried)
                if len(silent) < 16:
                    silent.append(sock)
                else:
                    sock.close()


def main() -> None:
    name, seconds = sys.argv[1], float(sys.argv[2])
    # Descriptors this process had before it attached (stdio, the interpreter's, anything
    # inherited) are not the transport's: the attack leaves them alone.
    before = open_descriptors()
    own_mappings = {start for start, _, _ in shared_mappings()}
    reader = shmframe.Reader(name, start="oldest", wait=60.0)
    # An ordinary reader first: one frame read, so it holds whatever reading needs.
    print("READ", reader.read(timeout=10.0) is not None, flush=True)
    reachable = open_descriptors() - before
    print("ATTACKING", flush=True)
    tried = dict.fromkeys(
        (
            "rounds",
            "truncated",
            "opened_for_writing",
            "reopened_for_writing",
            "mapped_writable",
            "pages_written",
            "mapped_pages_written",
            "made_writable",
            "connected",
            "garbage_sent",
        ),
        0,
    )
    silent: List[socket.socket] = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        tried["rounds"] += 1
        attack_descriptors(reachable, tried)
        attack_shared_mappings(own_mappings, tried)
        attack_shm_directory(tried, silent)
        time.sleep(0.002)
    for sock in silent:
        sock.close()
    # Said before detaching: the reader's own state is garbage now, and whatever detaching
    # makes of it harms only this process.
    print("SUMMARY " + " ".join(f"{k}={v}" for k, v in tried.items()), flush=True)
    reader.close()


if __name__ == "__main__":
    main()
