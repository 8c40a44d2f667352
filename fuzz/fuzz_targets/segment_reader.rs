//! Fuzzes everything a reader trusts from shared memory: a segment file whose bytes come from
//! the fuzzer is opened by a `Reader` and an `Observer`, which then read, pin and look up
//! frames, caps and statistics. Nothing may panic, fault or hang, whatever the bytes.
//!
//! An input is either a whole file (mode 0: arbitrary bytes, mostly exercising the header
//! parser) or a valid segment image made by a real `Writer` (a ring, a double, or a ring with
//! spare slots) with fuzzer-chosen patches written over it and an optional truncation, which
//! reaches the geometry checks, the caps table, the ring index and the slot descriptors.
//!
//! Input format after the mode byte, for images: a flags byte (bit 0: truncate; bit 1: start at
//! the oldest frame; bit 2: live, see below), then if truncating a little-endian u16 (the file
//! length / 2), then patches: `[u16 LE offset][u8 len][len bytes]`, offsets taken modulo the
//! image length. In live mode the reader opens the intact image first and the patches land
//! while it is attached, as a hostile writer's would (the truncation is then ignored: a file
//! cut short under a mapping faults with SIGBUS, which no reader can check against; only the
//! segment's owner can truncate it).
//!
//! A reader attaches through its writer's socket (docs/LAYOUT.md): the target stands in for
//! the writer there, holding the segment's writer lock and answering each hello with a sealed
//! control page, so that every input reaches the reader's reading, pinning and lookups.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmframe_transport::{
    Backpressure, FrameInfo, FrameMeta, Layout, Observer, ReadResult, Reader, ReaderOptions,
    SlotView, StartPosition, Writer, WriterConfig,
};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const NAME: &str = "fuzz-segment";

struct Fixture {
    path: PathBuf,
    file: std::fs::File,
    images: Vec<Vec<u8>>,
}

/// The directory segments are opened from: `SHMFRAME_DIR` if set (scripts/fuzz.sh makes a
/// temporary one under /dev/shm and removes it afterwards), else a directory of our own.
fn segment_dir() -> PathBuf {
    match std::env::var_os("SHMFRAME_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let dir = std::env::temp_dir().join(format!("shmframe-fuzz-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            // SAFETY: called once from the fuzz target's initialisation, before any other
            // thread of this process exists that could read the environment.
            unsafe { std::env::set_var("SHMFRAME_DIR", &dir) };
            dir
        }
    }
}

/// A segment image as a live writer leaves it: caps set, a few frames written.
fn image(layout: Layout, depth: u32, spare: u32, bp: Backpressure, frames: u64) -> Vec<u8> {
    let mut config = WriterConfig::new(NAME, 256);
    config.layout = layout;
    config.depth = depth;
    config.spare_slots = spare;
    config.backpressure = bp;
    let mut writer = Writer::create(&config).expect("a writer for the seed image");
    writer
        .set_caps("video/x-raw, format=(string)GRAY8, width=(int)16, height=(int)16")
        .unwrap();
    for n in 0..frames {
        let data: Vec<u8> = (0..256).map(|i| (n as u8).wrapping_add(i as u8)).collect();
        let meta = FrameMeta {
            pts: Some(n * 1000),
            dts: None,
            duration: Some(1000),
            flags: 0,
        };
        writer.write(&meta, &data).unwrap();
    }
    let bytes = std::fs::read(segment_dir().join(NAME)).unwrap();
    drop(writer);
    bytes
}

fn fixture() -> &'static std::sync::Mutex<Fixture> {
    static FIXTURE: OnceLock<std::sync::Mutex<Fixture>> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = segment_dir();
        let images = vec![
            image(Layout::Ring, 4, 0, Backpressure::DropOldest, 6),
            image(Layout::Double, 2, 0, Backpressure::DropOldest, 3),
            image(Layout::Ring, 3, 2, Backpressure::Block, 2),
        ];
        let path = dir.join(NAME);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        // The writer lock (an OFD write lock on byte 0): readers find the writer alive.
        // SAFETY: all-zero is a valid flock; F_OFD_SETLK on our descriptor.
        let locked = unsafe {
            let mut fl: libc::flock = std::mem::zeroed();
            fl.l_type = libc::F_WRLCK as libc::c_short;
            fl.l_whence = libc::SEEK_SET as libc::c_short;
            fl.l_len = 1;
            libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl)
        };
        assert_eq!(locked, 0, "the writer lock of the fuzzed segment");
        std::sync::Mutex::new(Fixture { path, file, images })
    })
}

