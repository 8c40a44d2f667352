//! The transport on its own, writer and readers in one process (they still talk only through
//! the shared segment, exactly as across processes).

mod common;

use common::{ShmName, check_frame, fill_frame, oldest};
use gstshmframe::transport::*;
use std::time::{Duration, Instant};

const FRAME: usize = 4096 + 100;

fn config(name: &str, layout: Layout, depth: u32, bp: Backpressure) -> WriterConfig {
    let mut c = WriterConfig::new(name, FRAME as u64);
    c.layout = layout;
    c.depth = depth;
    c.backpressure = bp;
    c
}

/// Writes frame `n`: its content from `fill_frame`, its pts from its number.
fn try_write_frame(w: &mut Writer, n: u64) -> Result<WriteOutcome, Error> {
    w.write_with(
        &FrameMeta {
            pts: Some(n * 1000),
            ..Default::default()
        },
        FRAME as u64,
        |slot| fill_frame(n, slot),
    )
}

fn write_frame(w: &mut Writer, n: u64) -> WriteOutcome {
    try_write_frame(w, n).unwrap()
}

/// Reads one frame (waiting up to 1 s) and checks its content against its number.
fn read_one(r: &mut Reader) -> ReadResult {
    let mut buf = Vec::new();
    let res = r
        .read_next(Duration::from_secs(1), |info, view| {
            buf.resize(info.size as usize, 0);
            view.copy_to(&mut buf);
        })
        .unwrap();
    if let ReadResult::Frame(info) = res {
        check_frame(info.number, &buf).unwrap();
        assert_eq!(info.pts, Some(info.number * 1000));
    }
    res
}

fn frame_number(res: ReadResult) -> u64 {
    match res {
        ReadResult::Frame(info) => info.number,
        other => panic!("expected a frame, got {other:?}"),
    }
}

#[test]
fn ring_delivers_every_frame_in_order_with_its_content() {
    let name = ShmName::new("ring-order");
    let mut w = Writer::create(&config(&name, Layout::Ring, 4, Backpressure::Block)).unwrap();
    let mut r = Reader::open(&name, &oldest()).unwrap();
    for n in 0..100 {
        assert_eq!(write_frame(&mut w, n), WriteOutcome::Written { frame: n });
        assert_eq!(frame_number(read_one(&mut r)), n);
    }
    assert_eq!((r.frames_read(), r.frames_missed()), (100, 0));
    assert_eq!(w.frames_written(), 100);
}

#[test]
fn double_layout_gives_the_newest_frame_and_counts_skips() {
    let name = ShmName::new("double");
    let mut w = Writer::create(&config(&name, Layout::Double, 9, Backpressure::Block)).unwrap();
    assert_eq!(w.geometry().depth, 2, "double always has two slots");
    let mut r = Reader::open(&name, &ReaderOptions::default()).unwrap();
    for n in 0..10 {
        // The writer never blocks, whatever the reader does.
        assert_eq!(write_frame(&mut w, n), WriteOutcome::Written { frame: n });
    }
    let ReadResult::Frame(info) = read_one(&mut r) else {
        panic!()
    };
    assert_eq!(info.number, 9, "latest frame");
    assert_eq!(info.missed_before, 9);
    write_frame(&mut w, 10);
    assert_eq!(frame_number(read_one(&mut r)), 10);
    assert_eq!(r.frames_read() + r.frames_missed(), w.frames_written());
}

#[test]
fn drop_oldest_accounting_is_exact_for_a_slow_reader() {
    let name = ShmName::new("drop-oldest");
    let mut w = Writer::create(&config(&name, Layout::Ring, 4, Backpressure::DropOldest)).unwrap();
    let mut r = Reader::open(&name, &oldest()).unwrap();
    let mut read = Vec::new();
    let mut overwrote = 0;
    for n in 0..200 {
        let outcome = write_frame(&mut w, n);
        assert_eq!(outcome.frame(), Some(n), "drop-oldest always publishes");
        if matches!(outcome, WriteOutcome::OverwroteOldest { .. }) {
            overwrote += 1;
        }
        if n % 7 == 0 {
            read.push(frame_number(read_one(&mut r)));
        }
    }
    while let ReadResult::Frame(info) = r.read_next(Duration::ZERO, |_, _| {}).unwrap() {
        read.push(info.number);
    }
    assert!(read.windows(2).all(|p| p[0] < p[1]), "in order: {read:?}");
    assert_eq!(*read.last().unwrap(), 199);
    assert_eq!(r.frames_read(), read.len() as u64);
    assert_eq!(r.frames_read() + r.frames_missed(), 200);
    assert!(overwrote > 0);
    assert_eq!(w.frames_dropped(), 0);
}

/// A reader copying each frame more slowly than the writer writes `depth` of them, under
/// policies that overwrite what readers have not read: every copy would be overtaken if the
/// frame were not held while it is copied (without that, this reader got no frame until the
/// writer stopped). It must get frames all along, each intact, in order, every other one
/// counted as missed.
#[test]
fn a_reader_copying_more_slowly_than_an_overwriting_writer_writes_still_gets_frames() {
    const FRAMES: u64 = 1000;
    for (layout, depth) in [(Layout::Ring, 4), (Layout::Double, 2)] {
        let name = ShmName::new("slow-copy");
        let mut w =
            Writer::create(&config(&name, layout, depth, Backpressure::DropOldest)).unwrap();
        let mut r = Reader::open(&name, &oldest()).unwrap();
        let writer = std::thread::spawn(move || {
            for n in 0..FRAMES {
                assert_eq!(
                    write_frame(&mut w, n).frame(),
                    Some(n),
                    "{layout:?} publishes"
                );
                std::thread::sleep(Duration::from_micros(200));
            }
            w.end_of_stream();
            w
        });
        let (mut numbers, mut buf) = (Vec::new(), Vec::new());
        loop {
            let read = r
                .read_next(Duration::from_secs(10), |info, view| {
                    buf.resize(info.size as usize, 0);
                    view.copy_to(&mut buf);
                    // Slower than `depth` writes of 0.2 ms and more each.
                    std::thread::sleep(Duration::from_millis(2));
                })
                .unwrap();
            match read {
                ReadResult::Frame(info) => {
                    check_frame(info.number, &buf).unwrap();
                    numbers.push(info.number);
                }
                ReadResult::Eos => break,
                other => panic!("{layout:?}: {other:?}"),
            }
        }
        writer.join().unwrap();
        assert!(
            numbers.windows(2).all(|p| p[0] < p[1]),
            "{layout:?} in order: {numbers:?}"
        );
        let while_writing = numbers
            .iter()
            .filter(|&&n| n < FRAMES - depth as u64)
            .count();
        assert!(
            while_writing >= 20,
            "{layout:?}: {while_writing} frames read while the writer wrote {FRAMES} \
             (all read: {numbers:?})"
        );
        assert_eq!(r.frames_read(), numbers.len() as u64);
        assert_eq!(
            r.frames_read() + r.frames_missed(),
            FRAMES,
            "{layout:?} counts"
        );
    }
}

#[test]
fn drop_newest_drops_incoming_frames_and_counts_them() {
    let name = ShmName::new("drop-newest");
    let mut w = Writer::create(&config(&name, Layout::Ring, 4, Backpressure::DropNewest)).unwrap();
    let mut r = Reader::open(&name, &oldest()).unwrap();
    let outcomes: Vec<_> = (0..10).map(|n| write_frame(&mut w, n)).collect();
    assert!(outcomes[..4].iter().all(|o| !o.was_full()));
    assert!(outcomes[4..].iter().all(|o| *o == WriteOutcome::Dropped));
    assert!(w.is_full());
    assert_eq!(w.frames_dropped(), 6);
    assert_eq!(w.frames_written(), 4);
    // The reader gets the four oldest frames: nothing it was promised is lost.
    let got: Vec<u64> = (0..4).map(|_| frame_number(read_one(&mut r))).collect();
    assert_eq!(got, vec![0, 1, 2, 3]);
    assert!(!w.is_full());
    // Numbers stay contiguous: a dropped frame never got a number.
    assert_eq!(write_frame(&mut w, 4), WriteOutcome::Written { frame: 4 });
    assert_eq!(frame_number(read_one(&mut r)), 4);
    assert_eq!(r.frames_missed(), 0);
    let info = w.info();
    assert_eq!((info.frames_dropped, info.full_events), (6, 6));
}

#[test]
fn block_waits_for_the_slowest_reader_and_loses_nothing() {
    let name = ShmName::new("block");
    let mut w = Writer::create(&config(&name, Layout::Ring, 2, Backpressure::Block)).unwrap();
    let reader_name = name.to_string();
    let mut r = Reader::open(&reader_name, &oldest()).unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        while got.len() < 50 {
            std::thread::sleep(Duration::from_millis(1));
            got.push(frame_number(read_one(&mut r)));
        }
        (got, r.frames_missed())
    });
    let mut waited = 0;
    for n in 0..50 {
        if let WriteOutcome::WrittenAfterWait { .. } = write_frame(&mut w, n) {
            waited += 1;
        }
    }
    let (got, missed) = reader.join().unwrap();
    assert_eq!(got, (0..50).collect::<Vec<_>>());
    assert_eq!(missed, 0);
    assert!(waited > 0, "a slow reader must have made the writer wait");
}

