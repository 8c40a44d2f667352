//! The transport across real processes: writer and reader children (the child binary running
//! this file's `child_entry`), which the tests kill, stop and restart.

mod common;

use common::{
    ChildGuard, ShmName, SmallTmpfs, check_frame, fill_frame, num, oldest, role, spawn_role,
    spawn_role_env, summary, wait_for,
};
use gstshmframe::transport::*;
use std::time::{Duration, Instant};

const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// Entry point of child processes: the child binary (tests/child/main.rs) runs it in the role
/// `spawn_role` names.
#[allow(dead_code)] // called by the child binary, not by this file's tests
pub fn child_entry() {
    let Some((role, args)) = role() else { return };
    let code = match role.as_str() {
        "writer" => run_writer(&args),
        "reader" => run_reader(&args),
        "scribbler" => run_scribbler(&args),
        "pinner" => run_pinner(&args),
        "creator" => run_creator(&args),
        "many-writers" => run_many_writers(&args),
        "racer" => run_racer(&args),
        "sigterm-opt-out" => run_sigterm_opt_out(&args),
        "attacker" => run_attacker(&args),
        "handshake" => run_handshake(&args),
        other => panic!("unknown role {other}"),
    };
    std::process::exit(code);
}

fn policy(s: &str) -> Backpressure {
    match s {
        "block" => Backpressure::Block,
        "drop-oldest" => Backpressure::DropOldest,
        "drop-newest" => Backpressure::DropNewest,
        _ => panic!("policy {s}"),
    }
}

/// writer NAME FRAMES FRAME_SIZE POLICY READERS_TO_WAIT_FOR
/// FRAMES = 0 writes until killed.
fn run_writer(args: &[String]) -> i32 {
    let name = &args[0];
    let frames: u64 = args[1].parse().unwrap();
    let size: u64 = args[2].parse().unwrap();
    let mut c = WriterConfig::new(name, size);
    c.depth = 4;
    if args[3] == "double" {
        c.layout = Layout::Double;
    } else {
        c.backpressure = policy(&args[3]);
    }
    let wait_readers: usize = args[4].parse().unwrap();
    let mut w = Writer::create(&c).unwrap();
    w.set_caps("test/x-frames").unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || w.reader_count() >= wait_readers),
        "readers did not attach"
    );
    let mut n = 0;
    while frames == 0 || n < frames {
        let outcome = w
            .write_with(&FrameMeta::default(), size, |slot| fill_frame(n, slot))
            .unwrap();
        if outcome.frame().is_some() {
            n += 1;
        }
    }
    w.end_of_stream();
    println!(
        "SUMMARY written={} dropped={}",
        w.frames_written(),
        w.frames_dropped()
    );
    // Stay until the readers have drained and detached, so EOS is seen before CLOSED.
    wait_for(Duration::from_secs(20), || w.reader_count() == 0);
    0
}

/// sigterm-opt-out NAME WHEN: calls `disable_sigterm_handler` `before` or `after` creating its
/// writer, then writes 4 KiB frames until killed (bounded to 60 s).
fn run_sigterm_opt_out(args: &[String]) -> i32 {
    let opt_out_first = match args[1].as_str() {
        "before" => true,
        "after" => false,
        other => panic!("WHEN is before or after, not {other}"),
    };
    if opt_out_first {
        disable_sigterm_handler();
    }
    let mut w = Writer::create(&WriterConfig::new(&args[0], 4096)).unwrap();
    if !opt_out_first {
        disable_sigterm_handler();
    }
    let deadline = Instant::now() + CHILD_LIMIT;
    let mut n = 0;
    while Instant::now() < deadline {
        w.write_with(&FrameMeta::default(), 4096, |slot| fill_frame(n, slot))
            .unwrap();
        n += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    0
}

/// reader NAME DELAY_US_EVERY_16_FRAMES
/// Follows writers until EOS; checks every frame's content and order; prints a summary.
fn run_reader(args: &[String]) -> i32 {
    let name = &args[0];
    let delay = Duration::from_micros(args[1].parse().unwrap());
    let mut sub = Subscriber::new(name, oldest()).unwrap();
    let (mut attached, mut lost, mut read) = (0, 0, 0u64);
    let mut last: Option<u64> = None;
    let mut buf = Vec::new();
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < CHILD_LIMIT, "reader ran too long");
        let ev = sub
            .next(Duration::from_millis(200), |info, view| {
                buf.resize(info.size as usize, 0);
                view.copy_to(&mut buf);
            })
            .unwrap();
        match ev {
            SubscriberEvent::Frame(info) => {
                if let Err(e) = check_frame(info.number, &buf) {
                    println!("TORN {e}");
                    return 3;
                }
                if let Some(l) = last {
                    assert!(info.number > l, "out of order: {} after {l}", info.number);
                }
                last = Some(info.number);
                read += 1;
                if !delay.is_zero() && read % 16 == 0 {
                    std::thread::sleep(delay);
                }
            }
            SubscriberEvent::WriterAttached { .. } => {
                attached += 1;
                last = None;
            }
            SubscriberEvent::WriterLost { clean, .. } => {
                if !clean {
                    lost += 1;
                }
            }
            SubscriberEvent::Eos => break,
            SubscriberEvent::Timeout => {}
        }
    }
    let (total_read, missed) = sub.totals();
    assert_eq!(total_read, read);
    let evictions = sub.reader().map_or(0, |r| r.evictions());
    println!(
        "SUMMARY read={read} missed={missed} attached={attached} lost={lost} last={} \
         evictions={evictions}",
        last.unwrap_or(0)
    );
    0
}

/// scribbler NAME: attaches as a reader and tries to write into frame data. Must fault.
fn run_scribbler(args: &[String]) -> i32 {
    let r = Reader::open(&args[0], &oldest()).unwrap();
    let pinned = r.pin(0).unwrap().expect("frame 0 held");
    let p = pinned.data().as_ptr() as *mut u8;
    // SAFETY: deliberately invalid: the page is mapped read-only, so this must raise SIGSEGV.
    // That fault is what the test checks.
    unsafe { p.write_volatile(0xAA) };
    println!("SUMMARY wrote-to-read-only-memory");
    0
}

/// The errno of the last failed call, by name, or `ok`.
fn outcome(failed: bool) -> String {
    if !failed {
        return "ok".into();
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EBADF) => "EBADF".into(),
        Some(libc::EINVAL) => "EINVAL".into(),
        Some(libc::EACCES) => "EACCES".into(),
        Some(libc::EPERM) => "EPERM".into(),
        other => format!("errno{other:?}"),
    }
}

