//! Output timestamps of `shmframesrc` over its whole life, against a live writer in another
//! process (videotestsrc is-live into shmframesink): state cycles of a reader pipeline, and
//! mp4 / Matroska recordings joining the running writer with a pause in the middle, under
//! `GST_DEBUG=*:2`, checked by demuxing the files.

mod common;

use common::{
    ChildGuard, ShmName, init, launch_with, num, role, role_args, spawn_role, summary, wait_for,
    wait_for_eos,
};
use gst::prelude::*;
use gstshmframe::transport::Observer;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bound for each child and each wait (generous: the machine may be loaded).
const LIMIT: Duration = Duration::from_secs(60);
const WRITER_CAPS: &str = "video/x-raw,format=I420,width=160,height=120,framerate=30/1";
const FRAME: gst::ClockTime = gst::ClockTime::from_nseconds(33_333_333);

/// The roles this file's tests spawn (the child binary, tests/child/main.rs, calls this).
#[allow(dead_code)] // called by the child binary, not by this file's tests
pub fn child_entry() {
    let Some((role, args)) = role() else { return };
    init();
    let args = role_args(&args);
    let code = match role.as_str() {
        "writer" => run_writer(&args),
        "recorder" => run_recorder(&args),
        other => panic!("unknown role {other}"),
    };
    std::process::exit(code);
}

