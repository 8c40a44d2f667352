//! shmframesink and shmframesrc across real processes. Each child is the child binary running
//! a role of this file's `child_entry`; it registers the plugin statically, so the children
//! always run the code under test. One test drives `gst-launch-1.0` with the built cdylib.

mod common;

use common::{
    ChildGuard, ShmName, built_plugin, check_frame, fill_frame, gst_launch, init, launch_with, num,
    readers_first_frames, role, role_args, spawn_role, summary, wait_for,
    wait_until_waiting_for_segment,
};
use gst::prelude::*;
use gstshmframe::transport::Observer;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// Entry point of child processes: the child binary (tests/child/main.rs) runs it in the role
/// `spawn_role` names.
#[allow(dead_code)] // called by the child binary, not by this file's tests
pub fn child_entry() {
    let Some((role, args)) = role() else { return };
    init();
    let args = role_args(&args);
    let code = match role.as_str() {
        "writer" => run_writer(&args),
        "reader" => run_reader(&args),
        other => panic!("unknown role {other}"),
    };
    std::process::exit(code);
}

fn caps_for(width: u32, height: u32) -> gst::Caps {
    gst_video::VideoCapsBuilder::new()
        .format(gst_video::VideoFormat::Rgba)
        .width(width as i32)
        .height(height as i32)
        .framerate(gst::Fraction::new(30, 1))
        .build()
}

/// writer name= frames= size=WxH props="…sink properties…" readers=N [change_at=K size2=WxH]
/// [pace_ms=M]. Pushes RGBA frames whose bytes encode their index (see `fill_frame`), as fast
/// as the sink takes them (`sync=false`) unless paced.
fn run_writer(a: &HashMap<String, String>) -> i32 {
    let name = &a["name"];
    let frames: u64 = a["frames"].parse().unwrap();
    let parse_size = |s: &str| {
        let (w, h) = s.split_once('x').unwrap();
        (w.parse::<u32>().unwrap(), h.parse::<u32>().unwrap())
    };
    let (w, h) = parse_size(&a["size"]);
    let readers: u32 = a.get("readers").map_or(0, |v| v.parse().unwrap());
    let change_at: Option<u64> = a.get("change_at").map(|v| v.parse().unwrap());
    let size2 = a.get("size2").map(|s| parse_size(s));
    let pace = Duration::from_millis(a.get("pace_ms").map_or(0, |v| v.parse().unwrap()));
    let props = a.get("props").cloned().unwrap_or_default();
    let (pipeline, src) = launch_with::<gst_app::AppSrc>(
        &format!(
            "appsrc name=src format=time block=true max-buffers=2 ! \
         shmframesink name=sink shm-name={name} sync=false {props}"
        ),
        "src",
    );
    let sink = pipeline.by_name("sink").unwrap();
    src.set_caps(Some(&caps_for(w, h)));
    pipeline.set_state(gst::State::Playing).unwrap();
    // pool=1: the application draws frames in buffers of the pool the sink proposes, as
    // an element upstream would.
    let pool = a.contains_key("pool").then(|| {
        let caps = caps_for(w, h);
        let mut query = gst::query::Allocation::new(Some(&caps), true);
        assert!(src.static_pad("src").unwrap().peer_query(&mut query));
        let (pool, _, _, _) = query.allocation_pools().next().expect("a proposed pool");
        let pool = pool.unwrap();
        pool.set_active(true).unwrap();
        pool
    });
    let frame_duration = gst::ClockTime::from_mseconds(33);
    let mut dims = (w, h);
    for i in 0..frames {
        if Some(i) == change_at {
            let (w2, h2) = size2.unwrap();
            dims = (w2, h2);
            src.set_caps(Some(&caps_for(w2, h2)));
        }
        let mut buf = match &pool {
            Some(pool) => pool.acquire_buffer(None).unwrap(),
            None => gst::Buffer::with_size((dims.0 * dims.1 * 4) as usize).unwrap(),
        };
        {
            let b = buf.get_mut().unwrap();
            b.set_pts(frame_duration * i);
            b.set_duration(frame_duration);
            fill_frame(i, &mut b.map_writable().unwrap());
        }
        src.push_buffer(buf).unwrap();
        if i == 0 && readers > 0 {
            // The segment exists now: let the readers attach before the rest is written.
            let ok = wait_for(Duration::from_secs(20), || {
                let stats = sink.property::<gst::Structure>("stats");
                stats.get::<u32>("readers").unwrap() >= readers
            });
            assert!(ok, "readers did not attach");
        }
        if !pace.is_zero() {
            std::thread::sleep(pace);
        }
    }
    src.end_of_stream().unwrap();
    common::wait_for_eos(&pipeline, "writer pipeline", Duration::from_secs(30));
    let stats = sink.property::<gst::Structure>("stats");
    println!(
        "SUMMARY written={} dropped={} in_place={}",
        stats.get::<u64>("frames-written").unwrap(),
        stats.get::<u64>("frames-dropped").unwrap(),
        stats.get::<u64>("frames-in-place").unwrap()
    );
    pipeline.set_state(gst::State::Null).unwrap();
    0
}

