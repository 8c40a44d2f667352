//! A reader the permissions admit, running as another user, attacks everything it can reach
//! while a writer (root) publishes and a second reader checks every frame. The attacker
//! attaches as an ordinary reader (the transport's `Reader`, or the Python package's) and
//! reads a frame; then, for a few seconds: every regular file among the descriptors attaching
//! gave it (and the same file re-opened read-write through /proc/self/fd) is mapped writable
//! and scribbled over, written at every page, truncated to nothing and grown to a terabyte;
//! every shared mapping attaching gave it is written at every page through /proc/self/mem
//! (made writable with mprotect first where it is not, if the kernel lets it);
//! every file of the stream's shm directory is opened read-write, write-only and read-only and
//! attacked the same way; every socket there gets garbage and silent connections, and so do
//! the sockets attaching gave it. The writer must keep publishing, the checking reader must
//! get only the writer's frames (content checked against the frame number) and keep getting
//! them, the attacker must get errors (it may harm only itself), and nothing may be left in
//! the shm directory once the writer stops.
//!
//! Each stream gets a shm directory of its own (`SHMFRAME_DIR`), so every file there is the
//! stream's, whatever names the transport gives them. The test user is made by the test
//! (useradd) and removed afterwards, so the tests need root; without root or useradd they fail
//! under scripts/test.sh, or are skipped with a notice (see `common::prerequisite`).
//! `SHMFRAME_HOSTILE_SECONDS` sets how long each attack lasts (default 3).
//!
//! Also here: `writer-uid` on shmframesrc, which makes a reader that may read other users'
//! segments (root) refuse a segment of another user than the one it names.

mod common;

use common::{
    ChildGuard, ShmName, check_frame, child_binary_for_others, file_names, fill_frame,
    gst_launch_env, init, launch_with, newest_mtime, prerequisite, role, role_args, spawn_role_as,
    spawn_role_env, unreachable_for_others, wait_for,
};
use gst::prelude::*;
use gstshmframe::transport::{
    Backpressure, FrameMeta, ReadResult, Reader, ReaderOptions, StartPosition, Writer,
    WriterConfig, shm_dir,
};
use std::io::BufRead;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WIDTH: usize = 64;
const HEIGHT: usize = 48;
const FRAME_SIZE: usize = WIDTH * HEIGHT * 4;
const CAPS: &str = "video/x-raw, format=(string)RGBA, width=(int)64, height=(int)48, \
                    framerate=(fraction)200/1";
/// The stream of the shmframesink case: `videotestsrc pattern=colors horizontal-speed=1`
/// shifts its bars one pixel a frame, so frame n is the pattern's frame n % WIDTH.
const TEST_SOURCE: &str = "videotestsrc pattern=colors horizontal-speed=1 ! \
                           video/x-raw,format=RGBA,width=64,height=48,framerate=200/1";
/// Upper bound for any child; reached only when something is broken.
const CHILD_LIMIT: Duration = Duration::from_secs(90);
/// The largest part of a file the attacker scribbles over (it may grow files to a terabyte).
const MAX_SCRIBBLE: u64 = 64 << 20;
const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyenv/bin/python");
const PYTHON_ATTACKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hostile_reader.py");