/// writer name= props= [grow_after_ms=M]: a live 30 fps videotestsrc into shmframesink with
/// `props`, for 60 s at most (the test kills it sooner); after M ms its frames grow to
/// 320x240, which the sink's slots cannot hold.
fn run_writer(a: &HashMap<String, String>) -> i32 {
    let (pipeline, caps) = launch_with::<gst::Element>(
        &format!(
            "videotestsrc is-live=true num-buffers=1800 ! capsfilter name=caps \
             caps={WRITER_CAPS} ! shmframesink shm-name={} {}",
            a["name"], a["props"]
        ),
        "caps",
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    if let Some(ms) = a.get("grow_after_ms") {
        std::thread::sleep(Duration::from_millis(ms.parse().unwrap()));
        let grown = WRITER_CAPS.replace("width=160,height=120", "width=320,height=240");
        caps.set_property("caps", gst::Caps::from_str(&grown).unwrap());
    }
    wait_for_eos(
        &pipeline,
        "writer pipeline",
        LIMIT + Duration::from_secs(30),
    );
    pipeline.set_state(gst::State::Null).unwrap();
    0
}

/// The writer child, once its segment exists and it has been writing for a moment (readers
/// join a running writer).
fn running_writer(name: &ShmName, props: &str) -> ChildGuard {
    let writer = spawn_role(
        "writer",
        &[
            &format!("name={}", name.as_str()),
            &format!("props={props}"),
        ],
    );
    assert!(
        wait_for(LIMIT, || name.path().exists()),
        "the writer did not create its segment"
    );
    std::thread::sleep(Duration::from_millis(300));
    writer
}

/// What `shmframesrc` pushed: each buffer's PTS with the state it was pushed in.
#[derive(Clone, Copy, Debug)]
struct Pushed {
    /// Incremented by the test at each READY or NULL cycle (a new segment).
    life: u32,
    /// The writer's frame number.
    offset: u64,
    size: usize,
    pts: Option<gst::ClockTime>,
    duration: Option<gst::ClockTime>,
    base_time: Option<gst::ClockTime>,
    segment_start: Option<gst::ClockTime>,
}

/// Records every buffer `src` pushes (and the segment it belongs to).
fn record_pushes(src: &gst::Element, life: Arc<AtomicU32>) -> Arc<Mutex<Vec<Pushed>>> {
    let pushed = Arc::new(Mutex::new(Vec::new()));
    let segment_start = Arc::new(Mutex::new(None));
    let (log, element) = (pushed.clone(), src.clone());
    src.static_pad("src").unwrap().add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            match &info.data {
                Some(gst::PadProbeData::Event(event)) => {
                    if let gst::EventView::Segment(s) = event.view() {
                        let segment = s.segment().downcast_ref::<gst::ClockTime>().unwrap();
                        *segment_start.lock().unwrap() = segment.start();
                    }
                }
                Some(gst::PadProbeData::Buffer(buffer)) => log.lock().unwrap().push(Pushed {
                    life: life.load(Ordering::SeqCst),
                    offset: buffer.offset(),
                    size: buffer.size(),
                    pts: buffer.pts(),
                    duration: buffer.duration(),
                    base_time: element.base_time(),
                    segment_start: *segment_start.lock().unwrap(),
                }),
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
    pushed
}

/// The contract: every buffer has a PTS at or after its segment's start; PTS strictly increase
/// within a segment (pauses included); and their clock times (PTS + base time) strictly
/// increase, also `across_segments` (READY and NULL cycles) unless a kept backlog legitimately
/// ran the timestamps ahead of the clock by more than the cycle lasted.
fn assert_strictly_increasing(pushed: &[Pushed], what: &str, across_segments: bool) {
    for (i, p) in pushed.iter().enumerate() {
        let pts = p
            .pts
            .unwrap_or_else(|| panic!("{what}: buffer {i} has no PTS: {p:?}"));
        let start = p.segment_start.expect("a segment before buffers");
        assert!(
            pts >= start,
            "{what}: buffer {i} is before its segment: {p:?}"
        );
    }
    for (i, w) in pushed.windows(2).enumerate() {
        let (a, b) = (w[0], w[1]);
        if a.life == b.life {
            assert!(
                b.pts > a.pts,
                "{what}: PTS do not increase at buffer {}: {a:?} then {b:?}\nall: {:#?}",
                i + 1,
                pushed.iter().map(|p| (p.life, p.pts)).collect::<Vec<_>>()
            );
        }
        let clock_time = |p: Pushed| p.pts.unwrap() + p.base_time.unwrap();
        assert!(
            (a.life != b.life && !across_segments) || clock_time(b) > clock_time(a),
            "{what}: clock times do not increase at buffer {}: {a:?} then {b:?}",
            i + 1
        );
    }
}

#[test]
fn timestamps_strictly_increase_through_pause_ready_and_null_cycles() {
    init();
    // A `block` writer keeps what the source must deliver after a pause: it comes in order.
    for (writer_props, props) in [
        ("", ""),
        ("", "start=oldest"),
        ("", "timestamp-mode=arrival"),
        ("backpressure=block", ""),
    ] {
        let name = ShmName::new("ts-cycles");
        let writer = running_writer(&name, writer_props);
        let observer = Observer::open(&name).expect("observe the writer's segment");
        let (pipeline, src) = launch_with::<gst::Element>(
            &format!(
                "shmframesrc name=src shm-name={} {props} ! \
                 appsink sync=false max-buffers=1 drop=true",
                name.as_str()
            ),
            "src",
        );
        let life = Arc::new(AtomicU32::new(0));
        let pushed = record_pushes(&src, life.clone());
        let count = || pushed.lock().unwrap().len();
        let play_for_ten_buffers = |what: &str| {
            let before = count();
            pipeline.set_state(gst::State::Playing).unwrap();
            assert!(
                wait_for(LIMIT, || count() >= before + 10),
                "{writer_props:?} {props:?}: no buffers after {what}"
            );
        };
        play_for_ten_buffers("the first PLAYING");
        for (via, new_life) in [
            (gst::State::Paused, false),
            (gst::State::Ready, true),
            (gst::State::Null, true),
            (gst::State::Paused, false),
        ] {
            pipeline.set_state(via).unwrap();
            // Long enough for the writer to publish frames the source must not go back to.
            std::thread::sleep(Duration::from_millis(400));
            if new_life {
                life.fetch_add(1, Ordering::SeqCst);
            }
            let (resumed_at, newest) = (count(), observer.info().head.saturating_sub(1));
            play_for_ten_buffers(&format!("{via:?} -> PLAYING"));
            if via == gst::State::Paused && writer_props.is_empty() {
                // A paused live source produced nothing: it resumes with the newest frame, not
                // with those published while it was paused (one frame taken just before the
                // pause may still be pushed after it).
                let stale: Vec<u64> = pushed.lock().unwrap()[resumed_at..]
                    .iter()
                    .map(|p| p.offset)
                    .filter(|&offset| offset < newest)
                    .collect();
                assert!(
                    stale.len() <= 1,
                    "{props:?}: frames published while paused (before {newest}) were delivered \
                     after the resume: {stale:?}"
                );
            }
        }
        // While playing: the writer is killed and another one started, which soon changes its
        // caps for frames that need a new segment (a renegotiation, not a second restart).
        let before = count();
        drop(writer);
        let _writer = spawn_role(
            "writer",
            &[
                &format!("name={}", name.as_str()),
                &format!("props={writer_props}"),
                "grow_after_ms=700",
            ],
        );
        let grown_size = 320 * 240 * 3 / 2;
        assert!(
            wait_for(LIMIT, || {
                let pushed = pushed.lock().unwrap();
                pushed.len() >= before + 20 && pushed.last().unwrap().size == grown_size
            }),
            "{writer_props:?} {props:?}: no frames of the grown new writer"
        );
        let stats = src.property::<gst::Structure>("stats");
        assert_eq!(stats.get::<u32>("writer-restarts").unwrap(), 1, "{stats}");
        pipeline.set_state(gst::State::Null).unwrap();
        // A `block` writer's frames published while paused are all delivered after the
        // resume, at their spacing: the source's timestamps then run ahead of the clock by up
        // to the pause (or the writer's reader-timeout), longer than a cycle here lasts.
        assert_strictly_increasing(
            &pushed.lock().unwrap(),
            &format!("{writer_props:?} {props:?}"),
            writer_props.is_empty(),
        );
    }
}

/// recorder name= mux=mp4mux|matroskamux file= play_ms= pause_ms=: records the writer's
/// stream, PLAYING, PAUSED, PLAYING again, then EOS, with GStreamer's warnings and errors
/// (`GST_DEBUG=*:2`) captured; prints them and a summary of what the source pushed.
fn run_recorder(a: &HashMap<String, String>) -> i32 {
    let logged = Arc::new(Mutex::new(Vec::new()));
    let log = logged.clone();
    gst::log::set_active(true);
    gst::log::set_default_threshold(gst::DebugLevel::Warning);
    gst::log::add_log_function(move |category, level, file, _, line, object, message| {
        if matches!(level, gst::DebugLevel::Error | gst::DebugLevel::Warning) {
            log.lock().unwrap().push(format!(
                "{level:?} {} {file}:{line} {}: {}",
                category.name(),
                object.map(|o| o.to_string()).unwrap_or_default(),
                message.get().map(|m| m.to_string()).unwrap_or_default()
            ));
        }
    });
    let ms = |key: &str| Duration::from_millis(a[key].parse().unwrap());
    let (pipeline, src) = launch_with::<gst::Element>(
        &format!(
            "shmframesrc name=src shm-name={} ! videoconvert ! openh264enc ! h264parse ! {} ! \
             filesink location={}",
            a["name"], a["mux"], a["file"]
        ),
        "src",
    );
    let pushed = record_pushes(&src, Arc::new(AtomicU32::new(0)));
    let count = || pushed.lock().unwrap().len();
    for (i, state) in [gst::State::Playing, gst::State::Paused, gst::State::Playing]
        .into_iter()
        .enumerate()
    {
        pipeline.set_state(state).unwrap();
        if state == gst::State::Playing {
            let before = count();
            assert!(wait_for(LIMIT, || count() > before), "no frame in run {i}");
            std::thread::sleep(ms("play_ms"));
        } else {
            std::thread::sleep(ms("pause_ms"));
        }
    }
    pipeline.send_event(gst::event::Eos::new());
    wait_for_eos(&pipeline, "recorder", LIMIT);
    pipeline.set_state(gst::State::Null).unwrap();

    let pushed = pushed.lock().unwrap();
    assert_strictly_increasing(&pushed, &a["mux"], true);
    let first = pushed.first().unwrap().pts.unwrap();
    let last = pushed.last().unwrap();
    let end = last.pts.unwrap() + last.duration.unwrap_or(FRAME);
    let logged = logged.lock().unwrap();
    for line in logged.iter() {
        println!("LOGGED {line}");
    }
    println!(
        "SUMMARY pushed={} span_ms={} logged={}",
        pushed.len(),
        (end - first).mseconds(),
        logged.len()
    );
    0
}

/// Demuxes `file` with `demuxer`: the PTS and duration of every video frame in it.
fn demuxed_frames(file: &std::path::Path, demuxer: &str) -> Vec<(gst::ClockTime, gst::ClockTime)> {
    init();
    let (pipeline, out) = launch_with::<gst_app::AppSink>(
        &format!(
            "filesrc location={} ! {demuxer} ! appsink name=out sync=false",
            file.display()
        ),
        "out",
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let started = Instant::now();
    let mut frames = Vec::new();
    while !out.is_eos() {
        assert!(
            started.elapsed() < LIMIT,
            "demuxing {} took too long",
            file.display()
        );
        if let Some(sample) = out.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
            let buffer = sample.buffer().unwrap();
            frames.push((buffer.pts().unwrap(), buffer.duration().unwrap()));
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    frames
}

/// A file removed when dropped, also when the test fails.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A recording by `mux` of a running writer, paused in the middle: no timestamp warning, and
/// the file holds every frame the source pushed, with their duration (and not the pause's).
fn recording_case(test: &str, mux: &str, demuxer: &str, extension: &str) {
    let name = ShmName::new(test);
    let _writer = running_writer(&name, "");
    let file = TempFile(std::env::temp_dir().join(format!("{}.{extension}", name.as_str())));
    let (play_ms, pause_ms) = (1500, 1500);
    let mut recorder = spawn_role(
        "recorder",
        &[
            &format!("name={}", name.as_str()),
            &format!("mux={mux}"),
            &format!("file={}", file.0.display()),
            &format!("play_ms={play_ms}"),
            &format!("pause_ms={pause_ms}"),
        ],
    );
    let out = recorder.wait_ok(LIMIT * 2);
    let frames = demuxed_frames(&file.0, demuxer);
    let s = summary(&out);
    assert_eq!(num(&s, "logged"), 0, "{mux} logged warnings:\n{out}");
    let pushed = num(&s, "pushed");
    assert_eq!(
        frames.len() as u64,
        pushed,
        "every pushed frame is in the file"
    );
    assert!(
        frames.windows(2).all(|w| w[1].0 > w[0].0),
        "{mux}: demuxed PTS increase: {frames:?}"
    );
    let start = frames.iter().map(|f| f.0).min().unwrap();
    let end = frames.iter().map(|f| f.0 + f.1).max().unwrap();
    let span = (end - start).mseconds();
    assert!(
        span.abs_diff(num(&s, "span_ms")) <= FRAME.mseconds(),
        "{mux}: the file lasts {span} ms, the pushed frames {s:?}"
    );
    assert!(
        span < 2 * play_ms + pause_ms / 2,
        "{mux}: the pause is not recorded: {span} ms"
    );
}

#[test]
fn an_mp4_recording_joining_a_running_writer_with_a_pause_has_every_frame_and_no_warning() {
    recording_case("ts-mp4", "mp4mux", "qtdemux", "mp4");
}

#[test]
fn a_matroska_recording_joining_a_running_writer_with_a_pause_has_every_frame_and_no_warning() {
    recording_case("ts-mkv", "matroskamux", "matroskademux", "mkv");
}