/// Runs `wait` while another thread interrupts it through `interrupt` 50 ms in: it must end
/// with `Error::Interrupted`, and before `limit`, which is shorter than any way the wait could
/// end on its own.
fn assert_interrupted<T: std::fmt::Debug>(
    interrupt: &Interrupt,
    limit: Duration,
    wait: impl FnOnce() -> Result<T, Error>,
) {
    let interrupter = std::thread::spawn({
        let interrupt = interrupt.clone();
        move || {
            std::thread::sleep(Duration::from_millis(50));
            interrupt.interrupt();
        }
    });
    let started = Instant::now();
    let res = wait();
    let waited = started.elapsed();
    interrupter.join().unwrap();
    assert!(matches!(res, Err(Error::Interrupted)), "{res:?}");
    assert!(waited < limit, "interrupted only after {waited:?}");
}

#[test]
fn a_blocked_write_is_interrupted_from_another_thread() {
    let name = ShmName::new("interrupt-writer");
    let mut w = Writer::create(&config(&name, Layout::Ring, 1, Backpressure::Block)).unwrap();
    let _r = Reader::open(&name, &oldest()).unwrap();
    write_frame(&mut w, 0);
    let interrupt = w.interrupt_handle();
    // Shorter than the reader timeout, after which the writer would go on by evicting.
    assert_interrupted(&interrupt, Duration::from_millis(900), || {
        w.write(&FrameMeta::default(), &[0u8; 16])
    });
    interrupt.clear();
}

/// A write interrupted while it waits for room and made again (GStreamer's unlock, the Python
/// binding's slices for signal handling) is one full-ring event, not one per call.
#[test]
fn a_blocked_write_made_again_after_an_interrupt_counts_one_full_event() {
    let name = ShmName::new("interrupt-full-once");
    let mut c = config(&name, Layout::Ring, 1, Backpressure::Block);
    // Never evicted for holding the writer up, however slow the machine.
    c.reader_timeout = Duration::from_secs(60);
    let mut w = Writer::create(&c).unwrap();
    let mut r = Reader::open(&name, &oldest()).unwrap();
    write_frame(&mut w, 0);
    let interrupt = w.interrupt_handle();
    let first_try = Instant::now();
    for _ in 0..3 {
        assert_interrupted(&interrupt, Duration::from_secs(10), || {
            try_write_frame(&mut w, 1)
        });
        interrupt.clear();
    }
    assert_eq!(w.info().full_events, 1);
    // One wait, from the first try on (each try is interrupted after 50 ms).
    let began = w
        .interrupted_wait_began()
        .expect("the wait was interrupted");
    assert!(began >= first_try && began < first_try + Duration::from_millis(50));
    assert_eq!(frame_number(read_one(&mut r)), 0);
    assert_eq!(write_frame(&mut w, 1).frame(), Some(1));
    assert_eq!(w.interrupted_wait_began(), None, "frame 1 was written");
    assert_eq!(w.info().full_events, 1);
    // The next frame finding the ring full is a new event.
    assert_interrupted(&interrupt, Duration::from_secs(10), || {
        try_write_frame(&mut w, 2)
    });
    interrupt.clear();
    assert_eq!(w.info().full_events, 2);
}

#[test]
fn a_reader_wait_is_interrupted_from_another_thread() {
    let name = ShmName::new("interrupt-reader");
    let _w = Writer::create(&config(&name, Layout::Ring, 4, Backpressure::Block)).unwrap();
    let mut r = Reader::open(&name, &oldest()).unwrap();
    assert_interrupted(&r.interrupt_handle(), Duration::from_secs(2), || {
        r.read_next(Duration::from_secs(10), |_, _| {})
    });
}

#[test]
fn a_subscriber_waiting_for_its_writer_is_interrupted_from_another_thread() {
    let name = ShmName::new("interrupt-subscriber");
    let mut sub = Subscriber::new(&name, oldest()).unwrap();
    let interrupt = sub.interrupt_handle();
    assert_interrupted(&interrupt, Duration::from_secs(2), || {
        sub.next(Duration::from_secs(10), |_, _| {})
    });
    // Cleared, the wait goes on until its timeout.
    interrupt.clear();
    let res = sub.next(Duration::from_millis(50), |_, _| {});
    assert_eq!(res.unwrap(), SubscriberEvent::Timeout);
}

/// A listening socket at `path` standing in for a writer that hangs: connections complete (on
/// the listen backlog) but nobody ever answers them.
fn silent_listener(path: &std::path::Path) -> std::os::fd::OwnedFd {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: plain system call without pointers.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: a new descriptor nobody else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    assert!(bytes.len() < addr.sun_path.len(), "{path:?} is too long");
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    // SAFETY: `addr` is a valid sockaddr_un of the size given.
    let bound = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    assert_eq!(
        bound,
        0,
        "bind {path:?}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: plain system call on our descriptor.
    let listening = unsafe { libc::listen(fd.as_raw_fd(), 8) };
    assert_eq!(listening, 0, "listen: {}", std::io::Error::last_os_error());
    fd
}

/// Opening a reader waits (up to seconds) for its writer's socket to appear and for the
/// writer's answer to its hello: an interrupt (GStreamer's unlock) ends either wait.
#[test]
fn opening_a_reader_is_interrupted_while_the_writer_does_not_answer() {
    for answer in ["no socket", "a socket that never answers"] {
        let name = ShmName::new("interrupt-open");
        let w = Writer::create(&config(&name, Layout::Ring, 4, Backpressure::Block)).unwrap();
        let socket = shm_dir().join(format!(".shmframe-sock-{:016x}", w.session()));
        std::fs::remove_file(&socket).unwrap();
        // Removed with the writer, which removes its socket's path.
        let _listener = (answer != "no socket").then(|| silent_listener(&socket));
        let interrupt = Interrupt::new();
        // Shorter than the 5 s a reader waits for its writer.
        assert_interrupted(&interrupt, Duration::from_secs(3), || {
            Reader::open_with_interrupt(&name, &oldest(), interrupt.clone()).map(|r| r.session())
        });
    }
}

#[test]
fn frames_are_retrievable_by_number_while_held() {
    let name = ShmName::new("by-number");
    let mut w = Writer::create(&config(&name, Layout::Ring, 4, Backpressure::DropOldest)).unwrap();
    let mut r = Reader::open(&name, &oldest()).unwrap();
    for n in 0..10 {
        write_frame(&mut w, n);
    }
    let mut buf = vec![0u8; FRAME];
    for n in 6..10 {
        let info = r
            .read_frame(n, |_, v| v.copy_to(&mut buf))
            .unwrap()
            .expect("held");
        assert_eq!(info.number, n);
        check_frame(n, &buf).unwrap();
    }
    for n in [0, 5, 10, 1000] {
        assert!(r.read_frame(n, |_, _| {}).unwrap().is_none(), "frame {n}");
    }
    assert_eq!(r.cursor(), 0, "random access does not move the cursor");
    let obs = Observer::open(&name).unwrap();
    assert!(
        obs.read_frame(9, |_, v| v.copy_to(&mut buf))
            .unwrap()
            .is_some()
    );
    check_frame(9, &buf).unwrap();
}

#[test]
fn clear_makes_readers_skip_to_the_next_frame_and_counts_it() {
    let name = ShmName::new("clear");
    let mut w = Writer::create(&config(&name, Layout::Ring, 8, Backpressure::Block)).unwrap();
    let mut r = Reader::open(&name, &oldest()).unwrap();
    for n in 0..5 {
        write_frame(&mut w, n);
    }
    assert_eq!(frame_number(read_one(&mut r)), 0);
    w.clear();
    assert_eq!(
        r.read_next(Duration::ZERO, |_, _| {}).unwrap(),
        ReadResult::Timeout,
        "the depot is empty"
    );
    write_frame(&mut w, 5);
    let ReadResult::Frame(info) = read_one(&mut r) else {
        panic!()
    };
    assert_eq!((info.number, info.missed_before), (5, 4));
    assert_eq!(r.frames_read() + r.frames_missed(), 6);
}

#[test]
fn eos_reaches_readers_after_the_last_frame() {
    let name = ShmName::new("eos");
    let mut w = Writer::create(&config(&name, Layout::Ring, 4, Backpressure::Block)).unwrap();
    let mut r = Reader::open(&name, &oldest()).unwrap();
    write_frame(&mut w, 0);
    write_frame(&mut w, 1);
    w.end_of_stream();
    assert_eq!(frame_number(read_one(&mut r)), 0);
    assert_eq!(frame_number(read_one(&mut r)), 1);
    assert_eq!(read_one(&mut r), ReadResult::Eos);
    assert_eq!(r.stream_state(), StreamState::Eos);
    drop(w);
    assert_eq!(
        read_one(&mut r),
        ReadResult::Eos,
        "EOS survives the writer's shutdown"
    );
    assert!(!name.path().exists(), "closing unlinks the segment");
}

#[test]
fn a_writer_closing_without_eos_is_reported_as_gone() {
    let name = ShmName::new("closed");
    let mut w = Writer::create(&config(&name, Layout::Ring, 4, Backpressure::Block)).unwrap();
    let mut r = Reader::open(&name, &oldest()).unwrap();
    write_frame(&mut w, 0);
    w.close();
    assert_eq!(
        frame_number(read_one(&mut r)),
        0,
        "frames already written are still read"
    );
    assert_eq!(read_one(&mut r), ReadResult::WriterGone { clean: true });
}

#[test]
fn a_reader_started_first_sees_a_writer_that_lives_a_few_milliseconds() {
    let name = ShmName::new("short-writer");
    let reader_name = name.to_string();
    let reader = std::thread::spawn(move || {
        let mut sub = Subscriber::new(&reader_name, oldest()).unwrap();
        let mut events = Vec::new();
        loop {
            let ev = sub.next(Duration::from_secs(5), |_, _| {}).unwrap();
            let end = matches!(ev, SubscriberEvent::Eos | SubscriberEvent::Timeout);
            events.push(ev);
            if end {
                return events;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(30));
    {
        let mut w = Writer::create(&config(&name, Layout::Ring, 4, Backpressure::Block)).unwrap();
        for n in 0..3 {
            write_frame(&mut w, n);
        }
        w.end_of_stream();
    }
    let events = reader.join().unwrap();
    let frames: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            SubscriberEvent::Frame(info) => Some(info.number),
            _ => None,
        })
        .collect();
    assert_eq!(frames, vec![0, 1, 2], "{events:?}");
    assert_eq!(events.last(), Some(&SubscriberEvent::Eos));
}

#[test]
fn a_second_writer_is_refused_with_the_holders_pid() {
    let name = ShmName::new("exclusive");
    let mut first = Writer::create(&config(&name, Layout::Ring, 4, Backpressure::Block)).unwrap();
    let err = Writer::create(&config(&name, Layout::Ring, 4, Backpressure::Block))
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, Error::WriterExists { pid, .. } if pid == std::process::id()));
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    // The first writer is unharmed.
    let mut r = Reader::open(&name, &oldest()).unwrap();
    write_frame(&mut first, 0);
    assert_eq!(frame_number(read_one(&mut r)), 0);
}