/// attacker NAME SCRIBBLE_MS READ_FRAMES [pins]: attaches as a reader, then attacks every
/// descriptor it holds on the segment or on a memfd (its control page): writes to it,
/// truncates it, maps it shared and writable, grows it; scribbles random bytes over every page
/// it could map writable for SCRIBBLE_MS (with `pins`: pins every slot, says it is closing
/// and has rejoined after any eviction, cursor at the end, every millisecond, through its
/// control page); then reads READ_FRAMES frames, checking each. Reports each attack's outcome.
fn run_attacker(args: &[String]) -> i32 {
    let segment = shm_dir().join(&args[0]);
    let scribble = Duration::from_millis(args[1].parse().unwrap());
    let frames: u64 = args[2].parse().unwrap();
    let hog_pins = args.get(3).is_some_and(|mode| mode == "pins");
    let mut r = Reader::open(&args[0], &oldest()).unwrap();
    let mut report = Vec::new();
    let mut writable: Vec<(*mut u8, usize)> = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let what = if target == segment {
            "segment"
        } else if target.to_string_lossy().starts_with("/memfd:") {
            "page"
        } else {
            continue;
        };
        let byte = 0xAAu8;
        // SAFETY: writes one byte from `byte` to a descriptor this process holds.
        let write = unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) } < 0;
        report.push(format!("{what}_write={}", outcome(write)));
        // SAFETY: a new mapping at an address the kernel chooses; if it succeeds it is only
        // ever written through (the attack), never read as Rust values.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        report.push(format!("{what}_mmap={}", outcome(map == libc::MAP_FAILED)));
        if map != libc::MAP_FAILED {
            writable.push((map.cast(), 4096));
        }
        // SAFETY: plain system calls on a descriptor this process holds.
        let truncate = unsafe { libc::ftruncate(fd, 0) } < 0;
        report.push(format!("{what}_truncate={}", outcome(truncate)));
        // SAFETY: as above.
        let grow = unsafe { libc::ftruncate(fd, 1 << 20) } < 0;
        report.push(format!("{what}_grow={}", outcome(grow)));
    }
    let deadline = Instant::now() + scribble;
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ std::process::id() as u64;
    while Instant::now() < deadline {
        if hog_pins {
            for &(at, _) in &writable {
                hog_every_pin(at);
            }
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        for &(at, len) in &writable {
            for i in (0..len).step_by(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // SAFETY: inside a mapping of `len` bytes made above (the attack's target).
                unsafe { (at.add(i) as *mut u64).write_volatile(x) };
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (mut read, mut torn) = (0u64, 0u64);
    let mut buf = Vec::new();
    while read < frames {
        match r
            .read_next(Duration::from_secs(20), |info, view| {
                buf.resize(info.size as usize, 0);
                view.copy_to(&mut buf);
            })
            .unwrap()
        {
            ReadResult::Frame(info) => {
                if check_frame(info.number, &buf).is_err() {
                    torn += 1;
                }
                read += 1;
            }
            other => panic!("attacker: {other:?} after {read} frames"),
        }
    }
    println!("SUMMARY {} read={read} torn={torn}", report.join(" "));
    0
}

/// Writes a control page (docs/LAYOUT.md, "Control page") as a reader holding every slot
/// would, and one that never lets go: `detaching` (12) set, `cursor` (16) past any frame,
/// `rejoined` (56) past any eviction count, and every bit of the pin bitmap (128) set.
fn hog_every_pin(page: *mut u8) {
    // SAFETY: `page` is a writable shared mapping of 4096 bytes (the reader's control page);
    // every offset is inside it and aligned for its type.
    unsafe {
        (page.add(12) as *mut u32).write_volatile(1);
        (page.add(16) as *mut u64).write_volatile(u64::MAX);
        (page.add(56) as *mut u64).write_volatile(u64::MAX);
        for word in 0..4 {
            (page.add(128 + 8 * word) as *mut u64).write_volatile(u64::MAX);
        }
    }
}

/// handshake NAME STAGE: gets as far as STAGE in attaching to NAME (`connect`: connected, says
/// nothing; `hello`: said hello, reads no answer; `attached`: a reader), then sleeps until it
/// is killed.
fn run_handshake(args: &[String]) -> i32 {
    let session = inspect(&args[0]).unwrap().writer_session;
    let _held = match args[1].as_str() {
        "attached" => {
            let r = Reader::open(&args[0], &ReaderOptions::default()).unwrap();
            Box::new(r) as Box<dyn std::any::Any>
        }
        stage => {
            let socket = raw_connect(session);
            if stage == "hello" {
                let mut hello = [0u8; 32];
                hello[0..4].copy_from_slice(b"SFRH");
                hello[4..8].copy_from_slice(&LAYOUT_VERSION.to_ne_bytes());
                hello[8..12].copy_from_slice(&std::process::id().to_ne_bytes());
                hello[24..32].copy_from_slice(&session.to_ne_bytes());
                raw_send(&socket, &hello);
            }
            Box::new(socket)
        }
    };
    println!("READY");
    std::thread::sleep(CHILD_LIMIT);
    0
}

/// A raw connection to the socket of the writer whose session is `session`.
fn raw_connect(session: u64) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let path = shm_dir().join(format!(".shmframe-sock-{session:016x}"));
    // SAFETY: all-zero is a valid sockaddr_un; the path fits (checked by the writer's bind).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, &b) in addr.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
        *d = b as libc::c_char;
    }
    // SAFETY: plain socket calls with a valid address.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let r = libc::connect(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "connect to {}", path.display());
        std::os::fd::OwnedFd::from_raw_fd(fd)
    }
}

fn raw_send(socket: &std::os::fd::OwnedFd, bytes: &[u8]) {
    use std::os::fd::AsRawFd;
    // SAFETY: sends `bytes` on a socket we own.
    let r = unsafe {
        libc::send(
            socket.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    assert_eq!(r, bytes.len() as isize);
}

/// One message from `socket` within `limit`: `Some(bytes)` (empty: the writer closed the
/// connection), `None` if nothing came.
fn raw_recv(socket: &std::os::fd::OwnedFd, limit: Duration) -> Option<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut pfd, 1, limit.as_millis() as i32) } <= 0 {
        return None;
    }
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    Some(buf[..n.max(0) as usize].to_vec())
}

/// pinner NAME COUNT: pins COUNT frames (zero-copy) and holds them until killed.
fn run_pinner(args: &[String]) -> i32 {
    let mut r = Reader::open(&args[0], &oldest()).unwrap();
    let count: usize = args[1].parse().unwrap();
    let mut held = Vec::new();
    while held.len() < count {
        let mut out = None;
        if let ReadResult::Frame(_) = r.pin_next(Duration::from_secs(10), &mut out).unwrap() {
            held.push(out.unwrap());
        }
    }
    std::thread::sleep(CHILD_LIMIT);
    0
}

/// creator NAME SLOT_SIZE: creates and drops writers of NAME in a loop until killed; building
/// the segment (allocating and mapping it) takes most of the time, so a kill most likely lands
/// there.
fn run_creator(args: &[String]) -> i32 {
    let config = WriterConfig::new(&args[0], args[1].parse().unwrap());
    loop {
        drop(Writer::create(&config).unwrap());
    }
}

/// many-writers BASE COUNT: COUNT writers named BASE-0 .. BASE-(COUNT-1) in this one process,
/// held until the process is killed.
fn run_many_writers(args: &[String]) -> i32 {
    let count: usize = args[1].parse().unwrap();
    let writers: Vec<Writer> = (0..count)
        .map(|i| Writer::create(&WriterConfig::new(&format!("{}-{i}", args[0]), 4096)).unwrap())
        .collect();
    std::thread::sleep(CHILD_LIMIT);
    drop(writers);
    0
}

/// racer NAME SLOT_SIZE START DONE: at CLOCK_MONOTONIC time START (ns) creates a writer of
/// NAME; prints `CREATED` and holds the segment until the file DONE exists, or prints
/// `ERROR <text>` and makes DONE.
fn run_racer(args: &[String]) -> i32 {
    let config = WriterConfig::new(&args[0], args[1].parse().unwrap());
    let start: u64 = args[2].parse().unwrap();
    let done = std::path::Path::new(&args[3]);
    // Asleep until just before the start, then spinning to it: both racers are running then.
    let early = Duration::from_nanos(start.saturating_sub(monotonic_ns()));
    std::thread::sleep(early.saturating_sub(Duration::from_millis(2)));
    while monotonic_ns() < start {
        std::hint::spin_loop();
    }
    match Writer::create(&config) {
        Ok(writer) => {
            println!("CREATED");
            // The segment stays until the other racer has failed against it.
            wait_for(CHILD_LIMIT, || done.exists());
            drop(writer);
        }
        Err(e) => {
            println!("ERROR {e}");
            std::fs::write(done, b"").unwrap();
        }
    }
    0
}

