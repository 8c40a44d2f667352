//! The Linux primitives of the reader channel: a `SOCK_SEQPACKET` Unix socket per stream
//! (one message per `send`, a connection per reader, `SO_PEERCRED` to know who is at the other
//! end, `SCM_RIGHTS` to hand over a descriptor) and sealed memfds for the control pages.
//! Every call on a socket the writer shares with a reader is non-blocking: a peer can make it
//! wait for nothing.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The `sockaddr_un` of `path`, or an error when the path does not fit `sun_path`.
fn address(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "socket path {} is longer than the {} bytes a Unix socket address holds",
                path.display(),
                addr.sun_path.len() - 1
            ),
        ));
    }
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

fn seqpacket_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain system call without pointers.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    })?;
    // SAFETY: a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A non-blocking listening socket bound at `path` with file mode `mode` (connecting needs
/// write permission on it, so the mode decides who may attach).
pub(crate) fn listen(path: &Path, mode: u32) -> io::Result<OwnedFd> {
    let (addr, len) = address(path)?;
    let fd = seqpacket_socket()?;
    // Linux creates the socket file with the socket's own mode less the umask: set to `mode`
    // first, the file is never wider than `mode`, not even between the bind and the chmod
    // below (which undoes the umask), so nobody `mode` leaves out can connect meanwhile.
    // SAFETY: plain fchmod on our descriptor.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    })?;
    let listening = (|| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        // SAFETY: plain system call on our descriptor.
        check(unsafe { libc::listen(fd.as_raw_fd(), 64) })
    })();
    if let Err(e) = listening {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(fd)
}

/// The next pending connection, non-blocking and close-on-exec (`None`: none pending).
pub(crate) fn accept(listener: BorrowedFd) -> io::Result<Option<OwnedFd>> {
    // SAFETY: null address pointers are allowed (the peer's address is not wanted).
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::ECONNABORTED) | Some(libc::EINTR) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: a new descriptor nobody else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Connects to the socket at `path` without waiting (a full backlog is `WouldBlock`).
pub(crate) fn connect(path: &Path) -> io::Result<OwnedFd> {
    let (addr, len) = address(path)?;
    let fd = seqpacket_socket()?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    check(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    })?;
    Ok(fd)
}

/// (pid, uid) of the process at the other end of a connected socket, as the kernel recorded
/// them when it connected (or listened): not what the peer claims.
pub(crate) fn peer_cred(fd: BorrowedFd) -> io::Result<(u32, u32)> {
    // SAFETY: all-zero is a valid ucred.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is writable for `len` bytes.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok((cred.pid as u32, cred.uid))
}

/// Sends one message without waiting and without SIGPIPE. `Ok(false)`: the peer's queue is
/// full (the message was not sent).
pub(crate) fn send(fd: BorrowedFd, bytes: &[u8]) -> io::Result<bool> {
    // SAFETY: `bytes` is readable for its length.
    let r = unsafe {
        libc::send(
            fd.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(false),
            _ => Err(e),
        };
    }
    Ok(true)
}

/// Sends one message carrying descriptor `passed` (`SCM_RIGHTS`), without waiting.
pub(crate) fn send_with_fd(fd: BorrowedFd, bytes: &[u8], passed: BorrowedFd) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // Room for one cmsghdr with one descriptor, aligned as cmsghdr requires.
    let mut control = [0u64; 8];
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    assert!(space <= std::mem::size_of_val(&control));
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points to a control buffer of `space` bytes, enough for one header with one
    // descriptor (asserted above), so CMSG_FIRSTHDR is non-null and its data fits.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, passed.as_raw_fd());
    }
    // SAFETY: `msg` and everything it points to live across the call.
    check(unsafe {
        libc::sendmsg(
            fd.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        ) as libc::c_int
    })?;
    Ok(())
}

/// What a non-blocking receive found.
pub(crate) enum Received {
    /// A message of this many bytes (at most the buffer's length; longer ones are cut).
    Message(usize),
    /// Nothing queued now.
    Nothing,
    /// The peer closed its end (or the connection failed).
    Closed,
}

/// Receives one message without waiting. Descriptors the peer may have attached are
/// discarded by the kernel (no control buffer is offered).
pub(crate) fn recv(fd: BorrowedFd, buf: &mut [u8]) -> Received {
    // SAFETY: `buf` is writable for its length.
    let r = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    match r {
        0 => Received::Closed,
        n if n > 0 => Received::Message((n as usize).min(buf.len())),
        _ => match io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Received::Nothing,
            _ => Received::Closed,
        },
    }
}

/// Receives one message and the descriptor passed with it, if any, waiting up to `timeout`
/// unless `interrupt` (a descriptor readable once the wait is to end) becomes readable first:
/// then the error is of kind `Interrupted`.
pub(crate) fn recv_with_fd(
    fd: BorrowedFd,
    buf: &mut [u8],
    timeout: Duration,
    interrupt: Option<BorrowedFd>,
) -> io::Result<(usize, Option<OwnedFd>)> {
    let watched = |fd: Option<BorrowedFd>| libc::pollfd {
        fd: fd.map_or(-1, |fd| fd.as_raw_fd()),
        events: libc::POLLIN,
        revents: 0,
    };
    // poll(2) skips a negative descriptor: without an interrupt only the socket is watched.
    let mut fds = [watched(Some(fd)), watched(interrupt)];
    poll(&mut fds, timeout);
    if fds[1].revents != 0 {
        return Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "interrupted while waiting for an answer",
        ));
    }
    if fds[0].revents == 0 {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {} ms", timeout.as_millis()),
        ));
    }
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` and its buffers live across the call.
    let n = unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut passed = None;
    // SAFETY: the kernel filled `msg_controllen` bytes of `control`; the CMSG macros walk
    // inside them; a descriptor in an SCM_RIGHTS message is ours to own from now on.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let count = ((*cmsg).cmsg_len as usize - (data as usize - cmsg as usize))
                    / std::mem::size_of::<RawFd>();
                for k in 0..count {
                    let raw = std::ptr::read_unaligned((data as *const RawFd).add(k));
                    let owned = OwnedFd::from_raw_fd(raw);
                    // One descriptor is expected; any further one is closed here.
                    if passed.is_none() {
                        passed = Some(owned);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, passed))
}

/// poll(2) over `fds` for at most `timeout`; the number of descriptors with events.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> usize {
    let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is a valid, writable array of its length.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    r.max(0) as usize
}

/// A memfd of `len` bytes that can neither shrink nor grow, and whose seals are final: a
/// process it is passed to can write it but never cut it short under another's mapping.
pub(crate) fn sealed_memfd(len: u64) -> io::Result<std::fs::File> {
    // SAFETY: a NUL-terminated name; plain system call.
    let fd = check(unsafe {
        libc::memfd_create(
            c"shmframe-reader-control".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    })?;
    // SAFETY: a new descriptor nobody else owns.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.set_len(len)?;
    // SAFETY: plain fcntl on our descriptor.
    check(unsafe {
        libc::fcntl(
            file.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
        )
    })?;
    Ok(file)
}

/// Whether `file` is sealed against shrinking (a writer's control page must be).
pub(crate) fn sealed_against_shrinking(file: &std::fs::File) -> bool {
    // SAFETY: plain fcntl on an open descriptor.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & libc::F_SEAL_SHRINK != 0
}