#[test]
fn a_foreign_file_is_refused_and_left_untouched() {
    let name = ShmName::new("foreign");
    let content: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    std::fs::write(name.path(), &content).unwrap();
    let err = Writer::create(&config(&name, Layout::Ring, 4, Backpressure::Block))
        .err()
        .unwrap();
    let path = name.path().display().to_string();
    assert!(
        matches!(&err, Error::ForeignFile { path: named } if *named == path),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("is not a shmframe segment; it was left untouched")
    );
    let err = Reader::open(&name, &oldest()).err().unwrap();
    assert!(matches!(err, Error::ForeignFile { .. }), "{err}");
    assert_eq!(std::fs::read(name.path()).unwrap(), content);
    // An empty file is foreign too, not a half-made segment to reclaim.
    std::fs::write(name.path(), b"").unwrap();
    assert!(matches!(
        Writer::create(&config(&name, Layout::Ring, 4, Backpressure::Block)),
        Err(Error::ForeignFile { .. })
    ));
    assert_eq!(std::fs::read(name.path()).unwrap(), b"");
}

#[test]
fn invalid_names_never_reach_the_file_system() {
    for bad in ["", "a/b", "../x", ".x", "with space", "é"] {
        let e = Writer::create(&WriterConfig::new(bad, 16)).err().unwrap();
        assert!(matches!(e, Error::InvalidName { .. }), "{bad:?}: {e}");
        let e = Reader::open(bad, &oldest()).err().unwrap();
        assert!(matches!(e, Error::InvalidName { .. }), "{bad:?}: {e}");
    }
}

#[test]
fn impossible_configurations_are_refused() {
    let name = ShmName::new("config");
    for (depth, spare, size, perms, fragment) in [
        (
            0,
            0,
            16,
            0o600,
            "depth 0 is out of range: expected 1..=1024",
        ),
        (1025, 0, 16, 0o600, "depth 1025 is out of range"),
        (4, 65, 16, 0o600, "spare slots 65 is out of range"),
        (4, 0, 0, 0o600, "slot size 0 bytes is out of range"),
        (4, 0, 16, 0o400, "perms 400 must be"),
        (4, 0, 16, 0o1777, "perms 1777 must be"),
    ] {
        let mut c = WriterConfig::new(&name, size);
        c.depth = depth;
        c.spare_slots = spare;
        c.perms = perms;
        let e = Writer::create(&c).err().unwrap().to_string();
        assert!(e.contains(fragment), "{e}");
        assert!(!name.path().exists());
    }
}

#[test]
fn a_frame_larger_than_the_slot_is_an_error() {
    let name = ShmName::new("too-large");
    let mut w = Writer::create(&WriterConfig::new(&name, 100)).unwrap();
    let e = w.write(&FrameMeta::default(), &[0u8; 101]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "frame of 101 bytes does not fit a slot of 100 bytes; create the writer with a slot \
         size of at least 101 bytes"
    );
    assert_eq!(w.frames_written(), 0);
}

#[test]
fn segment_mode_follows_perms() {
    use std::os::unix::fs::PermissionsExt;
    let name = ShmName::new("perms");
    let w = Writer::create(&WriterConfig::new(&name, 16)).unwrap();
    let mode = std::fs::metadata(name.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(w);
    let mut c = WriterConfig::new(&name, 16);
    c.perms = 0o666;
    let w = Writer::create(&c).unwrap();
    let mode = std::fs::metadata(name.path()).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o644,
        "perms widen the mode deliberately, despite the umask; only the writer writes the file"
    );
    // Attaching means connecting to the stream's socket, which needs write permission there.
    let socket = shm_dir().join(format!(".shmframe-sock-{:016x}", w.session()));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o666, "the socket admits whom perms admit");
    drop(w);
    assert!(!socket.exists(), "closing removes the socket");
}

#[test]
fn caps_generations_are_kept_and_read_back() {
    let name = ShmName::new("caps");
    let mut w = Writer::create(&WriterConfig::new(&name, 64)).unwrap();
    let r = Reader::open(&name, &oldest()).unwrap();
    assert_eq!(r.current_caps_gen(), 0);
    assert_eq!(r.caps(0).unwrap(), None);
    let g1 = w.set_caps("video/x-raw, width=(int)1").unwrap();
    let g2 = w.set_caps("video/x-raw, width=(int)2").unwrap();
    assert_eq!((g1, g2), (1, 2));
    assert_eq!(r.current_caps_gen(), 2);
    assert_eq!(r.caps(1).unwrap().unwrap(), "video/x-raw, width=(int)1");
    assert_eq!(r.caps(2).unwrap().unwrap(), "video/x-raw, width=(int)2");
    for i in 3..=6 {
        w.set_caps(&format!("caps {i}")).unwrap();
    }
    assert_eq!(r.caps(1).unwrap(), None, "only a short history is kept");
    assert_eq!(r.caps(6).unwrap().unwrap(), "caps 6");
    let long = "x".repeat(5000);
    assert!(matches!(w.set_caps(&long), Err(Error::CapsTooLong { .. })));
    // Frames carry the generation current when written.
    w.write(&FrameMeta::default(), &[1, 2, 3]).unwrap();
    let mut r = r;
    let res = r.read_next(Duration::ZERO, |_, _| {}).unwrap();
    let ReadResult::Frame(info) = res else {
        panic!()
    };
    assert_eq!((info.caps_gen, info.size), (6, 3));
}

#[test]
fn the_reader_table_holds_64_readers_and_reports_changes() {
    let name = ShmName::new("registry");
    let mut w = Writer::create(&WriterConfig::new(&name, 16)).unwrap();
    let mut readers: Vec<Reader> = (0..MAX_READERS)
        .map(|_| Reader::open(&name, &oldest()).unwrap())
        .collect();
    let e = Reader::open(&name, &oldest()).err().unwrap();
    assert!(matches!(e, Error::TooManyReaders { max: 64, .. }), "{e}");
    w.poll_readers();
    let events = w.take_reader_events();
    assert_eq!(events.len(), 64);
    assert!(
        events
            .iter()
            .all(|e| matches!(e, ReaderEvent::Attached { pid, .. } if *pid == std::process::id()))
    );
    assert_eq!(w.reader_count(), 64);
    readers.truncate(60);
    w.poll_readers();
    let events = w.take_reader_events();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, ReaderEvent::Detached { died: false, .. }))
            .count(),
        4
    );
    // Freed entries are reused.
    readers.push(Reader::open(&name, &oldest()).unwrap());
    assert_eq!(w.reader_count(), 61);
    assert_eq!(w.info().readers.len(), 61);
}

#[test]
fn a_stalled_reader_is_evicted_and_rejoins_counting_its_misses() {
    let name = ShmName::new("evict");
    let mut c = config(&name, Layout::Ring, 2, Backpressure::Block);
    c.reader_timeout = Duration::from_millis(200);
    let mut w = Writer::create(&c).unwrap();
    let mut stalled = Reader::open(&name, &oldest()).unwrap();
    write_frame(&mut w, 0);
    write_frame(&mut w, 1);
    let started = std::time::Instant::now();
    let outcome = write_frame(&mut w, 2);
    let waited = started.elapsed();
    assert!(matches!(
        outcome,
        WriteOutcome::WrittenAfterWait { frame: 2, .. }
    ));
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    w.poll_readers();
    assert!(
        w.take_reader_events()
            .iter()
            .any(|e| matches!(e, ReaderEvent::Evicted { .. }))
    );
    // While evicted it does not hold the writer up.
    for n in 3..10 {
        assert_eq!(write_frame(&mut w, n), WriteOutcome::Written { frame: n });
    }
    assert_eq!(stalled.evictions(), 1);
    // It rejoins at the oldest frame held and counts everything it lost.
    let first = frame_number(read_one(&mut stalled));
    assert_eq!(first, 8);
    assert_eq!(stalled.frames_missed(), 8);
    assert_eq!(w.info().readers_evicted, 1);
}