/// reader name= props="…src properties…" [sleep_ms=M]. Checks every frame's bytes against
/// its index, order, and prints caps seen, stats and the writer messages it got.
fn run_reader(a: &HashMap<String, String>) -> i32 {
    let name = &a["name"];
    let props = a.get("props").cloned().unwrap_or_default();
    let sleep = Duration::from_millis(a.get("sleep_ms").map_or(0, |v| v.parse().unwrap()));
    let (pipeline, out) = launch_with::<gst_app::AppSink>(
        &format!(
            "shmframesrc name=src shm-name={name} {props} ! \
         appsink name=out sync=false max-buffers=1 drop=false"
        ),
        "out",
    );
    let src = pipeline.by_name("src").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let started = Instant::now();
    let mut indices: Vec<u64> = Vec::new();
    let mut sizes: Vec<String> = Vec::new();
    let mut torn = 0;
    loop {
        assert!(started.elapsed() < CHILD_LIMIT, "reader ran too long");
        let Some(sample) = out.try_pull_sample(gst::ClockTime::from_mseconds(200)) else {
            if out.is_eos() {
                break;
            }
            continue;
        };
        let caps = sample.caps().unwrap();
        let s = caps.structure(0).unwrap();
        let dims = format!(
            "{}x{}",
            s.get::<i32>("width").unwrap(),
            s.get::<i32>("height").unwrap()
        );
        if sizes.last() != Some(&dims) {
            sizes.push(dims);
        }
        let buffer = sample.buffer().unwrap();
        let map = buffer.map_readable().unwrap();
        let index = u64::from_le_bytes(map[..8].try_into().unwrap()) / 0x1_0000_0001;
        if check_frame(index, &map).is_err() {
            torn += 1;
        }
        indices.push(index);
        if !sleep.is_zero() {
            std::thread::sleep(sleep);
        }
    }
    let ordered = indices.windows(2).all(|p| p[0] < p[1]);
    let stats = src.property::<gst::Structure>("stats");
    let bus = pipeline.bus().unwrap();
    let mut attached = 0;
    let mut lost = 0;
    let mut restart_warnings = 0;
    while let Some(msg) = bus.pop() {
        if let gst::MessageView::Warning(w) = msg.view()
            && w.error().to_string().contains("writer restarted")
        {
            restart_warnings += 1;
        }
        if let gst::MessageView::Element(e) = msg.view() {
            match e.structure().map(|s| s.name().as_str()) {
                Some("shmframe-writer-attached") => attached += 1,
                Some("shmframe-writer-lost") => lost += 1,
                _ => {}
            }
        }
        if let gst::MessageView::Error(e) = msg.view() {
            panic!("reader error: {} ({:?})", e.error(), e.debug());
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    println!(
        "SUMMARY frames={} first={} last={} ordered={ordered} torn={torn} sizes={} \
         read={} missed={} attached={attached} lost={lost} restarts={} \
         restart_warnings={restart_warnings}",
        indices.len(),
        indices.first().copied().unwrap_or(u64::MAX),
        indices.last().copied().unwrap_or(u64::MAX),
        sizes.join(","),
        stats.get::<u64>("frames-read").unwrap(),
        stats.get::<u64>("frames-missed").unwrap(),
        stats.get::<u32>("writer-restarts").unwrap(),
    );
    0
}

fn reader(name: &str, props: &str, extra: &[&str]) -> ChildGuard {
    let mut args = vec![format!("name={name}"), format!("props={props}")];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_role("reader", &args)
}

fn writer(name: &str, frames: u64, props: &str, extra: &[&str]) -> ChildGuard {
    let mut args = vec![
        format!("name={name}"),
        format!("frames={frames}"),
        format!("props={props}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_role("writer", &args)
}

#[test]
fn a_reader_started_first_gets_every_frame_without_a_capsfilter() {
    let name = ShmName::new("el-reader-first");
    let mut r = reader(&name, "start=oldest", &[]);
    assert!(
        wait_until_waiting_for_segment(&r, CHILD_LIMIT),
        "the reader waits for the writer"
    );
    let mut w = writer(
        &name,
        120,
        "backpressure=block",
        &["size=64x48", "readers=1"],
    );
    let ws = summary(&w.wait_ok(CHILD_LIMIT));
    assert_eq!(num(&ws, "written"), 120);
    let rs = summary(&r.wait_ok(CHILD_LIMIT));
    assert_eq!(num(&rs, "frames"), 120, "{rs:?}");
    assert_eq!((num(&rs, "first"), num(&rs, "last")), (0, 119));
    assert_eq!(rs["ordered"], "true");
    assert_eq!(num(&rs, "torn"), 0);
    assert_eq!(rs["sizes"], "64x48", "caps came from the writer");
    assert_eq!((num(&rs, "read"), num(&rs, "missed")), (120, 0));
    assert!(!name.path().exists(), "the writer removed its segment");
}

/// A writer of 300 frames under `block` to three readers with `reader_props` (one of them
/// slowed), each of which must get every frame intact and in order. Returns the writer's
/// summary.
fn three_readers_under_block(
    test: &str,
    reader_props: &str,
    writer_extra: &[&str],
) -> HashMap<String, String> {
    let name = ShmName::new(test);
    let mut readers: Vec<ChildGuard> = (0..3)
        .map(|i| {
            let sleep = if i == 2 { "sleep_ms=2" } else { "sleep_ms=0" };
            reader(&name, reader_props, &[sleep])
        })
        .collect();
    let mut extra = vec!["readers=3"];
    extra.extend_from_slice(writer_extra);
    let mut w = writer(&name, 300, "backpressure=block depth=4", &extra);
    let ws = summary(&w.wait_ok(CHILD_LIMIT));
    assert_eq!((num(&ws, "written"), num(&ws, "dropped")), (300, 0));
    for r in &mut readers {
        let rs = summary(&r.wait_ok(CHILD_LIMIT));
        assert_eq!(num(&rs, "frames"), 300, "{rs:?}");
        assert_eq!(rs["ordered"], "true");
        assert_eq!(num(&rs, "torn"), 0);
        assert_eq!(num(&rs, "missed"), 0);
    }
    assert!(!name.path().exists());
    ws
}

#[test]
fn three_readers_under_block_each_receive_every_frame_in_order() {
    three_readers_under_block("el-block-3", "start=oldest", &["size=32x32"]);
}

#[test]
fn zero_copy_at_both_ends_delivers_every_frame_intact_to_three_readers() {
    // The slowed reader keeps its buffers a little: pins and lent slots meet. Unpaced, the
    // readers set the pace: under block, upstream's acquire waits for a free slot as a write
    // waits for room, instead of falling back to memory that must be copied.
    let ws = three_readers_under_block(
        "el-zero-copy-3",
        "start=oldest copy-mode=zero-copy",
        &["size=64x48", "pool=1"],
    );
    assert!(
        num(&ws, "in_place") >= 290,
        "nearly every frame was drawn in a slot: {ws:?}"
    );
}

/// The fewest slots a ring can have, one frame and one spare, with upstream drawing in the
/// sink's pool and a zero-copy reader: the sink keeps the newest frame as its last sample, the
/// reader pins the frames it holds, and neither may stop upstream from drawing in a slot.
/// Under `block` every frame is drawn in place and read (the reader forced to zero-copy: block
/// never rewrites a pinned slot before `reader-timeout`); the dropping policies may lose frames
/// to the reader's pins, but each frame read is intact and in order and every loss is counted
/// (the reader in `auto`: where the writer overwrites unread frames, a forced zero-copy reader
/// holding more frames than its budget, as this one's appsink queue makes it, is evicted and
/// its buffers downstream may change, as documented).
#[test]
fn the_smallest_ring_draws_in_place_with_a_zero_copy_reader() {
    for (policy, copy_mode, pace) in [
        ("block", "zero-copy", "pace_ms=0"),
        ("drop-oldest", "auto", "pace_ms=1"),
        ("drop-newest", "auto", "pace_ms=1"),
    ] {
        let name = ShmName::new(&format!("el-smallest-{policy}"));
        let mut r = reader(&name, &format!("start=oldest copy-mode={copy_mode}"), &[]);
        let mut w = writer(
            &name,
            300,
            &format!("backpressure={policy} depth=1 spare-slots=1"),
            // Unpaced under block (the reader sets the pace); otherwise one frame a
            // millisecond, or drop-newest drops every frame the reader is not yet awake for.
            &["size=64x48", "pool=1", "readers=1", pace],
        );
        let ws = summary(&w.wait_ok(CHILD_LIMIT));
        let rs = summary(&r.wait_ok(CHILD_LIMIT));
        let (written, dropped) = (num(&ws, "written"), num(&ws, "dropped"));
        assert_eq!(written + dropped, 300, "{policy}: {ws:?}");
        assert_eq!(rs["ordered"], "true", "{policy}");
        assert_eq!(num(&rs, "torn"), 0, "{policy}");
        assert_eq!(
            num(&rs, "read") + num(&rs, "missed"),
            written,
            "{policy}: {rs:?}"
        );
        if policy == "block" {
            // All, but perhaps the first: the application may acquire it before the segment
            // exists (the sink makes it with the first caps).
            assert_eq!(written, 300, "{ws:?}");
            assert!(num(&ws, "in_place") >= 299, "{ws:?}");
            assert_eq!(num(&rs, "frames"), 300, "{rs:?}");
        } else {
            // Frames are copied only while the reader pins the one slot the sink does not
            // hold (99% were drawn in place in ten runs here). When the sink's own last sample
            // counted as a spare slot, every other frame was copied: exactly half.
            assert!(num(&ws, "in_place") >= written * 3 / 4, "{policy}: {ws:?}");
        }
        assert!(!name.path().exists());
    }
}

fn slow_reader_case(test: &str, sink_props: &str) {
    let name = ShmName::new(test);
    let mut slow = reader(&name, "start=oldest", &["sleep_ms=10"]);
    let mut w = writer(&name, 200, sink_props, &["size=32x32", "readers=1"]);
    let ws = summary(&w.wait_ok(CHILD_LIMIT));
    let written = num(&ws, "written");
    assert_eq!(written, 200, "the writer is never held up: {ws:?}");
    assert_eq!(num(&ws, "dropped"), 0);
    let rs = summary(&slow.wait_ok(CHILD_LIMIT));
    assert_eq!(rs["ordered"], "true", "{rs:?}");
    assert_eq!(num(&rs, "torn"), 0);
    assert!(
        num(&rs, "frames") < written,
        "a 10 ms reader cannot keep up: {rs:?}"
    );
    assert_eq!(num(&rs, "read"), num(&rs, "frames"));
    assert_eq!(num(&rs, "read") + num(&rs, "missed"), written, "{rs:?}");
    assert_eq!(
        num(&rs, "last"),
        written - 1,
        "the newest frame always arrives"
    );
}

#[test]
fn drop_oldest_with_a_slow_reader_keeps_an_ordered_counted_subset() {
    slow_reader_case("el-drop-oldest", "backpressure=drop-oldest depth=4");
}

#[test]
fn double_with_a_slow_reader_keeps_an_ordered_counted_subset() {
    slow_reader_case("el-double", "layout=double");
}

fn caps_change_case(test: &str, from: &str, to: &str) {
    let name = ShmName::new(test);
    let mut r = reader(&name, "start=oldest", &[]);
    let mut w = writer(
        &name,
        60,
        "backpressure=block",
        &[
            &format!("size={from}"),
            "readers=1",
            "change_at=30",
            &format!("size2={to}"),
        ],
    );
    let ws = summary(&w.wait_ok(CHILD_LIMIT));
    assert_eq!(num(&ws, "written"), 60, "{ws:?}");
    let rs = summary(&r.wait_ok(CHILD_LIMIT));
    assert_eq!(rs["sizes"], format!("{from},{to}"), "{rs:?}");
    assert_eq!(num(&rs, "torn"), 0);
    assert_eq!(rs["ordered"], "true");
    assert_eq!((num(&rs, "first"), num(&rs, "last")), (0, 59));
    assert_eq!(num(&rs, "frames"), 60, "nothing lost under block: {rs:?}");
    // The same writer changed its frames: a renegotiation, never reported as a restart.
    assert_eq!(num(&rs, "restarts"), 0, "{rs:?}");
    assert_eq!(num(&rs, "restart_warnings"), 0, "{rs:?}");
}

#[test]
fn a_caps_change_to_smaller_frames_renegotiates_readers_in_place() {
    caps_change_case("el-caps-shrink", "96x64", "32x32");
}

#[test]
fn a_caps_change_to_larger_frames_recreates_the_segment_and_readers_follow() {
    caps_change_case("el-caps-grow", "32x32", "96x64");
}

#[test]
fn a_killed_writer_is_followed_to_its_successor() {
    let name = ShmName::new("el-writer-kill");
    let mut r = reader(&name, "start=oldest", &[]);
    // A writer that would run for a long time, paced, killed halfway.
    let mut first = writer(
        &name,
        100_000,
        "backpressure=block",
        &["size=32x32", "readers=1", "pace_ms=5"],
    );
    // Killed once the reader reads its frames: under block, 20 frames published to the one
    // attached reader means it got most of them.
    assert!(wait_for(CHILD_LIMIT, || name.path().exists()));
    let first_segment = Observer::open(&name).expect("the first writer's segment");
    assert!(
        wait_for(CHILD_LIMIT, || first_segment.reader_count() == 1
            && first_segment.info().head >= 20),
        "the reader did not read from the first writer: {:?}",
        first_segment.info()
    );
    first.signal(libc::SIGKILL);
    let _ = first.wait_timeout(Duration::from_secs(5));
    // Started at once: however late the reader notices the loss, the successor waits for it
    // (readers=1) after its first frame.
    let mut second = writer(
        &name,
        50,
        "backpressure=block",
        &["size=32x32", "readers=1"],
    );
    let ws = summary(&second.wait_ok(CHILD_LIMIT));
    assert_eq!(num(&ws, "written"), 50);
    let rs = summary(&r.wait_ok(CHILD_LIMIT));
    assert_eq!(num(&rs, "torn"), 0, "{rs:?}");
    assert_eq!(num(&rs, "attached"), 2, "{rs:?}");
    assert_eq!(num(&rs, "lost"), 1, "{rs:?}");
    assert_eq!(
        num(&rs, "restarts"),
        1,
        "a new writer process is a restart: {rs:?}"
    );
    assert_eq!(num(&rs, "restart_warnings"), 1, "{rs:?}");
    assert_eq!(num(&rs, "last"), 49, "ended with the successor's EOS");
}

#[test]
fn gst_launch_with_the_built_plugin_moves_frames_between_processes() {
    let name = ShmName::new("el-gst-launch");
    let so = built_plugin();
    let registry = std::env::temp_dir().join(format!("{}.registry", name.as_str()));
    let launch = |args: &str| {
        let child = std::process::Command::new("gst-launch-1.0")
            .args(args.split_whitespace())
            .env("GST_PLUGIN_PATH", so.parent().unwrap())
            .env("GST_REGISTRY", &registry)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("gst-launch-1.0 (gstreamer1.0-tools) is installed");
        ChildGuard {
            child,
            label: format!("gst-launch-1.0 {args}"),
        }
    };
    let mut r = launch(&format!(
        "shmframesrc shm-name={} start=oldest ! fakesink silent=false -v",
        name.as_str()
    ));
    // The writer waits for the reader, however long its gst-launch-1.0 takes to start (a
    // fresh registry is built first), and then gives it its frames.
    let mut w = launch(&format!(
        "-q videotestsrc num-buffers=30 ! video/x-raw,width=64,height=48,format=RGBA ! \
         shmframesink shm-name={} shape=64x48:RGBA backpressure=block wait-for-readers=1",
        name.as_str()
    ));
    w.wait_ok(CHILD_LIMIT);
    let out = r.wait_ok(CHILD_LIMIT);
    let chains = out.lines().filter(|l| l.contains("chain")).count();
    assert!(chains >= 1, "the reader received frames:\n{out}");
    let _ = std::fs::remove_file(registry);
}

#[test]
fn three_readers_started_first_get_every_frame_of_an_unpaced_writer_waiting_for_them() {
    let name = ShmName::new("el-readers-first");
    let frames = readers_first_frames();
    // Default `start` (newest): a reader that waited for the writer still starts at its first
    // frame.
    let mut readers: Vec<ChildGuard> = (0..3).map(|_| reader(&name, "", &[])).collect();
    for r in &readers {
        assert!(
            wait_until_waiting_for_segment(r, CHILD_LIMIT),
            "{} waits for the writer",
            r.label
        );
    }
    // Unpaced (sync=false), with no wait of its own for the readers.
    let mut w = writer(
        &name,
        frames,
        "backpressure=block wait-for-readers=3",
        &["size=32x32"],
    );
    let ws = summary(&w.wait_ok(CHILD_LIMIT));
    assert_eq!((num(&ws, "written"), num(&ws, "dropped")), (frames, 0));
    for r in &mut readers {
        let rs = summary(&r.wait_ok(CHILD_LIMIT));
        assert_eq!(num(&rs, "frames"), frames, "{rs:?}");
        assert_eq!((num(&rs, "first"), num(&rs, "last")), (0, frames - 1));
        assert_eq!(rs["ordered"], "true");
        assert_eq!(num(&rs, "torn"), 0, "every frame's content checked");
        assert_eq!(num(&rs, "missed"), 0);
    }
}

/// Removes a file when dropped, also when the test fails.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Video frames in an mp4 file, counted by demuxing it.
fn mp4_frames(path: &std::path::Path) -> u64 {
    init();
    let (pipeline, out) = launch_with::<gst_app::AppSink>(
        &format!(
            "filesrc location={} ! qtdemux ! appsink name=out sync=false",
            path.display()
        ),
        "out",
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut count = 0;
    while out
        .try_pull_sample(gst::ClockTime::from_seconds(CHILD_LIMIT.as_secs()))
        .is_some()
    {
        count += 1;
    }
    assert!(out.is_eos(), "{} demuxed to its end", path.display());
    pipeline.set_state(gst::State::Null).unwrap();
    count
}

/// An mp4 recorder started before an unpaced writer with `wait-for-readers=1` and `extra` sink
/// properties records every one of its 300 frames (counted by demuxing the file).
fn mp4_recorder_started_first(test: &str, extra: &str) {
    let name = ShmName::new(test);
    let mp4 = TempFile(std::env::temp_dir().join(format!("{}.mp4", name.as_str())));
    let registry = TempFile(std::env::temp_dir().join(format!("{}.registry", name.as_str())));
    // The writer's own timestamps (the default): under block, frames the writer stamped
    // before this pipeline started are kept, and placed in order from the segment start.
    let mut recorder = gst_launch(
        &format!(
            "-q shmframesrc shm-name={} ! videoconvert ! openh264enc ! \
             h264parse ! mp4mux ! filesink location={}",
            name.as_str(),
            mp4.0.display()
        ),
        &registry.0,
    );
    assert!(
        wait_until_waiting_for_segment(&recorder, CHILD_LIMIT),
        "the recorder waits for the writer"
    );
    // A recorder setting up its encoder on a loaded machine may not read for more than the
    // default second; it must not be evicted for it (that is what reader-timeout is for).
    let mut w = gst_launch(
        &format!(
            "-q videotestsrc num-buffers=300 ! \
             video/x-raw,format=I420,width=320,height=240,framerate=30/1 ! \
             shmframesink shm-name={} wait-for-readers=1 backpressure=block sync=false \
             reader-timeout=60000 {extra}",
            name.as_str()
        ),
        &registry.0,
    );
    w.wait_ok(CHILD_LIMIT);
    recorder.wait_ok(CHILD_LIMIT);
    assert_eq!(mp4_frames(&mp4.0), 300, "{extra}");
}

#[test]
fn an_mp4_recorder_started_first_records_every_frame_of_an_unpaced_writer() {
    mp4_recorder_started_first("el-mp4-first", "");
}

/// With `shape`, the segment exists from the sink's start, before the first caps.
#[test]
fn an_mp4_recorder_started_first_records_every_frame_of_an_unpaced_writer_with_a_shape() {
    mp4_recorder_started_first("el-mp4-first-shape", "shape=320x240:I420");
}
