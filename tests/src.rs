//! `shmframesrc` against a transport `Writer` on the other side of the segment (in this process,
//! or in a child process where a writer must die): waiting for a writer, caps without a
//! capsfilter, frame content and numbering, EOS, writer restarts, caps changes, `shape`,
//! `get-frame`, timestamps, statistics and prompt state changes.

mod common;

use common::{ShmName, check_frame, fill_frame, init, role, spawn_role, wait_for};
use gst::prelude::*;
use gst_check::Harness;
use gstshmframe::transport::{
    Backpressure, FrameMeta, Layout, WriteOutcome, Writer, WriterConfig, monotonic_ns,
};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

const RGBA_64X48: &str = "video/x-raw, format=(string)RGBA, width=(int)64, height=(int)48, \
                          framerate=(fraction)30/1";
const RGBA_64X48_SIZE: usize = 64 * 48 * 4;
const GRAY8_32X24: &str = "video/x-raw, format=(string)GRAY8, width=(int)32, height=(int)24, \
                           framerate=(fraction)15/1";
const GRAY8_32X24_SIZE: usize = 32 * 24;

/// Upper bound for anything the tests wait for (generous: CI machines are slow).
const LIMIT: Duration = Duration::from_secs(20);

fn new_writer(name: &str, depth: u32, backpressure: Backpressure) -> Writer {
    let mut config = WriterConfig::new(name, RGBA_64X48_SIZE as u64);
    config.layout = Layout::Ring;
    config.depth = depth;
    config.backpressure = backpressure;
    Writer::create(&config).expect("create the writer")
}

/// Content seed of a frame: which writer (`tag`) and which frame, so frames of a restarted
/// writer (whose numbers start again at 0) differ from the first writer's.
fn seed(tag: u64, number: u64) -> u64 {
    tag * 1_000_000 + number
}

/// Writes the writer's next frame: `size` bytes of the pattern for (`tag`, frame number),
/// PTS the writer's monotonic time, DELTA_UNIT on odd frames, whatever the outcome.
fn write_frame_outcome(writer: &mut Writer, tag: u64, size: usize) -> WriteOutcome {
    let number = writer.frames_written();
    let flags = if number % 2 == 1 {
        gst::BufferFlags::DELTA_UNIT.bits()
    } else {
        0
    };
    let meta = FrameMeta {
        pts: Some(monotonic_ns()),
        dts: None,
        duration: Some(33_333_333),
        flags,
    };
    writer
        .write_with(&meta, size as u64, |slot| {
            fill_frame(seed(tag, number), slot)
        })
        .unwrap()
}

/// Like `write_frame_outcome`, but the frame must be published; returns its number.
fn write_frame(writer: &mut Writer, tag: u64, size: usize) -> u64 {
    let number = writer.frames_written();
    let outcome = write_frame_outcome(writer, tag, size);
    assert_eq!(
        outcome.frame(),
        Some(number),
        "frame numbers are sequential"
    );
    number
}

fn wait_for_reader(writer: &Writer) {
    assert!(
        wait_for(LIMIT, || writer.reader_count() == 1),
        "shmframesrc did not attach to the writer"
    );
}

fn check_buffer(buffer: &gst::BufferRef, tag: u64, number: u64, size: usize) {
    assert_eq!(buffer.offset(), number, "offset is the frame number");
    assert_eq!(buffer.offset_end(), number + 1);
    assert_eq!(buffer.size(), size);
    let map = buffer.map_readable().unwrap();
    check_frame(seed(tag, number), &map).unwrap();
    assert_eq!(
        buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
        number % 2 == 1,
        "writer's DELTA_UNIT flag restored on frame {number}"
    );
    assert_eq!(
        buffer.duration(),
        Some(gst::ClockTime::from_nseconds(33_333_333))
    );
}

fn stats(element: &gst::Element) -> gst::Structure {
    let stats = element.property::<gst::Structure>("stats");
    assert_eq!(stats.name(), "shmframesrc-stats");
    stats
}

fn harness(name: &str, props: &[(&str, &str)]) -> Harness {
    let mut h = Harness::new("shmframesrc");
    let src = h.element().unwrap();
    src.set_property("shm-name", name);
    for (prop, value) in props {
        src.set_property_from_str(prop, value);
    }
    h.play();
    h
}

/// All events the harness received so far, in order.
fn drain_events(h: &mut Harness) -> Vec<gst::Event> {
    std::iter::from_fn(|| h.try_pull_event()).collect()
}

fn caps_events(events: &[gst::Event]) -> Vec<gst::Caps> {
    events
        .iter()
        .filter_map(|e| match e.view() {
            gst::EventView::Caps(c) => Some(c.caps_owned()),
            _ => None,
        })
        .collect()
}

/// `shmframesrc ! appsink` with the bus messages recorded, set to NULL when dropped.
struct Pipe {
    pipeline: gst::Pipeline,
    src: gst::Element,
    sink: gst::Element,
    messages: Vec<gst::Message>,
}

impl Pipe {
    fn new(name: &str, props: &str) -> Pipe {
        Pipe::with_sink(name, props, "")
    }

