//! The Python package `shmframe` (python/) against the Rust transport and the GStreamer
//! elements, in both directions, through the test peer examples/python/interop_peer.py. The peer prints a CRC-32 of every frame as stored (`raw`)
//! and of its visible pixels (`pix`, plane by plane, rows without padding); this side computes
//! both from gst_video's `VideoInfo` strides and offsets, so a disagreement about the frame
//! layout fails as surely as a wrong byte. Writers on either side fill frames with a pattern of
//! (frame, plane, row, byte) that the other side checks byte by byte.
//!
//! Needs the package's Python environment (`common::python`: scripts/python.sh builds it);
//! without it every test fails under scripts/test.sh, or is skipped with a notice (see
//! `common::prerequisite`).

mod common;

use common::{
    ChildGuard, ShmName, init, python, python_ready, readers_first_frames, wait_for, wait_for_eos,
};
use gst::prelude::*;
use gst_video::{VideoFormat, VideoInfo};
use gstshmframe::transport::{
    self, Backpressure, FrameMeta, Layout, ReaderEvent, ReaderOptions, StartPosition, Subscriber,
    SubscriberEvent, WriteOutcome, Writer, WriterConfig,
};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const PEER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/python/interop_peer.py"
);
/// Upper bound for any child or pipeline step; reached only when something is broken.
const LIMIT: Duration = Duration::from_secs(60);
const WIDTH: u32 = 62;
const HEIGHT: u32 = 46;
const FRAMES: u64 = 12;
/// RGB and GRAY8 rows of 62 pixels are padded (stride 188 and 64): the layouts must agree on it.
const FORMATS: [VideoFormat; 3] = [VideoFormat::Rgb, VideoFormat::Gray8, VideoFormat::Nv12];

// ----------------------------------------------------------------------------------------------
// The Python peer process
// ----------------------------------------------------------------------------------------------

/// A running interop_peer.py whose stdout lines arrive on a channel (read by a thread, so a
/// chatty peer never blocks on a full pipe). Killed on drop.
/// The Python writer of the interop tests: FRAMES frames of WIDTH x HEIGHT `format` under
/// `block` (depth 4), once one reader is attached.
fn spawn_python_writer(name: &str, format: VideoFormat, layout: Layout) -> Peer {
    let frames = FRAMES.to_string();
    let (w, h) = (WIDTH.to_string(), HEIGHT.to_string());
    Peer::spawn(&[
        "write",
        name,
        &w,
        &h,
        format.to_str().as_str(),
        "--layout",
        layout_name(layout),
        "--depth",
        "4",
        "--backpressure",
        "block",
        "--frames",
        &frames,
        "--wait-readers",
        "1",
        "--wait",
        "50",
    ])
}

struct Peer {
    guard: ChildGuard,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Peer {
    /// A zero-copy reader of `name` that keeps the first frame it reads pinned (it prints
    /// `holding read=1`) until it is killed; returned once it has attached.
    fn attached_zero_copy_holder(name: &str) -> Peer {
        let mut peer = Peer::spawn(&[
            "read",
            name,
            "--zero-copy",
            "--max-frames",
            "1",
            "--hold",
            "--timeout",
            "60",
        ]);
        peer.expect("attached", LIMIT);
        peer
    }

    fn spawn(args: &[&str]) -> Peer {
        let mut child = Command::new(python())
            .arg("-u")
            .arg(PEER)
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn python peer");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer {
            guard: ChildGuard {
                child,
                label: format!("python peer {args:?}"),
            },
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line starting with `prefix` (lines before it are kept for `finish`).
    fn expect(&mut self, prefix: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "{}: no line starting with {prefix:?} within {limit:?}; got {:#?}",
                    self.guard.label, self.seen
                ),
            }
        }
    }

    /// Waits for a successful exit and returns every line it printed.
    fn finish(mut self, limit: Duration) -> Vec<String> {
        let status = self.guard.wait_timeout(limit);
        // The reader thread ends at EOF, which follows the exit.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        match status {
            Some(s) if s.success() => self.seen,
            Some(s) => panic!(
                "{} failed ({s}); output: {:#?}",
                self.guard.label, self.seen
            ),
            None => panic!(
                "{} did not finish within {limit:?}; output: {:#?}",
                self.guard.label, self.seen
            ),
        }
    }
}

/// `key=value` fields of a peer output line.
fn fields(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// (frame number, raw CRC, pixel CRC, the whole line) of every line starting with `keyword`.
fn frame_lines(lines: &[String], keyword: &str) -> Vec<(u64, u32, u32, String)> {
    lines
        .iter()
        .filter(|l| l.split_whitespace().next() == Some(keyword))
        .map(|l| {
            let n = l.split_whitespace().nth(1).unwrap().parse().unwrap();
            let f = fields(l);
            (
                n,
                f["raw"].parse().unwrap(),
                f["pix"].parse().unwrap(),
                l.clone(),
            )
        })
        .collect()
}

// ----------------------------------------------------------------------------------------------
// Frame layout and content, from gst_video
// ----------------------------------------------------------------------------------------------

/// CRC-32 (IEEE, as zlib.crc32).
fn crc32_update(mut crc: u32, data: &[u8]) -> u32 {
    static TABLE: OnceLock<[u32; 256]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    crc = !crc;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

fn crc32(data: &[u8]) -> u32 {
    crc32_update(0, data)
}

/// One plane of a frame in `info`'s layout: visible rows and bytes per row.
#[derive(Debug, PartialEq, Eq)]
struct PlaneGeo {
    offset: usize,
    stride: usize,
    rows: usize,
    row_bytes: usize,
}

fn planes(info: &VideoInfo) -> Vec<PlaneGeo> {
    let fi = info.format_info();
    (0..info.n_planes())
        .map(|p| {
            let comps: Vec<u8> = (0..fi.n_components() as u8)
                .filter(|&c| fi.plane()[c as usize] == p)
                .collect();
            let rows = comps
                .iter()
                .map(|&c| fi.scale_height(c, info.height()))
                .max()
                .unwrap();
            let row_bytes = comps
                .iter()
                .map(|&c| fi.scale_width(c, info.width()) * fi.pixel_stride()[c as usize] as u32)
                .max()
                .unwrap();
            PlaneGeo {
                offset: info.offset()[p as usize],
                stride: info.stride()[p as usize] as usize,
                rows: rows as usize,
                row_bytes: row_bytes as usize,
            }
        })
        .collect()
}

/// The byte the peer's writer puts at byte `x` of row `y` of plane `p` of frame `n`.
fn pattern(n: u64, p: usize, y: usize, x: usize) -> u8 {
    ((n as usize * 29 + p * 71 + y * 7 + x * 3) & 0xff) as u8
}

/// A frame of `info` holding the pattern of frame `n` (padding zeroed).
fn pattern_frame(info: &VideoInfo, n: u64) -> Vec<u8> {
    let mut buf = vec![0u8; info.size()];
    for (p, g) in planes(info).iter().enumerate() {
        for y in 0..g.rows {
            let row = &mut buf[g.offset + y * g.stride..][..g.row_bytes];
            for (x, b) in row.iter_mut().enumerate() {
                *b = pattern(n, p, y, x);
            }
        }
    }
    buf
}

fn check_pattern(info: &VideoInfo, n: u64, buf: &[u8]) -> Result<(), String> {
    if buf.len() < info.size() {
        return Err(format!(
            "frame {n}: {} bytes, expected {}",
            buf.len(),
            info.size()
        ));
    }
    for (p, g) in planes(info).iter().enumerate() {
        for y in 0..g.rows {
            let row = &buf[g.offset + y * g.stride..][..g.row_bytes];
            if let Some(x) = (0..g.row_bytes).find(|&x| row[x] != pattern(n, p, y, x)) {
                return Err(format!(
                    "frame {n}: plane {p} row {y} byte {x} is {}, expected {}",
                    row[x],
                    pattern(n, p, y, x)
                ));
            }
        }
    }
    Ok(())
}

/// CRC-32 of the visible bytes of every plane (what the peer prints as `pix`).
fn pixel_crc(info: &VideoInfo, buf: &[u8]) -> u32 {
    let mut crc = 0;
    for g in planes(info) {
        for y in 0..g.rows {
            crc = crc32_update(crc, &buf[g.offset + y * g.stride..][..g.row_bytes]);
        }
    }
    crc
}

fn video_info(format: VideoFormat) -> VideoInfo {
    VideoInfo::builder(format, WIDTH, HEIGHT)
        .fps(gst::Fraction::new(30, 1))
        .build()
        .unwrap()
}

/// The array shape the Python reader returns for `format` (packed: rows, columns[, channels];
/// planar: the whole buffer).
fn python_shape(info: &VideoInfo) -> String {
    let (w, h) = (info.width(), info.height());
    match info.format() {
        VideoFormat::Rgb => format!("{h},{w},3"),
        VideoFormat::Gray8 => format!("{h},{w}"),
        _ => info.size().to_string(),
    }
}

fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::Ring => "ring",
        Layout::Double => "double",
    }
}