/// Frames for the soak tests: `SHMFRAME_SOAK_FRAMES` (the full soak uses 100000), else a size
/// that keeps CI fast.
fn soak_frames(ci: u64) -> u64 {
    std::env::var("SHMFRAME_SOAK_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ci)
}

/// A `block` writer of 4096-byte frames, run by the test process itself.
fn block_writer(name: &str, depth: u32, spare_slots: u32, reader_timeout: Duration) -> Writer {
    let mut c = WriterConfig::new(name, 4096);
    c.depth = depth;
    c.spare_slots = spare_slots;
    c.backpressure = Backpressure::Block;
    c.reader_timeout = reader_timeout;
    Writer::create(&c).unwrap()
}

/// Writes frame `n` (4096 bytes of its pattern).
fn write_4k(w: &mut Writer, n: u64) -> WriteOutcome {
    w.write_with(&FrameMeta::default(), 4096, |s| fill_frame(n, s))
        .unwrap()
}

/// The soak under `block`: 1 writer, 4 readers (one slowed), every frame's content and number
/// checked in the readers: zero lost, zero duplicated, zero torn. 10,000 frames in CI;
/// `SHMFRAME_SOAK_FRAMES=100000` for the full soak.
#[test]
fn soak_block_four_readers_one_slowed_lose_nothing() {
    let name = ShmName::new("mp-fanout");
    let frames = soak_frames(10_000);
    let mut readers: Vec<ChildGuard> = ["0", "0", "0", "300"]
        .iter()
        .map(|delay_us| spawn_role("reader", &[&name, delay_us]))
        .collect();
    let mut writer = spawn_role(
        "writer",
        &[&name, &frames.to_string(), "65536", "block", "4"],
    );
    let w = summary(&writer.wait_ok(CHILD_LIMIT));
    assert_eq!(num(&w, "written"), frames);
    for r in &mut readers {
        let s = summary(&r.wait_ok(CHILD_LIMIT));
        assert_eq!(num(&s, "read"), frames, "{s:?}");
        assert_eq!(num(&s, "missed"), 0);
        assert_eq!(num(&s, "last"), frames - 1);
    }
    assert!(!name.path().exists(), "the writer unlinked its segment");
}

/// The soak under the policies that drop: read + missed == written for every reader, exactly,
/// with content checked. 3,000 frames each in CI; `SHMFRAME_SOAK_FRAMES` for the full soak.
#[test]
fn soak_drop_oldest_and_double_account_for_every_frame() {
    for layout in ["drop-oldest", "double"] {
        let name = ShmName::new(&format!("mp-soak-{layout}"));
        let frames = soak_frames(3000);
        let mut readers: Vec<ChildGuard> = ["0", "0", "2000"]
            .iter()
            .map(|delay_us| spawn_role("reader", &[&name, delay_us]))
            .collect();
        let mut writer = spawn_role(
            "writer",
            &[&name, &frames.to_string(), "16384", layout, "3"],
        );
        let w = summary(&writer.wait_ok(CHILD_LIMIT));
        assert_eq!(num(&w, "written"), frames, "{layout}");
        for r in &mut readers {
            let s = summary(&r.wait_ok(CHILD_LIMIT));
            assert_eq!(
                num(&s, "read") + num(&s, "missed"),
                frames,
                "{layout}: {s:?}"
            );
            assert_eq!(num(&s, "last"), frames - 1, "{layout}");
        }
    }
}

#[test]
fn a_reader_killed_while_holding_pins_releases_its_slots() {
    let name = ShmName::new("mp-kill-pinner");
    let mut w = block_writer(&name, 2, 2, Duration::from_secs(30));
    let mut pinner = spawn_role("pinner", &[&name, "4"]);
    assert!(wait_for(Duration::from_secs(10), || w.reader_count() == 1));
    for n in 0..4 {
        write_4k(&mut w, n);
    }
    // All four slots pinned by the child: the next write has to wait for them.
    assert!(wait_for(Duration::from_secs(10), || {
        w.info().readers.first().map(|r| r.pinned_slots) == Some(4)
    }));
    pinner.signal(libc::SIGKILL);
    let killed_at = Instant::now();
    assert!(write_4k(&mut w, 4).frame().is_some());
    assert!(
        killed_at.elapsed() < Duration::from_secs(1),
        "pins of a dead reader held the writer {:?}",
        killed_at.elapsed()
    );
    for n in 5..20 {
        assert!(write_4k(&mut w, n).frame().is_some());
    }
    assert_eq!(w.reader_count(), 0);
    let _ = pinner.wait_timeout(Duration::from_secs(5));
}

/// A process that claims an entry and pins every slot, then reads nothing more, holds `block`
/// and `drop-oldest` writers up no longer than the reader timeout: it is evicted and its pins
/// stop counting. Of 240 frames pushed, the other reader gets every one written, content checked
/// (under block: all 240); frames are dropped (drop-oldest) only before the eviction. Before the
/// fix the block writer waited for ever and the drop-oldest writer dropped every frame.
#[test]
fn a_process_pinning_every_slot_holds_the_writer_no_longer_than_the_reader_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(200);
    const PUSHED: u64 = 240;
    for (policy, bp) in [
        ("block", Backpressure::Block),
        ("drop-oldest", Backpressure::DropOldest),
    ] {
        let name = ShmName::new(&format!("mp-pin-all-{policy}"));
        let mut c = WriterConfig::new(&name, 4096);
        c.depth = 4;
        c.backpressure = bp;
        c.reader_timeout = TIMEOUT;
        let mut w = Writer::create(&c).unwrap();
        let slots = w.geometry().slot_count;
        let mut pinner = spawn_role("pinner", &[&name, &slots.to_string()]);
        assert!(wait_for(Duration::from_secs(10), || w.reader_count() == 1));
        let mut other = Reader::open(&name, &oldest()).unwrap();
        let (mut received, mut buf) = (Vec::new(), vec![0; 4096]);
        let mut read_along = |other: &mut Reader| {
            while let ReadResult::Frame(_) = other
                .read_next(Duration::ZERO, |_, view| view.copy_to(&mut buf))
                .unwrap()
            {
                let index = u64::from_le_bytes(buf[..8].try_into().unwrap()) / 0x1_0000_0001;
                check_frame(index, &buf).unwrap();
                received.push(index);
            }
        };
        for n in 0..slots as u64 {
            write_4k(&mut w, n);
            read_along(&mut other);
        }
        assert!(
            wait_for(Duration::from_secs(10), || {
                w.info().readers.iter().any(|r| r.pinned_slots == slots)
            }),
            "{policy}: the child pins every slot"
        );
        let started = Instant::now();
        let mut dropped_after_eviction = 0;
        for n in slots as u64..PUSHED {
            let evicted = w.info().readers_evicted > 0;
            let outcome = common::write_within(&mut w, TIMEOUT * 30, &format!("frame {n}"), |w| {
                w.write_with(&FrameMeta::default(), 4096, |s| fill_frame(n, s))
            });
            if evicted && outcome.frame().is_none() {
                dropped_after_eviction += 1;
            }
            read_along(&mut other);
            std::thread::sleep(Duration::from_millis(2));
        }
        let took = started.elapsed();
        let written = w.frames_written();
        eprintln!(
            "{policy}: {PUSHED} pushed in {took:?}, {written} written, {} dropped",
            w.frames_dropped()
        );
        assert_eq!(w.info().readers_evicted, 1, "{policy}");
        assert_eq!(dropped_after_eviction, 0, "{policy}");
        assert_eq!(written + w.frames_dropped(), PUSHED, "{policy}");
        assert_eq!(received.len() as u64, written, "{policy}: {received:?}");
        assert!(received.windows(2).all(|p| p[0] < p[1]), "{policy}");
        assert_eq!(received.last(), Some(&(PUSHED - 1)), "{policy}");
        if bp == Backpressure::Block {
            assert_eq!(received, (0..PUSHED).collect::<Vec<_>>(), "{policy}");
        }
        assert!(
            took < TIMEOUT + Duration::from_secs(10),
            "{policy}: {PUSHED} frames took {took:?}"
        );
        pinner.signal(libc::SIGKILL);
        let _ = pinner.wait_timeout(Duration::from_secs(5));
    }
}