#[test]
fn pinned_slots_are_never_overwritten_while_their_reader_pins_no_more_than_it_may() {
    let name = ShmName::new("pins");
    let mut c = config(&name, Layout::Ring, 2, Backpressure::DropOldest);
    c.spare_slots = 1;
    let mut w = Writer::create(&c).unwrap();
    let r = Reader::open(&name, &oldest()).unwrap();
    write_frame(&mut w, 0);
    let pinned = r.pin(0).unwrap().expect("frame 0 is held");
    for n in 1..20 {
        // Frame 0 leaves the ring, but its slot stays pinned: the writer uses the others.
        assert!(write_frame(&mut w, n).frame().is_some());
    }
    check_frame(0, pinned.data()).unwrap();
    assert_eq!(pinned.info().number, 0);
    // Two pins, as many as one reader may hold here: the writer takes the third slot.
    let second = r.pin(19).unwrap().expect("frame 19 is held");
    assert!(write_frame(&mut w, 20).frame().is_some());
    check_frame(0, pinned.data()).unwrap();
    check_frame(19, second.data()).unwrap();
    // A third pin leaves no slot and is more than one reader may hold: the writer evicts the
    // reader at once and takes the oldest pinned slot rather than dropping the frame (for
    // every reader), and the pin says its frame is gone.
    let third = r.pin(20).unwrap().expect("frame 20 is held");
    assert_eq!(write_frame(&mut w, 21).frame(), Some(21));
    assert_eq!((w.frames_dropped(), w.info().readers_evicted), (0, 1));
    assert!(!pinned.intact(), "frame 0's slot, the oldest, was taken");
    check_frame(19, second.data()).unwrap();
    check_frame(20, third.data()).unwrap();
    assert!(r.pin(5).unwrap().is_none(), "frame 5 is long gone");
}

#[test]
fn pin_next_reads_in_order_without_copying_and_counts_like_read_next() {
    let name = ShmName::new("pin-next");
    let mut c = config(&name, Layout::Ring, 4, Backpressure::DropOldest);
    c.spare_slots = 2;
    let mut w = Writer::create(&c).unwrap();
    let mut r = Reader::open(&name, &oldest()).unwrap();
    for n in 0..3 {
        write_frame(&mut w, n);
    }
    let mut held = Vec::new();
    for n in 0..3 {
        let mut out = None;
        let res = r.pin_next(Duration::from_secs(1), &mut out).unwrap();
        assert!(matches!(res, ReadResult::Frame(FrameInfo { number, .. }) if number == n));
        let pinned = out.expect("a pinned frame comes with Frame");
        check_frame(n, pinned.data()).unwrap();
        held.push(pinned);
    }
    assert_eq!(r.pins_held(), 3);
    // The writer laps the reader; the pinned frames stay intact, the others are missed.
    for n in 3..20 {
        write_frame(&mut w, n);
    }
    for (n, p) in held.iter().enumerate() {
        check_frame(n as u64, p.data()).unwrap();
    }
    let mut out = None;
    let ReadResult::Frame(info) = r.pin_next(Duration::from_secs(1), &mut out).unwrap() else {
        panic!()
    };
    assert!(info.missed_before > 0);
    check_frame(info.number, out.as_ref().unwrap().data()).unwrap();
    held.clear();
    drop(out);
    assert_eq!(r.pins_held(), 0);
    assert_eq!(r.frames_read() + r.frames_missed(), info.number + 1);
}

#[test]
fn the_pin_budget_never_lets_pins_hold_up_a_block_writer() {
    for (bp, spare, budget) in [
        (Backpressure::Block, 0, 0),
        (Backpressure::Block, 2, 2),
        (Backpressure::DropOldest, 0, 1),
        (Backpressure::DropOldest, 3, 3),
        (Backpressure::DropNewest, 0, 1),
    ] {
        let name = ShmName::new("pin-budget");
        let mut c = config(&name, Layout::Ring, 4, bp);
        c.spare_slots = spare;
        let _w = Writer::create(&c).unwrap();
        let r = Reader::open(&name, &oldest()).unwrap();
        assert_eq!(r.pin_budget(), budget, "{bp:?} with {spare} spare slots");
    }
}

#[test]
fn readers_share_one_pin_budget_so_a_double_writer_always_finds_a_slot() {
    let name = ShmName::new("pin-shared");
    let mut c = config(&name, Layout::Double, 2, Backpressure::DropOldest);
    c.spare_slots = 2;
    let mut w = Writer::create(&c).unwrap();
    let mut readers: Vec<Reader> = (0..3)
        .map(|_| Reader::open(&name, &ReaderOptions::default()).unwrap())
        .collect();
    // The readers take turns to pin the newest frame whenever they may, and keep every pin
    // for ever (stopped processes): each would hold different frames.
    let mut kept = Vec::new();
    for n in 0..12 {
        assert!(
            write_frame(&mut w, n).frame().is_some(),
            "frame {n} was dropped: pins hold every slot"
        );
        let turn = n as usize % readers.len();
        for r in &mut readers[turn..=turn] {
            if r.may_pin() {
                let mut out = None;
                if let ReadResult::Frame(_) = r.pin_next(Duration::from_secs(1), &mut out).unwrap()
                {
                    kept.extend(out);
                }
            }
        }
    }
    let mut frames: Vec<u64> = kept.iter().map(|p| p.info().number).collect();
    frames.dedup();
    assert_eq!(
        frames.len(),
        2,
        "the readers together pinned two frames, the spare slots' worth: {frames:?}"
    );
}

#[test]
fn a_reader_keeping_every_pin_it_may_never_makes_a_writer_without_spare_slots_drop() {
    let name = ShmName::new("pin-no-spare");
    let mut w =
        Writer::create(&config(&name, Layout::Double, 2, Backpressure::DropOldest)).unwrap();
    let mut r = Reader::open(&name, &ReaderOptions::default()).unwrap();
    let mut kept = Vec::new();
    for n in 0..10 {
        assert!(
            write_frame(&mut w, n).frame().is_some(),
            "frame {n} was dropped"
        );
        if r.may_pin() {
            let mut out = None;
            if let ReadResult::Frame(_) = r.pin_next(Duration::from_secs(1), &mut out).unwrap() {
                kept.extend(out);
            }
        }
    }
    assert_eq!(kept.len(), 1, "one slot of two stays unpinned");
}

/// `write_frame`, failing the test if it takes longer than `limit`.
fn write_within(w: &mut Writer, n: u64, limit: Duration) -> WriteOutcome {
    common::write_within(w, limit, &format!("frame {n}"), |w| try_write_frame(w, n))
}

/// Reads every frame available now into `received`: the index `fill_frame` wrote into each
/// (not its frame number: dropped frames take no number), after checking the whole frame.
fn drain(r: &mut Reader, received: &mut Vec<u64>) {
    let mut buf = Vec::new();
    while let ReadResult::Frame(_) = r
        .read_next(Duration::ZERO, |info, view| {
            buf.resize(info.size as usize, 0);
            view.copy_to(&mut buf);
        })
        .unwrap()
    {
        let index = u64::from_le_bytes(buf[..8].try_into().unwrap()) / 0x1_0000_0001;
        check_frame(index, &buf).unwrap();
        received.push(index);
    }
}