/// Frames a reader got (in order) against what the writer wrote: all of them for `ring`
/// under `block`; for `double`, an increasing subset that ends with the last frame.
fn check_delivery(layout: Layout, numbers: &[u64], what: &str) {
    match layout {
        Layout::Ring => assert_eq!(
            numbers,
            (0..FRAMES).collect::<Vec<_>>(),
            "{what}: ring/block delivers every frame in order"
        ),
        Layout::Double => {
            assert!(!numbers.is_empty(), "{what}: no frame arrived");
            assert!(
                numbers.windows(2).all(|w| w[0] < w[1]),
                "{what}: double never repeats or reorders: {numbers:?}"
            );
            assert_eq!(
                numbers.last(),
                Some(&(FRAMES - 1)),
                "{what}: double ends with the newest frame"
            );
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Layout agreement
// ----------------------------------------------------------------------------------------------

/// The Python module's plane offsets, strides and frame sizes equal gst_video's for every
/// format it shapes, at odd and even sizes.
#[test]
fn python_frame_layouts_match_gst_video_info() {
    if !python_ready("python_frame_layouts_match_gst_video_info") {
        return;
    }
    init();
    let formats = [
        "RGB",
        "BGR",
        "RGBA",
        "BGRA",
        "ARGB",
        "ABGR",
        "RGBx",
        "BGRx",
        "xRGB",
        "xBGR",
        "GRAY8",
        "GRAY16_LE",
        "GRAY16_BE",
        "RGB16",
        "BGR16",
        "I420",
        "YV12",
        "NV12",
        "NV21",
        "Y42B",
        "Y444",
    ];
    let sizes = [
        (64, 48),
        (62, 46),
        (61, 45),
        (1, 1),
        (3, 7),
        (1920, 1080),
        (17, 2),
    ];
    let specs: Vec<String> = formats
        .iter()
        .flat_map(|f| sizes.iter().map(move |(w, h)| format!("{f}:{w}x{h}")))
        .collect();
    let mut args = vec!["layout"];
    args.extend(specs.iter().map(String::as_str));
    let lines = Peer::spawn(&args).finish(LIMIT);
    assert_eq!(lines.len(), specs.len(), "{lines:#?}");
    for line in &lines {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (fmt, w, h): (&str, u32, u32) = (
            parts[1],
            parts[2].parse().unwrap(),
            parts[3].parse().unwrap(),
        );
        let info = VideoInfo::builder(VideoFormat::from_string(fmt), w, h)
            .build()
            .unwrap();
        assert_eq!(
            parts[4].parse::<usize>().unwrap(),
            info.size(),
            "size: {line}"
        );
        let gst_planes = planes(&info);
        let fi = info.format_info();
        for spec in &parts[5..] {
            let v: Vec<&str> = spec.split(':').collect();
            let comp: usize = match v[0] {
                "packed" | "Y" => 0,
                "U" | "UV" => 1,
                "V" | "VU" => 2,
                other => panic!("unknown component {other} in {line}"),
            };
            let plane = fi.plane()[comp] as usize;
            let g = &gst_planes[plane];
            let ours: Vec<usize> = v[1..].iter().map(|x| x.parse().unwrap()).collect();
            assert_eq!(
                ours,
                vec![g.offset, g.stride, g.rows, g.row_bytes],
                "{line}: component {} (plane {plane})",
                v[0]
            );
        }
        assert_eq!(parts.len() - 5, info.n_planes() as usize, "planes: {line}");
    }
}

// ----------------------------------------------------------------------------------------------
// Rust transport <-> Python
// ----------------------------------------------------------------------------------------------

/// `zero_copy`: the Python reader returns views of pinned slots instead of copies.
fn rust_writer_to_python_reader(format: VideoFormat, layout: Layout, zero_copy: bool) {
    let info = video_info(format);
    let name = ShmName::new(&format!(
        "py-rx-{}-{}",
        format.to_str(),
        layout_name(layout)
    ));
    let mut cfg = WriterConfig::new(&name, info.size() as u64);
    cfg.layout = layout;
    cfg.depth = 4;
    cfg.backpressure = Backpressure::Block;
    let mut writer = Writer::create(&cfg).unwrap();
    writer
        .set_caps(&info.to_caps().unwrap().to_string())
        .unwrap();
    let mut args = vec!["read", &name, "--start", "oldest", "--timeout", "50"];
    if zero_copy {
        args.push("--zero-copy");
    }
    let mut peer = Peer::spawn(&args);
    let attached = peer.expect("attached", LIMIT);
    assert!(
        attached.contains(&format!("layout={}", layout_name(layout))),
        "{attached}"
    );
    for n in 0..FRAMES {
        let meta = FrameMeta {
            pts: Some(transport::monotonic_ns()),
            ..Default::default()
        };
        let outcome = writer.write(&meta, &pattern_frame(&info, n)).unwrap();
        assert_eq!(outcome.frame(), Some(n));
    }
    writer.end_of_stream();
    let lines = peer.finish(LIMIT);
    drop(writer);

    let frames = frame_lines(&lines, "frame");
    for (n, raw, pix, line) in &frames {
        let expected = pattern_frame(&info, *n);
        assert_eq!(*raw, crc32(&expected), "stored bytes of frame {n}: {line}");
        assert_eq!(
            *pix,
            pixel_crc(&info, &expected),
            "visible pixels of frame {n}: {line}"
        );
        assert_eq!(fields(line)["shape"], python_shape(&info), "{line}");
    }
    let numbers: Vec<u64> = frames.iter().map(|f| f.0).collect();
    check_delivery(
        layout,
        &numbers,
        &format!("{format:?} {layout:?}: {lines:?}"),
    );
    let eos = fields(lines.last().unwrap());
    assert!(lines.last().unwrap().starts_with("eos"), "{lines:#?}");
    let read: u64 = eos["read"].parse().unwrap();
    let missed: u64 = eos["missed"].parse().unwrap();
    assert_eq!(read, numbers.len() as u64);
    assert_eq!(
        read + missed,
        FRAMES,
        "every frame is either read or counted as missed"
    );
}

fn python_writer_to_rust_reader(format: VideoFormat, layout: Layout) {
    let info = video_info(format);
    let name = ShmName::new(&format!(
        "py-tx-{}-{}",
        format.to_str(),
        layout_name(layout)
    ));
    let mut sub = Subscriber::new(
        &name,
        ReaderOptions {
            start: StartPosition::Oldest,
            ..Default::default()
        },
    )
    .unwrap();
    let peer = spawn_python_writer(&name, format, layout);
    let deadline = Instant::now() + LIMIT;
    let mut got: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut buf = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "no EOS within {LIMIT:?}");
        let event = sub
            .next(Duration::from_millis(200), |fi, view| {
                buf.resize(fi.size as usize, 0);
                view.copy_to(&mut buf);
            })
            .unwrap();
        match event {
            SubscriberEvent::Frame(fi) => {
                let reader = sub.reader().unwrap();
                let caps = reader
                    .caps(fi.caps_gen)
                    .unwrap()
                    .expect("caps of the frame");
                let caps = gst::Caps::from_str(&caps).unwrap();
                assert_eq!(VideoInfo::from_caps(&caps).unwrap(), info, "caps {caps}");
                assert_eq!(fi.size as usize, info.size());
                check_pattern(&info, fi.number, &buf).unwrap();
                assert!(
                    fi.pts.is_some(),
                    "the Python writer stamps CLOCK_MONOTONIC pts"
                );
                got.push((fi.number, buf.clone()));
            }
            SubscriberEvent::Eos => break,
            SubscriberEvent::WriterLost { clean, .. } => {
                panic!("writer lost (clean: {clean}) before EOS")
            }
            SubscriberEvent::WriterAttached { .. } | SubscriberEvent::Timeout => {}
        }
    }
    let lines = peer.finish(LIMIT);
    let written = frame_lines(&lines, "written");
    assert_eq!(
        written.iter().map(|w| w.0).collect::<Vec<_>>(),
        (0..FRAMES).collect::<Vec<_>>(),
        "the Python writer publishes frames 0.. in order: {lines:#?}"
    );
    for (n, data) in &got {
        let (_, raw, pix, _) = &written[*n as usize];
        assert_eq!(crc32(data), *raw, "frame {n} bytes");
        assert_eq!(pixel_crc(&info, data), *pix, "frame {n} pixels");
    }
    let numbers: Vec<u64> = got.iter().map(|g| g.0).collect();
    check_delivery(layout, &numbers, &format!("{format:?} {layout:?}"));
    let (read, missed) = sub.totals();
    assert_eq!(read + missed, FRAMES);
}

#[test]
fn rust_transport_writer_to_python_reader() {
    if !python_ready("rust_transport_writer_to_python_reader") {
        return;
    }
    init();
    for format in FORMATS {
        for layout in [Layout::Ring, Layout::Double] {
            rust_writer_to_python_reader(format, layout, false);
        }
    }
}

/// A Python reader started before its writer, with `start=newest`, reads that writer from its
/// first frame: frames written before it attached (fewer than the ring holds) are not skipped.
#[test]
fn a_python_reader_that_waited_for_its_writer_reads_from_the_first_frame() {
    if !python_ready("a_python_reader_that_waited_for_its_writer_reads_from_the_first_frame") {
        return;
    }
    init();
    let info = video_info(VideoFormat::Gray8);
    let name = ShmName::new("py-waited");
    let mut peer = Peer::spawn(&[
        "read",
        &name,
        "--start",
        "newest",
        "--wait",
        "50",
        "--timeout",
        "50",
    ]);
    peer.expect("opening", LIMIT);
    // Once it found no segment, the reader sleeps between looks for it (its only sleep after
    // "opening"). Stopped then, it attaches only after the writer has written its first frames
    // (else it could attach before the first frame, which proves nothing about where it
    // starts).
    let pid = peer.guard.pid();
    let sleeping = || {
        std::fs::read_to_string(format!("/proc/{pid}/syscall")).is_ok_and(|call| {
            let number: i64 = call.split(' ').next().unwrap_or("").parse().unwrap_or(-1);
            #[cfg(target_arch = "x86_64")]
            let nanosleep = number == libc::SYS_nanosleep;
            #[cfg(not(target_arch = "x86_64"))]
            let nanosleep = false;
            number == libc::SYS_clock_nanosleep || nanosleep
        })
    };
    assert!(
        wait_for(LIMIT, sleeping),
        "the reader waits for the segment"
    );
    peer.guard.signal(libc::SIGSTOP);
    let mut cfg = WriterConfig::new(&name, info.size() as u64);
    cfg.depth = 4;
    cfg.backpressure = Backpressure::Block;
    let mut writer = Writer::create(&cfg).unwrap();
    writer
        .set_caps(&info.to_caps().unwrap().to_string())
        .unwrap();
    let write = |writer: &mut Writer, n: u64| {
        let outcome = writer
            .write(&FrameMeta::default(), &pattern_frame(&info, n))
            .unwrap();
        assert_eq!(outcome.frame(), Some(n));
    };
    for n in 0..3 {
        write(&mut writer, n);
    }
    peer.guard.signal(libc::SIGCONT);
    assert!(writer.wait_for_readers(1, Some(LIMIT)).unwrap());
    for n in 3..FRAMES {
        write(&mut writer, n);
    }
    writer.end_of_stream();
    peer.expect("attached", LIMIT);
    let lines = peer.finish(LIMIT);
    drop(writer);
    let numbers: Vec<u64> = frame_lines(&lines, "frame").iter().map(|f| f.0).collect();
    assert_eq!(numbers, (0..FRAMES).collect::<Vec<_>>(), "{lines:#?}");
}

/// The same with zero-copy reads: the Python reader pins each slot while it looks at it, so
/// a `block` writer without spare slots waits for the pin to go (and is woken when it does).
#[test]
fn rust_transport_writer_to_python_zero_copy_reader() {
    if !python_ready("rust_transport_writer_to_python_zero_copy_reader") {
        return;
    }
    init();
    for format in FORMATS {
        rust_writer_to_python_reader(format, Layout::Ring, true);
    }
}

/// A Python reader copying large frames while a `drop-oldest` writer laps it: copies the writer
/// overwrote meanwhile are discarded by the seqlock check and counted as missed, never returned.
/// Consecutive frames sharing a slot have different content, so a torn frame fails its CRC.
#[test]
fn python_reader_never_returns_a_torn_frame() {
    if !python_ready("python_reader_never_returns_a_torn_frame") {
        return;
    }
    init();
    const WRITES: u64 = 400;
    let info = VideoInfo::builder(VideoFormat::Rgb, 640, 480)
        .build()
        .unwrap();
    let variants: Vec<Vec<u8>> = (0..8).map(|k| pattern_frame(&info, k)).collect();
    let name = ShmName::new("py-torn");
    let mut cfg = WriterConfig::new(&name, info.size() as u64);
    cfg.layout = Layout::Ring;
    cfg.depth = 2;
    cfg.backpressure = Backpressure::DropOldest;
    let mut writer = Writer::create(&cfg).unwrap();
    writer
        .set_caps(&info.to_caps().unwrap().to_string())
        .unwrap();
    let mut peer = Peer::spawn(&["read", &name, "--start", "oldest", "--timeout", "50"]);
    peer.expect("attached", LIMIT);
    for n in 0..WRITES {
        let outcome = writer
            .write(&FrameMeta::default(), &variants[(n % 8) as usize])
            .unwrap();
        assert_eq!(outcome.frame(), Some(n));
        // Pace the writer near the reader's speed so that copies and overwrites overlap.
        std::thread::sleep(Duration::from_micros(500));
    }
    writer.end_of_stream();
    let lines = peer.finish(LIMIT);
    let frames = frame_lines(&lines, "frame");
    let mut previous = None;
    for (n, raw, _, line) in &frames {
        assert_eq!(
            *raw,
            crc32(&variants[(*n % 8) as usize]),
            "torn or misplaced: {line}"
        );
        assert!(previous < Some(*n), "frames in order");
        previous = Some(*n);
    }
    let eos = fields(lines.last().unwrap());
    let (read, missed): (u64, u64) = (eos["read"].parse().unwrap(), eos["missed"].parse().unwrap());
    assert_eq!(read, frames.len() as u64);
    assert_eq!(
        read + missed,
        WRITES,
        "every frame is read or counted as missed"
    );
    println!("python reader: {read} read, {missed} missed of {WRITES}");
}

#[test]
fn python_writer_to_rust_transport_reader() {
    if !python_ready("python_writer_to_rust_transport_reader") {
        return;
    }
    init();
    for format in FORMATS {
        for layout in [Layout::Ring, Layout::Double] {
            python_writer_to_rust_reader(format, layout);
        }
    }
}

/// A Python reader that stops reading holds a `block` writer up; killed with SIGKILL, it must
/// not: its lock dies with it, the writer frees its entry and the blocked write completes.
/// The reader timeout is 60 s, so eviction cannot be what unblocks the writer.
#[test]
fn python_reader_killed_under_block_does_not_stall_the_writer() {
    if !python_ready("python_reader_killed_under_block_does_not_stall_the_writer") {
        return;
    }
    init();
    let info = video_info(VideoFormat::Rgb);
    let name = ShmName::new("py-killed");
    let mut cfg = WriterConfig::new(&name, info.size() as u64);
    cfg.layout = Layout::Ring;
    cfg.depth = 2;
    cfg.backpressure = Backpressure::Block;
    cfg.reader_timeout = Duration::from_secs(60);
    let mut writer = Writer::create(&cfg).unwrap();
    writer
        .set_caps(&info.to_caps().unwrap().to_string())
        .unwrap();
    let mut peer = Peer::spawn(&["read", &name, "--stall", "--timeout", "50"]);
    peer.expect("attached", LIMIT);
    writer.poll_readers();
    let python_pid = peer.guard.pid();
    assert!(
        writer
            .take_reader_events()
            .contains(&ReaderEvent::Attached {
                pid: python_pid,
                index: 0
            }),
        "the writer sees the Python reader"
    );
    let frame = pattern_frame(&info, 0);
    for n in 0..2 {
        assert_eq!(
            writer.write(&FrameMeta::default(), &frame).unwrap(),
            WriteOutcome::Written { frame: n }
        );
    }
    assert!(writer.is_full(), "the stalled Python reader fills the ring");

    // The next write blocks on the reader; kill the reader while it does.
    let (tx, rx) = mpsc::channel();
    let writer = Arc::new(Mutex::new(writer));
    let blocked = {
        let writer = writer.clone();
        std::thread::spawn(move || {
            let mut w = writer.lock().unwrap();
            let started = Instant::now();
            let outcome = w.write(&FrameMeta::default(), &frame);
            let _ = tx.send((outcome.map_err(|e| e.to_string()), started.elapsed()));
        })
    };
    let observer = transport::Observer::open(&name).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || observer.info().full_events >= 1),
        "the third write finds the ring full"
    );
    peer.guard.signal(libc::SIGKILL);
    assert!(
        peer.guard.wait_timeout(LIMIT).is_some(),
        "python reader reaped"
    );
    let (outcome, waited) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the blocked write completes once the killed reader's lock is gone");
    blocked.join().unwrap();
    println!("blocked write completed {waited:?} after it started");
    assert!(
        matches!(outcome, Ok(WriteOutcome::WrittenAfterWait { frame: 2, .. })),
        "{outcome:?}"
    );
    let mut writer = Arc::into_inner(writer).unwrap().into_inner().unwrap();
    assert!(
        writer
            .take_reader_events()
            .contains(&ReaderEvent::Detached {
                pid: python_pid,
                index: 0,
                died: true
            }),
        "the writer reports the reader's death"
    );
    assert_eq!(writer.reader_count(), 0);
    assert_eq!(
        writer.info().readers_evicted,
        0,
        "freed as dead, not evicted"
    );
    // And the writer keeps going without waiting.
    for n in 3..6 {
        assert_eq!(
            writer
                .write(&FrameMeta::default(), &pattern_frame(&info, n))
                .unwrap(),
            WriteOutcome::Written { frame: n }
        );
    }
}