/// How long each attack lasts: 3 s by default, `SHMFRAME_HOSTILE_SECONDS` for longer.
fn attack_seconds() -> u64 {
    std::env::var("SHMFRAME_HOSTILE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// Entry point of child processes: the child binary (tests/child/main.rs) runs it in the role
/// `spawn_role` names.
#[allow(dead_code)] // called by the child binary, not by this file's tests
pub fn child_entry() {
    let Some((role, args)) = role() else { return };
    let args = role_args(&args);
    match role.as_str() {
        "write" => write_until_stopped(&args),
        "check" => check_every_frame(&args),
        "attack" => attack(&args),
        "src" => read_with_src(&args),
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

// ----------------------------------------------------------------------------------------------
// The writer and the checking reader
// ----------------------------------------------------------------------------------------------

/// A transport writer (perms 0666, `policy`) publishing frame n filled by `fill_frame(n)`
/// every millisecond until the file `stop` exists; says `READY`, then `WROTE n` every 50 ms,
/// and at the end of stream `SUMMARY frames=n`.
fn write_until_stopped(args: &std::collections::HashMap<String, String>) {
    let mut config = WriterConfig::new(&args["name"], FRAME_SIZE as u64);
    config.perms = 0o666;
    config.depth = 8;
    config.backpressure = match args["policy"].as_str() {
        "block" => Backpressure::Block,
        "drop-oldest" => Backpressure::DropOldest,
        other => panic!("unknown policy {other}"),
    };
    config.reader_timeout = Duration::from_millis(500);
    let mut writer = Writer::create(&config).unwrap_or_else(|e| {
        println!("ERROR {e}");
        std::process::exit(1)
    });
    writer.set_caps(CAPS).unwrap();
    println!("READY");
    let stop = Path::new(&args["stop"]);
    let deadline = Instant::now() + CHILD_LIMIT;
    let (mut next, mut reported) = (0u64, Instant::now());
    while !stop.exists() && Instant::now() < deadline {
        let outcome = writer.write_with(&FrameMeta::default(), FRAME_SIZE as u64, |slot| {
            fill_frame(next, slot)
        });
        match outcome.map(|o| o.frame()) {
            Ok(Some(n)) if n == next => next += 1,
            // Every slot pinned: dropped, and the same number comes next.
            Ok(None) => {}
            Ok(Some(n)) => {
                println!("ERROR frame {next} was published as {n}");
                std::process::exit(1)
            }
            Err(e) => {
                println!("ERROR {e}");
                std::process::exit(1)
            }
        }
        if reported.elapsed() >= Duration::from_millis(50) {
            println!("WROTE {next}");
            reported = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    writer.end_of_stream();
    println!("SUMMARY frames={next}");
}

/// The frames of TEST_SOURCE, one per horizontal shift: frame n is `[n % WIDTH]`.
fn test_source_frames() -> Vec<Vec<u8>> {
    init();
    let (pipeline, out) = launch_with::<gst_app::AppSink>(
        &format!(
            "{} ! appsink name=out sync=false",
            TEST_SOURCE.replacen(
                "videotestsrc ",
                &format!("videotestsrc num-buffers={WIDTH} "),
                1
            )
        ),
        "out",
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let frames: Vec<Vec<u8>> = (0..WIDTH)
        .map(|n| {
            let sample = out
                .try_pull_sample(gst::ClockTime::from_seconds(20))
                .unwrap_or_else(|| panic!("videotestsrc frame {n}"));
            sample.buffer().unwrap().map_readable().unwrap().to_vec()
        })
        .collect();
    pipeline.set_state(gst::State::Null).unwrap();
    frames
}

/// A reader (root) checking every frame it gets: `pattern=fill` (`check_frame` of the frame
/// number) or `pattern=colors` (TEST_SOURCE's frame). Says `ATTACHED`, then `GOT n` (frames
/// received) every 50 ms, `BAD ...` for the first wrong frames, and at the end `SUMMARY`:
/// frames, bad, backwards (numbers not increasing), gaps (numbers skipped), missed (the
/// reader's count of frames missed after the first one, which must account for every gap),
/// first, last, end.
fn check_every_frame(args: &std::collections::HashMap<String, String>) {
    let colors = (args["pattern"] == "colors").then(test_source_frames);
    let check = |n: u64, data: &[u8]| match &colors {
        None => check_frame(n, data),
        Some(frames) if frames[(n % WIDTH as u64) as usize] == data => Ok(()),
        Some(frames) => Err(format!(
            "frame {n} is not frame {} of {TEST_SOURCE} but {}",
            n % WIDTH as u64,
            frames
                .iter()
                .position(|f| f == data)
                .map_or("none of its frames".to_string(), |m| format!(
                    "its frame {m}"
                ))
        )),
    };
    let opts = ReaderOptions {
        start: StartPosition::Oldest,
        ..Default::default()
    };
    let deadline = Instant::now() + CHILD_LIMIT;
    let mut reader = loop {
        match Reader::open(&args["name"], &opts) {
            Ok(reader) => break reader,
            Err(e) if Instant::now() >= deadline => {
                println!("SUMMARY frames=0 end=attach-error");
                println!("ERROR {e}");
                return;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    println!("ATTACHED");
    let (mut frames, mut bad, mut backwards, mut gaps, mut missed) = (0u64, 0u64, 0u64, 0, 0);
    let (mut first, mut last): (Option<u64>, Option<u64>) = (None, None);
    let mut buf = Vec::new();
    let mut reported = Instant::now();
    let end = loop {
        let read = reader.read_next(Duration::from_millis(100), |_, view| {
            buf.resize(view.len(), 0);
            view.copy_to(&mut buf);
        });
        match read {
            Ok(ReadResult::Frame(info)) => {
                frames += 1;
                // Frames missed before the first one are no gap between frames received.
                if last.is_some() {
                    missed += info.missed_before;
                }
                if let Err(why) = check(info.number, &buf) {
                    bad += 1;
                    if bad <= 5 {
                        println!("BAD {why}");
                    }
                }
                match last {
                    Some(l) if info.number <= l => backwards += 1,
                    Some(l) => gaps += info.number - l - 1,
                    None => first = Some(info.number),
                }
                last = Some(info.number);
            }
            Ok(ReadResult::Eos) => break "eos".to_string(),
            Ok(ReadResult::WriterGone { clean }) => {
                break if clean {
                    "writer-closed"
                } else {
                    "writer-died"
                }
                .to_string();
            }
            Ok(ReadResult::Timeout) if Instant::now() >= deadline => break "timeout".into(),
            Ok(ReadResult::Timeout) => {}
            Err(e) => {
                println!("ERROR {e}");
                break "error".into();
            }
        }
        if reported.elapsed() >= Duration::from_millis(50) {
            println!("GOT {frames}");
            reported = Instant::now();
        }
    };
    let number = |n: Option<u64>| n.map_or("none".to_string(), |n| n.to_string());
    println!(
        "SUMMARY frames={frames} bad={bad} backwards={backwards} gaps={gaps} missed={missed} \
         first={} last={} end={end}",
        number(first),
        number(last)
    );
}

// ----------------------------------------------------------------------------------------------
// The attacker
// ----------------------------------------------------------------------------------------------

/// What the attacker managed: how many of its attempts succeeded, by kind.
#[derive(Default, Debug)]
struct Attempts {
    rounds: u64,
    /// ftruncate to 0 or to a terabyte that succeeded.
    truncated: u64,
    /// Files of the shm directory opened read-write or write-only.
    opened_for_writing: u64,
    /// Own descriptors re-opened read-write through /proc/self/fd.
    reopened_for_writing: u64,
    /// Shared writable mappings made (and scribbled over).
    mapped_writable: u64,
    /// Pages written with pwrite.
    pages_written: u64,
    /// Pages of shared mappings (the transport's) written through /proc/self/mem, and
    /// read-only shared mappings that mprotect made writable.
    mapped_pages_written: u64,
    made_writable: u64,
    /// Sockets connected to, and garbage messages sent (to those and to our own).
    connected: u64,
    garbage_sent: u64,
}

/// xorshift64*: the attacker's garbage.
struct Garbage(u64);

impl Garbage {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Attaches to `name` as an ordinary reader and attacks everything it can reach for
/// `seconds` (see the file's documentation); says `ATTACKING` when it starts and at the end
/// `SUMMARY` with its `Attempts`.
fn attack(args: &std::collections::HashMap<String, String>) {
    let deadline = Instant::now() + CHILD_LIMIT;
    let opts = ReaderOptions {
        start: StartPosition::Oldest,
        ..Default::default()
    };
    // Descriptors this process had before it attached (stdio, anything inherited) are not
    // the transport's: the attack leaves them alone.
    let before = open_descriptors();
    let own_mappings = shared_mappings();
    let mut reader = loop {
        match Reader::open(&args["name"], &opts) {
            Ok(reader) => break reader,
            Err(e) if Instant::now() >= deadline => {
                println!("ERROR attaching: {e}");
                return;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    // An ordinary reader first: one frame read, so it holds whatever reading needs.
    let first = reader.read_next(Duration::from_secs(10), |_, _| {});
    println!("READ {first:?}");
    let reachable: Vec<i32> = open_descriptors()
        .into_iter()
        .filter(|fd| !before.contains(fd))
        .collect();
    println!("ATTACKING");
    let seconds: u64 = args["seconds"].parse().unwrap();
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tried = Attempts::default();
    let mut garbage = Garbage(gstshmframe::transport::monotonic_ns() | 1);
    // Connections held open without a word until the end.
    let mut silent = Vec::new();
    while Instant::now() < until {
        tried.rounds += 1;
        attack_descriptors(&reachable, &mut tried, &mut garbage);
        attack_shared_mappings(&own_mappings, &mut tried, &mut garbage);
        attack_shm_directory(&mut tried, &mut garbage, &mut silent);
        std::thread::sleep(Duration::from_millis(2));
    }
    for fd in silent {
        // SAFETY: a socket this function opened and nothing else uses.
        unsafe { libc::close(fd) };
    }
    let Attempts {
        rounds,
        truncated,
        opened_for_writing,
        reopened_for_writing,
        mapped_writable,
        pages_written,
        mapped_pages_written,
        made_writable,
        connected,
        garbage_sent,
    } = tried;
    println!(
        "SUMMARY rounds={rounds} truncated={truncated} opened_for_writing={opened_for_writing} \
         reopened_for_writing={reopened_for_writing} mapped_writable={mapped_writable} \
         pages_written={pages_written} mapped_pages_written={mapped_pages_written} \
         made_writable={made_writable} connected={connected} garbage_sent={garbage_sent}"
    );
    // Said before detaching: the reader's own state is garbage now, and whatever detaching
    // makes of it harms only this process.
    drop(reader);
}

/// The shared mappings of this process: (start, end, writable).
fn shared_mappings() -> Vec<(usize, usize, bool)> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (range, perms) = (fields.next()?, fields.next()?);
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            perms
                .ends_with('s')
                .then_some((start, end, perms.as_bytes()[1] == b'w'))
        })
        .collect()
}

/// Every shared mapping attaching gave this process (those not in `own`, the ones it had
/// before): read-only ones are made writable with mprotect if the kernel lets it (only if the
/// descriptor mapped was writable) and put back afterwards; every page is written with
/// garbage through /proc/self/mem, which, unlike a store, fails instead of raising SIGBUS on
/// a page past the end of a file this attacker truncated.
fn attack_shared_mappings(
    own: &[(usize, usize, bool)],
    tried: &mut Attempts,
    garbage: &mut Garbage,
) {
    let Ok(mem) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")
    else {
        return;
    };
    let mut page = [0u8; 4096];
    for (start, end, writable) in shared_mappings() {
        if own.iter().any(|&(s, _, _)| s == start) {
            continue;
        }
        let len = (end - start).min(MAX_SCRIBBLE as usize);
        // SAFETY: mprotect of a mapping of this process; the result is checked.
        let made_writable = !writable
            && unsafe {
                libc::mprotect(
                    start as *mut libc::c_void,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            } == 0;
        tried.made_writable += u64::from(made_writable);
        for offset in (0..len).step_by(page.len()) {
            garbage.fill(&mut page);
            let n = page.len().min(len - offset);
            use std::os::unix::fs::FileExt;
            if mem.write_at(&page[..n], (start + offset) as u64).is_ok() {
                tried.mapped_pages_written += 1;
            }
        }
        if made_writable {
            // SAFETY: as above, putting the protection back.
            unsafe { libc::mprotect(start as *mut libc::c_void, len, libc::PROT_READ) };
        }
    }
}

/// The file type and size of descriptor `fd`.
fn fd_stat(fd: i32) -> Option<(libc::mode_t, u64)> {
    // SAFETY: fstat fills the zeroed struct we pass; fd is checked by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    (unsafe { libc::fstat(fd, &mut st) } == 0)
        .then_some((st.st_mode & libc::S_IFMT, st.st_size.max(0) as u64))
}

/// The descriptors this process has open (not the one that listed them, closed since).
fn open_descriptors() -> Vec<i32> {
    let listed: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    listed
        .into_iter()
        .filter(|&fd| fd_stat(fd).is_some())
        .collect()
}

/// The descriptors the transport gave this reader: regular files are scribbled over and
/// truncated, then re-opened read-write through /proc/self/fd and attacked again; sockets get
/// garbage.
fn attack_descriptors(fds: &[i32], tried: &mut Attempts, garbage: &mut Garbage) {
    for &fd in fds {
        match fd_stat(fd) {
            Some((libc::S_IFREG, _)) => {
                scribble_and_truncate(fd, tried, garbage);
                let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).unwrap();
                // SAFETY: open of a NUL-terminated path; the result is checked.
                let again = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
                if again >= 0 {
                    tried.reopened_for_writing += 1;
                    scribble_and_truncate(again, tried, garbage);
                    // SAFETY: the descriptor we just opened.
                    unsafe { libc::close(again) };
                }
            }
            Some((libc::S_IFSOCK, _)) => send_garbage(fd, tried, garbage),
            _ => {}
        }
    }
}

/// Every file of the shm directory (all of them the stream's): regular files opened
/// read-write, write-only and read-only and attacked through each descriptor; sockets
/// connected to, sent garbage, and one connection per socket held open silently.
fn attack_shm_directory(tried: &mut Attempts, garbage: &mut Garbage, silent: &mut Vec<i32>) {
    let Ok(dir) = std::fs::read_dir(shm_dir()) else {
        return;
    };
    for entry in dir.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path =
            std::ffi::CString::new(entry.path().into_os_string().into_encoded_bytes()).unwrap();
        if kind.is_file() {
            for mode in [libc::O_RDWR, libc::O_WRONLY, libc::O_RDONLY] {
                let flags = mode | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
                // SAFETY: open of a NUL-terminated path; the result is checked.
                let fd = unsafe { libc::open(path.as_ptr(), flags) };
                if fd < 0 {
                    continue;
                }
                if mode != libc::O_RDONLY {
                    tried.opened_for_writing += 1;
                }
                scribble_and_truncate(fd, tried, garbage);
                // SAFETY: the descriptor we just opened.
                unsafe { libc::close(fd) };
            }
        } else if kind.is_socket() {
            for kind in [libc::SOCK_STREAM, libc::SOCK_SEQPACKET, libc::SOCK_DGRAM] {
                let Some(fd) = connect_unix(&entry.path(), kind) else {
                    continue;
                };
                tried.connected += 1;
                send_garbage(fd, tried, garbage);
                if silent.len() < 16 {
                    silent.push(fd);
                } else {
                    // SAFETY: a socket we just opened.
                    unsafe { libc::close(fd) };
                }
            }
        }
    }
}

/// A non-blocking Unix socket of type `kind` connected to `path`.
fn connect_unix(path: &Path, kind: i32) -> Option<i32> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, kind | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a zeroed sockaddr_un is valid; the path is copied in bounds below.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        // SAFETY: the socket we just opened.
        unsafe { libc::close(fd) };
        return None;
    }
    for (dst, &b) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = b as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_un of `len` bytes.
    let connected = unsafe { libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len) };
    let in_progress = std::io::Error::last_os_error().raw_os_error() == Some(libc::EINPROGRESS);
    if connected == 0 || in_progress {
        Some(fd)
    } else {
        // SAFETY: the socket we just opened.
        unsafe { libc::close(fd) };
        None
    }
}

/// A few messages of garbage on socket `fd`, never blocking.
fn send_garbage(fd: i32, tried: &mut Attempts, garbage: &mut Garbage) {
    let mut message = [0u8; 512];
    for len in [1, 7, 64, 512] {
        garbage.fill(&mut message[..len]);
        // SAFETY: sends `len` bytes of our buffer; the result is checked.
        let sent = unsafe {
            libc::send(
                fd,
                message.as_ptr().cast(),
                len,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if sent > 0 {
            tried.garbage_sent += 1;
        }
    }
}

/// Through descriptor `fd` of a regular file: maps it shared and writable and scribbles over
/// every byte, writes garbage at every page, truncates it to nothing (for 20 ms: long enough
/// for everyone mapping it to touch a page that is gone) and grows it to a terabyte, then puts
/// its size back (so that the next round finds something to attack again).
fn scribble_and_truncate(fd: i32, tried: &mut Attempts, garbage: &mut Garbage) {
    let Some((_, size)) = fd_stat(fd) else {
        return;
    };
    let len = size.min(MAX_SCRIBBLE) as usize;
    if len > 0 {
        // SAFETY: a new mapping of `len` bytes of fd; the result is checked before use.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if map != libc::MAP_FAILED {
            tried.mapped_writable += 1;
            // SAFETY: `map` maps `len` bytes read-write, and the file is at least that long:
            // it had `size` bytes a moment ago and only this (single-threaded) attacker
            // shrinks files.
            garbage.fill(unsafe { std::slice::from_raw_parts_mut(map.cast::<u8>(), len) });
            // SAFETY: the mapping made above, no longer used.
            unsafe { libc::munmap(map, len) };
        }
        let mut page = [0u8; 64];
        for offset in (0..len).step_by(4096) {
            garbage.fill(&mut page);
            // SAFETY: writes 64 bytes of our buffer; the result is checked.
            let written =
                unsafe { libc::pwrite(fd, page.as_ptr().cast(), page.len(), offset as i64) };
            if written > 0 {
                tried.pages_written += 1;
            }
        }
    }
    // SAFETY (the three calls): ftruncate on a descriptor we hold; results are checked.
    if unsafe { libc::ftruncate(fd, 0) } == 0 {
        tried.truncated += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    if unsafe { libc::ftruncate(fd, 1 << 40) } == 0 {
        tried.truncated += 1;
    }
    unsafe { libc::ftruncate(fd, size as i64) };
}

// ----------------------------------------------------------------------------------------------
// The tests' side
// ----------------------------------------------------------------------------------------------

fn running_as_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    prerequisite(
        test,
        (!root).then(|| {
            "creating a test user and switching to it needs root (CI runs as root)".into()
        }),
    )
}

/// A user made for one test (useradd) and removed (userdel) when dropped, also when the test
/// fails.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    /// Err: why the user could not be made.
    fn create() -> Result<TestUser, String> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "shmfh{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        // Tests running in parallel take the passwd lock in turn: useradd fails with status
        // 10 while another holds it.
        let mut tries = 0;
        loop {
            let out = std::process::Command::new("useradd")
                .args(["--system", "--no-create-home", "--user-group"])
                .args(["--shell", "/usr/sbin/nologin", &name])
                .output()
                .map_err(|e| format!("useradd cannot run: {e}"))?;
            if out.status.success() {
                break;
            }
            tries += 1;
            if out.status.code() != Some(10) || tries == 50 {
                return Err(format!(
                    "useradd {name} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Removed on drop from here on, also if its ids cannot be read.
        let mut user = TestUser {
            name,
            uid: 0,
            gid: 0,
        };
        let id = |flag: &str| -> Result<u32, String> {
            let out = std::process::Command::new("id")
                .args([flag, &user.name])
                .output()
                .map_err(|e| format!("id cannot run: {e}"))?;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .map_err(|_| format!("id {flag} {}: {out:?}", user.name))
        };
        let (uid, gid) = (id("-u")?, id("-g")?);
        (user.uid, user.gid) = (uid, gid);
        Ok(user)
    }

    fn ids(&self) -> (u32, u32, &'static [u32]) {
        (self.uid, self.gid, &[])
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        for _ in 0..50 {
            let status = std::process::Command::new("userdel")
                .arg(&self.name)
                .stderr(std::process::Stdio::null())
                .status();
            // 10: the passwd file is locked by another test's useradd or userdel.
            if !matches!(status, Ok(s) if s.code() == Some(10)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A test user, or None (after `prerequisite`) when the test cannot make one.
fn test_user(test: &str) -> Option<TestUser> {
    if !running_as_root(test) {
        return None;
    }
    match TestUser::create() {
        Ok(user) => Some(user),
        Err(why) => {
            prerequisite(test, Some(why));
            None
        }
    }
}

/// A directory of one test under /dev/shm, removed with everything in it when dropped: `shm`
/// (mode 1777, as /dev/shm) is the streams' `SHMFRAME_DIR`, `stop` tells writers to stop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = Path::new("/dev/shm").join(ShmName::new("scratch").as_str());
        std::fs::create_dir_all(dir.join("shm")).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.join("shm"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        Scratch(dir)
    }

    fn shm(&self) -> PathBuf {
        self.0.join("shm")
    }

    fn stop(&self) -> PathBuf {
        self.0.join("stop")
    }

    fn env(&self) -> [(&'static str, std::ffi::OsString); 1] {
        [("SHMFRAME_DIR", self.shm().into_os_string())]
    }

    fn leftovers(&self) -> Vec<String> {
        file_names(&self.shm())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type Summary = std::collections::HashMap<String, String>;

/// A child whose stdout lines are collected by a thread (so a chatty child never blocks).
struct Watched {
    guard: ChildGuard,
    lines: Arc<Mutex<Vec<String>>>,
    collector: Option<std::thread::JoinHandle<()>>,
}

impl Watched {
    fn new(mut guard: ChildGuard) -> Watched {
        let stdout = guard.child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let collector = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        Watched {
            guard,
            lines,
            collector: Some(collector),
        }
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn find(&self, prefix: &str) -> Option<String> {
        let lines = self.lines.lock().unwrap();
        lines.iter().find(|l| l.starts_with(prefix)).cloned()
    }

    /// Waits up to CHILD_LIMIT for a line starting with `prefix`; panics with the output if
    /// none comes (or the child ends first).
    fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + CHILD_LIMIT;
        loop {
            if let Some(line) = self.find(prefix) {
                return line;
            }
            let ended = self.guard.child.try_wait().unwrap();
            if ended.is_some() || Instant::now() >= deadline {
                self.collect_all();
                return self.find(prefix).unwrap_or_else(|| {
                    panic!(
                        "{}: no {prefix:?} line ({}); output:\n{}",
                        self.guard.label,
                        ended.map_or("still running".to_string(), |s| s.to_string()),
                        self.output()
                    )
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The number after the last line `prefix` (0 if none yet).
    fn last_count(&self, prefix: &str) -> u64 {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Once the child has ended: waits for the collector to take its last lines.
    fn collect_all(&mut self) {
        if let Some(collector) = self.collector.take() {
            let _ = collector.join();
        }
    }

    /// Waits for the child to exit (killing it after CHILD_LIMIT) and returns its exit status
    /// (None: it had to be killed) and its `SUMMARY`, if it printed one.
    fn end(&mut self) -> (Option<std::process::ExitStatus>, Option<Summary>) {
        let status = self.guard.wait_timeout(CHILD_LIMIT);
        if status.is_none() {
            self.guard.signal(libc::SIGKILL);
            let _ = self.guard.child.wait();
        }
        self.collect_all();
        let summary = self.find("SUMMARY ").map(|line| {
            line["SUMMARY ".len()..]
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        });
        (status, summary)
    }
}

fn num(summary: &Summary, key: &str) -> u64 {
    summary[key]
        .parse()
        .unwrap_or_else(|_| panic!("{key} in {summary:?} is not a number"))
}

/// How a child ended, in words.
fn ending(status: Option<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        None => format!("still running after {CHILD_LIMIT:?}, killed"),
        Some(s) => match s.signal() {
            Some(libc::SIGBUS) => "killed by SIGBUS".to_string(),
            Some(libc::SIGSEGV) => "killed by SIGSEGV".to_string(),
            _ => s.to_string(),
        },
    }
}

/// How the stream's writer runs, and how to stop it.
enum WriterKind {
    /// A transport writer (this file's `write` role) under `block` or `drop-oldest`.
    Transport(&'static str),
    /// `gst-launch-1.0 -e TEST_SOURCE ! shmframesink`, stopped with SIGINT (EOS).
    Sink,
}

/// How the attacker runs.
enum AttackerKind {
    /// This file's `attack` role (the transport's `Reader`).
    Rust,
    /// tests/hostile_reader.py (the Python package's `Reader`).
    Python,
}

/// The whole scenario: writer (root) and checking reader (root) up, the attacker (the test
/// user) attacks for `attack_seconds()`, the writer runs on a little and stops; then every
/// assertion of the file's documentation.
fn attack_a_stream(user: &TestUser, writer_kind: WriterKind, attacker: AttackerKind) {
    let scratch = Scratch::new();
    let name = ShmName::new("hostile");
    let env = scratch.env();
    let registry = scratch.0.join("registry.bin");
    let (mut writer, pattern) = match writer_kind {
        WriterKind::Transport(policy) => {
            let stop = scratch.stop().display().to_string();
            let args = [
                format!("name={}", name.as_str()),
                format!("policy={policy}"),
                format!("stop={stop}"),
            ];
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut writer = Watched::new(spawn_role_env("write", &args, &env));
            writer.wait_line("READY");
            (writer, "fill")
        }
        WriterKind::Sink => {
            let launch = format!(
                "-e {TEST_SOURCE} ! shmframesink shm-name={} perms=0666 \
                 backpressure=drop-oldest depth=8",
                name.as_str()
            );
            (
                Watched::new(gst_launch_env(&launch, &registry, &env)),
                "colors",
            )
        }
    };
    let transport_writer = matches!(writer_kind, WriterKind::Transport(_));
    let args = [
        format!("name={}", name.as_str()),
        format!("pattern={pattern}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut checker = Watched::new(spawn_role_env("check", &args, &env));
    checker.wait_line("ATTACHED");
    assert!(
        wait_for(CHILD_LIMIT, || checker.last_count("GOT ") > 0),
        "the checking reader got frames before the attack; output:\n{}",
        checker.output()
    );

    let seconds = attack_seconds().to_string();
    let mut attacker = match attacker {
        AttackerKind::Rust => {
            let exe = child_binary_for_others(&scratch.0);
            let args = [
                format!("name={}", name.as_str()),
                format!("seconds={seconds}"),
            ];
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let env = [("SHMFRAME_DIR", scratch.shm().into_os_string())];
            let env: Vec<(&str, &std::ffi::OsStr)> =
                env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
            Watched::new(spawn_role_as(&exe, "attack", &args, user.ids(), &env))
        }
        AttackerKind::Python => Watched::new(python_as(user, &scratch, name.as_str(), &seconds)),
    };
    attacker.wait_line("ATTACKING");
    let written_before = writer.last_count("WROTE ");
    let checked_before = checker.last_count("GOT ");
    let (attacker_status, attempts) = attacker.end();
    let writer_alive = writer.guard.child.try_wait().unwrap().is_none();
    let written_during = writer.last_count("WROTE ") - written_before;
    let checked_during = checker.last_count("GOT ") - checked_before;
    // The writer goes on after the attack; the checker must follow it to the end.
    std::thread::sleep(Duration::from_millis(300));
    if transport_writer {
        std::fs::write(scratch.stop(), b"").unwrap();
    } else {
        writer.guard.signal(libc::SIGINT);
    }
    let (writer_status, written) = writer.end();
    let (checker_status, checked) = checker.end();
    let leftovers = scratch.leftovers();

    // Every finding at once, so that one run shows everything that went wrong.
    let mut wrong = Vec::new();
    if !writer_alive {
        wrong.push("the writer was no longer running at the end of the attack".to_string());
    }
    if !writer_status.is_some_and(|s| s.success()) {
        wrong.push(format!("the writer ended {}", ending(writer_status)));
    }
    if transport_writer && written_during == 0 {
        wrong.push("the writer published nothing during the attack".into());
    }
    if !checker_status.is_some_and(|s| s.success()) {
        wrong.push(format!(
            "the checking reader ended {}",
            ending(checker_status)
        ));
    }
    if checked_during == 0 {
        wrong.push("the checking reader got nothing during the attack".into());
    }
    match &checked {
        None => wrong.push("the checking reader printed no summary".into()),
        Some(checked) => {
            if (num(checked, "bad"), num(checked, "backwards")) != (0, 0) {
                wrong.push(format!(
                    "the checking reader got {} frames of which {} wrong and {} not after \
                     the one before",
                    checked["frames"], checked["bad"], checked["backwards"]
                ));
            }
            if checked["end"] != "eos" {
                wrong.push(format!("the checking reader's end: {}", checked["end"]));
            }
            if num(checked, "gaps") != num(checked, "missed") {
                wrong.push(format!(
                    "the checking reader skipped {} frames but counted {} as missed",
                    checked["gaps"], checked["missed"]
                ));
            }
            let last = checked["last"].parse().ok();
            if let Some(written) = written.as_ref().map(|w| num(w, "frames"))
                && last != written.checked_sub(1)
            {
                wrong.push(format!(
                    "the checking reader's last frame is {}, the writer's {}",
                    checked["last"],
                    written.saturating_sub(1)
                ));
            }
        }
    }
    match &attempts {
        None => wrong.push(format!(
            "the attacker ended {} without a summary",
            ending(attacker_status)
        )),
        Some(attempts) => {
            // Readers hold the stream's files read-only: no truncation, no opening for writing.
            if (
                num(attempts, "truncated"),
                num(attempts, "opened_for_writing"),
            ) != (0, 0)
            {
                wrong.push(format!(
                    "the attacker truncated {} times and opened {} shm files for writing",
                    attempts["truncated"], attempts["opened_for_writing"]
                ));
            }
        }
    }
    if !leftovers.is_empty() {
        wrong.push(format!("left in the shm directory: {leftovers:?}"));
    }
    assert!(
        wrong.is_empty(),
        "{}\n\nwriter ({}):\n{}\nchecker ({}):\n{}\nattacker ({}):\n{}",
        wrong.join("\n"),
        ending(writer_status),
        writer.output(),
        ending(checker_status),
        checker.output(),
        ending(attacker_status),
        attacker.output()
    );
}

/// `target/pyenv/bin/python tests/hostile_reader.py NAME SECONDS` as `user`.
fn python_as(user: &TestUser, scratch: &Scratch, name: &str, seconds: &str) -> ChildGuard {
    use std::os::unix::process::CommandExt;
    let (uid, gid) = (user.uid, user.gid);
    let mut command = std::process::Command::new(PYTHON);
    command
        .args(["-u", PYTHON_ATTACKER, name, seconds])
        .env("SHMFRAME_DIR", scratch.shm())
        .env("HOME", &scratch.0)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    // SAFETY: the closure runs between fork and exec and only makes the async-signal-safe
    // calls setgroups, setgid and setuid.
    unsafe {
        command.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    ChildGuard {
        child: command.spawn().expect("spawn the Python attacker"),
        label: format!("python {PYTHON_ATTACKER} as uid {uid}"),
    }
}

/// Why the Python attacker cannot run as another user with this tree's package, if it
/// cannot: the environment is missing, or its `shmframe` is another tree's or older than the
/// sources it is built from (scripts/python.sh builds it).
fn python_missing() -> Option<String> {
    if !Path::new(PYTHON).exists() {
        return Some(format!(
            "{PYTHON} is missing: scripts/python.sh builds the Python package there"
        ));
    }
    if let Some(why) = unreachable_for_others(Path::new(PYTHON)) {
        return Some(why);
    }
    let out = std::process::Command::new(PYTHON)
        .args(["-c", "import shmframe._native as n; print(n.__file__)"])
        .output()
        .map_err(|e| e.to_string());
    let native = match out {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
        Ok(out) => {
            return Some(format!(
                "{PYTHON} cannot import shmframe (run scripts/python.sh): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Err(e) => return Some(format!("{PYTHON} cannot run: {e}")),
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !native.starts_with(manifest.join("python")) {
        return Some(format!(
            "{PYTHON} imports shmframe from {}, not from this tree (run scripts/python.sh)",
            native.display()
        ));
    }
    let sources = ["transport/src", "python/src"].map(|dir| manifest.join(dir));
    let built = std::fs::metadata(&native).and_then(|m| m.modified()).ok();
    (sources.iter().filter_map(|dir| newest_mtime(dir)).max() > built).then(|| {
        format!(
            "{} is older than the sources it is built from (run scripts/python.sh)",
            native.display()
        )
    })
}

#[test]
fn a_hostile_reader_of_another_user_harms_neither_the_writer_nor_other_readers() {
    let test = "a_hostile_reader_of_another_user_harms_neither_the_writer_nor_other_readers";
    let Some(user) = test_user(test) else { return };
    for policy in ["drop-oldest", "block"] {
        attack_a_stream(&user, WriterKind::Transport(policy), AttackerKind::Rust);
    }
}

#[test]
fn a_hostile_python_reader_of_another_user_harms_neither_the_writer_nor_other_readers() {
    let test = "a_hostile_python_reader_of_another_user_harms_neither_the_writer_nor_other_readers";
    let Some(user) = test_user(test) else { return };
    if !prerequisite(test, python_missing()) {
        return;
    }
    attack_a_stream(
        &user,
        WriterKind::Transport("drop-oldest"),
        AttackerKind::Python,
    );
}

#[test]
fn a_hostile_reader_of_another_user_harms_neither_shmframesink_nor_its_readers() {
    let test = "a_hostile_reader_of_another_user_harms_neither_shmframesink_nor_its_readers";
    let Some(user) = test_user(test) else { return };
    attack_a_stream(&user, WriterKind::Sink, AttackerKind::Rust);
}

// ----------------------------------------------------------------------------------------------
// writer-uid
// ----------------------------------------------------------------------------------------------

/// `shmframesrc shm-name=NAME writer-uid=UID start=oldest` reading 5 frames, checking each;
/// prints `FRAMES 5` or `ERROR <the error the src posted>`.
fn read_with_src(args: &std::collections::HashMap<String, String>) {
    init();
    let (pipeline, out) = launch_with::<gst_app::AppSink>(
        &format!(
            "shmframesrc shm-name={} writer-uid={} start=oldest ! appsink name=out sync=false",
            args["name"], args["writer-uid"]
        ),
        "out",
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let deadline = Instant::now() + CHILD_LIMIT;
    let mut received = 0;
    while received < 5 && Instant::now() < deadline {
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            let gst::MessageView::Error(e) = msg.view() else {
                unreachable!()
            };
            println!("ERROR {}", e.error());
            break;
        }
        if let Some(sample) = out.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
            let buffer = sample.buffer().unwrap();
            check_frame(buffer.offset(), &buffer.map_readable().unwrap()).unwrap();
            received += 1;
        }
    }
    if received == 5 {
        println!("FRAMES 5");
    }
    pipeline.set_state(gst::State::Null).unwrap();
}

/// A writer running as the test user: a root `shmframesrc` with `writer-uid` set to that
/// user's uid (or -1, the default) reads its frames; with `writer-uid=0` (root's own) it
/// refuses the segment, naming both uids, instead of following another user's writer:
/// whether the segment was there first or the src was, waiting for it.
#[test]
fn writer_uid_makes_shmframesrc_read_only_the_named_users_segment() {
    let test = "writer_uid_makes_shmframesrc_read_only_the_named_users_segment";
    let Some(user) = test_user(test) else { return };
    let scratch = Scratch::new();
    let name = ShmName::new("writer-uid");
    let start_src = |uid: i64| {
        let args = [
            format!("name={}", name.as_str()),
            format!("writer-uid={uid}"),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Watched::new(spawn_role_env("src", &args, &scratch.env()))
    };
    // What the src printed: `FRAMES 5` or `ERROR <its error>`.
    let outcome = |mut src: Watched| {
        let line = |l: &String| l.starts_with("FRAMES ") || l.starts_with("ERROR ");
        assert!(
            wait_for(CHILD_LIMIT, || src.lines.lock().unwrap().iter().any(line)),
            "{} printed no outcome:\n{}",
            src.guard.label,
            src.output()
        );
        let found = src.lines.lock().unwrap().iter().find(|l| line(l)).cloned();
        src.guard.wait_ok(CHILD_LIMIT);
        found.unwrap()
    };
    let path = scratch.shm().join(name.as_str()).display().to_string();
    let uid = user.uid;
    let refused = format!(
        "ERROR Reading shm-name \"{}\" failed: {path} belongs to uid {uid}, but this reader \
         accepts only a writer running as uid 0: start the writer as uid 0, or set the \
         reader's writer uid to {uid} (or unset it: any user the segment's permissions admit)",
        name.as_str()
    );

    let waiting_for_root = start_src(0);
    std::thread::sleep(Duration::from_millis(500));
    let exe = child_binary_for_others(&scratch.0);
    let stop = scratch.stop().display().to_string();
    let args = [
        format!("name={}", name.as_str()),
        "policy=drop-oldest".to_string(),
        format!("stop={stop}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let shm = scratch.shm();
    let mut writer = Watched::new(spawn_role_as(
        &exe,
        "write",
        &args,
        user.ids(),
        &[("SHMFRAME_DIR", shm.as_os_str())],
    ));
    writer.wait_line("READY");
    assert_eq!(
        outcome(waiting_for_root),
        refused,
        "a src waiting for a writer of root's"
    );
    assert_eq!(outcome(start_src(i64::from(uid))), "FRAMES 5");
    assert_eq!(outcome(start_src(-1)), "FRAMES 5", "the default: any user");
    assert_eq!(outcome(start_src(0)), refused);
    std::fs::write(scratch.stop(), b"").unwrap();
    let (status, summary) = writer.end();
    assert!(
        status.is_some_and(|s| s.success()) && summary.is_some(),
        "{}",
        writer.output()
    );
}