/// A reader that pins every slot and then stops (a stopped zero-copy reader, or a process
/// doing it on purpose) holds the writer up no longer than the reader timeout, in every layout,
/// policy and spare-slots count (under drop-oldest and double not at all: every slot is more
/// than one reader may pin): the writer evicts it and stops honouring its pins. The other
/// reader then gets every later frame, content checked, nothing more is dropped, and each pin
/// of the evicted reader either still holds its frame or says it does not (`intact`). Before
/// the fix a `block` writer waited for ever and the drop policies dropped every frame.
#[test]
fn a_stopped_reader_pinning_every_slot_holds_the_writer_no_longer_than_the_reader_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(100);
    const LIMIT: Duration = Duration::from_secs(5);
    for (layout, bp) in [
        (Layout::Double, Backpressure::DropOldest),
        (Layout::Ring, Backpressure::Block),
        (Layout::Ring, Backpressure::DropOldest),
        (Layout::Ring, Backpressure::DropNewest),
    ] {
        for spare in [0, 2] {
            let case = format!("{layout:?} {bp:?} spare-slots={spare}");
            let name = ShmName::new("pin-stall");
            let mut c = config(&name, layout, 4, bp);
            c.spare_slots = spare;
            c.reader_timeout = TIMEOUT;
            let mut w = Writer::create(&c).unwrap();
            let slot_count = w.geometry().slot_count as usize;
            let mut stopped = Reader::open(&name, &oldest()).unwrap();
            let mut active = Reader::open(&name, &oldest()).unwrap();
            let (mut pins, mut received) = (Vec::new(), Vec::new());
            let mut n = 0;
            while pins.len() < slot_count {
                assert!(
                    write_within(&mut w, n, LIMIT).frame().is_some(),
                    "{case}: frame {n} dropped before every slot was pinned"
                );
                n += 1;
                let mut out = None;
                if let ReadResult::Frame(_) = stopped.pin_next(Duration::ZERO, &mut out).unwrap() {
                    pins.extend(out);
                }
                drain(&mut active, &mut received);
            }
            // Every slot is pinned and the pinning reader stops: the writer goes on (under
            // block, the first write waits) and evicts it after the timeout; where it
            // overwrites unread frames, at once (every slot is more than one reader may pin).
            let at_once = bp == Backpressure::DropOldest;
            let held_up = Instant::now();
            while w.info().readers_evicted == 0 {
                assert!(
                    held_up.elapsed() < LIMIT,
                    "{case}: the reader pinning every slot was not evicted within {LIMIT:?} \
                     ({} frames dropped)",
                    w.frames_dropped()
                );
                write_within(&mut w, n, LIMIT);
                n += 1;
                drain(&mut active, &mut received);
                std::thread::sleep(Duration::from_millis(5));
            }
            let evicted_after = held_up.elapsed();
            if at_once {
                assert_eq!(
                    w.frames_dropped(),
                    0,
                    "{case}: evicted before a frame is dropped"
                );
            } else {
                // The timeout runs from when the pins first kept a slot from the writer, which
                // may be a little before the last pin.
                assert!(
                    evicted_after >= TIMEOUT / 2,
                    "{case}: evicted after {evicted_after:?}, long before the reader timeout"
                );
            }
            assert_eq!((stopped.evictions(), active.evictions()), (1, 0), "{case}");
            let dropped = w.frames_dropped();
            let first_after = n;
            for _ in 0..2 * slot_count {
                assert!(
                    write_within(&mut w, n, LIMIT).frame().is_some(),
                    "{case}: frame {n} dropped after the eviction"
                );
                n += 1;
                drain(&mut active, &mut received);
            }
            assert_eq!(w.frames_dropped(), dropped, "{case}");
            assert!(
                received.ends_with(&(first_after..n).collect::<Vec<_>>()),
                "{case}: the other reader gets every frame after the eviction: {received:?}"
            );
            assert_eq!(
                active.frames_read() + active.frames_missed(),
                w.frames_written(),
                "{case}: every frame written is read or counted missed"
            );
            let overwritten = pins.iter().filter(|p| !p.intact()).count();
            // Nothing was dropped before the pins: their frame numbers are their indices.
            for p in pins.iter().filter(|p| p.intact()) {
                check_frame(p.info().number, p.data()).unwrap();
            }
            assert!(
                overwritten > 0,
                "{case}: the writer reused none of the evicted reader's {slot_count} slots"
            );
            eprintln!(
                "{case}: evicted after {evicted_after:?}, {dropped} frames dropped meanwhile, \
                 {overwritten} of {slot_count} pins overwritten"
            );
        }
    }
}

/// A zero-copy reader that keeps up but keeps its last frame pinned until it has the next one
/// (as a sink keeping its last sample does) always has some pin on a slot the writer could
/// reuse, but never the same one for long: a block writer waiting for it, again and again for
/// longer than the reader timeout in all, must not take that for a stall. Before the fix the
/// reader was evicted once the writer had seen some pin of it in the way for the timeout, and
/// then missed frames.
#[test]
fn a_slow_zero_copy_reader_keeping_its_last_frame_is_not_evicted_for_its_moving_pin() {
    const FRAMES: u64 = 30;
    let name = ShmName::new("last-sample");
    let mut c = config(&name, Layout::Ring, 4, Backpressure::Block);
    c.spare_slots = 2;
    c.reader_timeout = Duration::from_millis(150);
    let mut w = Writer::create(&c).unwrap();
    let mut r = Reader::open(&name, &oldest()).unwrap();
    let writer = std::thread::spawn(move || {
        for n in 0..FRAMES {
            write_frame(&mut w, n);
        }
        w.end_of_stream();
        w
    });
    let (mut numbers, mut last) = (Vec::new(), None);
    loop {
        let mut next = None;
        match r.pin_next(Duration::from_secs(10), &mut next).unwrap() {
            ReadResult::Frame(info) => {
                let pinned = next.expect("a pinned frame");
                check_frame(info.number, pinned.data()).unwrap();
                numbers.push(info.number);
                // The previous frame is let go only now that the next one is held.
                last = Some(pinned);
            }
            ReadResult::Eos => break,
            other => panic!("{other:?} after {numbers:?}"),
        }
        // Slower than the writer: it waits for room before every frame, 20 ms and more.
        std::thread::sleep(Duration::from_millis(25));
    }
    drop(last);
    let w = writer.join().unwrap();
    assert_eq!(numbers, (0..FRAMES).collect::<Vec<_>>());
    assert_eq!((r.evictions(), r.frames_missed()), (0, 0));
    assert_eq!(w.info().readers_evicted, 0);
}

#[test]
fn pinned_frames_outlive_their_reader() {
    let name = ShmName::new("pin-outlives");
    let mut c = config(&name, Layout::Ring, 2, Backpressure::DropOldest);
    c.spare_slots = 1;
    let mut w = Writer::create(&c).unwrap();
    let mut r = Reader::open(&name, &oldest()).unwrap();
    write_frame(&mut w, 0);
    let mut out = None;
    r.pin_next(Duration::from_secs(1), &mut out).unwrap();
    let pinned = out.unwrap();
    drop(r);
    w.poll_readers();
    assert_eq!(w.reader_count(), 0, "a dropped reader no longer counts");
    for n in 1..10 {
        assert!(write_frame(&mut w, n).frame().is_some());
    }
    check_frame(0, pinned.data()).unwrap();
    drop(pinned);
    // With the last pin gone the entry is free for a new reader.
    let info = w.info();
    assert!(info.readers.is_empty(), "{:?}", info.readers);
}

#[test]
fn a_subscriber_waits_for_its_writer_and_follows_a_restart() {
    let name = ShmName::new("subscriber");
    let mut sub = Subscriber::new(&name, oldest()).unwrap();
    assert_eq!(
        sub.next(Duration::from_millis(50), |_, _| {}).unwrap(),
        SubscriberEvent::Timeout
    );
    let mut w = Writer::create(&config(&name, Layout::Ring, 4, Backpressure::Block)).unwrap();
    let first_session = w.session();
    let ev = sub.next(Duration::from_secs(1), |_, _| {}).unwrap();
    assert_eq!(
        ev,
        SubscriberEvent::WriterAttached {
            pid: std::process::id(),
            session: first_session,
            restart: false
        }
    );
    write_frame(&mut w, 0);
    assert!(matches!(
        sub.next(Duration::from_secs(1), |_, _| {}).unwrap(),
        SubscriberEvent::Frame(FrameInfo { number: 0, .. })
    ));
    drop(w);
    assert_eq!(
        sub.next(Duration::from_secs(1), |_, _| {}).unwrap(),
        SubscriberEvent::WriterLost {
            pid: std::process::id(),
            clean: true
        }
    );
    let mut w2 = Writer::create(&config(&name, Layout::Ring, 4, Backpressure::Block)).unwrap();
    let ev = sub.next(Duration::from_secs(1), |_, _| {}).unwrap();
    assert!(
        matches!(ev, SubscriberEvent::WriterAttached { session, restart: true, .. } if session == w2.session())
    );
    write_frame(&mut w2, 0);
    let mut buf = vec![0u8; FRAME];
    let ev = sub
        .next(Duration::from_secs(1), |_, v| v.copy_to(&mut buf))
        .unwrap();
    assert!(matches!(
        ev,
        SubscriberEvent::Frame(FrameInfo { number: 0, .. })
    ));
    check_frame(0, &buf).unwrap();
    assert_eq!(sub.totals(), (2, 0));
}

#[test]
fn segment_size_is_header_plus_depth_slots() {
    let name = ShmName::new("size");
    let frame = 1920 * 1080 * 4;
    let mut c = WriterConfig::new(&name, frame);
    c.depth = 4;
    let _w = Writer::create(&c).unwrap();
    let len = std::fs::metadata(name.path()).unwrap().len();
    let slots = 4 * frame.div_ceil(4096) * 4096;
    assert!(len >= slots && len - slots <= 8 * 4096, "{len} vs {slots}");
}

/// Fills a lent slot through the lender's pointer, as a buffer pool's upstream would.
fn fill_lent(lender: &Lender, slot: u32, n: u64) {
    // SAFETY: the slot is lent to this test and not published: nothing else writes or reads
    // it, and slot_capacity() bytes are mapped at slot_ptr() while `lender` lives.
    let memory = unsafe {
        std::slice::from_raw_parts_mut(lender.slot_ptr(slot), lender.slot_capacity() as usize)
    };
    fill_frame(n, &mut memory[..FRAME]);
}

fn meta(n: u64) -> FrameMeta {
    FrameMeta {
        pts: Some(n * 1000),
        ..Default::default()
    }
}