/// A Python reader that read a frame without copying (so it stays pinned) and was then stopped
/// with SIGSTOP holds a `block` writer without spare slots no longer than the reader timeout:
/// the writer evicts it and stops honouring its pin. The other reader receives every frame,
/// content checked, and no write waits much beyond the timeout. Before the fix the third frame
/// waited for ever (3 frames in 6 s, `readers-evicted` 0).
#[test]
fn a_stopped_python_zero_copy_reader_holds_a_block_writer_no_longer_than_the_reader_timeout() {
    if !python_ready("a_stopped_python_zero_copy_reader_holds_a_block_writer") {
        return;
    }
    init();
    const TIMEOUT: Duration = Duration::from_millis(300);
    let info = video_info(VideoFormat::Rgb);
    let name = ShmName::new("py-stopped-pin");
    let mut cfg = WriterConfig::new(&name, info.size() as u64);
    cfg.layout = Layout::Ring;
    cfg.depth = 2;
    cfg.spare_slots = 0;
    cfg.backpressure = Backpressure::Block;
    cfg.reader_timeout = TIMEOUT;
    let mut writer = Writer::create(&cfg).unwrap();
    writer
        .set_caps(&info.to_caps().unwrap().to_string())
        .unwrap();
    let mut other = transport::Reader::open(
        &name,
        &ReaderOptions {
            start: StartPosition::Oldest,
            ..Default::default()
        },
    )
    .unwrap();
    let (mut received, mut buf) = (Vec::new(), vec![0; info.size()]);
    let mut read_along = |other: &mut transport::Reader| {
        while let transport::ReadResult::Frame(frame) = other
            .read_next(Duration::ZERO, |_, view| view.copy_to(&mut buf))
            .unwrap()
        {
            check_pattern(&info, frame.number, &buf).unwrap();
            received.push(frame.number);
        }
    };
    let mut peer = Peer::attached_zero_copy_holder(&name);
    writer
        .write(&FrameMeta::default(), &pattern_frame(&info, 0))
        .unwrap();
    read_along(&mut other);
    peer.expect("holding read=1", LIMIT);
    peer.guard.signal(libc::SIGSTOP);

    let mut longest = Duration::ZERO;
    for n in 1..FRAMES {
        let started = Instant::now();
        let outcome = common::write_within(&mut writer, TIMEOUT * 30, &format!("frame {n}"), |w| {
            w.write(&FrameMeta::default(), &pattern_frame(&info, n))
        });
        longest = longest.max(started.elapsed());
        assert_eq!(outcome.frame(), Some(n), "{outcome:?}");
        read_along(&mut other);
    }
    println!("the longest write took {longest:?} (reader timeout {TIMEOUT:?})");
    assert_eq!(received, (0..FRAMES).collect::<Vec<_>>());
    assert_eq!(
        writer.info().readers_evicted,
        1,
        "the stopped reader was evicted"
    );
    assert!(
        longest >= TIMEOUT && longest < TIMEOUT + Duration::from_secs(3),
        "the writer was held up {longest:?}, reader timeout {TIMEOUT:?}"
    );
}