#[test]
fn drop_oldest_across_processes_accounts_for_every_frame() {
    let name = ShmName::new("mp-drop-oldest");
    let frames = 3000;
    let mut fast = spawn_role("reader", &[&name, "0"]);
    let mut slow = spawn_role("reader", &[&name, "2000"]);
    let mut writer = spawn_role(
        "writer",
        &[&name, &frames.to_string(), "16384", "drop-oldest", "2"],
    );
    let w = summary(&writer.wait_ok(CHILD_LIMIT));
    assert_eq!(num(&w, "written"), frames);
    for r in [&mut fast, &mut slow] {
        let s = summary(&r.wait_ok(CHILD_LIMIT));
        assert_eq!(num(&s, "read") + num(&s, "missed"), frames, "{s:?}");
        assert_eq!(num(&s, "last"), frames - 1);
    }
}

/// Readers killed in a row while the writer does nothing at all (not even a liveness check):
/// each new reader frees the entry a dead one left as it claims one, so the table never fills
/// with dead readers and the writer needs to run for nothing. 20 kills in CI,
/// `SHMFRAME_CHURN_ITERATIONS=200` for the full run (before the fix, the 65th was refused).
#[test]
fn readers_killed_in_a_row_never_fill_the_table_of_an_idle_writer() {
    let kills: u64 = std::env::var("SHMFRAME_CHURN_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let name = ShmName::new("mp-churn-idle");
    let mut w = block_writer(&name, 4, 0, Duration::from_secs(30));
    for n in 0..3 {
        write_4k(&mut w, n);
    }
    let entries = |w: &Writer| w.info().readers.iter().map(|r| r.pid).collect::<Vec<_>>();
    for k in 0..kills {
        let mut doomed = spawn_role("reader", &[&name, "60000000"]);
        let pid = doomed.pid();
        assert!(
            wait_for(Duration::from_secs(30), || entries(&w).contains(&pid)),
            "reader {k} did not attach: {:?}",
            entries(&w)
        );
        assert_eq!(
            entries(&w),
            vec![pid],
            "reader {k} of {kills}: the entries of the readers killed before it are freed"
        );
        doomed.signal(libc::SIGKILL);
        assert!(doomed.wait_timeout(CHILD_LIMIT).is_some());
    }
    // A reader attaching now reads checked frames to EOS.
    let mut last = spawn_role("reader", &[&name, "0"]);
    let pid = last.pid();
    assert!(wait_for(Duration::from_secs(30), || entries(&w) == vec![pid]));
    for n in 3..10 {
        write_4k(&mut w, n);
    }
    w.end_of_stream();
    drop(w);
    let s = summary(&last.wait_ok(CHILD_LIMIT));
    assert_eq!(
        (num(&s, "read"), num(&s, "missed"), num(&s, "last")),
        (10, 0, 9),
        "{s:?}"
    );
}

#[test]
fn a_reader_killed_under_block_releases_the_writer_within_a_second() {
    let name = ShmName::new("mp-kill-reader");
    // Only death, not the stall timeout, may free the writer.
    let mut w = block_writer(&name, 2, 0, Duration::from_secs(30));
    // A reader that reads nothing (a huge delay after its first 16 frames).
    let mut victim = spawn_role("reader", &[&name, "60000000"]);
    assert!(wait_for(Duration::from_secs(10), || w.reader_count() == 1));
    let victim_pid = victim.pid();
    for n in 0..18 {
        write_4k(&mut w, n);
    }
    // The victim now sleeps holding the ring full.
    std::thread::sleep(Duration::from_millis(100));
    assert!(w.is_full());
    victim.signal(libc::SIGKILL);
    let killed_at = Instant::now();
    let outcome = write_4k(&mut w, 18);
    let released_after = killed_at.elapsed();
    assert!(outcome.frame().is_some());
    assert!(
        released_after < Duration::from_secs(1),
        "writer stayed blocked {released_after:?} after its reader died"
    );
    w.poll_readers();
    let events = w.take_reader_events();
    assert!(
        events.iter().any(
            |e| matches!(e, ReaderEvent::Detached { pid, died: true, .. } if *pid == victim_pid)
        ),
        "{events:?}"
    );
    assert_eq!(w.reader_count(), 0);
    let _ = victim.wait_timeout(Duration::from_secs(5));
}

#[test]
fn a_stopped_reader_is_evicted_after_the_timeout() {
    // Long enough that a reader merely descheduled on a loaded machine is not evicted before
    // it is stopped (seen with 300 ms: evicted, then stopped before it could rejoin, so the
    // writer never waited for it).
    const TIMEOUT: Duration = Duration::from_millis(1000);
    let name = ShmName::new("mp-stop-reader");
    let mut w = block_writer(&name, 4, 0, TIMEOUT);
    let mut reader = spawn_role("reader", &[&name, "0"]);
    assert!(wait_for(Duration::from_secs(10), || w.reader_count() == 1));
    let pid = reader.pid();
    for n in 0..100 {
        write_4k(&mut w, n);
    }
    // Stopped once it has read everything and counts (not evicted).
    assert!(wait_for(CHILD_LIMIT, || {
        w.poll_readers();
        w.info()
            .readers
            .iter()
            .any(|r| r.pid == pid && !r.evicted && r.cursor == 100)
    }));
    assert_eq!(w.info().readers_evicted, 0, "evicted before it was stopped");
    reader.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(50));
    let stopped_at = Instant::now();
    let mut n = 100;
    // Fill the ring; then a write must wait for the timeout and evict the stopped reader.
    let mut evicting_write = None;
    while stopped_at.elapsed() < Duration::from_secs(5) {
        let o = write_4k(&mut w, n);
        n += 1;
        if let WriteOutcome::WrittenAfterWait { waited, .. } = o {
            evicting_write = Some(waited);
            break;
        }
    }
    let waited = evicting_write.expect("the writer never had to wait");
    assert!(waited >= TIMEOUT, "{waited:?}");
    w.poll_readers();
    assert!(
        w.take_reader_events()
            .iter()
            .any(|e| matches!(e, ReaderEvent::Evicted { pid: p, .. } if *p == pid))
    );
    // Evicted, it no longer holds the writer up.
    for _ in 0..20 {
        assert!(matches!(write_4k(&mut w, n), WriteOutcome::Written { .. }));
        n += 1;
    }
    reader.signal(libc::SIGCONT);
    w.end_of_stream();
    let s = summary(&reader.wait_ok(CHILD_LIMIT));
    assert_eq!(num(&s, "read") + num(&s, "missed"), n, "{s:?}");
    assert!(num(&s, "missed") > 0);
    assert_eq!(num(&s, "evictions"), 1);
}

#[test]
fn a_writer_killed_mid_frame_tears_nothing_and_readers_follow_its_successor() {
    let name = ShmName::new("mp-kill-writer");
    // Large frames so the kill very likely lands while a slot is being filled.
    let size = "1048576";
    let mut readers: Vec<ChildGuard> = (0..2)
        .map(|_| spawn_role("reader", &[&name, "0"]))
        .collect();
    let mut first = spawn_role("writer", &[&name, "0", size, "drop-oldest", "2"]);
    let stale = name.path();
    assert!(wait_for(Duration::from_secs(10), || stale.exists()));
    std::thread::sleep(Duration::from_millis(300));
    first.signal(libc::SIGKILL);
    let _ = first.wait_timeout(Duration::from_secs(5));
    assert!(stale.exists(), "a killed writer leaves its segment behind");
    // A new writer reclaims the dead writer's name; the readers follow it to the end.
    let mut second = spawn_role("writer", &[&name, "200", size, "block", "2"]);
    let w = summary(&second.wait_ok(CHILD_LIMIT));
    assert_eq!(num(&w, "written"), 200);
    for r in &mut readers {
        let s = summary(&r.wait_ok(CHILD_LIMIT));
        assert_eq!(num(&s, "attached"), 2, "{s:?}");
        assert_eq!(num(&s, "lost"), 1, "{s:?}");
        assert_eq!(num(&s, "last"), 199, "{s:?}");
        assert!(num(&s, "read") >= 200, "{s:?}");
    }
}

