//! Readers trust nothing in shared memory: a process scribbling random bytes over the header,
//! caps table, ring index and slot descriptors while readers run must not crash them.

mod common;

use common::{ShmName, fill_frame};
use gstshmframe::transport::*;
use std::time::{Duration, Instant};

/// xorshift64*: deterministic noise without another dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn readers_survive_a_writer_scribbling_over_shared_memory() {
    let name = ShmName::new("hostile");
    let mut c = WriterConfig::new(&name, 8192);
    c.depth = 4;
    let mut w = Writer::create(&c).unwrap();
    w.set_caps("video/x-raw, width=(int)8").unwrap();
    for n in 0..8 {
        w.write_with(&FrameMeta::default(), 8192, |s| fill_frame(n, s))
            .unwrap();
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.path())
        .unwrap();
    let len = file.metadata().unwrap().len() as usize;
    // SAFETY: a second, deliberately hostile read-write mapping of the segment; nothing in
    // this test reads through it.
    let mut scribble = unsafe { memmap2::MmapOptions::new().len(len).map_mut(&file).unwrap() };
    let geo = w.geometry().clone();
    // Everything a reader reads from the writer: header + caps table, ring index, descriptors.
    let targets = [
        (0usize, 8192usize),
        (geo.index_offset as usize, geo.depth as usize * 8),
        (geo.desc_offset as usize, geo.slot_count as usize * 128),
    ];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = [StartPosition::Oldest, StartPosition::Newest]
        .into_iter()
        .map(|start| {
            // Attached before the scribbling starts (a corrupt header refuses new readers).
            let mut r = Reader::open(
                &name,
                &ReaderOptions {
                    start,
                    ..Default::default()
                },
            )
            .unwrap();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut outcomes = [0u64; 4];
                let mut buf = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let res = r.read_next(Duration::from_millis(2), |info, view| {
                        buf.resize(info.size as usize, 0);
                        view.copy_to(&mut buf);
                    });
                    let kind = match res {
                        Ok(ReadResult::Frame(info)) => {
                            assert!(info.size <= 8192, "size was checked");
                            let _ = r.caps(info.caps_gen);
                            0
                        }
                        Ok(_) => 1,
                        Err(Error::Corrupt { .. }) => 2,
                        Err(e) => panic!("unexpected error {e}"),
                    };
                    outcomes[kind] += 1;
                    let _ = r.info();
                    let _ = r.read_frame(r.cursor().saturating_sub(1), |_, _| {});
                    let _ = r.pin(r.cursor().saturating_sub(1));
                }
                outcomes
            })
        })
        .collect();
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    let started = Instant::now();
    let mut scribbles = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        let (start, span) = targets[(noise.next() % 3) as usize];
        let off = start + (noise.next() as usize % span) / 8 * 8;
        let value = match noise.next() % 4 {
            0 => noise.next(),
            1 => noise.next() % 64,
            2 => u64::MAX,
            _ => 0,
        };
        scribble[off..off + 8].copy_from_slice(&value.to_ne_bytes());
        scribbles += 1;
        if scribbles.is_multiple_of(64) {
            std::thread::yield_now();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = [0u64; 4];
    for r in readers {
        let o = r
            .join()
            .expect("a reader panicked on hostile shared memory");
        for i in 0..4 {
            total[i] += o[i];
        }
    }
    assert!(scribbles > 10_000, "{scribbles}");
    assert!(
        total.iter().sum::<u64>() > 100,
        "readers kept running: {total:?}"
    );
    // Observers and inspection survive it too.
    let _ = inspect(&name);
    drop(scribble);
}