/// The same through `shmframesink backpressure=block spare-slots=0` (the reported case: 3
/// frames in 6 s, `readers-evicted` 0): the other reader gets every frame, each within the
/// sink's `reader-timeout` and a margin, and the sink counts one eviction.
#[test]
fn a_stopped_python_zero_copy_reader_holds_shmframesink_no_longer_than_its_reader_timeout() {
    if !python_ready("a_stopped_python_zero_copy_reader_holds_shmframesink") {
        return;
    }
    init();
    const TIMEOUT: Duration = Duration::from_millis(300);
    let info = video_info(VideoFormat::Rgb);
    let name = ShmName::new("py-stopped-pin-sink");
    let (pipeline, src) = common::launch_with::<gst_app::AppSrc>(
        &format!(
            "appsrc name=src format=time block=true max-buffers=1 ! shmframesink name=sink \
             shm-name={} shape={WIDTH}x{HEIGHT}:RGB layout=ring depth=2 backpressure=block \
             spare-slots=0 reader-timeout={} sync=false",
            name.as_str(),
            TIMEOUT.as_millis()
        ),
        "src",
    );
    let pipeline = PipelineGuard(pipeline);
    src.set_caps(Some(&info.to_caps().unwrap()));
    pipeline.0.set_state(gst::State::Playing).unwrap();
    let mut other = transport::Reader::open(
        &name,
        &ReaderOptions {
            start: StartPosition::Oldest,
            ..Default::default()
        },
    )
    .unwrap();
    let mut buf = vec![0; info.size()];
    let mut push_and_receive = |n: u64, other: &mut transport::Reader| {
        let pushed = Instant::now();
        src.push_buffer(gst::Buffer::from_mut_slice(pattern_frame(&info, n)))
            .unwrap();
        let read = other
            .read_next(TIMEOUT * 30, |_, view| view.copy_to(&mut buf))
            .unwrap();
        let transport::ReadResult::Frame(frame) = read else {
            panic!(
                "frame {n} did not arrive within {:?}: {read:?}",
                TIMEOUT * 30
            )
        };
        assert_eq!(frame.number, n);
        check_pattern(&info, n, &buf).unwrap();
        pushed.elapsed()
    };
    let mut peer = Peer::attached_zero_copy_holder(&name);
    push_and_receive(0, &mut other);
    peer.expect("holding read=1", LIMIT);
    peer.guard.signal(libc::SIGSTOP);
    let longest = (1..FRAMES)
        .map(|n| push_and_receive(n, &mut other))
        .max()
        .unwrap();
    println!("the longest frame took {longest:?} (reader-timeout {TIMEOUT:?})");
    let stats = pipeline
        .0
        .by_name("sink")
        .unwrap()
        .property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("readers-evicted").unwrap(), 1, "{stats}");
    // The timeout runs from when the pin first kept a slot from the writer (frame 1 published),
    // a moment before frame 2 is pushed.
    assert!(
        longest >= TIMEOUT / 2 && longest < TIMEOUT + Duration::from_secs(3),
        "a frame was held up {longest:?}, reader-timeout {TIMEOUT:?}"
    );
    src.end_of_stream().unwrap();
    wait_for_eos(&pipeline.0, "writer pipeline", LIMIT);
}