    fn with_sink(name: &str, props: &str, sink_props: &str) -> Pipe {
        init();
        let pipeline = gst::parse::launch(&format!(
            "shmframesrc name=src shm-name={name} {props} ! appsink name=sink sync=false \
             {sink_props}"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let src = pipeline.by_name("src").unwrap();
        let sink = pipeline.by_name("sink").unwrap();
        Pipe {
            pipeline,
            src,
            sink,
            messages: Vec::new(),
        }
    }

    fn play(&self) {
        self.pipeline.set_state(gst::State::Playing).unwrap();
    }

    fn try_pull(&self) -> Option<gst::Sample> {
        self.try_pull_within(LIMIT)
    }

    fn try_pull_within(&self, limit: Duration) -> Option<gst::Sample> {
        let timeout_ns = limit.as_nanos() as u64;
        self.sink
            .emit_by_name::<Option<gst::Sample>>("try-pull-sample", &[&timeout_ns])
    }

    fn pull(&self) -> gst::Sample {
        self.try_pull().expect("a sample within the time limit")
    }

    /// The first bus message (already seen or new, within the time limit) matching `pred`.
    fn wait_message(&mut self, what: &str, pred: impl Fn(&gst::Message) -> bool) -> gst::Message {
        if let Some(m) = self.messages.iter().find(|m| pred(m)) {
            return m.clone();
        }
        let bus = self.pipeline.bus().unwrap();
        let deadline = std::time::Instant::now() + LIMIT;
        while let Some(remaining) = deadline.checked_duration_since(std::time::Instant::now()) {
            let Some(m) = bus.timed_pop(gst::ClockTime::from_nseconds(remaining.as_nanos() as u64))
            else {
                break;
            };
            self.messages.push(m.clone());
            if pred(&m) {
                return m;
            }
        }
        panic!("no {what} message; got {:#?}", self.messages);
    }

    fn element_message(&mut self, structure_name: &str) -> gst::Structure {
        let m = self.wait_message(structure_name, |m| {
            m.structure().is_some_and(|s| s.name() == structure_name)
        });
        m.structure().unwrap().to_owned()
    }

    fn error_text(&mut self) -> String {
        let m = self.wait_message("error", |m| matches!(m.view(), gst::MessageView::Error(_)));
        let gst::MessageView::Error(e) = m.view() else {
            unreachable!()
        };
        format!("{} ({:?})", e.error(), e.debug())
    }

    /// Every bus message so far, including those that arrive within 100 ms.
    fn messages_so_far(&mut self) -> &[gst::Message] {
        let bus = self.pipeline.bus().unwrap();
        while let Some(m) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) {
            self.messages.push(m);
        }
        &self.messages
    }

    fn warning_containing(&mut self, fragment: &str) -> String {
        let m = self.wait_message(fragment, |m| match m.view() {
            gst::MessageView::Warning(w) => w.error().to_string().contains(fragment),
            _ => false,
        });
        let gst::MessageView::Warning(w) = m.view() else {
            unreachable!()
        };
        w.error().to_string()
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Entry point of child processes: the child binary (tests/child/main.rs) runs it in the role
/// `spawn_role` names.
#[allow(dead_code)] // called by the child binary, not by this file's tests
pub fn child_entry() {
    let Some((role, args)) = role() else { return };
    match role.as_str() {
        // writer NAME TAG: writes frames every 10 ms until killed (bounded to 60 s).
        "writer" => {
            let mut writer = new_writer(&args[0], 4, Backpressure::DropOldest);
            writer.set_caps(RGBA_64X48).unwrap();
            let tag: u64 = args[1].parse().unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while std::time::Instant::now() < deadline {
                write_frame(&mut writer, tag, RGBA_64X48_SIZE);
                std::thread::sleep(Duration::from_millis(10));
            }
            std::process::exit(0);
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn properties_have_documented_defaults_ranges_and_metadata() {
    init();
    let src = gst::ElementFactory::make("shmframesrc").build().unwrap();
    assert_eq!(src.property::<Option<String>>("shm-name"), None);
    assert_eq!(src.property::<Option<String>>("shape"), None);
    assert_eq!(src.property::<u64>("timeout"), 5000);

    let nick = |prop: &str| {
        let value = src.property_value(prop);
        glib_enum_nick(&value)
    };
    assert_eq!(nick("start"), "newest");
    assert_eq!(nick("timestamp-mode"), "writer");

    let timeout = src.find_property("timeout").unwrap();
    let timeout = timeout
        .downcast_ref::<gst::glib::ParamSpecUInt64>()
        .unwrap();
    assert_eq!(
        (
            timeout.minimum(),
            timeout.maximum(),
            timeout.default_value()
        ),
        (0, u64::MAX, 5000)
    );
    let writer_uid = src.find_property("writer-uid").unwrap();
    let writer_uid = writer_uid
        .downcast_ref::<gst::glib::ParamSpecInt64>()
        .unwrap();
    assert_eq!(
        (
            writer_uid.minimum(),
            writer_uid.maximum(),
            writer_uid.default_value()
        ),
        (-1, i64::from(u32::MAX), -1),
        "writer-uid: -1 (any user) by default"
    );
    for prop in [
        "shm-name",
        "shape",
        "start",
        "timeout",
        "timestamp-mode",
        "writer-uid",
    ] {
        let pspec = src.find_property(prop).unwrap();
        assert!(
            pspec.flags().contains(gst::PARAM_FLAG_MUTABLE_READY),
            "{prop} is mutable in READY"
        );
        assert!(pspec.flags().contains(gst::glib::ParamFlags::WRITABLE));
    }
    let stats_pspec = src.find_property("stats").unwrap();
    assert!(
        !stats_pspec
            .flags()
            .contains(gst::glib::ParamFlags::WRITABLE)
    );

    // Enum values by nick.
    for (prop, values) in [
        ("start", ["newest", "oldest"]),
        ("timestamp-mode", ["writer", "arrival"]),
    ] {
        for v in values {
            src.set_property_from_str(prop, v);
            assert_eq!(nick(prop), v);
        }
    }
    src.set_property("shm-name", "cam0");
    src.set_property("shape", "640x480:RGBA");
    src.set_property("timeout", 0u64);
    assert_eq!(
        src.property::<Option<String>>("shm-name").as_deref(),
        Some("cam0")
    );
    assert_eq!(
        src.property::<Option<String>>("shape").as_deref(),
        Some("640x480:RGBA")
    );
    assert_eq!(src.property::<u64>("timeout"), 0);

    let stats = stats(&src);
    for field in [
        "frames-read",
        "frames-missed",
        "latency-mean",
        "latency-max",
        "evictions",
        "frames-overwritten",
    ] {
        assert_eq!(stats.get::<u64>(field).unwrap(), 0, "{field}");
    }
    assert_eq!(stats.get::<u32>("writer-pid").unwrap(), 0);
    assert_eq!(stats.get::<u32>("writer-restarts").unwrap(), 0);

    let factory = src.factory().unwrap();
    assert_eq!(factory.longname(), "Shared-memory frame source");
    assert_eq!(factory.klass(), "Source/Video");
    assert_eq!(factory.author(), "shmframe developers");
    let src_pad = src.static_pad("src").unwrap();
    assert!(
        src_pad
            .pad_template_caps()
            .iter()
            .all(|s| s.name() == "video/x-raw")
    );
}

fn glib_enum_nick(value: &gst::glib::Value) -> String {
    let (_, enum_value) = gst::glib::EnumValue::from_value(value).expect("an enum value");
    enum_value.nick().to_string()
}

#[test]
fn missing_or_invalid_settings_fail_with_clear_errors() {
    init();
    for (props, fragment) in [
        ("", "No shm-name set"),
        ("shm-name=../etc/passwd", "invalid shm-name"),
        ("shm-name=ok shape=64by48", "invalid shape \"64by48\""),
        (
            "shm-name=ok shape=64x48:NOPE",
            "\"NOPE\" is not a GstVideoFormat name",
        ),
    ] {
        let pipeline = gst::parse::launch(&format!("shmframesrc {props} ! fakesink"))
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        assert!(
            pipeline.set_state(gst::State::Playing).is_err(),
            "{props:?} must refuse to start"
        );
        let bus = pipeline.bus().unwrap();
        let m = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error])
            .expect("an error message");
        let gst::MessageView::Error(e) = m.view() else {
            unreachable!()
        };
        let text = format!("{} {:?}", e.error(), e.debug());
        assert!(text.contains(fragment), "{props:?}: {text}");
        pipeline.set_state(gst::State::Null).unwrap();
    }
}

#[test]
fn waits_for_the_writer_then_outputs_its_frames_with_its_caps() {
    init();
    let name = ShmName::new("src-waits");
    let mut h = harness(&name, &[("shape", "64x48")]);
    // The source runs and waits; nothing comes out and it creates nothing in /dev/shm.
    std::thread::sleep(Duration::from_millis(200));
    assert!(h.try_pull().is_none());
    assert!(!name.path().exists());

    let mut writer = new_writer(&name, 4, Backpressure::Block);
    writer.set_caps(RGBA_64X48).unwrap();
    wait_for_reader(&writer);
    for _ in 0..10 {
        write_frame(&mut writer, 1, RGBA_64X48_SIZE);
    }
    for number in 0..10 {
        let buffer = h.pull().unwrap();
        check_buffer(&buffer, 1, number, RGBA_64X48_SIZE);
        assert_eq!(
            buffer.flags().contains(gst::BufferFlags::DISCONT),
            number == 0,
            "only the first buffer of a writer is DISCONT (frame {number})"
        );
    }

    // Caps came from the writer: stream-start, caps, segment, with no capsfilter anywhere.
    let events = drain_events(&mut h);
    assert_eq!(
        caps_events(&events),
        vec![gst::Caps::from_str(RGBA_64X48).unwrap()]
    );
    let types: Vec<_> = events.iter().map(|e| e.type_()).collect();
    assert_eq!(
        types,
        vec![
            gst::EventType::StreamStart,
            gst::EventType::Caps,
            gst::EventType::Segment
        ]
    );

    // Live, one frame (1/30 s) of latency.
    assert_eq!(
        h.query_latency(),
        Some(gst::ClockTime::from_nseconds(33_333_333))
    );

    let src = h.element().unwrap();
    let stats = stats(&src);
    assert_eq!(stats.get::<u64>("frames-read").unwrap(), 10);
    assert_eq!(stats.get::<u64>("frames-missed").unwrap(), 0);
    assert_eq!(stats.get::<u32>("writer-pid").unwrap(), std::process::id());
    assert_eq!(stats.get::<u32>("writer-restarts").unwrap(), 0);
    assert!(stats.get::<u64>("latency-max").unwrap() >= stats.get::<u64>("latency-mean").unwrap());
    assert!(stats.get::<u64>("latency-max").unwrap() > 0);
}

#[test]
fn caps_query_answers_the_writers_caps_once_attached() {
    init();
    let name = ShmName::new("src-capsquery");
    let h = harness(&name, &[]);
    let src = h.element().unwrap();
    let pad = src.static_pad("src").unwrap();
    // Before any writer: the template (any raw video).
    assert_eq!(pad.query_caps(None), pad.pad_template_caps());

    let mut writer = new_writer(&name, 4, Backpressure::DropOldest);
    writer.set_caps(RGBA_64X48).unwrap();
    wait_for_reader(&writer);
    let expected = gst::Caps::from_str(RGBA_64X48).unwrap();
    assert!(
        wait_for(LIMIT, || pad.query_caps(None) == expected),
        "caps query answers the writer's caps: {}",
        pad.query_caps(None)
    );
    drop(h);
}

#[test]
fn writer_eos_becomes_eos_downstream() {
    init();
    let name = ShmName::new("src-eos");
    let mut h = harness(&name, &[]);
    let mut writer = new_writer(&name, 4, Backpressure::Block);
    writer.set_caps(RGBA_64X48).unwrap();
    wait_for_reader(&writer);
    for _ in 0..3 {
        write_frame(&mut writer, 7, RGBA_64X48_SIZE);
    }
    writer.end_of_stream();
    for number in 0..3 {
        check_buffer(&h.pull().unwrap(), 7, number, RGBA_64X48_SIZE);
    }
    loop {
        let event = h.pull_event().expect("EOS within the harness time limit");
        if event.type_() == gst::EventType::Eos {
            break;
        }
    }
    assert!(h.try_pull().is_none(), "nothing after EOS");
}

#[test]
fn caps_change_mid_stream_sends_new_caps_downstream() {
    init();
    let name = ShmName::new("src-capschange");
    let mut h = harness(&name, &[]);
    let mut writer = new_writer(&name, 4, Backpressure::Block);
    writer.set_caps(RGBA_64X48).unwrap();
    wait_for_reader(&writer);
    for _ in 0..3 {
        write_frame(&mut writer, 1, RGBA_64X48_SIZE);
    }
    writer.set_caps(GRAY8_32X24).unwrap();
    for _ in 0..3 {
        write_frame(&mut writer, 1, GRAY8_32X24_SIZE);
    }
    for number in 0..6 {
        let size = if number < 3 {
            RGBA_64X48_SIZE
        } else {
            GRAY8_32X24_SIZE
        };
        check_buffer(&h.pull().unwrap(), 1, number, size);
    }
    let caps = caps_events(&drain_events(&mut h));
    assert_eq!(
        caps,
        vec![
            gst::Caps::from_str(RGBA_64X48).unwrap(),
            gst::Caps::from_str(GRAY8_32X24).unwrap()
        ]
    );
    // The latency follows the new frame rate (15/1).
    assert_eq!(
        h.query_latency(),
        Some(gst::ClockTime::from_nseconds(66_666_666))
    );
}

#[test]
fn follows_a_restarted_writer_and_says_so_on_the_bus() {
    let name = ShmName::new("src-restart");
    let mut pipe = Pipe::new(&name, "");
    pipe.play();
    let pid = std::process::id();

    let mut first = new_writer(&name, 4, Backpressure::Block);
    first.set_caps(RGBA_64X48).unwrap();
    wait_for_reader(&first);
    for _ in 0..3 {
        write_frame(&mut first, 1, RGBA_64X48_SIZE);
    }
    for number in 0..3 {
        let sample = pipe.pull();
        check_buffer(sample.buffer().unwrap(), 1, number, RGBA_64X48_SIZE);
    }
    let attached = pipe.element_message("shmframe-writer-attached");
    assert_eq!(attached.get::<u32>("pid").unwrap(), pid);
    assert!(!attached.get::<bool>("restart").unwrap());

    first.close();
    let lost = pipe.element_message("shmframe-writer-lost");
    assert_eq!(lost.get::<u32>("pid").unwrap(), pid);
    assert!(lost.get::<bool>("clean").unwrap());

    // A new writer on the same name, with other caps: the source follows it.
    let mut second = new_writer(&name, 4, Backpressure::Block);
    second.set_caps(GRAY8_32X24).unwrap();
    wait_for_reader(&second);
    for _ in 0..3 {
        write_frame(&mut second, 2, GRAY8_32X24_SIZE);
    }
    for number in 0..3 {
        let sample = pipe.pull();
        let buffer = sample.buffer().unwrap();
        check_buffer(buffer, 2, number, GRAY8_32X24_SIZE);
        assert_eq!(
            buffer.flags().contains(gst::BufferFlags::DISCONT),
            number == 0,
            "the new writer's first buffer is DISCONT"
        );
        assert_eq!(
            sample.caps().unwrap(),
            gst::Caps::from_str(GRAY8_32X24).unwrap().as_ref()
        );
    }
    let warning = pipe.warning_containing("writer restarted");
    assert!(
        warning.contains(&format!(
            "writer restarted (pid {pid} -> {pid}), following the new writer"
        )),
        "{warning}"
    );
    let reattached = pipe.wait_message("second writer-attached", |m| {
        m.structure().is_some_and(|s| {
            s.name() == "shmframe-writer-attached" && s.get::<bool>("restart") == Ok(true)
        })
    });
    assert_eq!(
        reattached.structure().unwrap().get::<u32>("pid").unwrap(),
        pid
    );
    let stats = stats(&pipe.src);
    assert_eq!(stats.get::<u64>("frames-read").unwrap(), 6);
    assert_eq!(stats.get::<u32>("writer-restarts").unwrap(), 1);
    assert_eq!(stats.get::<u32>("writer-pid").unwrap(), pid);
}

#[test]
fn a_writer_replacing_its_segment_for_new_caps_is_a_renegotiation_not_a_restart() {
    let name = ShmName::new("src-replace");
    let mut pipe = Pipe::new(&name, "");
    pipe.play();
    let pid = std::process::id();

    let mut first = new_writer(&name, 4, Backpressure::Block);
    first.set_caps(RGBA_64X48).unwrap();
    wait_for_reader(&first);
    for _ in 0..3 {
        write_frame(&mut first, 1, RGBA_64X48_SIZE);
    }
    for number in 0..3 {
        check_buffer(pipe.pull().buffer().unwrap(), 1, number, RGBA_64X48_SIZE);
    }

    // What shmframesink does when new caps need larger slots: the same writer, a new segment.
    const RGBA_128X96: &str = "video/x-raw, format=(string)RGBA, width=(int)128, \
                               height=(int)96, framerate=(fraction)30/1";
    const RGBA_128X96_SIZE: usize = 128 * 96 * 4;
    let mut config = WriterConfig::new(&name, RGBA_128X96_SIZE as u64);
    config.backpressure = Backpressure::Block;
    let mut replaced = first.replace(&config).expect("replace the segment");
    replaced.set_caps(RGBA_128X96).unwrap();
    wait_for_reader(&replaced);
    for _ in 0..3 {
        write_frame(&mut replaced, 2, RGBA_128X96_SIZE);
    }
    for number in 0..3 {
        let sample = pipe.pull();
        check_buffer(sample.buffer().unwrap(), 2, number, RGBA_128X96_SIZE);
        assert_eq!(
            sample.caps().unwrap(),
            gst::Caps::from_str(RGBA_128X96).unwrap().as_ref()
        );
    }

    // A renegotiation: attached again, to the same session, with restart=false; no warning.
    let messages = pipe.messages_so_far();
    let attached: Vec<_> = messages
        .iter()
        .filter_map(|m| m.structure())
        .filter(|s| s.name() == "shmframe-writer-attached")
        .map(|s| {
            (
                s.get::<u64>("session").unwrap(),
                s.get::<bool>("restart").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        attached,
        vec![(replaced.session(), false), (replaced.session(), false)]
    );
    let warnings: Vec<_> = messages
        .iter()
        .filter_map(|m| match m.view() {
            gst::MessageView::Warning(w) => Some(w.error().to_string()),
            _ => None,
        })
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
    let stats = stats(&pipe.src);
    assert_eq!(stats.get::<u64>("frames-read").unwrap(), 6);
    assert_eq!(stats.get::<u32>("writer-restarts").unwrap(), 0);
    assert_eq!(stats.get::<u32>("writer-pid").unwrap(), pid);
}

#[test]
fn a_killed_writer_is_reported_and_the_next_one_followed() {
    let name = ShmName::new("src-killed");
    let mut pipe = Pipe::new(&name, "");
    pipe.play();
    let mut child = spawn_role("writer", &[&name, "1"]);

    // Frames of the child writer arrive (where it starts depends on when we attached).
    let sample = pipe.pull();
    let buffer = sample.buffer().unwrap();
    let first = buffer.offset();
    check_buffer(buffer, 1, first, RGBA_64X48_SIZE);
    let attached = pipe.element_message("shmframe-writer-attached");
    assert_eq!(attached.get::<u32>("pid").unwrap(), child.pid());

    child.signal(libc::SIGKILL);
    child.wait_timeout(LIMIT).expect("the killed writer exits");
    let lost = pipe.element_message("shmframe-writer-lost");
    assert_eq!(lost.get::<u32>("pid").unwrap(), child.pid());
    assert!(!lost.get::<bool>("clean").unwrap());
    let warning = pipe.warning_containing("died without ending the stream");
    assert!(
        warning.contains(&format!("pid {}", child.pid())),
        "{warning}"
    );

    // The dead writer's segment is reclaimed by the next writer, which the source follows.
    let mut writer = new_writer(&name, 4, Backpressure::Block);
    writer.set_caps(RGBA_64X48).unwrap();
    wait_for_reader(&writer);
    let number = write_frame(&mut writer, 2, RGBA_64X48_SIZE);
    // Frames of the dead writer may still be queued in appsink: skip them.
    loop {
        let sample = pipe.pull();
        let buffer = sample.buffer().unwrap();
        let map = buffer.map_readable().unwrap();
        if check_frame(seed(2, number), &map).is_ok() {
            assert!(buffer.flags().contains(gst::BufferFlags::DISCONT));
            break;
        }
        check_frame(seed(1, buffer.offset()), &map).unwrap();
    }
    pipe.warning_containing(&format!(
        "writer restarted (pid {} -> {})",
        child.pid(),
        std::process::id()
    ));
}

#[test]
fn shape_mismatch_is_an_error_naming_both_shapes() {
    for (shape, expected) in [
        (
            "32x24",
            "writer's stream is 64x48:RGBA but shape expects 32x24",
        ),
        (
            "64x48:GRAY8",
            "writer's stream is 64x48:RGBA but shape expects 64x48:GRAY8",
        ),
    ] {
        let name = ShmName::new("src-shape");
        let mut pipe = Pipe::new(&name, &format!("shape={shape}"));
        pipe.play();
        let mut writer = new_writer(&name, 4, Backpressure::DropOldest);
        writer.set_caps(RGBA_64X48).unwrap();
        wait_for_reader(&writer);
        write_frame(&mut writer, 1, RGBA_64X48_SIZE);
        let text = pipe.error_text();
        assert!(text.contains(expected), "{text}");
    }
}

#[test]
fn get_frame_returns_held_frames_and_none_for_overwritten_ones() {
    init();
    let name = ShmName::new("src-getframe");
    let src = gst::ElementFactory::make("shmframesrc")
        .property("shm-name", name.as_str())
        .build()
        .unwrap();
    let get = |n: u64| src.emit_by_name::<Option<gst::Sample>>("get-frame", &[&n]);
    assert!(get(0).is_none(), "no writer yet");

    let mut writer = new_writer(&name, 4, Backpressure::DropOldest);
    writer.set_caps(RGBA_64X48).unwrap();
    for _ in 0..10 {
        write_frame(&mut writer, 1, RGBA_64X48_SIZE);
    }
    // Depth 4: frames 6..=9 are held, 0..=5 were overwritten, 10 is not written yet.
    for number in 6..10 {
        let sample = get(number).unwrap_or_else(|| panic!("frame {number} is held"));
        check_buffer(sample.buffer().unwrap(), 1, number, RGBA_64X48_SIZE);
        assert_eq!(
            sample.caps().unwrap(),
            gst::Caps::from_str(RGBA_64X48).unwrap().as_ref()
        );
    }
    for number in [0, 5, 10, 1000] {
        assert!(get(number).is_none(), "frame {number} is not held");
    }

    // A new writer on the name: get-frame follows it.
    writer.close();
    let mut second = new_writer(&name, 4, Backpressure::DropOldest);
    second.set_caps(GRAY8_32X24).unwrap();
    for _ in 0..3 {
        write_frame(&mut second, 2, GRAY8_32X24_SIZE);
    }
    let sample = get(2).expect("frame 2 of the new writer");
    check_buffer(sample.buffer().unwrap(), 2, 2, GRAY8_32X24_SIZE);
    assert_eq!(
        sample.caps().unwrap(),
        gst::Caps::from_str(GRAY8_32X24).unwrap().as_ref()
    );
}

#[test]
fn going_to_null_while_waiting_for_a_writer_returns_promptly() {
    let name = ShmName::new("src-null");
    let pipe = Pipe::new(&name, "");
    pipe.play();
    // Let the streaming thread enter its wait for a writer.
    std::thread::sleep(Duration::from_millis(300));
    let pipeline = pipe.pipeline.clone();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let result = pipeline.set_state(gst::State::Null);
        let _ = done.send(result);
    });
    let result = finished
        .recv_timeout(Duration::from_secs(5))
        .expect("set_state(NULL) finishes within 5 s");
    assert_eq!(result, Ok(gst::StateChangeSuccess::Success));
    assert!(
        !name.path().exists(),
        "a reader creates nothing in /dev/shm"
    );
}

#[test]
fn a_lagging_source_counts_missed_frames_and_marks_discont() {
    let name = ShmName::new("src-missed");
    // appsink holding one buffer blocks the source in its push of the next one.
    // Copying: a pinned frame would change which old frames the writer overwrites.
    let pipe = Pipe::with_sink(&name, "copy-mode=copy", "max-buffers=1 drop=false");
    pipe.play();
    let mut writer = new_writer(&name, 4, Backpressure::DropOldest);
    writer.set_caps(RGBA_64X48).unwrap();
    wait_for_reader(&writer);
    write_frame(&mut writer, 1, RGBA_64X48_SIZE);
    write_frame(&mut writer, 1, RGBA_64X48_SIZE);
    // Frame 0 waits in appsink, frame 1 in the source's push: its cursor stays at 2 while the
    // writer overwrites frames 2..=7.
    assert!(
        wait_for(LIMIT, || writer.info().readers.first().map(|r| r.cursor)
            == Some(2)),
        "the source read frames 0 and 1"
    );
    for _ in 2..=11 {
        write_frame(&mut writer, 1, RGBA_64X48_SIZE);
    }
    for number in [0, 1, 8, 9, 10, 11] {
        let sample = pipe.pull();
        let buffer = sample.buffer().unwrap();
        check_buffer(buffer, 1, number, RGBA_64X48_SIZE);
        assert_eq!(
            buffer.flags().contains(gst::BufferFlags::DISCONT),
            number == 0 || number == 8,
            "DISCONT on the first frame and right after the missed ones (frame {number})"
        );
    }
    let stats = stats(&pipe.src);
    assert_eq!(stats.get::<u64>("frames-read").unwrap(), 6);
    assert_eq!(stats.get::<u64>("frames-missed").unwrap(), 6);
    assert_eq!(stats.get::<u64>("evictions").unwrap(), 0);
}

/// A playing zero-copy reader pipeline on `name` (from the oldest frame, without last-sample)
/// attached to a new blocking writer of depth 2 with one spare slot, its caps set. Only the
/// buffers a test holds pin slots, plus the preroll buffer appsink keeps (frame 0): the spare
/// slot leaves the writer room for that one.
fn zero_copy_reader_and_writer(name: &str) -> (Pipe, Writer) {
    let pipe = Pipe::with_sink(
        name,
        "copy-mode=zero-copy start=oldest",
        "enable-last-sample=false",
    );
    pipe.play();
    let mut config = WriterConfig::new(name, RGBA_64X48_SIZE as u64);
    config.depth = 2;
    config.spare_slots = 1;
    config.backpressure = Backpressure::Block;
    let mut writer = Writer::create(&config).unwrap();
    writer.set_caps(RGBA_64X48).unwrap();
    wait_for_reader(&writer);
    (pipe, writer)
}

/// The slots the (only) reader of `writer` pins.
fn pinned(writer: &Writer) -> u32 {
    writer.info().readers.first().map_or(0, |r| r.pinned_slots)
}

#[test]
fn zero_copy_buffers_wrap_shared_memory_read_only_and_release_their_slots() {
    let name = ShmName::new("src-zero-copy");
    let (pipe, mut writer) = zero_copy_reader_and_writer(&name);
    let mut number = 0;
    for _round in 0..5 {
        for _ in 0..2 {
            // Would wait for ever if dropped buffers had not released their slots.
            write_frame(&mut writer, 1, RGBA_64X48_SIZE);
        }
        let samples: Vec<_> = (0..2).map(|_| pipe.pull()).collect();
        assert!(pinned(&writer) >= 2, "each held buffer pins its slot");
        for sample in &samples {
            let buffer = sample.buffer().unwrap();
            check_buffer(buffer, 1, number, RGBA_64X48_SIZE);
            assert!(
                buffer
                    .peek_memory(0)
                    .flags()
                    .contains(gst::MemoryFlags::READONLY),
                "shared memory is read-only to GStreamer"
            );
            number += 1;
        }
        drop(samples);
        assert!(
            wait_for(LIMIT, || pinned(&writer) <= 1),
            "only appsink's preroll buffer may stay pinned"
        );
    }
}

/// Zero-copy wrappers are reused frame after frame, but a slot's pin ends only when nothing
/// references its memory any more: a copy of a buffer (sharing its memory, as `tee` or
/// `gst_buffer_copy` do) keeps the slot pinned after the buffer itself is gone, and a reused
/// wrapper carries the frame it wraps now.
#[test]
fn a_copy_sharing_a_zero_copy_memory_keeps_its_slot_pinned_until_it_is_dropped() {
    let name = ShmName::new("src-zero-copy-shared");
    let (pipe, mut writer) = zero_copy_reader_and_writer(&name);
    // A copy of each buffer pulled, sharing its memory; the buffer itself is dropped.
    let pull_copy = |number: u64| {
        let sample = pipe.pull();
        let copy = sample.buffer().unwrap().copy();
        assert_eq!(
            copy.peek_memory(0).as_ptr(),
            sample.buffer().unwrap().peek_memory(0).as_ptr(),
            "the copy of frame {number} shares its memory"
        );
        copy
    };
    for round in 0..6 {
        let (first, second) = (2 * round, 2 * round + 1);
        write_frame(&mut writer, 1, RGBA_64X48_SIZE);
        let first_copy = pull_copy(first);
        write_frame(&mut writer, 1, RGBA_64X48_SIZE);
        let second_copy = pull_copy(second);
        // appsink keeps the newest buffer it received (the second), nothing else the first.
        assert_eq!(
            pinned(&writer),
            2,
            "the copies pin frames {first} and {second}"
        );
        check_buffer(&first_copy, 1, first, RGBA_64X48_SIZE);
        check_buffer(&second_copy, 1, second, RGBA_64X48_SIZE);
        drop(first_copy);
        assert!(
            wait_for(LIMIT, || pinned(&writer) == 1),
            "dropping the last reference to frame {first} releases its pin"
        );
        drop(second_copy);
    }
}

/// A zero-copy reader that holds the writer up past `reader-timeout` is evicted and its pins
/// stop counting, so the slot of a frame it pinned may be rewritten before it pushes that frame
/// (here: while a downstream probe holds the caps event that goes before it). That frame is not
/// pushed as if it were intact: it is skipped, counted in `frames-overwritten` and
/// `frames-missed`, and the next buffer is DISCONT. Before the fix the writer waited for the
/// pin for ever.
#[test]
fn a_pinned_frame_rewritten_after_an_eviction_is_skipped_and_the_next_buffer_is_discont() {
    const RGBA_64X48_15FPS: &str = "video/x-raw, format=(string)RGBA, width=(int)64, \
                                    height=(int)48, framerate=(fraction)15/1";
    let name = ShmName::new("src-evicted-pin");
    let pipe = Pipe::with_sink(
        &name,
        "copy-mode=zero-copy start=oldest",
        "enable-last-sample=false",
    );
    // The second caps event (the writer's caps change) waits until the test releases it.
    let (hit, hit_rx) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    let caps_events = std::sync::atomic::AtomicU32::new(0);
    pipe.src.static_pad("src").unwrap().add_probe(
        gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            if let Some(gst::PadProbeData::Event(event)) = &info.data
                && event.type_() == gst::EventType::Caps
                && caps_events.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1
            {
                let _ = hit.send(());
                let _ = release_rx.lock().unwrap().recv_timeout(LIMIT);
            }
            gst::PadProbeReturn::Ok
        },
    );
    pipe.play();
    let mut config = WriterConfig::new(&name, RGBA_64X48_SIZE as u64);
    config.depth = 2;
    config.spare_slots = 0;
    config.backpressure = Backpressure::Block;
    config.reader_timeout = Duration::from_millis(200);
    let mut writer = Writer::create(&config).unwrap();
    writer.set_caps(RGBA_64X48).unwrap();
    wait_for_reader(&writer);
    write_frame(&mut writer, 1, RGBA_64X48_SIZE);
    let first = pipe.pull();
    check_buffer(first.buffer().unwrap(), 1, 0, RGBA_64X48_SIZE);
    drop(first);
    writer.set_caps(RGBA_64X48_15FPS).unwrap();
    write_frame(&mut writer, 1, RGBA_64X48_SIZE);
    hit_rx
        .recv_timeout(LIMIT)
        .expect("frame 1 is pinned and its caps event held");
    // Frames 2 and 3 need frame 0's and frame 1's slots, pinned by the held reader: the
    // writer evicts it after the reader timeout and rewrites both.
    let interrupt = writer.interrupt_handle();
    let (written, written_rx) = mpsc::channel();
    let writing = std::thread::spawn(move || {
        for _ in 0..2 {
            write_frame(&mut writer, 1, RGBA_64X48_SIZE);
        }
        let _ = written.send(());
        writer
    });
    let writes_done = written_rx.recv_timeout(LIMIT);
    if writes_done.is_err() {
        interrupt.interrupt();
    }
    let writer = writing.join();
    assert!(
        writes_done.is_ok(),
        "the writer waited for the stopped reader's pins for longer than {LIMIT:?}"
    );
    let writer = writer.unwrap();
    assert_eq!(writer.info().readers_evicted, 1);
    release.send(()).unwrap();

    let second = pipe.pull();
    let buffer = second.buffer().unwrap();
    check_buffer(buffer, 1, 2, RGBA_64X48_SIZE);
    assert!(
        buffer.flags().contains(gst::BufferFlags::DISCONT),
        "the buffer after a skipped frame is DISCONT"
    );
    drop(second);
    let third = pipe.pull();
    check_buffer(third.buffer().unwrap(), 1, 3, RGBA_64X48_SIZE);
    assert!(
        !third
            .buffer()
            .unwrap()
            .flags()
            .contains(gst::BufferFlags::DISCONT)
    );
    let stats = stats(&pipe.src);
    assert_eq!(stats.get::<u64>("frames-overwritten").unwrap(), 1);
    assert_eq!(stats.get::<u64>("frames-read").unwrap(), 3);
    assert_eq!(stats.get::<u64>("frames-missed").unwrap(), 1);
    assert_eq!(stats.get::<u64>("evictions").unwrap(), 1);
}

/// A downstream that keeps every zero-copy buffer ends up pinning every slot: more than the
/// pin budget gives one reader. The drop-oldest writer evicts that reader as soon as it finds
/// no slot, rather than dropping every frame (for every reader) for the reader timeout, and
/// never waits for it; the reader goes on reading, in order, its pins no longer counting.
#[test]
fn a_downstream_hoarding_zero_copy_buffers_is_evicted_before_a_drop_oldest_writer_drops_a_frame() {
    let name = ShmName::new("src-hoard");
    // appsink keeps every buffer (no limit): every slot ends up pinned.
    let pipe = Pipe::with_sink(&name, "copy-mode=zero-copy start=oldest", "max-buffers=0");
    pipe.play();
    let mut writer = new_writer(&name, 4, Backpressure::DropOldest);
    writer.set_caps(RGBA_64X48).unwrap();
    wait_for_reader(&writer);
    for n in 0..100 {
        let outcome = write_frame_outcome(&mut writer, 1, RGBA_64X48_SIZE);
        assert_eq!(
            outcome.frame(),
            Some(n),
            "frame {n} is published, never waited for"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(writer.frames_dropped(), 0);
    assert!(
        writer.info().readers_evicted >= 1,
        "the hoarder was evicted"
    );
    let mut pulled = Vec::new();
    while let Some(sample) = pipe.try_pull_within(Duration::from_millis(300)) {
        pulled.push(sample.buffer().unwrap().offset());
    }
    assert!(pulled.len() > 4, "it went on reading: {pulled:?}");
    assert!(
        pulled.windows(2).all(|p| p[0] < p[1]),
        "in order: {pulled:?}"
    );
    assert!(stats(&pipe.src).get::<u64>("evictions").unwrap() >= 1);
}

#[test]
fn start_oldest_begins_with_the_oldest_held_frame() {
    init();
    let name = ShmName::new("src-oldest");
    let mut writer = new_writer(&name, 4, Backpressure::DropOldest);
    writer.set_caps(RGBA_64X48).unwrap();
    for _ in 0..6 {
        write_frame(&mut writer, 3, RGBA_64X48_SIZE);
    }
    // Frames 2..=5 are held: `oldest` starts at 2 (`newest` would start at 5).
    let mut h = harness(&name, &[("start", "oldest")]);
    for number in 2..6 {
        check_buffer(&h.pull().unwrap(), 3, number, RGBA_64X48_SIZE);
    }
}

#[test]
fn timeout_posts_a_warning_and_waiting_goes_on() {
    let name = ShmName::new("src-timeout");
    let mut pipe = Pipe::new(&name, "timeout=100");
    pipe.play();
    let warning = pipe.warning_containing("No writer on shm-name");
    assert!(
        warning.contains(name.as_str()) && warning.contains("still waiting"),
        "{warning}"
    );

    let mut writer = new_writer(&name, 4, Backpressure::Block);
    writer.set_caps(RGBA_64X48).unwrap();
    wait_for_reader(&writer);
    write_frame(&mut writer, 4, RGBA_64X48_SIZE);
    check_buffer(pipe.pull().buffer().unwrap(), 4, 0, RGBA_64X48_SIZE);
    // Attached but no new frame: the other warning.
    pipe.warning_containing("No frame from the writer");
}

#[test]
fn timestamps_follow_the_writer_or_the_arrival() {
    init();
    for mode in ["writer", "arrival"] {
        let name = ShmName::new("src-timestamps");
        let mut h = Harness::new("shmframesrc");
        h.use_systemclock();
        let src = h.element().unwrap();
        src.set_property("shm-name", name.as_str());
        src.set_property_from_str("timestamp-mode", mode);
        h.play();
        let mut writer = new_writer(&name, 4, Backpressure::Block);
        writer.set_caps(RGBA_64X48).unwrap();
        wait_for_reader(&writer);
        let mut written = Vec::new();
        for _ in 0..5 {
            let before = monotonic_ns();
            write_frame(&mut writer, 5, RGBA_64X48_SIZE);
            written.push(before);
        }
        let clock = src.clock().expect("the harness clock");
        let base_time = src.base_time().unwrap_or(gst::ClockTime::ZERO);
        // GStreamer's system clock is CLOCK_MONOTONIC: the writer's times map 1:1.
        let offset = clock.time().nseconds() as i128 - monotonic_ns() as i128;
        assert!(offset.abs() < 1_000_000, "system clock is monotonic");
        let mut previous = gst::ClockTime::ZERO;
        for (number, write_start) in written.iter().enumerate() {
            let buffer = h.pull().unwrap();
            check_buffer(&buffer, 5, number as u64, RGBA_64X48_SIZE);
            let pts = buffer.pts().expect("a timestamp");
            let written_running = *write_start as i128 - base_time.nseconds() as i128;
            match mode {
                "writer" => {
                    // The writer stamped its PTS just after `write_start`; the bounds only
                    // absorb the clock reads (a wrong mapping is off by far more).
                    let delta = pts.nseconds() as i128 - written_running;
                    assert!(
                        (-1_000_000..1_000_000_000).contains(&delta),
                        "frame {number}: pts {pts} vs written at {written_running}"
                    );
                }
                _ => {
                    // Stamped on arrival: not before it was written.
                    assert!(pts.nseconds() as i128 >= written_running);
                    assert!(pts >= previous, "arrival stamps never go back");
                    previous = pts;
                }
            }
        }
    }
}