/// Sends SIGTERM to `writer` once its segment `name` exists and it has written; checks that it
/// died of SIGTERM and returns whether the segment is still there.
fn segment_survives_sigterm(name: &ShmName, mut writer: ChildGuard) -> bool {
    use std::os::unix::process::ExitStatusExt;
    assert!(
        wait_for(Duration::from_secs(20), || {
            inspect(name).is_ok_and(|i| i.frames_written >= 3)
        }),
        "{} is writing",
        writer.label
    );
    writer.signal(libc::SIGTERM);
    let status = writer
        .wait_timeout(Duration::from_secs(10))
        .expect("the writer ended");
    assert_eq!(
        status.signal(),
        Some(libc::SIGTERM),
        "it still dies of SIGTERM"
    );
    name.path().exists()
}

#[test]
fn a_writer_terminated_by_sigterm_removes_its_segment() {
    let name = ShmName::new("mp-sigterm");
    let writer = spawn_role("writer", &[&name, "0", "4096", "drop-oldest", "0"]);
    assert!(
        !segment_survives_sigterm(&name, writer),
        "its segment was removed"
    );
}

/// The opt-out for applications: with `SHMFRAME_NO_SIGTERM_HANDLER=1` shmframe leaves SIGTERM
/// alone, so the segment stays (until the next writer of the name reclaims it).
#[test]
fn with_shmframe_no_sigterm_handler_set_sigterm_leaves_the_segment() {
    let name = ShmName::new("mp-sigterm-env");
    let writer = spawn_role_env(
        "writer",
        &[&name, "0", "4096", "drop-oldest", "0"],
        &[(NO_SIGTERM_HANDLER_ENV, "1")],
    );
    assert!(
        segment_survives_sigterm(&name, writer),
        "no handler removed the segment"
    );
}

/// The same opt-out through the API, called before the first writer (no handler is installed)
/// or after it (the installed handler is removed again).
#[test]
fn disable_sigterm_handler_before_or_after_the_first_writer_leaves_sigterm_alone() {
    for when in ["before", "after"] {
        let name = ShmName::new(&format!("mp-sigterm-api-{when}"));
        let writer = spawn_role("sigterm-opt-out", &[&name, when]);
        assert!(
            segment_survives_sigterm(&name, writer),
            "disable_sigterm_handler called {when} the writer: no handler removed the segment"
        );
    }
}