/// What an input describes: the file to write, and patches to apply to it before the reader
/// opens it or, when `live`, while the reader is attached.
struct Plan {
    bytes: Vec<u8>,
    patches: Vec<(usize, Vec<u8>)>,
    truncate_to: Option<usize>,
    oldest: bool,
    live: bool,
}

fn plan(data: &[u8], images: &[Vec<u8>]) -> Option<Plan> {
    let (&mode, rest) = data.split_first()?;
    let mode = mode as usize % (images.len() + 1);
    if mode == 0 {
        return Some(Plan {
            bytes: rest.to_vec(),
            patches: Vec::new(),
            truncate_to: None,
            oldest: rest.first().is_some_and(|b| b & 1 == 1),
            live: false,
        });
    }
    let bytes = images[mode - 1].clone();
    let (&flags, mut rest) = rest.split_first().unwrap_or((&0, &[]));
    let live = flags & 4 == 4;
    let mut truncate_to = None;
    if flags & 1 == 1 && rest.len() >= 2 {
        truncate_to = Some(u16::from_le_bytes([rest[0], rest[1]]) as usize * 2);
        rest = &rest[2..];
    }
    let mut patches = Vec::new();
    while rest.len() >= 3 {
        let offset = u16::from_le_bytes([rest[0], rest[1]]) as usize % bytes.len();
        let len = (rest[2] as usize)
            .min(rest.len() - 3)
            .min(bytes.len() - offset);
        patches.push((offset, rest[3..3 + len].to_vec()));
        rest = &rest[3 + (rest[2] as usize).min(rest.len() - 3)..];
    }
    Some(Plan {
        bytes,
        patches,
        truncate_to: if live { None } else { truncate_to },
        oldest: flags & 2 == 2,
        live,
    })
}

/// Stands in for a writer on the socket of the segment whose `writer_session` is `session`:
/// answers every hello with a sealed control page (entry 0, cursor 0) until dropped.
struct StubWriter {
    path: PathBuf,
    /// The listening socket (owned by the thread): shut down to end its wait at once.
    listener: std::os::fd::RawFd,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StubWriter {
    fn serve(session: u64) -> Option<StubWriter> {
        let path = segment_dir().join(format!(".shmframe-sock-{session:016x}"));
        let listener = listen(&path)?;
        let raw = listener.as_raw_fd();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || answer_hellos(&listener, &stop)
        });
        Some(StubWriter {
            path,
            listener: raw,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for StubWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // SAFETY: the thread keeps the descriptor open until it is joined below; shutting a
        // listening socket down wakes its poll.
        unsafe { libc::shutdown(self.listener, libc::SHUT_RDWR) };
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn listen(path: &std::path::Path) -> Option<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let _ = std::fs::remove_file(path);
    // SAFETY: all-zero is a valid sockaddr_un; the path is copied in bounds (checked).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return None;
    }
    for (d, &b) in addr.sun_path.iter_mut().zip(bytes) {
        *d = b as libc::c_char;
    }
    // SAFETY: plain socket calls with a valid address; the descriptor is owned at once.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let fd = OwnedFd::from_raw_fd(fd);
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        if libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        ) != 0
            || libc::listen(fd.as_raw_fd(), 8) != 0
        {
            return None;
        }
        Some(fd)
    }
}

fn readable(fd: &OwnedFd, ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

fn answer_hellos(listener: &OwnedFd, stop: &AtomicBool) {
    // Connections and pages handed out stay open while the stub serves: a reader's
    // connection closing is its leaving.
    let mut held: Vec<(OwnedFd, std::fs::File)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if !readable(listener, 100) || stop.load(Ordering::Relaxed) {
            continue;
        }
        // SAFETY: accept on a listening socket that is readable; the descriptor is owned.
        let conn = unsafe {
            let fd = libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            );
            if fd < 0 {
                continue;
            }
            OwnedFd::from_raw_fd(fd)
        };
        let mut hello = [0u8; 64];
        // SAFETY: `hello` is writable for its length.
        if !readable(&conn, 2000)
            || unsafe { libc::recv(conn.as_raw_fd(), hello.as_mut_ptr().cast(), 64, 0) } <= 0
        {
            continue;
        }
        // SAFETY: a new memfd, owned at once, sized and sealed as a writer's control page is.
        let page = unsafe {
            let fd = libc::memfd_create(
                c"fuzz-control".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            );
            assert!(fd >= 0);
            let page = std::fs::File::from_raw_fd(fd);
            page.set_len(4096).unwrap();
            let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
            assert_eq!(libc::fcntl(fd, libc::F_ADD_SEALS, seals), 0);
            page
        };
        let mut reply = [0u8; 32];
        reply[0..4].copy_from_slice(b"SFRR");
        reply[12..16].copy_from_slice(&4096u32.to_ne_bytes());
        send_with_fd(&conn, &reply, page.as_raw_fd());
        held.push((conn, page));
    }
}

