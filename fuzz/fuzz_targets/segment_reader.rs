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
#![no_main]

use shmframe_transport::{
    Backpressure, FrameInfo, FrameMeta, Layout, Observer, ReadResult, Reader, ReaderOptions,
    SlotView, StartPosition, Writer, WriterConfig,
};
use libfuzzer_sys::fuzz_target;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::OnceLock;
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
    let Ok(mut reader) = Reader::open(NAME, &ReaderOptions { start, ..Default::default() }) else {
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
        exercise_reader(plan.oldest, || apply(&plan.patches));
    } else {
        apply(&plan.patches);
        if let Some(len) = plan.truncate_to {
            file.set_len(len.min(plan.bytes.len()) as u64).unwrap();
        }
        exercise_reader(plan.oldest, || {});
    }
    debug_assert!(fixture.path.exists());
    exercise_observer();
});