/// The writer-crash matrix: a writer is SIGKILLed at a random point (often mid-frame: 1 MB
/// frames), a successor reclaims the name, again and again, while two readers (one on `block`,
/// one under `drop-oldest` writers alike) check every frame they get and follow each successor.
/// 5 crashes in CI; `SHMFRAME_CRASH_ITERATIONS=50` for the full matrix.
#[test]
fn writers_killed_at_random_points_never_tear_a_frame_and_readers_follow_each_successor() {
    let crashes: u64 = std::env::var("SHMFRAME_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let name = ShmName::new("mp-crash-matrix");
    let size = "1048576";
    let mut readers: Vec<ChildGuard> = ["0", "500"]
        .iter()
        .map(|delay_us| spawn_role("reader", &[&name, delay_us]))
        .collect();
    // Deterministic pseudo-random kill points, different every round.
    let mut seed = 0x2545_F491_4F6C_DD1Du64 ^ std::process::id() as u64;
    for round in 0..crashes {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let policy = if round % 2 == 0 {
            "block"
        } else {
            "drop-oldest"
        };
        let mut writer = spawn_role("writer", &[&name, "0", size, policy, "2"]);
        assert!(
            wait_for(Duration::from_secs(20), || {
                gstshmframe::transport::inspect(&name)
                    .is_ok_and(|i| i.writer_alive && i.frames_written > 0)
            }),
            "round {round}: the writer did not start writing"
        );
        std::thread::sleep(Duration::from_millis(20 + seed % 180));
        writer.signal(libc::SIGKILL);
        let _ = writer.wait_timeout(Duration::from_secs(5));
    }
    let mut last = spawn_role("writer", &[&name, "100", size, "block", "2"]);
    let w = summary(&last.wait_ok(CHILD_LIMIT));
    assert_eq!(num(&w, "written"), 100);
    for r in &mut readers {
        // A torn frame would have made the reader exit with an error (see run_reader).
        let s = summary(&r.wait_ok(CHILD_LIMIT));
        assert_eq!(num(&s, "attached"), crashes + 1, "{s:?}");
        assert_eq!(num(&s, "lost"), crashes, "{s:?}");
        assert_eq!(num(&s, "last"), 99, "{s:?}");
    }
    assert!(!name.path().exists(), "no segment left behind");
}

#[test]
fn readers_cannot_modify_frame_data() {
    use std::os::unix::process::ExitStatusExt;
    let name = ShmName::new("mp-read-only");
    let mut w = Writer::create(&WriterConfig::new(&name, 4096)).unwrap();
    w.write_with(&FrameMeta::default(), 4096, |s| fill_frame(0, s))
        .unwrap();
    let mut child = spawn_role("scribbler", &[&name]);
    let status = child
        .wait_timeout(Duration::from_secs(20))
        .expect("scribbler finished");
    assert_eq!(
        status.signal(),
        Some(libc::SIGSEGV),
        "writing through a reader's mapping must fault ({status})"
    );
    let obs = Observer::open(&name).unwrap();
    let mut buf = vec![0u8; 4096];
    obs.read_frame(0, |_, v| v.copy_to(&mut buf))
        .unwrap()
        .unwrap();
    check_frame(0, &buf).unwrap();
}

/// Writers killed (SIGKILL and SIGTERM in turn) while they build their segment leave their
/// temporary files behind; the next writer removes those of dead builders, so after the kills
/// and one clean start and stop nothing of the name is left. 20 kills in CI;
/// `SHMFRAME_CREATE_KILLS=200` for the full run.
#[test]
fn writers_killed_while_creating_their_segment_leave_nothing_behind() {
    let kills: u64 = std::env::var("SHMFRAME_CREATE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let name = ShmName::new("mp-create-kills");
    let slot_size = (4u64 << 20).to_string();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ std::process::id() as u64;
    let mut left_by_kills = 0;
    for round in 0..kills {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut creator = spawn_role("creator", &[&name, &slot_size]);
        assert!(
            wait_for(Duration::from_secs(20), || !name.files().is_empty()),
            "round {round}: the creator did not start"
        );
        std::thread::sleep(Duration::from_micros(seed % 30_000));
        creator.signal(if round % 2 == 0 {
            libc::SIGKILL
        } else {
            libc::SIGTERM
        });
        assert!(
            creator.wait_timeout(Duration::from_secs(10)).is_some(),
            "round {round}: the creator did not die"
        );
        left_by_kills += name.files().iter().filter(|f| f.starts_with('.')).count();
    }
    eprintln!("{kills} kills during creation; temporary files found after them: {left_by_kills}");
    assert!(
        left_by_kills > 0,
        "no kill landed while a segment was being built: the test did not test anything"
    );
    drop(Writer::create(&WriterConfig::new(&name, 4096)).unwrap());
    assert_eq!(name.files(), Vec::<String>::new());
}

/// SIGTERM removes every segment of a process, however many writers it has (200 here; the
/// handler walks a list that grows outside it).
#[test]
fn sigterm_removes_every_segment_of_a_process_with_200_writers() {
    use std::os::unix::process::ExitStatusExt;
    const WRITERS: usize = 200;
    let base = ShmName::new("mp-sigterm-many");
    let names: Vec<ShmName> = (0..WRITERS)
        .map(|i| ShmName(format!("{}-{i}", base.as_str())))
        .collect();
    let mut child = spawn_role("many-writers", &[&base, &WRITERS.to_string()]);
    assert!(
        wait_for(Duration::from_secs(60), || names
            .iter()
            .all(|n| n.path().exists())),
        "the writers were not all created"
    );
    child.signal(libc::SIGTERM);
    let status = child
        .wait_timeout(Duration::from_secs(20))
        .expect("the process ended");
    assert_eq!(
        status.signal(),
        Some(libc::SIGTERM),
        "it still dies of SIGTERM"
    );
    let left: Vec<&str> = names
        .iter()
        .filter(|n| n.path().exists())
        .map(|n| n.as_str())
        .collect();
    assert_eq!(left.len(), 0, "segments left: {left:?}");
}

/// A writer terminated by SIGTERM the moment its segment appears under its name leaves
/// nothing: the segment is registered for removal before it is given its name (before the fix,
/// only once the writer was complete, after its socket thread started: the 200-writer test
/// above left its last segment behind once under scripts/test.sh). 30 rounds; each one's
/// SIGTERM comes within microseconds of the name appearing.
#[test]
fn a_writer_terminated_the_moment_its_segment_appears_leaves_nothing() {
    use std::os::unix::process::ExitStatusExt;
    for round in 0..30 {
        let base = ShmName::new("mp-sigterm-at-birth");
        let name = ShmName(format!("{}-0", base.as_str()));
        let mut child = spawn_role("many-writers", &[&base, "1"]);
        let deadline = Instant::now() + CHILD_LIMIT;
        while !name.path().exists() {
            assert!(
                Instant::now() < deadline,
                "round {round}: no segment appeared"
            );
            std::hint::spin_loop();
        }
        child.signal(libc::SIGTERM);
        let status = child.wait_timeout(CHILD_LIMIT).expect("the writer ended");
        assert_eq!(status.signal(), Some(libc::SIGTERM), "round {round}");
        assert_eq!(
            name.files(),
            Vec::<String>::new(),
            "round {round}: left behind"
        );
    }
}

/// Two writers of different names start at the same moment on a shm file system with room
/// for one of them: the allocation decides, so exactly one succeeds, and the other's message
/// gives numbers that agree (the room it found is less than it needs). Each round, both
/// segments are built on a 1.5-segment tmpfs. 10 rounds in CI; `SHMFRAME_RACE_ROUNDS` for
/// more.
#[test]
fn two_writers_racing_for_room_for_one_leave_exactly_one_running() {
    let rounds: u64 = std::env::var("SHMFRAME_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    const SLOT: u64 = 4 << 20;
    let needed = {
        let probe = ShmName::new("mp-race-probe");
        Writer::create(&WriterConfig::new(&probe, SLOT))
            .unwrap()
            .info()
            .total_len
    };
    let tmpfs = match SmallTmpfs::mount("race", needed * 3 / 2) {
        Ok(t) => t,
        Err(why) => {
            // SAFETY: geteuid has no preconditions.
            assert_ne!(unsafe { libc::geteuid() }, 0, "root could not mount: {why}");
            eprintln!("NOTICE: two_writers_racing_for_room_for_one skipped: {why}");
            return;
        }
    };
    let env = [("SHMFRAME_DIR", tmpfs.0.as_os_str())];
    let dir = tmpfs.0.display().to_string();
    let slot = SLOT.to_string();
    for round in 0..rounds {
        // Time enough for both to start; one that starts late still races for the room.
        let start = (monotonic_ns() + 300_000_000).to_string();
        // A file in the shm directory (not the small one), removed when `done_file` drops.
        let done_file = ShmName::new("mp-race-done");
        let done = done_file.path().display().to_string();
        let mut racers: Vec<ChildGuard> = ["a", "b"]
            .iter()
            .map(|n| {
                spawn_role_env(
                    "racer",
                    &[&format!("race-{round}-{n}"), &slot, &start, &done],
                    &env,
                )
            })
            .collect();
        let mut outcomes: Vec<String> = racers
            .iter_mut()
            .map(|r| {
                r.wait_ok(CHILD_LIMIT)
                    .lines()
                    .find(|l| l.starts_with("CREATED") || l.starts_with("ERROR "))
                    .expect("an outcome")
                    .to_string()
            })
            .collect();
        outcomes.sort();
        assert_eq!(outcomes[0], "CREATED", "round {round}: {outcomes:?}");
        let error = &outcomes[1];
        let available: u64 = error
            .split(&format!(" but {dir} has "))
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("round {round}: {outcomes:?}"));
        let expected = Error::NoSpace {
            dir: dir.clone(),
            needed,
            available,
        };
        assert_eq!(*error, format!("ERROR {expected}"), "round {round}");
        assert!(available < needed, "round {round}: {error}");
        assert_eq!(tmpfs.entries(), Vec::<String>::new(), "round {round}");
    }
}

fn ring_config(name: &str, depth: u32, spare: u32) -> WriterConfig {
    let mut c = WriterConfig::new(name, 4096);
    c.depth = depth;
    c.spare_slots = spare;
    c.backpressure = Backpressure::Block;
    c
}

fn write_frame_within(w: &mut Writer, n: u64, limit: Duration) -> WriteOutcome {
    common::write_within(w, limit, &format!("frame {n}"), |w| {
        w.write_with(&FrameMeta::default(), 4096, |s| fill_frame(n, s))
    })
}

/// A reader holds the segment file through a read-only descriptor: writing to it, truncating
/// or growing it, and mapping it shared and writable are all refused, while the writer goes
/// on publishing and the same reader reads every frame intact.
#[test]
fn a_readers_segment_descriptor_is_read_only_while_frames_flow() {
    let name = ShmName::new("mp-ro-descriptor");
    let mut w = Writer::create(&ring_config(&name, 8, 0)).unwrap();
    let mut attacker = spawn_role("attacker", &[&name, "0", "100"]);
    assert!(wait_for(CHILD_LIMIT, || w.reader_count() == 1));
    for n in 0..100 {
        write_frame_within(&mut w, n, CHILD_LIMIT);
    }
    let s = summary(&attacker.wait_ok(CHILD_LIMIT));
    assert_eq!(s["segment_write"], "EBADF", "{s:?}");
    for attack in ["segment_truncate", "segment_grow"] {
        assert!(
            matches!(s[attack].as_str(), "EINVAL" | "EBADF"),
            "{attack}: {s:?}"
        );
    }
    assert_eq!(s["segment_mmap"], "EACCES", "{s:?}");
    assert_eq!((num(&s, "read"), num(&s, "torn")), (100, 0), "{s:?}");
    assert_eq!(
        std::fs::metadata(name.path()).unwrap().len(),
        w.geometry().total_len,
        "the segment keeps its size"
    );
    assert_eq!(inspect(&name).unwrap().frames_written, 100);
}

/// A reader that scribbles random bytes over its whole control page (cursor, counters, flags,
/// pins, wake word) and tries to truncate or grow it (refused: the page is sealed) harms only
/// itself: the writer keeps publishing under `block`, and another reader receives every frame,
/// in order and intact.
#[test]
fn a_reader_scribbling_over_its_control_page_harms_only_itself() {
    const FRAMES: u64 = 300;
    let name = ShmName::new("mp-page-scribbler");
    let mut c = ring_config(&name, 4, 2);
    c.reader_timeout = Duration::from_millis(200);
    let mut w = Writer::create(&c).unwrap();
    let mut good = Reader::open(&name, &oldest()).unwrap();
    let mut attacker = spawn_role("attacker", &[&name, "1500", "0"]);
    let attacker_pid = attacker.pid();
    // Whether the attacker attached, or left: its page says whatever it scribbled there, so
    // ask the writer's events.
    let mut events = Vec::new();
    let mut saw = |w: &mut Writer, attached: bool| {
        w.poll_readers();
        events.extend(w.take_reader_events());
        events.iter().any(|e| match *e {
            ReaderEvent::Attached { pid, .. } => attached && pid == attacker_pid,
            ReaderEvent::Detached { pid, .. } => !attached && pid == attacker_pid,
            _ => false,
        })
    };
    assert!(wait_for(CHILD_LIMIT, || saw(&mut w, true)));
    let checker = std::thread::spawn(move || {
        let (mut numbers, mut bad) = (Vec::new(), 0);
        let mut buf = Vec::new();
        while (numbers.len() as u64) < FRAMES {
            let read = good
                .read_next(CHILD_LIMIT, |info, view| {
                    buf.resize(info.size as usize, 0);
                    view.copy_to(&mut buf);
                })
                .unwrap();
            let ReadResult::Frame(info) = read else {
                panic!("{read:?} after {} frames", numbers.len());
            };
            bad += check_frame(info.number, &buf).is_err() as u32;
            numbers.push(info.number);
        }
        (numbers, bad, good.frames_missed())
    });
    for n in 0..FRAMES {
        write_frame_within(&mut w, n, CHILD_LIMIT);
        std::thread::sleep(Duration::from_millis(5));
    }
    let (numbers, bad, missed) = checker.join().unwrap();
    assert_eq!(numbers, (0..FRAMES).collect::<Vec<_>>());
    assert_eq!((bad, missed), (0, 0));
    let s = summary(&attacker.wait_ok(CHILD_LIMIT));
    assert_eq!(s["page_mmap"], "ok", "{s:?}");
    assert_eq!(
        (s["page_truncate"].as_str(), s["page_grow"].as_str()),
        ("EPERM", "EPERM"),
        "{s:?}"
    );
    assert_eq!(s["segment_mmap"], "EACCES", "{s:?}");
    assert_eq!(w.frames_written(), FRAMES);
    assert!(
        wait_for(Duration::from_secs(10), || saw(&mut w, false)),
        "the attacker's entry is freed when it exits"
    );
    assert!(w.info().readers.is_empty(), "{:?}", w.info().readers);
}

/// A reader that pins every slot through its control page, says it is closing (its pins
/// count, its cursor does not) and claims to have rejoined after every eviction: it holds more
/// than any reader keeping to its pin budget ever holds.
/// - Where the writer overwrites unread frames (drop-oldest, double), it is evicted as soon as
///   the writer finds no slot: with a reader timeout longer than the test may last, the writer
///   drops no frame, and another reader gets them in order and intact, up to the last (before,
///   the writer dropped every frame for the reader timeout, and again after every rejoin).
/// - Under block and drop-newest, holding the writer up to the reader timeout is any reader's
///   right (one that stops reading does it too): it is evicted after the timeout although it
///   says it is closing, and not taken back while it holds that much, so the writer goes on for
///   good (before, a block writer waited for ever on the closing reader's pins, and a
///   drop-newest writer dropped every frame).
#[test]
fn a_reader_pinning_every_slot_and_never_letting_go_costs_other_readers_nothing() {
    const FRAMES: u64 = 200;
    for (layout, policy) in [
        (Layout::Ring, Backpressure::DropOldest),
        (Layout::Double, Backpressure::DropOldest),
        (Layout::Ring, Backpressure::Block),
        (Layout::Ring, Backpressure::DropNewest),
    ] {
        let case = format!("{layout:?} {policy:?}");
        let name = ShmName::new("mp-pin-hog");
        let mut c = ring_config(&name, 4, 2);
        c.layout = layout;
        c.backpressure = policy;
        let at_once = policy == Backpressure::DropOldest;
        c.reader_timeout = if at_once {
            CHILD_LIMIT * 10
        } else {
            Duration::from_millis(100)
        };
        let mut w = Writer::create(&c).unwrap();
        let mut good = Reader::open(&name, &oldest()).unwrap();
        let _attacker = spawn_role("attacker", &[&name, "600000", "0", "pins"]);
        // The attacker's pins are in place once the writer has no slot to lend (a closing
        // reader is not listed in the reader table, so ask the slots).
        let hogging = |w: &mut Writer| match w.lend() {
            Some(slot) => {
                w.lender().give_back(slot);
                false
            }
            None => true,
        };
        assert!(
            wait_for(CHILD_LIMIT, || hogging(&mut w)),
            "{case}: the attacker pins every slot"
        );
        let checker = std::thread::spawn(move || {
            let (mut numbers, mut bad) = (Vec::new(), 0);
            let mut buf = Vec::new();
            loop {
                let read = good
                    .read_next(CHILD_LIMIT, |info, view| {
                        buf.resize(info.size as usize, 0);
                        view.copy_to(&mut buf);
                    })
                    .unwrap();
                match read {
                    ReadResult::Frame(info) => {
                        bad += check_frame(info.number, &buf).is_err() as u32;
                        numbers.push(info.number);
                    }
                    ReadResult::Eos => break,
                    other => panic!("{other:?} after {} frames", numbers.len()),
                }
            }
            (numbers, bad, good.frames_missed())
        });
        // Frames are numbered as published: a dropped frame's number goes to the next one.
        let mut published = 0;
        for _ in 0..FRAMES {
            let outcome = write_frame_within(&mut w, published, CHILD_LIMIT);
            published += outcome.frame().is_some() as u64;
            std::thread::sleep(Duration::from_millis(2));
        }
        w.end_of_stream();
        let (numbers, bad, missed) = checker.join().unwrap();
        if at_once {
            // A reader descheduled for longer than the ring lasts (2 ms for double) misses
            // frames by design there; every frame is read or counted missed.
            assert!(
                numbers.windows(2).all(|p| p[0] < p[1]),
                "{case}: {numbers:?}"
            );
            assert_eq!(numbers.len() as u64 + missed, published, "{case}");
            assert_eq!(numbers.last(), published.checked_sub(1).as_ref(), "{case}");
        } else {
            assert_eq!(numbers, (0..published).collect::<Vec<_>>(), "{case}");
            assert_eq!(missed, 0, "{case}");
        }
        assert_eq!(bad, 0, "{case}");
        if at_once {
            assert_eq!(
                w.frames_dropped(),
                0,
                "{case}: {published} of {FRAMES} published"
            );
        } else {
            // Dropped (drop-newest) for one reader timeout at most, 100 ms of the 400 and more
            // the frames take.
            assert!(
                published >= FRAMES / 2,
                "{case}: {published} of {FRAMES} published"
            );
        }
        assert!(
            w.info().readers_evicted >= 1,
            "{case}: the attacker was evicted"
        );
    }
}

/// Connections that never say hello, or say something else, are answered "refused" or dropped
/// after the handshake timeout, without ever holding the writer up: a real reader attaches
/// among them and reads every frame, and the table lists it alone.
#[test]
fn peers_that_say_nothing_or_garbage_are_dropped_and_never_stall_the_writer() {
    let name = ShmName::new("mp-garbage-peers");
    let mut w = Writer::create(&ring_config(&name, 4, 0)).unwrap();
    let session = w.session();
    let silent: Vec<_> = (0..8).map(|_| raw_connect(session)).collect();
    let mut wrong_session = [0u8; 32];
    wrong_session[0..4].copy_from_slice(b"SFRH");
    wrong_session[4..8].copy_from_slice(&LAYOUT_VERSION.to_ne_bytes());
    wrong_session[24..32].copy_from_slice(&(session ^ 1).to_ne_bytes());
    let mut old_version = wrong_session;
    old_version[4..8].copy_from_slice(&1u32.to_ne_bytes());
    old_version[24..32].copy_from_slice(&session.to_ne_bytes());
    let garbage: Vec<Vec<u8>> = vec![
        vec![0xFF],
        (0..200u32).map(|i| (i * 37 + 11) as u8).collect(),
        wrong_session.to_vec(),
        old_version.to_vec(),
        [&old_version[..], &[0u8; 8]].concat(),
    ];
    let talkers: Vec<_> = garbage
        .iter()
        .map(|bytes| {
            let socket = raw_connect(session);
            raw_send(&socket, bytes);
            socket
        })
        .collect();
    let mut r = Reader::open(&name, &oldest()).unwrap();
    let mut buf = vec![0u8; 4096];
    for n in 0..50 {
        write_frame_within(&mut w, n, Duration::from_secs(10));
        let read = r
            .read_next(Duration::from_secs(10), |_, v| v.copy_to(&mut buf))
            .unwrap();
        assert!(matches!(read, ReadResult::Frame(info) if info.number == n));
        check_frame(n, &buf).unwrap();
    }
    for (socket, bytes) in talkers.iter().zip(&garbage) {
        let reply = raw_recv(socket, Duration::from_secs(10)).expect("an answer");
        assert_eq!(reply.len(), 32, "{bytes:?}");
        assert_eq!(&reply[0..4], b"SFRR");
        assert_eq!(
            u32::from_ne_bytes(reply[4..8].try_into().unwrap()),
            2,
            "refused"
        );
        assert_eq!(
            raw_recv(socket, Duration::from_secs(10)),
            Some(vec![]),
            "then closed"
        );
    }
    for socket in &silent {
        assert_eq!(
            raw_recv(socket, Duration::from_secs(30)),
            Some(vec![]),
            "a peer that never says hello is dropped"
        );
    }
    assert_eq!(w.reader_count(), 1);
    assert_eq!(w.info().readers.len(), 1);
}

/// Readers killed at any point of attaching (connected, hello sent, attached) leave nothing in
/// the table of an idle writer: afterwards all 64 entries can be taken, and a 65th reader is
/// told the table is full. 20 kills by default, `SHMFRAME_HANDSHAKE_KILLS` for more.
#[test]
fn readers_killed_anywhere_in_the_handshake_leave_no_entry_behind() {
    let kills: u64 = std::env::var("SHMFRAME_HANDSHAKE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let name = ShmName::new("mp-handshake-kills");
    let mut w = Writer::create(&ring_config(&name, 4, 0)).unwrap();
    let mut seed = 0x2545_F491_4F6C_DD1Du64 ^ std::process::id() as u64;
    for k in 0..kills {
        let stage = ["connect", "hello", "attached"][k as usize % 3];
        let mut child = spawn_role("handshake", &[&name, stage]);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(seed % 60));
        child.signal(libc::SIGKILL);
        assert!(child.wait_timeout(CHILD_LIMIT).is_some());
    }
    assert!(
        wait_for(Duration::from_secs(10), || w.reader_count() == 0
            && w.info().readers.is_empty()),
        "entries left behind: {:?}",
        w.info().readers
    );
    let events = w.take_reader_events();
    let attached = events
        .iter()
        .filter(|e| matches!(e, ReaderEvent::Attached { .. }))
        .count();
    let died = events
        .iter()
        .filter(|e| matches!(e, ReaderEvent::Detached { died: true, .. }))
        .count();
    assert_eq!(attached, died, "{events:?}");
    let readers: Vec<Reader> = (0..MAX_READERS)
        .map(|_| Reader::open(&name, &oldest()).unwrap())
        .collect();
    let full = Reader::open(&name, &oldest()).err().unwrap();
    assert_eq!(
        full.to_string(),
        format!(
            "segment {:?} already has the maximum of 64 readers attached",
            name.as_str()
        )
    );
    assert_eq!(w.reader_count(), 64);
    drop(readers);
}

/// A reader written from docs/LAYOUT.md alone (raw socket, hello, the control page from the
/// reply): it moves its cursor as frames come and wakes a writer waiting for room the way the
/// layout says, through the `progress_seq` word of its page, sending nothing on its
/// connection. A `block` writer of depth 1 waits for it before every frame, and each wait ends
/// on that wake, not at the end of the writer's 20 ms wait slice.
#[test]
fn a_reader_wakes_a_blocked_writer_through_its_control_page() {
    const FRAMES: u64 = 60;
    let name = ShmName::new("mp-raw-progress");
    let mut c = ring_config(&name, 1, 0);
    c.reader_timeout = CHILD_LIMIT;
    let mut w = Writer::create(&c).unwrap();
    let session = w.session();
    let segment = name.path();
    let reader = std::thread::spawn(move || {
        let socket = raw_connect(session);
        let mut hello = [0u8; 32];
        hello[0..4].copy_from_slice(b"SFRH");
        hello[4..8].copy_from_slice(&LAYOUT_VERSION.to_ne_bytes());
        hello[8..12].copy_from_slice(&std::process::id().to_ne_bytes());
        hello[12..16].copy_from_slice(&1u32.to_ne_bytes()); // oldest
        hello[16..24].copy_from_slice(&7u64.to_ne_bytes());
        hello[24..32].copy_from_slice(&session.to_ne_bytes());
        raw_send(&socket, &hello);
        let (reply, page_fd) = raw_recv_fd(&socket, CHILD_LIMIT);
        assert_eq!((&reply[0..4], &reply[4..8]), (&b"SFRR"[..], &[0u8; 4][..]));
        let page = raw_map(&page_fd, true);
        let header = raw_map(&std::fs::File::open(&segment).unwrap(), false);
        // SAFETY: both mappings are 4096 bytes, page-aligned; the offsets are those of
        // docs/LAYOUT.md (header: head +152, writer_waiting +208; control page: cursor +16,
        // progress_seq +64, progress_armed +68), naturally aligned.
        let (head, waiting, cursor, progress, armed) = unsafe {
            (
                &*(header.add(152) as *const std::sync::atomic::AtomicU64),
                &*(header.add(208) as *const std::sync::atomic::AtomicU32),
                &*(page.add(16) as *const std::sync::atomic::AtomicU64),
                &*(page.add(64) as *const std::sync::atomic::AtomicU32),
                &*(page.add(68) as *const std::sync::atomic::AtomicU32),
            )
        };
        use std::sync::atomic::Ordering::SeqCst;
        for n in 0..FRAMES {
            // Polled: the frame wake is the writer's side of the protocol, not tested here.
            assert!(wait_for(CHILD_LIMIT, || head.load(SeqCst) > n));
            cursor.store(n + 1, SeqCst);
            if waiting.load(SeqCst) != 0 && armed.load(SeqCst) == progress.load(SeqCst) {
                progress.fetch_add(1, SeqCst);
                // SAFETY: FUTEX_WAKE on a word of a live shared mapping.
                unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        progress.as_ptr(),
                        libc::FUTEX_WAKE,
                        i32::MAX,
                    );
                }
            }
        }
        raw_send(&socket, &[2]); // goodbye
    });
    assert!(wait_for(CHILD_LIMIT, || w.reader_count() == 1));
    let mut waits = Vec::new();
    for n in 0..FRAMES {
        if let WriteOutcome::WrittenAfterWait { waited, .. } =
            write_frame_within(&mut w, n, CHILD_LIMIT)
        {
            waits.push(waited);
        }
    }
    reader.join().unwrap();
    assert!(
        waits.len() as u64 >= FRAMES / 2,
        "the writer waited: {waits:?}"
    );
    waits.sort();
    // The writer's wait slice is 20 ms: a wait that ends only with it takes that long.
    assert!(
        waits[waits.len() / 2] < Duration::from_millis(10),
        "median wait {:?}: woken by the slice, not by the reader ({waits:?})",
        waits[waits.len() / 2]
    );
}

/// One message and the descriptor passed with it.
fn raw_recv_fd(socket: &std::os::fd::OwnedFd, limit: Duration) -> (Vec<u8>, std::os::fd::OwnedFd) {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut pfd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    assert_eq!(
        unsafe { libc::poll(&mut pfd, 1, limit.as_millis() as i32) },
        1
    );
    let mut buf = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: all-zero is a valid msghdr; it points to buffers that live across the call, and
    // the control buffer is large enough for one descriptor (the only one the writer sends).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        assert!(n > 0);
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        assert!(!cmsg.is_null() && (*cmsg).cmsg_type == libc::SCM_RIGHTS);
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const i32);
        (
            buf[..n as usize].to_vec(),
            std::os::fd::OwnedFd::from_raw_fd(fd),
        )
    }
}

/// The first 4096 bytes of `file`, shared, writable or read-only; never unmapped (the test's
/// threads use them until the process ends).
fn raw_map(file: &impl std::os::fd::AsRawFd, writable: bool) -> *mut u8 {
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: a new mapping at an address the kernel chooses.
    let at = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            prot,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(at, libc::MAP_FAILED);
    at.cast()
}