#[test]
fn lent_slots_are_published_in_place_and_never_reused_while_held() {
    let name = ShmName::new("lend-held");
    let mut c = config(&name, Layout::Ring, 3, Backpressure::DropOldest);
    c.spare_slots = 1;
    let mut w = Writer::create(&c).unwrap();
    let lender = w.lender();
    let mut r = Reader::open(&name, &oldest()).unwrap();

    let held = w.lend().expect("a fresh ring has free slots");
    fill_lent(&lender, held, 0);
    assert_eq!(w.lent_slot_at(lender.slot_ptr(held)), Some(held));
    assert_eq!(
        w.publish_lent(held, &meta(0), FRAME as u64).unwrap(),
        WriteOutcome::Written { frame: 0 }
    );
    assert_eq!(
        w.lent_slot_at(lender.slot_ptr(held)),
        None,
        "a published slot is no longer open for filling"
    );
    assert_eq!(frame_number(read_one(&mut r)), 0);
    // Many frames later the held slot still holds frame 0: the writer rotated around it.
    for n in 1..50 {
        write_frame(&mut w, n);
        assert_eq!(frame_number(read_one(&mut r)), n);
    }
    let mut copy = vec![0; FRAME];
    // SAFETY: the slot is lent (published) to this test: the writer never writes it.
    copy.copy_from_slice(unsafe { std::slice::from_raw_parts(lender.slot_ptr(held), FRAME) });
    check_frame(0, &copy).unwrap();

    // Given back, it joins the rotation again.
    lender.give_back(held);
    let mut reused = false;
    for n in 50..60 {
        write_frame(&mut w, n);
        assert_eq!(frame_number(read_one(&mut r)), n);
        reused |= w.lent_slot_at(lender.slot_ptr(held)).is_none()
            && w.info().frames_written == n + 1
            && unsafe { std::slice::from_raw_parts(lender.slot_ptr(held), 8) } != &copy[..8];
    }
    assert!(reused, "the slot given back is written again");
    assert_eq!((r.frames_read(), r.frames_missed()), (60, 0));
}

#[test]
fn a_lent_slot_given_back_unpublished_is_never_seen_by_readers() {
    let name = ShmName::new("lend-unpublished");
    let mut c = config(&name, Layout::Ring, 4, Backpressure::Block);
    c.spare_slots = 1;
    let mut w = Writer::create(&c).unwrap();
    let lender = w.lender();
    let mut r = Reader::open(&name, &oldest()).unwrap();
    let slot = w.lend().unwrap();
    fill_lent(&lender, slot, 99);
    lender.give_back(slot);
    lender.give_back(slot); // a second give-back is harmless
    for n in 0..8 {
        write_frame(&mut w, n);
        assert_eq!(frame_number(read_one(&mut r)), n);
    }
    assert_eq!(w.frames_written(), 8);
    assert_eq!(r.frames_missed(), 0);
}

#[test]
fn lending_never_waits_and_never_takes_a_frame_of_the_ring() {
    let name = ShmName::new("lend-exhaust");
    let mut c = config(&name, Layout::Ring, 2, Backpressure::Block);
    c.spare_slots = 2;
    let mut w = Writer::create(&c).unwrap();
    let lender = w.lender();
    let _r = Reader::open(&name, &oldest()).unwrap();
    assert_eq!(lender.slot_count(), 4);
    let lent: Vec<u32> = std::iter::from_fn(|| w.lend()).collect();
    assert_eq!(
        lent.len(),
        2,
        "no more slots are lent than there are beyond depth"
    );
    // Published, they stay lent. Frame 1 is in the ring (depth 2: frames 1 and 2 once 2 is
    // written) and does not count; frame 0 has left it and still counts: one more may be lent.
    for (n, &slot) in lent.iter().enumerate() {
        fill_lent(&lender, slot, n as u64);
        w.publish_lent(slot, &meta(n as u64), FRAME as u64).unwrap();
    }
    let third = lender.lend().expect("lending works from the lender too");
    assert_eq!(w.lend(), None);
    for slot in lent.into_iter().chain([third]) {
        lender.give_back(slot);
    }
    // Frames 0 and 1, unread, stay in the ring: only the two other slots may be lent.
    let lent: Vec<u32> = std::iter::from_fn(|| w.lend()).collect();
    assert_eq!(lent.len(), 2, "the unread frames stay in the ring");
    // The ring is full under block: publishing a lent slot waits, here until interrupted.
    fill_lent(&lender, lent[0], 2);
    // Shorter than the reader timeout, after which the writer would go on by evicting.
    assert_interrupted(&w.interrupt_handle(), Duration::from_millis(900), || {
        w.publish_lent(lent[0], &meta(2), FRAME as u64)
    });
    assert_eq!(
        w.lent_slot_at(lender.slot_ptr(lent[0])),
        Some(lent[0]),
        "a frame that was not published leaves its slot lent for a later try"
    );
}

/// What a GStreamer sink does with the buffers of its pool: it keeps the newest frame (its last
/// sample) while upstream asks for the next frame's buffer, and lets it go just before it
/// renders the next frame. At depth 1 the newest frame leaves the ring when the next is
/// published; holding it still leaves the one spare slot to lend, for every frame. An older
/// frame held as well (a queue keeping buffers) does use the spare slot up.
#[test]
fn the_newest_frame_held_leaves_the_one_spare_slot_of_depth_one_to_lend() {
    let name = ShmName::new("lend-newest-held");
    let mut c = config(&name, Layout::Ring, 1, Backpressure::Block);
    c.spare_slots = 1;
    let mut w = Writer::create(&c).unwrap();
    let lender = w.lender();
    let mut r = Reader::open(&name, &oldest()).unwrap();
    let mut newest: Option<u32> = None;
    for n in 0..20 {
        let slot = lender.lend().unwrap_or_else(|| {
            panic!(
                "frame {n}: no slot lent while the sink keeps frame {}",
                n.max(1) - 1
            )
        });
        fill_lent(&lender, slot, n);
        if let Some(previous) = newest.replace(slot) {
            lender.give_back(previous);
        }
        assert_eq!(
            w.publish_lent(slot, &meta(n), FRAME as u64).unwrap(),
            WriteOutcome::Written { frame: n }
        );
        assert_eq!(frame_number(read_one(&mut r)), n);
    }
    // Frame 19 is held, and frame 20 in a lent slot too: nothing more to lend.
    let filling = lender.lend().unwrap();
    fill_lent(&lender, filling, 20);
    w.publish_lent(filling, &meta(20), FRAME as u64).unwrap();
    assert_eq!(frame_number(read_one(&mut r)), 20);
    assert_eq!(
        lender.lend(),
        None,
        "frame 19, held and gone from the ring, uses the spare slot up"
    );
    // Let go of, it leaves a slot for a frame the writer copies.
    lender.give_back(newest.take().unwrap());
    assert_eq!(write_frame(&mut w, 21), WriteOutcome::Written { frame: 21 });
    assert_eq!(frame_number(read_one(&mut r)), 21);
    assert_eq!((r.frames_read(), r.frames_missed()), (22, 0));
}

#[test]
fn giving_back_from_another_thread_wakes_a_writer_waiting_for_a_slot() {
    let name = ShmName::new("lend-wake");
    let mut c = config(&name, Layout::Ring, 2, Backpressure::Block);
    c.spare_slots = 1;
    let mut w = Writer::create(&c).unwrap();
    let lender = w.lender();
    let mut r = Reader::open(&name, &oldest()).unwrap();
    for n in 0..2 {
        write_frame(&mut w, n);
        assert_eq!(frame_number(read_one(&mut r)), n);
    }
    // Frame 2 is published from a lent slot that stays held (as a buffer upstream keeps).
    let held = w.lend().unwrap();
    fill_lent(&lender, held, 2);
    w.publish_lent(held, &meta(2), FRAME as u64).unwrap();
    assert_eq!(frame_number(read_one(&mut r)), 2);
    // The slot of frame 0 is lent (unpublished), frame 3 takes the slot of frame 1.
    let _filling = w.lend().unwrap();
    write_frame(&mut w, 3);
    assert_eq!(frame_number(read_one(&mut r)), 3);
    // The reader has read everything, but frame 4 has nowhere to go until a slot comes back.
    let given_back = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let giver = {
        let (lender, given_back) = (lender.clone(), given_back.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            given_back.store(true, std::sync::atomic::Ordering::SeqCst);
            lender.give_back(held);
        })
    };
    assert_eq!(write_frame(&mut w, 4), WriteOutcome::Written { frame: 4 });
    assert!(
        given_back.load(std::sync::atomic::Ordering::SeqCst),
        "the write waited for the slot given back"
    );
    giver.join().unwrap();
    assert_eq!(frame_number(read_one(&mut r)), 4);
}

#[test]
fn a_lender_lends_from_another_thread_while_the_writer_waits_for_room() {
    let name = ShmName::new("lend-while-blocked");
    let mut c = config(&name, Layout::Ring, 2, Backpressure::Block);
    c.spare_slots = 1;
    let mut w = Writer::create(&c).unwrap();
    let lender = w.lender();
    let mut r = Reader::open(&name, &oldest()).unwrap();
    write_frame(&mut w, 0);
    write_frame(&mut w, 1);
    // The ring is full: frame 2 waits for the reader, in another thread.
    let blocked = std::thread::spawn(move || {
        let outcome = write_frame(&mut w, 2);
        (w, outcome)
    });
    let observer = Observer::open(&name).unwrap();
    assert!(common::wait_for(Duration::from_secs(10), || {
        observer.info().full_events == 1
    }));
    let slot = lender
        .lend()
        .expect("the spare slot is lent while the writer waits");
    fill_lent(&lender, slot, 7);
    assert_eq!(frame_number(read_one(&mut r)), 0);
    let (w, outcome) = blocked.join().unwrap();
    assert!(matches!(
        outcome,
        WriteOutcome::WrittenAfterWait { frame: 2, .. }
    ));
    for n in 1..3 {
        assert_eq!(frame_number(read_one(&mut r)), n);
    }
    assert_eq!(w.lent_slot_at(lender.slot_ptr(slot)), Some(slot));
    lender.give_back(slot);
}