fn send_with_fd(conn: &OwnedFd, bytes: &[u8], passed: i32) {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: `msg` points to a control buffer with room for one header and one descriptor
    // (CMSG_SPACE of 4 bytes is 24 of its 64), and to `iov`; all live across the call.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(4) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut i32, passed);
        libc::sendmsg(conn.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
    }
}

/// The `writer_session` a segment file names, if it is long enough to name one.
fn session_of(file: &std::fs::File) -> Option<u64> {
    let mut b = [0u8; 8];
    file.read_exact_at(&mut b, 112).ok()?;
    Some(u64::from_ne_bytes(b))
}

fn copy_out(buf: &mut Vec<u8>) -> impl FnMut(&FrameInfo, &SlotView) + '_ {
    |info, view| {
        assert_eq!(info.size as usize, view.len());
        buf.resize(view.len(), 0);
        view.copy_to(buf);
    }
}

fn exercise_reader(oldest: bool, while_attached: impl FnOnce()) {
    let start = if oldest {
        StartPosition::Oldest
    } else {
        StartPosition::Newest
    };
    let Ok(mut reader) = Reader::open(
        NAME,
        &ReaderOptions {
            start,
            ..Default::default()
        },
    ) else {
        return;
    };
    while_attached();
    let capacity = reader.geometry().slot_capacity;
    let _ = reader.info();
    let gen_ = reader.current_caps_gen();
    for g in [gen_, gen_.wrapping_sub(1), gen_.wrapping_add(1), 1] {
        let _ = reader.caps(g);
    }
    let mut buf = Vec::new();
    for _ in 0..8 {
        match reader.read_next(Duration::ZERO, copy_out(&mut buf)) {
            Ok(ReadResult::Frame(info)) => {
                assert!(info.size <= capacity, "{info:?} exceeds {capacity}");
                assert_eq!(buf.len() as u64, info.size);
            }
            Ok(_) | Err(_) => break,
        }
    }
    let mut pinned = None;
    for _ in 0..4 {
        match reader.pin_next(Duration::ZERO, &mut pinned) {
            Ok(ReadResult::Frame(info)) => {
                let frame = pinned.take().expect("a pinned frame with Frame");
                assert_eq!(frame.data().len() as u64, info.size);
                assert!(info.size <= capacity);
            }
            Ok(_) | Err(_) => break,
        }
    }
    let cursor = reader.cursor();
    for n in cursor.saturating_sub(8)..cursor.saturating_add(2) {
        let _ = reader.read_frame(n, copy_out(&mut buf));
        if let Ok(Some(p)) = reader.pin(n) {
            assert!(p.data().len() as u64 <= capacity);
        }
    }
    let _ = (reader.pins_held(), reader.pin_budget(), reader.evictions());
}

fn exercise_observer() {
    let Ok(observer) = Observer::open(NAME) else {
        return;
    };
    let info = observer.info();
    let _ = observer.reader_count();
    let _ = observer.caps(observer.current_caps_gen());
    let mut buf = Vec::new();
    for n in info.head.saturating_sub(6)..info.head.saturating_add(1) {
        if let Ok(Some(frame)) = observer.read_frame(n, copy_out(&mut buf)) {
            assert!(frame.size <= info.slot_capacity);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture().lock().unwrap();
    let Some(plan) = plan(data, &fixture.images) else {
        return;
    };
    let file = &fixture.file;
    let apply = |patches: &[(usize, Vec<u8>)]| {
        for (offset, bytes) in patches {
            file.write_all_at(bytes, *offset as u64).unwrap();
        }
    };
    file.set_len(0).unwrap();
    file.write_all_at(&plan.bytes, 0).unwrap();
    if plan.live {
        let _writer = session_of(file).and_then(StubWriter::serve);
        exercise_reader(plan.oldest, || apply(&plan.patches));
    } else {
        apply(&plan.patches);
        if let Some(len) = plan.truncate_to {
            file.set_len(len.min(plan.bytes.len()) as u64).unwrap();
        }
        let _writer = session_of(file).and_then(StubWriter::serve);
        exercise_reader(plan.oldest, || {});
    }
    debug_assert!(fixture.path.exists());
    exercise_observer();
});
