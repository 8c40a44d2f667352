//! A reader's memory does not grow with the frames it reads, and the segment is no larger than
//! its slots plus a few header pages.
//!
//! A real child process runs `shmframesrc ! fakesink` (copy and zero-copy mode) while this
//! process writes frames through the transport `Writer` under `block`, so every frame is read.
//! The child's `/proc/<pid>/status` is sampled after a warm-up and again after many more
//! frames: `RssAnon` (its private heap and stacks) may not grow by more than
//! `ANON_GROWTH_LIMIT` — a leak of a few dozen bytes per frame would exceed it — and
//! `RssShmem` (the pages of the segment it has touched) never exceeds the segment's size.
//! (The geometry rule itself, header + slots page-rounded, is unit-tested in
//! `transport::layout::tests::segment_size_is_header_plus_slots`; here it is checked on the
//! real file.)

mod common;

use common::{ShmName, init, launch_with, num, role, spawn_role, summary, wait_for, wait_for_eos};
use gst::prelude::*;
use gstshmframe::transport::{Backpressure, FrameMeta, Layout, Writer, WriterConfig};
use std::time::{Duration, Instant};

const WIDTH: u64 = 160;
const HEIGHT: u64 = 120;
const FRAME_SIZE: u64 = WIDTH * HEIGHT * 4;
const CAPS: &str = "video/x-raw, format=(string)RGBA, width=(int)160, height=(int)120, \
                    framerate=(fraction)30/1";
const WARMUP_FRAMES: u64 = 2_000;
const MEASURED_FRAMES: u64 = 30_000;
/// 1 MiB over 30,000 frames: 35 bytes per frame.
const ANON_GROWTH_LIMIT_KB: u64 = 1024;
const PAGE: u64 = 4096;
const LIMIT: Duration = Duration::from_secs(60);

/// Entry point of child processes: the child binary (tests/child/main.rs) runs it in the role
/// `spawn_role` names.
#[allow(dead_code)] // called by the child binary, not by this file's tests
pub fn child_entry() {
    let Some((role, args)) = role() else { return };
    assert_eq!(role, "reader");
    init();
    let (name, copy_mode) = (&args[0], &args[1]);
    let (pipeline, src) = launch_with::<gst::Element>(
        &format!(
            "shmframesrc name=src shm-name={name} copy-mode={copy_mode} start=oldest ! \
             fakesink sync=false"
        ),
        "src",
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    wait_for_eos(&pipeline, "reader pipeline", LIMIT);
    let stats = src.property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    println!(
        "SUMMARY read={} missed={}",
        stats.get::<u64>("frames-read").unwrap(),
        stats.get::<u64>("frames-missed").unwrap()
    );
    std::process::exit(0);
}

/// RssAnon and RssShmem of `pid`, in kB.
fn rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
    };
    (field("RssAnon:"), field("RssShmem:"))
}

fn write_frames(writer: &mut Writer, count: u64) {
    for _ in 0..count {
        let number = writer.frames_written();
        let meta = FrameMeta {
            pts: Some(number * 33_333_333),
            ..FrameMeta::default()
        };
        // Only the first bytes are written: what is measured is the reader, not the fill.
        writer
            .write_with(&meta, FRAME_SIZE, |slot| {
                slot[..8].copy_from_slice(&number.to_le_bytes())
            })
            .unwrap();
    }
}

fn reader_memory_case(test: &str, copy_mode: &str) {
    let name = ShmName::new(test);
    let mut config = WriterConfig::new(&name, FRAME_SIZE);
    config.layout = Layout::Ring;
    config.depth = 4;
    config.spare_slots = 2;
    config.backpressure = Backpressure::Block;
    let mut writer = Writer::create(&config).unwrap();
    writer.set_caps(CAPS).unwrap();

    // The file is the header pages plus depth + spare page-rounded slots, nothing else.
    let segment_len = std::fs::metadata(name.path()).unwrap().len();
    let slots_len = 6 * FRAME_SIZE.div_ceil(PAGE) * PAGE;
    assert_eq!(writer.info().total_len, segment_len);
    assert!(
        segment_len > slots_len && segment_len - slots_len <= 8 * PAGE,
        "segment of {segment_len} bytes for 6 slots of {FRAME_SIZE} bytes"
    );

    let mut child = spawn_role("reader", &[&name, copy_mode]);
    assert!(
        wait_for(LIMIT, || writer.reader_count() == 1),
        "the reader did not attach"
    );
    let started = Instant::now();
    write_frames(&mut writer, WARMUP_FRAMES);
    let (anon_warm, shmem_warm) = rss_kb(child.pid());
    write_frames(&mut writer, MEASURED_FRAMES);
    let (anon_end, shmem_end) = rss_kb(child.pid());
    writer.end_of_stream();
    let out = child.wait_ok(LIMIT);
    let s = summary(&out);
    println!(
        "copy-mode={copy_mode}: RssAnon {anon_warm} kB after {WARMUP_FRAMES} frames, {anon_end} \
         kB after {} more; RssShmem {shmem_warm} -> {shmem_end} kB (segment {} kB); {:.1} s",
        MEASURED_FRAMES,
        segment_len / 1024,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        num(&s, "read"),
        WARMUP_FRAMES + MEASURED_FRAMES,
        "{out} evicted {}",
        writer.info().readers_evicted
    );
    assert_eq!(num(&s, "missed"), 0, "{out}");
    assert!(
        anon_end <= anon_warm + ANON_GROWTH_LIMIT_KB,
        "copy-mode={copy_mode}: the reader's RssAnon grew from {anon_warm} kB to {anon_end} kB \
         over {MEASURED_FRAMES} frames"
    );
    // The reader maps the whole segment read-only and populated (every page mapped when it
    // attaches), plus its own control page (a memfd the writer handed it), writable: all of it
    // from the start, and nothing more later.
    let mapped = segment_len + 4096;
    assert!(
        shmem_warm == shmem_end && shmem_end * 1024 >= segment_len && shmem_end * 1024 <= mapped,
        "copy-mode={copy_mode}: RssShmem {shmem_warm} / {shmem_end} kB: expected the segment \
         ({segment_len} bytes) mapped once and its control page ({mapped} bytes)"
    );
}

#[test]
fn a_copying_readers_memory_does_not_grow_with_frames() {
    reader_memory_case("rss-copy", "copy");
}

#[test]
fn a_zero_copy_readers_memory_does_not_grow_with_frames() {
    reader_memory_case("rss-zero-copy", "zero-copy");
}