#[test]
fn frames_of_a_ring_larger_than_the_cache_are_streamed_in_intact() {
    let name = ShmName::new("cold-ring");
    let size = 8 << 20;
    let mut c = WriterConfig::new(&name, size as u64);
    c.depth = 4;
    c.spare_slots = 2;
    c.backpressure = Backpressure::Block;
    let mut w = Writer::create(&c).unwrap();
    // 48 MiB of slots: larger than the last-level cache of the machines we run on, so the
    // streaming copy is the one under test there (elsewhere the plain copy, unless the writer
    // idles).
    if 6 * size as u64 > last_level_cache_bytes() {
        assert!(w.slots_are_cold(size as u64));
    }
    let mut r = Reader::open(&name, &oldest()).unwrap();
    let mut frame = vec![0u8; size + 3];
    let mut read = Vec::new();
    for n in 0..8 {
        write_and_read_back_intact(&mut w, &mut r, n, size, &mut frame, &mut read);
    }
}

/// Writes frame `n` (`size - 1` bytes from an offset of `n % 3`: odd lengths and an unaligned
/// source exercise the edges of the streaming copy) and checks the reader gets it intact.
fn write_and_read_back_intact(
    w: &mut Writer,
    r: &mut Reader,
    n: u64,
    size: usize,
    frame: &mut [u8],
    read: &mut Vec<u8>,
) {
    fill_frame(n, frame);
    let data = &frame[n as usize % 3..size + n as usize % 3 - 1];
    w.write(&FrameMeta::default(), data).unwrap();
    let result = r
        .read_next(Duration::from_secs(5), |info, view| {
            read.resize(info.size as usize, 0);
            view.copy_to(read);
        })
        .unwrap();
    assert!(matches!(result, ReadResult::Frame(_)));
    assert!(*read == data, "frame {n} arrived intact");
}

#[test]
fn frames_of_a_paced_writer_are_streamed_in_intact() {
    let name = ShmName::new("paced-ring");
    // A small ring, well inside any last-level cache: only the pause makes its slots cold.
    let size = (64 << 10) + 5;
    let mut w = Writer::create(&WriterConfig::new(&name, size as u64)).unwrap();
    let mut r = Reader::open(&name, &oldest()).unwrap();
    let mut frame = vec![0u8; size + 3];
    let mut read = Vec::new();
    for n in 0..8 {
        // Longer than the writer's idle threshold (1 ms), as between a camera's frames.
        std::thread::sleep(Duration::from_millis(3));
        assert!(w.slots_are_cold(size as u64), "frame {n} after a pause");
        write_and_read_back_intact(&mut w, &mut r, n, size, &mut frame, &mut read);
    }
}

/// Minor page faults of the calling thread so far (other test threads do not count).
fn thread_minor_faults() -> i64 {
    // SAFETY: all-zero is a valid rusage (plain integers); getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is writable for the call.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) },
        0
    );
    usage.ru_minflt
}

#[test]
fn a_fresh_segment_is_allocated_and_mapped_before_the_first_frame() {
    const SLOT: usize = 1 << 20;
    let name = ShmName::new("prefaulted");
    let mut c = WriterConfig::new(&name, SLOT as u64);
    c.depth = 6;
    c.spare_slots = 2;
    let mut w = Writer::create(&c).unwrap();
    let file = std::fs::metadata(name.path()).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(
        file.blocks() * 512 >= file.len(),
        "the segment's {} bytes are not all allocated: {} blocks",
        file.len(),
        file.blocks()
    );
    let r = Reader::open(&name, &oldest()).unwrap();

    // Every slot is written once and read in place: without the mapping populated up front
    // each 1 MiB slot takes 256 faults on each side on its first frame.
    let writer_faults = thread_minor_faults();
    for n in 0..8u64 {
        w.write_with(&FrameMeta::default(), SLOT as u64, |slot| {
            fill_frame(n, slot)
        })
        .unwrap();
    }
    let writer_faults = thread_minor_faults() - writer_faults;
    let reader_faults = thread_minor_faults();
    let mut checksum = 0u64;
    for n in 0..6u64 {
        let frame = r.pin(n + 2).unwrap().expect("frame held");
        checksum = frame
            .data()
            .iter()
            .step_by(4096)
            .fold(checksum, |sum, &b| sum.wrapping_add(b as u64));
    }
    let reader_faults = thread_minor_faults() - reader_faults;
    assert_ne!(checksum, 0, "the frames were read");
    assert!(
        writer_faults < 64 && reader_faults < 64,
        "page faults while writing 8 MiB: {writer_faults}, while reading 6 MiB: \
         {reader_faults} (expected next to none)"
    );
}

#[test]
fn a_segment_larger_than_the_shm_file_system_is_refused_with_the_room_it_needs() {
    let name = ShmName::new("no-space");
    // 1024 slots of 256 MiB: far more than any /dev/shm has free.
    let mut c = WriterConfig::new(&name, 256 << 20);
    c.depth = 1024;
    let e = Writer::create(&c).err().unwrap();
    let Error::NoSpace {
        needed, available, ..
    } = e
    else {
        panic!("expected NoSpace, got {e:?}");
    };
    assert!(needed > 1024 * (256 << 20) && available < needed);
    let dir = shm_dir().display().to_string();
    assert_eq!(
        e.to_string(),
        format!(
            "the segment needs {needed} bytes ({} MiB) but {dir} has {available} bytes ({} MiB) \
             free; lower depth or the frame size, remove segments no longer used, or give {dir} \
             more room (Docker: --shm-size)",
            needed.div_ceil(1 << 20),
            available >> 20
        )
    );
    assert!(!name.path().exists());
    let leftovers: Vec<_> = std::fs::read_dir(shm_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(name.as_str()))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Readers attaching at the same moment (say, all following a restarted writer) each end up
/// in the table as active readers the writer counts, whichever entry they raced for.
#[test]
fn readers_attaching_at_once_are_all_counted() {
    const READERS: usize = 12;
    let name = ShmName::new("attach-race");
    let w = Writer::create(&config(&name, Layout::Ring, 4, Backpressure::Block)).unwrap();
    for round in 0..40 {
        let barrier = std::sync::Barrier::new(READERS);
        let readers: Vec<Reader> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..READERS)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        Reader::open(&name, &oldest()).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // Counted first: that notices the previous round's readers gone, which the table
        // may still list until the writer looks.
        let counted = w.reader_count();
        let listed = w.observer().info().readers;
        assert_eq!(
            (counted, listed.len()),
            (READERS, READERS),
            "round {round}: {READERS} readers attached, the table lists {listed:?}"
        );
        drop(readers);
    }
}

/// Every frame number `r` reads until EOS, content checked.
fn read_to_eos(r: &mut Reader) -> Vec<u64> {
    let mut numbers = Vec::new();
    loop {
        match read_one(r) {
            ReadResult::Frame(info) => numbers.push(info.number),
            ReadResult::Eos => return numbers,
            other => panic!("{other:?} after {} frames", numbers.len()),
        }
    }
}

