//! The pure-Python module (examples/python/shmframe.py) against the Rust transport and the
//! GStreamer elements, in both directions, through the test peer
//! examples/python/interop_peer.py. The peer prints a CRC-32 of every frame as stored (`raw`)
//! and of its visible pixels (`pix`, plane by plane, rows without padding); this side computes
//! both from gst_video's `VideoInfo` strides and offsets, so a disagreement about the frame
//! layout fails as surely as a wrong byte. Writers on either side fill frames with a pattern of
//! (frame, plane, row, byte) that the other side checks byte by byte.
//!
//! Needs /usr/bin/python3 with numpy (scripts/setup.sh installs python3-numpy); without them
//! every test fails under scripts/test.sh, or is skipped with a notice (see
//! `common::prerequisite`).

mod common;

use common::{ChildGuard, ShmName, init, prerequisite, wait_for, wait_for_eos};
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

const PYTHON: &str = "/usr/bin/python3";
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

/// Whether Debian's Python with numpy is there (see `common::prerequisite`).
fn python_ready(test: &str) -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let out = Command::new(PYTHON)
            .args(["-c", "import numpy"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{PYTHON} cannot run: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{PYTHON} has no numpy ({}); run scripts/setup.sh",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    });
    prerequisite(test, ready.clone().err())
}

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
    fn spawn(args: &[&str]) -> Peer {
        let mut child = Command::new(PYTHON)
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
            pts: Some(transport::sys::monotonic_ns()),
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
#[test]
fn python_writer_refuses_a_segment_larger_than_the_shm_file_system() {
    if !python_ready("python_writer_refuses_a_segment_larger_than_the_shm_file_system") {
        return;
    }
    let name = ShmName::new("py-no-space");
    let script = format!(
        "import sys; sys.path.insert(0, {dir:?}); import shmframe\n\
         try:\n    shmframe.Writer({name:?}, 8192, 8192, 'RGBA', depth=1024)\n\
         except shmframe.NoSpace as e:\n    print(e.needed, e.available); print(e)\n",
        dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python"),
        name = name.as_str(),
    );
    let out = Command::new(PYTHON)
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
/// segments, foreign files, cut segments, another layout version, bad names, a name a live
/// writer holds.
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
    for (name, bytes) in &files {
        std::fs::write(name.path(), bytes).unwrap();
    }
    let missing = ShmName::new("py-err-missing");
    let too_long = "n".repeat(201);
    let mut reader_names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
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
    let script = format!(
        "import sys; sys.path.insert(0, {dir:?}); import shmframe\n\
         for name in sys.argv[2:]:\n    \
             try:\n        shmframe.Reader(name, start='oldest')\n        print('opened')\n    \
             except shmframe.ShmFrameError as e:\n        print(e)\n\
         try:\n    shmframe.Writer(sys.argv[1], 10, 10, 'GRAY8')\n    print('created')\n\
         except shmframe.ShmFrameError as e:\n    print(e)\n",
        dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python"),
    );
    let out = Command::new(PYTHON)
        .arg("-c")
        .arg(&script)
        .arg(held.as_str())
        .args(&reader_names)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let python: Vec<&str> = stdout.lines().collect();
    let mut rust: Vec<String> = reader_names.iter().map(|n| rust_reader_error(n)).collect();
    rust.push(
        Writer::create(&WriterConfig::new(&held, 5000))
            .err()
            .expect("refused")
            .to_string(),
    );
    assert_eq!(
        python.len(),
        rust.len(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let differing: Vec<String> = rust
        .iter()
        .zip(&python)
        .filter(|(r, p)| r != p)
        .map(|(r, p)| format!("rust:   {r}\npython: {p}"))
        .collect();
    assert!(differing.is_empty(), "\n{}", differing.join("\n\n"));
}