/// The Python writer follows the same rule as the Rust one: a reader that pins every slot and
/// stops holds a `block` writer no longer than the reader timeout (1 s). Of 40 frames the
/// other reader gets every one, in order, content checked. Before, the Python writer waited for
/// the pins for ever.
#[test]
fn a_reader_pinning_every_slot_holds_a_python_block_writer_no_longer_than_the_reader_timeout() {
    if !python_ready("a_reader_pinning_every_slot_holds_a_python_block_writer") {
        return;
    }
    init();
    const PUSHED: u64 = 40;
    let name = ShmName::new("py-writer-pinned");
    let subscriber = || {
        Subscriber::new(
            &name,
            ReaderOptions {
                start: StartPosition::Oldest,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let (mut pinner, mut other) = (subscriber(), subscriber());
    let (w, h) = (WIDTH.to_string(), HEIGHT.to_string());
    let frames = PUSHED.to_string();
    let started = Instant::now();
    let peer = Peer::spawn(&[
        "write",
        &name,
        &w,
        &h,
        "RGB",
        "--depth",
        "4",
        "--backpressure",
        "block",
        "--frames",
        &frames,
        "--wait-readers",
        "2",
        "--wait",
        "20",
    ]);
    let reading = std::thread::spawn(move || {
        let (mut received, mut buf) = (Vec::new(), Vec::new());
        loop {
            assert!(started.elapsed() < LIMIT, "no EOS within {LIMIT:?}");
            let event = other
                .next(Duration::from_millis(200), |fi, view| {
                    buf.resize(fi.size as usize, 0);
                    view.copy_to(&mut buf);
                })
                .unwrap();
            match event {
                SubscriberEvent::Frame(fi) => {
                    check_pattern(&video_info(VideoFormat::Rgb), fi.number, &buf).unwrap();
                    received.push(fi.number);
                }
                SubscriberEvent::Eos => return received,
                SubscriberEvent::WriterLost { clean, .. } => panic!("writer lost ({clean})"),
                _ => {}
            }
        }
    });
    // Pin the first four frames (every slot: no spare slots) and keep them.
    let mut pins = Vec::new();
    while pins.len() < 4 {
        assert!(started.elapsed() < LIMIT, "pinned {} frames", pins.len());
        let mut out = None;
        if let SubscriberEvent::Frame(_) = pinner
            .next_pinned(Duration::from_millis(200), &mut out)
            .unwrap()
        {
            pins.extend(out);
        }
    }
    let lines = peer.finish(Duration::from_secs(30));
    let took = started.elapsed();
    let received = reading.join().unwrap();
    println!("{PUSHED} frames in {took:?}");
    assert_eq!(
        frame_lines(&lines, "written").len() as u64,
        PUSHED,
        "{lines:#?}"
    );
    assert_eq!(received, (0..PUSHED).collect::<Vec<_>>());
    assert_eq!(pinner.reader().map(|r| r.evictions()), Some(1));
    assert!(
        pins.iter().any(|p| !p.intact()),
        "the writer reused pinned slots"
    );
}

// ----------------------------------------------------------------------------------------------
// GStreamer elements <-> Python
// ----------------------------------------------------------------------------------------------

/// Sets a pipeline to NULL when dropped (also on a failed assertion).
struct PipelineGuard(gst::Pipeline);

impl Drop for PipelineGuard {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

fn gst_writer_to_python_reader(format: VideoFormat, layout: Layout) {
    let info = video_info(format);
    let name = ShmName::new(&format!(
        "gst-py-{}-{}",
        format.to_str(),
        layout_name(layout)
    ));
    let fmt = format.to_str();
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers={FRAMES} pattern=snow ! \
         video/x-raw,format={fmt},width={WIDTH},height={HEIGHT},framerate=30/1 ! \
         shmframesink name=sink shm-name={} layout={} depth=4 backpressure=block \
         shape={WIDTH}x{HEIGHT}:{fmt}",
        name.as_str(),
        layout_name(layout)
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let pipeline = PipelineGuard(pipeline);
    // Record what enters the sink; before the second frame (the segment exists by then, and
    // `start=oldest` still finds the first) wait for the Python reader to attach.
    let written: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let sink = pipeline.0.by_name("sink").unwrap();
    {
        let written = written.clone();
        let name = name.to_string();
        sink.static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, probe| {
                if let Some(buffer) = probe.buffer() {
                    let map = buffer.map_readable().unwrap();
                    let mut w = written.lock().unwrap();
                    if w.len() == 1 {
                        let attached = wait_for(LIMIT, || {
                            transport::inspect(&name).is_ok_and(|i| !i.readers.is_empty())
                        });
                        assert!(attached, "the Python reader did not attach");
                    }
                    w.push(map.to_vec());
                }
                gst::PadProbeReturn::Ok
            });
    }
    pipeline.0.set_state(gst::State::Playing).unwrap();
    let peer = Peer::spawn(&[
        "read",
        &name,
        "--start",
        "oldest",
        "--wait",
        "50",
        "--timeout",
        "50",
    ]);
    wait_for_eos(&pipeline.0, "writer pipeline", LIMIT);
    let lines = peer.finish(LIMIT);
    drop(pipeline);

    let written = written.lock().unwrap();
    assert_eq!(written.len() as u64, FRAMES);
    let frames = frame_lines(&lines, "frame");
    for (n, raw, pix, line) in &frames {
        let sent = &written[*n as usize];
        assert_eq!(
            sent.len(),
            info.size(),
            "videotestsrc frames are default-layout"
        );
        assert_eq!(*raw, crc32(sent), "stored bytes of frame {n}: {line}");
        assert_eq!(
            *pix,
            pixel_crc(&info, sent),
            "visible pixels of frame {n}: {line}"
        );
        assert_eq!(fields(line)["shape"], python_shape(&info), "{line}");
    }
    let numbers: Vec<u64> = frames.iter().map(|f| f.0).collect();
    check_delivery(
        layout,
        &numbers,
        &format!("shmframesink {format:?} {layout:?}"),
    );
    assert!(lines.last().unwrap().starts_with("eos"), "{lines:#?}");
}

fn python_writer_to_gst_reader(format: VideoFormat, layout: Layout) {
    let info = video_info(format);
    let name = ShmName::new(&format!(
        "py-gst-{}-{}",
        format.to_str(),
        layout_name(layout)
    ));
    let pipeline = gst::parse::launch(&format!(
        "shmframesrc shm-name={} start=oldest ! appsink name=out sync=false",
        name.as_str()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let pipeline = PipelineGuard(pipeline);
    let out = pipeline
        .0
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.0.set_state(gst::State::Playing).unwrap();
    let peer = spawn_python_writer(&name, format, layout);
    let deadline = Instant::now() + LIMIT;
    let mut got: Vec<(u64, Vec<u8>)> = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "no EOS within {LIMIT:?}");
        let Some(sample) = out.try_pull_sample(gst::ClockTime::from_mseconds(200)) else {
            if out.is_eos() {
                break;
            }
            continue;
        };
        let caps_info = VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        assert_eq!(
            caps_info, info,
            "shmframesrc negotiates the Python writer's caps"
        );
        let buffer = sample.buffer().unwrap();
        let n = buffer.offset();
        let map = buffer.map_readable().unwrap();
        check_pattern(&info, n, &map).unwrap();
        got.push((n, map.to_vec()));
    }
    let lines = peer.finish(LIMIT);
    drop(pipeline);
    let written = frame_lines(&lines, "written");
    assert_eq!(written.len() as u64, FRAMES, "{lines:#?}");
    for (n, data) in &got {
        let (wn, raw, pix, _) = &written[*n as usize];
        assert_eq!(wn, n);
        assert_eq!(crc32(data), *raw, "frame {n} bytes");
        assert_eq!(pixel_crc(&info, data), *pix, "frame {n} pixels");
    }
    let numbers: Vec<u64> = got.iter().map(|g| g.0).collect();
    check_delivery(
        layout,
        &numbers,
        &format!("shmframesrc {format:?} {layout:?}"),
    );
}

#[test]
fn gstreamer_writer_to_python_reader() {
    if !python_ready("gstreamer_writer_to_python_reader") {
        return;
    }
    init();
    for format in FORMATS {
        for layout in [Layout::Ring, Layout::Double] {
            gst_writer_to_python_reader(format, layout);
        }
    }
}

#[test]
fn python_writer_to_gstreamer_reader() {
    if !python_ready("python_writer_to_gstreamer_reader") {
        return;
    }
    init();
    for format in FORMATS {
        for layout in [Layout::Ring, Layout::Double] {
            python_writer_to_gst_reader(format, layout);
        }
    }
}

/// The Python writer allocates its segment up front too, and refuses one that cannot fit
/// with the Rust writer's words.
/// Three `shmframesrc` readers (default `start`) started before a Python writer that waits for
/// them (`wait_for_readers=3`, `block`, unpaced): each gets every frame, in order, byte for byte.
#[test]
fn three_gstreamer_readers_started_first_get_every_frame_of_the_python_writer() {
    let test = "three_gstreamer_readers_started_first_get_every_frame_of_the_python_writer";
    if !python_ready(test) {
        return;
    }
    init();
    let frames = readers_first_frames();
    let info = video_info(VideoFormat::Rgb);
    let name = ShmName::new("py-readers-first");
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let pipeline = gst::parse::launch(&format!(
                "shmframesrc shm-name={} ! appsink name=out sync=false",
                name.as_str()
            ))
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
            let out = pipeline
                .by_name("out")
                .unwrap()
                .downcast::<gst_app::AppSink>()
                .unwrap();
            pipeline.set_state(gst::State::Playing).unwrap();
            let pipeline = PipelineGuard(pipeline);
            let info = info.clone();
            // (frame number, CRC-32 of the frame) of everything this reader got.
            std::thread::spawn(move || {
                let deadline = Instant::now() + LIMIT;
                let mut got: Vec<(u64, u32)> = Vec::new();
                loop {
                    assert!(Instant::now() < deadline, "no EOS within {LIMIT:?}");
                    let Some(sample) = out.try_pull_sample(gst::ClockTime::from_mseconds(200))
                    else {
                        if out.is_eos() {
                            break;
                        }
                        continue;
                    };
                    let buffer = sample.buffer().unwrap();
                    let map = buffer.map_readable().unwrap();
                    check_pattern(&info, buffer.offset(), &map).unwrap();
                    got.push((buffer.offset(), crc32(&map)));
                }
                drop(pipeline);
                got
            })
        })
        .collect();
    let (w, h) = (WIDTH.to_string(), HEIGHT.to_string());
    let frames_arg = frames.to_string();
    let peer = Peer::spawn(&[
        "write",
        &name,
        &w,
        &h,
        "RGB",
        "--depth",
        "4",
        "--backpressure",
        "block",
        "--frames",
        &frames_arg,
        "--wait-readers",
        "3",
        "--wait",
        "50",
    ]);
    let lines = peer.finish(LIMIT);
    let written: Vec<(u64, u32)> = frame_lines(&lines, "written")
        .into_iter()
        .map(|(n, raw, _, _)| (n, raw))
        .collect();
    assert_eq!(written.len() as u64, frames, "{:?}", lines.last());
    for reader in readers {
        let got = reader.join().unwrap();
        assert_eq!(got.len(), written.len(), "every frame arrived");
        assert!(got == written, "every frame in order, byte for byte");
    }
}

#[test]
fn python_writer_refuses_a_segment_larger_than_the_shm_file_system() {
    if !python_ready("python_writer_refuses_a_segment_larger_than_the_shm_file_system") {
        return;
    }
    let name = ShmName::new("py-no-space");
    let script = format!(
        "import shmframe\n\
         try:\n    shmframe.Writer({name:?}, 8192, 8192, 'RGBA', depth=1024)\n\
         except shmframe.NoSpace as e:\n    print(e.needed, e.available); print(e)\n",
        name = name.as_str(),
    );
    let out = Command::new(python())
        .args(["-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let numbers: Vec<u64> = lines
        .next()
        .unwrap_or_else(|| panic!("no NoSpace: {}", String::from_utf8_lossy(&out.stderr)))
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    let expected = gstshmframe::transport::Error::NoSpace {
        dir: gstshmframe::transport::shm_dir().display().to_string(),
        needed: numbers[0],
        available: numbers[1],
    };
    assert!(numbers[0] > 1024 * (256 << 20));
    assert_eq!(lines.next(), Some(expected.to_string().as_str()));
    assert!(!name.path().exists());
}

/// The Python module refuses what the Rust transport refuses, with the same words: missing
/// segments, foreign files, cut segments, another layout version, a head counter beyond its
/// range, a sparse segment, a FIFO, a directory, a socket and symbolic links at the name
/// (readers and writers), bad names, a name a live writer holds.
#[test]
fn python_errors_say_what_the_rust_errors_say() {
    if !python_ready("python_errors_say_what_the_rust_errors_say") {
        return;
    }
    use gstshmframe::transport::{LAYOUT_VERSION, Reader, ReaderOptions, StartPosition, Writer};
    let rust_reader_error = |name: &str| {
        Reader::open(
            name,
            &ReaderOptions {
                start: StartPosition::Oldest,
                ..Default::default()
            },
        )
        .err()
        .expect("refused")
        .to_string()
    };
    // A complete segment image to cut and patch.
    let source = ShmName::new("py-err-source");
    let image = {
        let mut w = Writer::create(&WriterConfig::new(&source, 5000)).unwrap();
        w.set_caps("video/x-raw, format=(string)GRAY8, width=(int)100, height=(int)50")
            .unwrap();
        std::fs::read(source.path()).unwrap()
    };
    let mut files: Vec<(ShmName, Vec<u8>)> = Vec::new();
    for cut in [0usize, 100, 8191, 8192, image.len() - 1] {
        files.push((ShmName::new("py-err-cut"), image[..cut].to_vec()));
    }
    let mut other_version = image.clone();
    other_version[8..12].copy_from_slice(&(LAYOUT_VERSION + 1).to_ne_bytes());
    files.push((ShmName::new("py-err-version"), other_version));
    files.push((ShmName::new("py-err-foreign"), vec![0x5a; 20_000]));
    // A head counter beyond its range (2^48; the header's head is at byte 152).
    let mut head_beyond = image.clone();
    head_beyond[152..160].copy_from_slice(&(1u64 << 48).to_ne_bytes());
    files.push((ShmName::new("py-err-head"), head_beyond));
    for (name, bytes) in &files {
        std::fs::write(name.path(), bytes).unwrap();
    }
    // A valid header in a file with holes.
    let sparse = ShmName::new("py-err-sparse");
    let file = std::fs::File::create(sparse.path()).unwrap();
    std::io::Write::write_all(&mut &file, &image[..8192]).unwrap();
    file.set_len(image.len() as u64).unwrap();
    drop(file);
    // Things that are not regular files: a FIFO would hang an open that blocks.
    let fifo = ShmName::new("py-err-fifo");
    let fifo_path = std::ffi::CString::new(fifo.path().as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo_path.as_ptr(), 0o600) }, 0);
    let directory = ShmName::new("py-err-dir");
    std::fs::create_dir(directory.path()).unwrap();
    let dangling = ShmName::new("py-err-dangling");
    std::os::unix::fs::symlink("/nonexistent/shmframe-target", dangling.path()).unwrap();
    let to_null = ShmName::new("py-err-to-null");
    std::os::unix::fs::symlink("/dev/null", to_null.path()).unwrap();
    let socket = ShmName::new("py-err-socket");
    let _listener = std::os::unix::net::UnixListener::bind(socket.path()).unwrap();
    let not_files = [&fifo, &directory, &dangling, &to_null, &socket];
    let missing = ShmName::new("py-err-missing");
    let too_long = "n".repeat(201);
    let mut reader_names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    reader_names.push(sparse.as_str());
    reader_names.extend(not_files.iter().map(|n| n.as_str()));
    reader_names.extend([
        missing.as_str(),
        "",
        "a/b",
        ".hidden",
        "caf\u{e9}",
        "cam 0",
        "a\tb",
        &too_long,
    ]);

    let held = ShmName::new("py-err-held");
    let _writer = Writer::create(&WriterConfig::new(&held, 5000)).unwrap();
    // Readers on every name before "--writers", writers on every name after it.
    let script = "import sys, shmframe\n\
         split = sys.argv.index('--writers')\n\
         for name in sys.argv[1:split]:\n    \
             try:\n        shmframe.Reader(name, start='oldest')\n        print('opened')\n    \
             except shmframe.ShmFrameError as e:\n        print(e)\n\
         for name in sys.argv[split + 1:]:\n    \
             try:\n        shmframe.Writer(name, 10, 10, 'GRAY8')\n        print('created')\n    \
             except shmframe.ShmFrameError as e:\n        print(e)\n";
    let mut writer_names = vec![held.as_str()];
    writer_names.extend(not_files.iter().map(|n| n.as_str()));
    let child = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(&reader_names)
        .arg("--writers")
        .args(&writer_names)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = ChildGuard {
        child,
        label: "python error texts".into(),
    }
    .wait_ok(LIMIT);
    let python: Vec<&str> = stdout.lines().collect();
    let mut rust: Vec<String> = reader_names.iter().map(|n| rust_reader_error(n)).collect();
    rust.extend(writer_names.iter().map(|n| {
        Writer::create(&WriterConfig::new(n, 5000))
            .err()
            .expect("refused")
            .to_string()
    }));
    assert_eq!(python.len(), rust.len(), "{stdout}");
    let differing: Vec<String> = rust
        .iter()
        .zip(&python)
        .filter(|(r, p)| r != p)
        .map(|(r, p)| format!("rust:   {r}\npython: {p}"))
        .collect();
    assert!(differing.is_empty(), "\n{}", differing.join("\n\n"));
}

/// `python -c SCRIPT ARGS` with `sys`, `time` and `shmframe` imported and `env` added, bounded
/// by LIMIT when waited for.
fn python_script(script: &str, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> ChildGuard {
    let child = Command::new(python())
        .arg("-c")
        .arg(format!("import sys, time, shmframe\n{script}"))
        .args(args)
        .envs(env.iter().copied())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python");
    ChildGuard {
        child,
        label: format!("python {args:?}"),
    }
}

/// A Python Writer of 2048x2048 GRAY8 frames, depth 4, on the name argv[1].
const PY_BIG_WRITER: &str = "shmframe.Writer(sys.argv[1], 2048, 2048, 'GRAY8', depth=4)";

/// Python writers killed (SIGKILL and SIGTERM in turn) while they build their segment leave
/// temporary files; the next Python writer removes those of dead builders, so after the kills
/// and one clean start and stop nothing of the name is left. 20 kills in CI;
/// `SHMFRAME_CREATE_KILLS=200` for the full run.
#[test]
fn python_writers_killed_while_creating_leave_nothing_behind() {
    if !python_ready("python_writers_killed_while_creating_leave_nothing_behind") {
        return;
    }
    let kills: u64 = std::env::var("SHMFRAME_CREATE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let name = ShmName::new("py-create-kills");
    let creator = format!("while True:\n    {PY_BIG_WRITER}.close()\n");
    let mut seed = 0x2545_F491_4F6C_DD1Du64 ^ std::process::id() as u64;
    let mut left_by_kills = 0;
    for round in 0..kills {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Files the previous round's kill left behind are not this writer's: wait for a change.
        let before = name.files();
        let mut python = python_script(&creator, &[&name], &[]);
        assert!(
            wait_for(LIMIT, || {
                let now = name.files();
                !now.is_empty() && now != before
            }),
            "round {round}: the Python writer did not start"
        );
        std::thread::sleep(Duration::from_micros(seed % 30_000));
        python.signal(if round % 2 == 0 {
            libc::SIGKILL
        } else {
            libc::SIGTERM
        });
        assert!(
            python.wait_timeout(LIMIT).is_some(),
            "round {round}: the Python writer did not die"
        );
        left_by_kills += name.files().iter().filter(|f| f.starts_with('.')).count();
    }
    eprintln!("{kills} kills during creation; temporary files found after them: {left_by_kills}");
    assert!(
        left_by_kills > 0,
        "no kill landed while a segment was being built: the test did not test anything"
    );
    python_script(&format!("{PY_BIG_WRITER}.close()\n"), &[&name], &[]).wait_ok(LIMIT);
    assert_eq!(name.files(), Vec::<String>::new());
}

/// Two Python writers of different names start at the same moment on a shm file system with
/// room for one of them: exactly one succeeds, and the other's message (the Rust text) gives
/// the room it found after its allocation failed, less than it needs. 5 rounds in CI;
/// `SHMFRAME_RACE_ROUNDS` for more.
#[test]
fn python_writers_racing_for_room_for_one_leave_exactly_one_running() {
    if !python_ready("python_writers_racing_for_room_for_one_leave_exactly_one_running") {
        return;
    }
    let rounds: u64 = std::env::var("SHMFRAME_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let probe = ShmName::new("py-race-probe");
    let needed: u64 = python_script(
        &format!("w = {PY_BIG_WRITER}\nprint(w.geometry.segment_size)\nw.close()\n"),
        &[&probe],
        &[],
    )
    .wait_ok(LIMIT)
    .trim()
    .parse()
    .unwrap();
    let tmpfs = match common::SmallTmpfs::mount("py-race", needed * 3 / 2) {
        Ok(t) => t,
        Err(why) => {
            // SAFETY: geteuid has no preconditions.
            assert_ne!(unsafe { libc::geteuid() }, 0, "root could not mount: {why}");
            eprintln!("NOTICE: python_writers_racing_for_room_for_one skipped: {why}");
            return;
        }
    };
    let env = [("SHMFRAME_DIR", tmpfs.0.as_os_str())];
    let dir = tmpfs.0.display().to_string();
    // Both sleep until 5 ms before the start, then spin to it; the winner keeps its segment
    // until the loser has failed (it says so with the file argv[3], outside the small file system).
    let racer = format!(
        "import os\n\
         start, done = int(sys.argv[2]), sys.argv[3]\n\
         time.sleep(max(0.0, (start - time.monotonic_ns()) / 1e9 - 0.005))\n\
         while time.monotonic_ns() < start:\n    pass\n\
         try:\n    w = {PY_BIG_WRITER}\n    print('CREATED', flush=True)\n    \
         deadline = time.monotonic() + 60\n    \
         while not os.path.exists(done) and time.monotonic() < deadline:\n        \
         time.sleep(0.005)\n    \
         w.close()\n\
         except shmframe.ShmFrameError as e:\n    print('ERROR', e, flush=True)\n    \
         open(done, 'w').close()\n"
    );
    for round in 0..rounds {
        // Time enough for both interpreters to start, on a loaded machine too.
        let start = (transport::monotonic_ns() + 800_000_000).to_string();
        // A file in the shm directory (not the small one), removed when `done_file` drops.
        let done_file = ShmName::new("py-race-done");
        let done = done_file.path().display().to_string();
        let mut racers: Vec<ChildGuard> = ["a", "b"]
            .iter()
            .map(|n| python_script(&racer, &[&format!("race-{round}-{n}"), &start, &done], &env))
            .collect();
        let mut outcomes: Vec<String> = racers
            .iter_mut()
            .map(|r| r.wait_ok(LIMIT).trim().to_string())
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
        let expected = transport::Error::NoSpace {
            dir: dir.clone(),
            needed,
            available,
        };
        assert_eq!(*error, format!("ERROR {expected}"), "round {round}");
        assert!(available < needed, "round {round}: {error}");
        assert_eq!(tmpfs.entries(), Vec::<String>::new(), "round {round}");
    }
}

/// README's install line, `pip install ./python`, builds the package from source into a fresh
/// virtual environment of the system interpreter, and the installed package works there: a
/// Writer's frames come back from a Reader byte for byte. pip fetches maturin from PyPI for the
/// build; numpy comes from the system's site packages (scripts/setup.sh installs it). The
/// build's cargo target directory is kept under the target directory, so a second run is quick,
/// and it builds with cargo's `dev` profile (`MATURIN_PEP517_ARGS`), not the `release` one a
/// user's install builds with: what is under test is the packaging (the build backend, the
/// module's place in the package, its dependencies), and an optimised build of the same code
/// costs a fresh clone's test run 16 s more CPU.
#[test]
fn pip_installs_the_package_into_a_fresh_environment() {
    let test = "pip_installs_the_package_into_a_fresh_environment";
    let base = "/usr/bin/python3";
    let base_ready = Command::new(base)
        .args(["-c", "import venv, ensurepip, numpy"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !common::prerequisite(
        test,
        (!base_ready).then(|| format!("{base} with venv, ensurepip and numpy (scripts/setup.sh)")),
    ) {
        return;
    }
    // This test binary is <target dir>/<profile>/deps/<test>.
    let target_dir = std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .to_path_buf();
    struct RemovedOnDrop(std::path::PathBuf);
    impl Drop for RemovedOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    // One path for every run: maturin hands the environment's interpreter to PyO3's build
    // script, which runs again (and PyO3 compiles again) whenever that path changes. The lock
    // keeps concurrent runs of this test out of each other's environment.
    let lock = std::fs::File::create(target_dir.join("pip-test.lock")).unwrap();
    lock.lock().unwrap();
    let venv = RemovedOnDrop(target_dir.join("pip-test"));
    let _ = std::fs::remove_dir_all(&venv.0);
    let run = |label: &str, cmd: &mut Command, limit: Duration| -> String {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{label} does not start: {e}"));
        common::ChildGuard {
            child,
            label: label.to_string(),
        }
        .wait_ok(limit)
    };
    run(
        "python3 -m venv",
        Command::new(base)
            .args(["-m", "venv", "--system-site-packages"])
            .arg(&venv.0),
        LIMIT,
    );
    let python = venv.0.join("bin/python");
    run(
        "pip install ./python",
        Command::new(&python)
            .args(["-m", "pip", "install", "-q", "./python"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", target_dir.join("pip-build"))
            .env("MATURIN_PEP517_ARGS", "--profile dev"),
        Duration::from_secs(900),
    );
    let name = ShmName::new("pip-install");
    let out = run(
        "the installed package",
        Command::new(&python)
            .args([
                "-c",
                "import sys, numpy as np, shmframe\n\
                 with shmframe.Writer(sys.argv[1], 64, 48, 'GRAY8', pace=False) as w:\n\
                 \x20   r = shmframe.Reader(sys.argv[1], start='oldest')\n\
                 \x20   for n in range(3):\n\
                 \x20       w.write(np.full((48, 64), 40 * n + 1, dtype=np.uint8))\n\
                 \x20   for n in range(3):\n\
                 \x20       number, frame, _ = r.read(timeout=5)\n\
                 \x20       assert number == n and frame.shape == (48, 64), (number, frame.shape)\n\
                 \x20       assert (frame == 40 * n + 1).all(), number\n\
                 \x20   r.close()\n\
                 print(shmframe.__file__)\n",
                &name,
            ])
            .current_dir("/"),
        LIMIT,
    );
    assert!(
        out.trim().starts_with(&venv.0.display().to_string()),
        "the package was imported from {out:?}, not from the new environment {}",
        venv.0.display()
    );
}