#[test]
fn a_writer_waiting_for_readers_publishes_nothing_until_they_attach() {
    let name = ShmName::new("wait-readers");
    let mut cfg = config(&name, Layout::Ring, 4, Backpressure::Block);
    cfg.wait_for_readers = 2;
    let mut w = Writer::create(&cfg).unwrap();
    let observer = w.observer();
    assert_eq!(w.awaiting_readers(), Some((2, 0)));
    let writer = std::thread::spawn(move || {
        // Unpaced: as fast as the readers let it.
        for n in 0..200 {
            assert_eq!(write_frame(&mut w, n).frame(), Some(n));
        }
        w.end_of_stream();
        w
    });
    // The sleeps only give a writer that would not wait the time to publish.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(observer.info().frames_written, 0, "no reader yet");
    let mut first = Reader::open(&name, &ReaderOptions::default()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(observer.info().frames_written, 0, "one reader of two");
    let first = std::thread::spawn(move || read_to_eos(&mut first));
    // Started with the default `start=newest`, both get every frame from the first on.
    let second = read_to_eos(&mut Reader::open(&name, &ReaderOptions::default()).unwrap());
    let all: Vec<u64> = (0..200).collect();
    assert_eq!(first.join().unwrap(), all);
    assert_eq!(second, all);
    assert_eq!(writer.join().unwrap().awaiting_readers(), None);
}

#[test]
fn a_wait_for_readers_that_times_out_fails_one_write_and_then_publishes() {
    let name = ShmName::new("wait-readers-timeout");
    let mut cfg = config(&name, Layout::Ring, 4, Backpressure::Block);
    cfg.wait_for_readers = 1;
    cfg.wait_for_readers_timeout = Some(Duration::from_millis(50));
    let mut w = Writer::create(&cfg).unwrap();
    let err = w
        .write_with(&FrameMeta::default(), FRAME as u64, |slot| {
            fill_frame(0, slot)
        })
        .unwrap_err();
    let Error::ReadersMissing {
        wanted, attached, ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!((*wanted, *attached), (1, 0));
    assert!(
        err.to_string().starts_with(&format!(
            "only 0 of the 1 readers waited for attached to shm-name {:?} within ",
            name.as_str()
        )),
        "{err}"
    );
    assert_eq!(
        w.frames_written(),
        0,
        "the frame that waited was not published"
    );
    assert_eq!(w.awaiting_readers(), None, "the wait is over");
    assert_eq!(write_frame(&mut w, 0), WriteOutcome::Written { frame: 0 });
}

#[test]
fn a_wait_for_readers_ends_when_interrupted_and_resumes_at_the_next_write() {
    let name = ShmName::new("wait-readers-interrupt");
    let mut cfg = config(&name, Layout::Ring, 4, Backpressure::Block);
    cfg.wait_for_readers = 1;
    let mut w = Writer::create(&cfg).unwrap();
    let interrupt = w.interrupt_handle();
    // The wait for readers has no timeout here.
    assert_interrupted(&interrupt, Duration::from_secs(10), || {
        try_write_frame(&mut w, 0)
    });
    interrupt.clear();
    assert_eq!(w.frames_written(), 0);
    assert_eq!(w.awaiting_readers(), Some((1, 0)), "still waiting");
    let mut r = Reader::open(&name, &ReaderOptions::default()).unwrap();
    assert_eq!(write_frame(&mut w, 0), WriteOutcome::Written { frame: 0 });
    assert_eq!(frame_number(read_one(&mut r)), 0);
}

#[test]
fn a_subscriber_that_waited_for_its_writer_reads_from_the_first_frame_whatever_start_says() {
    let name = ShmName::new("sub-waited-newest");
    let mut sub = Subscriber::new(&name, ReaderOptions::default()).unwrap();
    let ignore = |_: &FrameInfo, _: &SlotView| {};
    assert_eq!(
        sub.next(Duration::from_millis(10), ignore).unwrap(),
        SubscriberEvent::Timeout
    );
    let mut w = Writer::create(&config(&name, Layout::Ring, 4, Backpressure::Block)).unwrap();
    for n in 0..3 {
        write_frame(&mut w, n);
    }
    assert!(matches!(
        sub.next(Duration::from_secs(5), ignore).unwrap(),
        SubscriberEvent::WriterAttached { .. }
    ));
    let numbers: Vec<u64> = (0..3)
        .map(
            |_| match sub.next(Duration::from_secs(5), ignore).unwrap() {
                SubscriberEvent::Frame(info) => info.number,
                other => panic!("{other:?}"),
            },
        )
        .collect();
    assert_eq!(numbers, [0, 1, 2], "start=newest would begin at frame 2");
}

/// A stream socket left by a writer that died without removing it (nobody listens on it) is
/// removed by the next writer of any name once it is a few seconds old; a younger one (its
/// writer may be about to listen) and a live writer's are left alone.
#[test]
fn a_dead_writers_socket_is_removed_by_the_next_writer() {
    use std::os::unix::ffi::OsStrExt;
    let name = ShmName::new("orphan-socket");
    let orphan = |age: u64| {
        let path = shm_dir().join(format!(
            ".shmframe-sock-{:016x}",
            0xdead_0000_0000_0000u64 | (std::process::id() as u64) << 8 | age
        ));
        // Bound and closed: the file stays, and connecting to it is refused.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        let then = libc::timespec {
            tv_sec: (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                - age) as libc::time_t,
            tv_nsec: 0,
        };
        // SAFETY: a valid path and two valid timespecs.
        let set =
            unsafe { libc::utimensat(libc::AT_FDCWD, c_path.as_ptr(), [then, then].as_ptr(), 0) };
        assert_eq!(set, 0);
        path
    };
    let (old, young) = (orphan(60), orphan(0));
    let live = Writer::create(&WriterConfig::new(&format!("{}-live", name.as_str()), 16)).unwrap();
    let live_socket = shm_dir().join(format!(".shmframe-sock-{:016x}", live.session()));
    let _w = Writer::create(&WriterConfig::new(&name, 16)).unwrap();
    assert!(!old.exists(), "the old orphan is removed");
    assert!(young.exists(), "a young socket is left alone");
    assert!(live_socket.exists(), "a live writer's socket is left alone");
    std::fs::remove_file(young).unwrap();
    drop(live);
    assert!(!live_socket.exists());
}

/// A reader that requires its writer's uid refuses a segment of another user, naming both
/// uids and what to do, and attaches to one of that user.
#[test]
fn a_reader_requiring_a_writer_uid_refuses_another_users_segment() {
    let name = ShmName::new("writer-uid");
    let mut w = Writer::create(&config(&name, Layout::Ring, 4, Backpressure::Block)).unwrap();
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let other = me.wrapping_add(1);
    let requiring = |uid| ReaderOptions {
        writer_uid: Some(uid),
        ..oldest()
    };
    let e = Reader::open(&name, &requiring(other)).err().unwrap();
    assert_eq!(
        e.to_string(),
        format!(
            "{} belongs to uid {me}, but this reader accepts only a writer running as uid \
             {other}: start the writer as uid {other}, or set the reader's writer uid to {me} \
             (or unset it: any user the segment's permissions admit)",
            name.path().display()
        )
    );
    w.poll_readers();
    assert!(
        w.take_reader_events().is_empty(),
        "refused before attaching"
    );
    let mut r = Reader::open(&name, &requiring(me)).unwrap();
    write_frame(&mut w, 0);
    assert_eq!(frame_number(read_one(&mut r)), 0);
}

/// The calling thread's resource usage so far (other threads do not count).
fn thread_usage() -> libc::rusage {
    // SAFETY: all-zero is a valid rusage (plain integers); getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is writable for the call.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) },
        0
    );
    usage
}

/// Reads `frames` frames with `r` on a thread of its own, checking each; gives back that
/// thread's voluntary context switches (its sleeps) and CPU time over the reads.
fn read_on_a_thread(mut r: Reader, frames: u64) -> std::thread::JoinHandle<(i64, Duration)> {
    std::thread::spawn(move || {
        let before = thread_usage();
        for n in 0..frames {
            assert_eq!(frame_number(read_one(&mut r)), n);
        }
        let after = thread_usage();
        let cpu_us = |u: &libc::rusage| {
            let us = |t: libc::timeval| t.tv_sec * 1_000_000 + t.tv_usec;
            us(u.ru_utime) + us(u.ru_stime)
        };
        (
            after.ru_nvcsw - before.ru_nvcsw,
            Duration::from_micros((cpu_us(&after) - cpu_us(&before)) as u64),
        )
    })
}

/// A reader polls for its next frame only when frames come close together
/// (`ReaderOptions::spin`): polling between the frames of a paced stream would cost a core
/// per stream.
#[test]
fn a_paced_reader_sleeps_between_frames_and_costs_little_cpu() {
    const FRAMES: u64 = 50;
    let name = ShmName::new("paced-reader-cpu");
    let mut w = Writer::create(&config(&name, Layout::Ring, 8, Backpressure::Block)).unwrap();
    let reader = read_on_a_thread(Reader::open(&name, &oldest()).unwrap(), FRAMES);
    let started = Instant::now();
    for n in 0..FRAMES {
        std::thread::sleep(Duration::from_millis(4));
        write_frame(&mut w, n);
    }
    let (sleeps, cpu) = reader.join().unwrap();
    let elapsed = started.elapsed();
    // Frames 4 ms apart: the reader sleeps (a voluntary context switch) before most of them,
    // and its CPU time is a small part of the time it waited, not all of it.
    assert!(
        sleeps >= FRAMES as i64 / 2,
        "the reader slept {sleeps} times for {FRAMES} frames"
    );
    assert!(
        cpu < elapsed / 5,
        "the reader used {cpu:?} of CPU in {elapsed:?} for {FRAMES} frames"
    );
}

/// Frames coming close together: the reader, faster than the writer, polls for the next
/// frame instead of sleeping, so the writer has no sleeping reader to wake (a futex wake
/// per frame otherwise).
#[test]
fn a_reader_of_frames_coming_close_together_polls_for_them_instead_of_sleeping() {
    const FRAMES: u64 = 5000;
    let name = ShmName::new("spin-fast");
    let mut w = Writer::create(&config(&name, Layout::Ring, 8, Backpressure::Block)).unwrap();
    let reader = read_on_a_thread(Reader::open(&name, &oldest()).unwrap(), FRAMES);
    for n in 0..FRAMES {
        // A frame every 5 µs or so: the reader, faster, waits before nearly every one.
        let due = Instant::now() + Duration::from_micros(5);
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        write_frame(&mut w, n);
    }
    let (sleeps, _) = reader.join().unwrap();
    // A reader that sleeps whenever it finds nothing new sleeps before most frames (and the
    // writer wakes it each time); one that polls sleeps only when the writer is descheduled
    // for longer than its spin.
    assert!(
        sleeps < FRAMES as i64 / 10,
        "the reader slept {sleeps} times for {FRAMES} frames"
    );
}
