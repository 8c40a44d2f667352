//! `shmframesink` in a harness, with the transport's `Reader` / `Subscriber` / `Observer` as the
//! other side of the segment (in this process): properties and their ranges, frame content,
//! numbering and caps, strided input, EOS, start errors, caps changes that recreate the
//! segment, `clear`, backpressure, reader signals, flushing a blocked write, timestamps and
//! statistics.

mod common;

use common::{ShmName, check_frame, fill_frame, init, wait_for};
use gst::glib;
use gst::prelude::*;
use gst_check::Harness;
use gstshmframe::transport::{
    FrameInfo, Observer, ReadResult, Reader, ReaderOptions, StartPosition, Subscriber,
    SubscriberEvent, monotonic_ns,
};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bound for anything the tests wait for (generous: CI machines are slow).
const LIMIT: Duration = Duration::from_secs(20);
const FRAME_DURATION: gst::ClockTime = gst::ClockTime::from_mseconds(40);

const RGBA_64X48: &str = "video/x-raw,format=RGBA,width=64,height=48,framerate=25/1";
const RGBA_64X48_SIZE: usize = 64 * 48 * 4;
const RGBA_32X24: &str = "video/x-raw,format=RGBA,width=32,height=24,framerate=25/1";
const RGBA_32X24_SIZE: usize = 32 * 24 * 4;

/// A sink on `name` with `props` (name, value as gst-launch would take it), on its own bus.
fn new_sink(name: &str, props: &[(&str, &str)]) -> gst::Element {
    let mut builder = gst::ElementFactory::make("shmframesink").property("shm-name", name);
    for (prop, value) in props {
        builder = builder.property_from_str(prop, value);
    }
    let sink = builder.build().expect("shmframesink");
    sink.set_bus(Some(&gst::Bus::new()));
    sink
}

/// A harness driving `sink` (the harness sets it to PLAYING, with sync and async off).
fn harness(sink: &gst::Element) -> Harness {
    Harness::with_element(sink, Some("sink"), None)
}

/// The setup most tests share: a unique segment name, a sink on it and the harness driving the
/// sink. Tests take it apart (`let Fixture { name, sink, mut h } = ...`) so each part lives to
/// the end of the test and is dropped harness first, segment name last.
struct Fixture {
    name: ShmName,
    sink: gst::Element,
    h: Harness,
}

impl Fixture {
    /// A sink with `props` on a segment name made from `label`, started by its harness.
    fn new(label: &str, props: &[(&str, &str)]) -> Fixture {
        Fixture::with_setup(label, props, |_| ()).0
    }

    /// Like `new`, with `setup` run on the sink before the harness starts it (to connect to
    /// its signals); returns what `setup` returns too.
    fn with_setup<T>(
        label: &str,
        props: &[(&str, &str)],
        setup: impl FnOnce(&gst::Element) -> T,
    ) -> (Fixture, T) {
        init();
        let name = ShmName::new(label);
        let sink = new_sink(&name, props);
        let before_start = setup(&sink);
        let h = harness(&sink);
        (Fixture { name, sink, h }, before_start)
    }
}

fn rgba_frame(n: u64, size: usize) -> gst::Buffer {
    let mut data = vec![0u8; size];
    fill_frame(n, &mut data);
    let mut buffer = gst::Buffer::from_mut_slice(data);
    {
        let buffer = buffer.get_mut().unwrap();
        buffer.set_pts(FRAME_DURATION * n);
        buffer.set_duration(FRAME_DURATION);
        if n % 2 == 1 {
            buffer.set_flags(gst::BufferFlags::DELTA_UNIT);
        }
    }
    buffer
}

fn open_reader(name: &str, start: StartPosition) -> Reader {
    Reader::open(
        name,
        &ReaderOptions {
            start,
            ..Default::default()
        },
    )
    .expect("attach a reader")
}

fn read_frame(reader: &mut Reader) -> (FrameInfo, Vec<u8>) {
    let mut data = Vec::new();
    let result = reader
        .read_next(LIMIT, |_, view| {
            data.resize(view.len(), 0);
            view.copy_to(&mut data);
        })
        .expect("read");
    match result {
        ReadResult::Frame(info) => (info, data),
        other => panic!("expected a frame, got {other:?}"),
    }
}

fn caps_of(reader: &Reader, info: &FrameInfo) -> gst::Caps {
    let text = reader
        .caps(info.caps_gen)
        .expect("caps table")
        .expect("caps of the frame's generation");
    gst::Caps::from_str(&text).expect("caps string parses")
}

fn stats(sink: &gst::Element) -> gst::Structure {
    sink.property::<gst::Structure>("stats")
}

/// Text of the first error message on the sink's bus.
fn error_text(sink: &gst::Element) -> String {
    let bus = sink.bus().unwrap();
    let msg = bus
        .pop_filtered(&[gst::MessageType::Error])
        .expect("an error message on the bus");
    match msg.view() {
        gst::MessageView::Error(err) => format!("{} ({:?})", err.error(), err.debug()),
        _ => unreachable!(),
    }
}

/// Element messages named `name` on the sink's bus, in order.
fn element_messages(sink: &gst::Element, name: &str) -> Vec<gst::Structure> {
    let bus = sink.bus().unwrap();
    let mut found = Vec::new();
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Element]) {
        if let Some(s) = msg.structure()
            && s.name() == name
        {
            found.push(s.to_owned());
        }
    }
    found
}

fn enum_nick(sink: &gst::Element, prop: &str) -> String {
    let value = sink.property_value(prop);
    let (_, enum_value) = glib::EnumValue::from_value(&value).expect("an enum property");
    enum_value.nick().to_string()
}

/// Every (outcome, frames dropped, suppressed) the sink's `backpressure` signal reports.
type Announcements = Arc<Mutex<Vec<(String, u64, u64)>>>;

fn record_backpressure(sink: &gst::Element) -> Announcements {
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let seen = outcomes.clone();
    sink.connect("backpressure", false, move |args| {
        seen.lock().unwrap().push((
            args[1].get::<String>().unwrap(),
            args[2].get::<u64>().unwrap(),
            args[3].get::<u64>().unwrap(),
        ));
        None
    });
    outcomes
}

/// The announcements once `n` were made (a full event held back by the rate limit is
/// announced by the sink's periodic check within 200 ms).
fn announced(outcomes: &Announcements, n: usize) -> Vec<(String, u64, u64)> {
    assert!(
        wait_for(LIMIT, || outcomes.lock().unwrap().len() >= n),
        "{n} backpressure announcements expected, got {:?}",
        outcomes.lock().unwrap()
    );
    outcomes.lock().unwrap().clone()
}

/// Every pid a `reader-attached` / `reader-detached` signal reports.
fn record_pids(sink: &gst::Element, signal: &str) -> Arc<Mutex<Vec<u32>>> {
    let pids = Arc::new(Mutex::new(Vec::new()));
    let seen = pids.clone();
    sink.connect(signal, false, move |args| {
        seen.lock().unwrap().push(args[1].get::<u32>().unwrap());
        None
    });
    pids
}

#[test]
fn properties_have_documented_defaults() {
    init();
    let sink = gst::ElementFactory::make("shmframesink").build().unwrap();
    assert_eq!(sink.property::<Option<String>>("shm-name"), None);
    assert_eq!(enum_nick(&sink, "layout"), "ring");
    assert_eq!(sink.property::<u32>("depth"), 4);
    assert_eq!(enum_nick(&sink, "backpressure"), "drop-oldest");
    assert_eq!(sink.property::<Option<String>>("shape"), None);
    assert_eq!(sink.property::<u32>("perms"), 0o600);
    assert_eq!(sink.property::<u64>("reader-timeout"), 1000);
    assert_eq!(sink.property::<u32>("wait-for-readers"), 0);
    assert_eq!(sink.property::<u64>("wait-for-readers-timeout"), 0);
    assert!(sink.property::<bool>("sync"), "GstBaseSink's default");

    let factory = sink.factory().unwrap();
    assert_eq!(
        factory.metadata(gst::ELEMENT_METADATA_LONGNAME),
        Some("Shared-memory frame sink")
    );
    assert_eq!(
        factory.metadata(gst::ELEMENT_METADATA_KLASS),
        Some("Sink/Video")
    );
    assert_eq!(
        factory.metadata(gst::ELEMENT_METADATA_AUTHOR),
        Some("shmframe developers")
    );

    sink.set_property_from_str("layout", "double");
    sink.set_property_from_str("backpressure", "block");
    sink.set_property("shape", "640x480:NV12");
    assert_eq!(enum_nick(&sink, "layout"), "double");
    assert_eq!(enum_nick(&sink, "backpressure"), "block");
    assert_eq!(
        sink.property::<Option<String>>("shape").as_deref(),
        Some("640x480:NV12")
    );
    sink.set_property("shape", "");
    assert_eq!(sink.property::<Option<String>>("shape"), None);
}

#[test]
fn impossible_property_values_are_refused_by_the_param_specs() {
    init();
    let sink = gst::ElementFactory::make("shmframesink").build().unwrap();
    let refused = |prop: &str, value: glib::Value| {
        let sink = sink.clone();
        let prop = prop.to_string();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            sink.set_property_from_value(&prop, &value)
        }))
        .is_err()
    };
    assert!(refused("depth", 0u32.to_value()), "depth 0");
    assert!(refused("depth", 1025u32.to_value()), "depth 1025");
    assert!(refused("perms", 0o400u32.to_value()), "perms 0400");
    assert!(refused("perms", 0o1777u32.to_value()), "perms 01777");
    assert!(
        refused("reader-timeout", 0u64.to_value()),
        "reader-timeout 0"
    );
    assert!(
        refused("wait-for-readers", 65u32.to_value()),
        "more readers than a segment has room for"
    );
    assert_eq!(sink.property::<u32>("depth"), 4);
    assert_eq!(sink.property::<u32>("perms"), 0o600);
    assert_eq!(sink.property::<u64>("reader-timeout"), 1000);

    for (prop, min, max) in [
        ("depth", 1, 1024),
        ("perms", 0o600, 0o777),
        ("wait-for-readers", 0, 64),
    ] {
        let pspec = sink
            .find_property(prop)
            .unwrap()
            .downcast::<glib::ParamSpecUInt>()
            .unwrap();
        assert_eq!((pspec.minimum(), pspec.maximum()), (min, max), "{prop}");
    }
    // The edges are accepted.
    sink.set_property("depth", 1024u32);
    sink.set_property("perms", 0o666u32);
    assert_eq!(sink.property::<u32>("depth"), 1024);
    assert_eq!(sink.property::<u32>("perms"), 0o666);
}

#[test]
fn a_refused_shape_keeps_the_previous_value_and_fails_the_start() {
    init();
    let name = ShmName::new("badshape");
    let sink = new_sink(&name, &[("shape", "320x240")]);
    sink.set_property("shape", "320x-1");
    assert_eq!(
        sink.property::<Option<String>>("shape").as_deref(),
        Some("320x240"),
        "the previous shape is kept"
    );
    assert!(sink.set_state(gst::State::Playing).is_err());
    let text = error_text(&sink);
    assert!(text.contains("shape"), "{text}");
    assert!(text.contains("320x-1"), "{text}");
    assert!(text.contains("WIDTHxHEIGHT"), "{text}");
    sink.set_state(gst::State::Null).unwrap();
    assert!(!name.path().exists());

    // A valid value clears the refusal.
    sink.set_property("shape", "320x240:GRAY8");
    sink.set_state(gst::State::Paused).unwrap();
    assert!(name.path().exists());
    sink.set_state(gst::State::Null).unwrap();
    assert!(!name.path().exists());
}

#[test]
fn stats_are_a_structure_with_every_counter() {
    init();
    let sink = gst::ElementFactory::make("shmframesink").build().unwrap();
    let s = stats(&sink);
    assert_eq!(s.name(), "shmframesink-stats");
    assert_eq!(s.get::<u64>("frames-written").unwrap(), 0);
    assert_eq!(s.get::<u64>("frames-dropped").unwrap(), 0);
    assert_eq!(s.get::<u32>("readers").unwrap(), 0);
    assert_eq!(s.get::<u64>("full-events").unwrap(), 0);
    assert_eq!(s.get::<u64>("readers-evicted").unwrap(), 0);
    assert_eq!(s.get::<Option<String>>("caps").unwrap(), None);
    assert_eq!(s.get::<u64>("slot-size").unwrap(), 0);
}

/// What gst-inspect-1.0 shows for `stats` names every field the structure has, on both
/// elements (`frames-in-place` was missing from the sink's).
#[test]
fn the_stats_description_names_every_field() {
    init();
    for factory in ["shmframesink", "shmframesrc"] {
        let element = gst::ElementFactory::make(factory).build().unwrap();
        let blurb = element
            .find_property("stats")
            .unwrap()
            .blurb()
            .unwrap()
            .to_string();
        let words: Vec<&str> = blurb
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .collect();
        let stats = stats(&element);
        let missing: Vec<&str> = stats
            .fields()
            .map(|f| f.as_str())
            .filter(|field| !words.contains(field))
            .collect();
        assert!(
            missing.is_empty(),
            "{factory}: {missing:?} not described in {blurb:?}"
        );
    }
}

#[test]
fn every_frame_reaches_a_reader_with_its_number_content_and_caps() {
    let Fixture { name, sink, mut h } =
        Fixture::new("frames", &[("shape", "64x48:RGBA"), ("depth", "16")]);
    // With a shape the segment exists from start, before any caps.
    assert!(name.path().exists());
    let mut reader = open_reader(&name, StartPosition::Oldest);
    h.set_src_caps_str(RGBA_64X48);
    for n in 0..10 {
        h.push(rgba_frame(n, RGBA_64X48_SIZE)).unwrap();
    }
    let expected_caps = gst::Caps::from_str(RGBA_64X48).unwrap();
    for n in 0..10 {
        let (info, data) = read_frame(&mut reader);
        assert_eq!(info.number, n);
        assert_eq!(info.size, RGBA_64X48_SIZE as u64);
        assert_eq!(info.missed_before, 0);
        assert_eq!(info.duration, Some(FRAME_DURATION.nseconds()));
        assert_eq!(
            info.flags & gst::BufferFlags::DELTA_UNIT.bits() != 0,
            n % 2 == 1,
            "frame {n} flags {:#x}",
            info.flags
        );
        assert!(info.pts.is_some());
        assert_eq!(info.dts, None);
        check_frame(n, &data).unwrap();
        assert_eq!(caps_of(&reader, &info), expected_caps);
    }
    let s = stats(&sink);
    assert_eq!(s.get::<u64>("frames-written").unwrap(), 10);
    assert_eq!(s.get::<u64>("frames-dropped").unwrap(), 0);
    assert_eq!(s.get::<u32>("readers").unwrap(), 1);
    assert!(s.get::<u64>("slot-size").unwrap() >= RGBA_64X48_SIZE as u64);
    let caps = gst::Caps::from_str(&s.get::<String>("caps").unwrap()).unwrap();
    assert_eq!(caps, expected_caps);
}

#[test]
fn an_empty_gap_buffer_publishes_nothing() {
    let Fixture { name, sink, mut h } = Fixture::new("gap", &[("shape", "64x48:RGBA")]);
    let mut reader = open_reader(&name, StartPosition::Oldest);
    h.set_src_caps_str(RGBA_64X48);
    let mut gap = gst::Buffer::new();
    gap.get_mut().unwrap().set_flags(gst::BufferFlags::GAP);
    h.push(gap).unwrap();
    h.push(rgba_frame(1, RGBA_64X48_SIZE)).unwrap();
    let (info, data) = read_frame(&mut reader);
    assert_eq!(info.number, 0, "the gap took no frame number");
    check_frame(1, &data).unwrap();
    assert_eq!(stats(&sink).get::<u64>("frames-written").unwrap(), 1);
}

#[test]
fn the_segment_is_created_with_the_first_caps_without_a_shape() {
    let Fixture { name, mut h, .. } = Fixture::new("firstcaps", &[]);
    assert!(!name.path().exists(), "no segment before caps");
    h.set_src_caps_str(RGBA_32X24);
    let observer = Observer::open(&name).expect("segment after caps");
    let info = observer.info();
    assert!(info.slot_capacity >= RGBA_32X24_SIZE as u64);
    assert_eq!(info.depth, 4);
    assert_eq!(info.writer_pid, std::process::id());
    assert_eq!(
        gst::Caps::from_str(info.caps.as_deref().unwrap()).unwrap(),
        gst::Caps::from_str(RGBA_32X24).unwrap()
    );
}

/// No reader ever finds the sink's segment without caps: a thread watching the name inspects
/// the segment the moment it appears (20 rounds). Before the fix the segment was created, and
/// seen, before its caps were written (a Python reader opening it then found `caps` None, once
/// in CI).
#[test]
fn the_segment_appears_with_its_caps_already_in_it() {
    for round in 0..20 {
        let Fixture { name, mut h, .. } = Fixture::new("born-with-caps", &[]);
        let path = name.path();
        let watched = name.as_str().to_string();
        let watcher = std::thread::spawn(move || {
            let deadline = Instant::now() + LIMIT;
            while !path.exists() {
                assert!(Instant::now() < deadline, "no segment appeared");
                std::hint::spin_loop();
            }
            Observer::open(&watched).unwrap().info().caps
        });
        h.set_src_caps_str(RGBA_32X24);
        let caps = watcher.join().unwrap();
        assert_eq!(
            caps.map(|c| gst::Caps::from_str(&c).unwrap()),
            Some(gst::Caps::from_str(RGBA_32X24).unwrap()),
            "round {round}"
        );
    }
}

#[test]
fn strided_rgba_input_arrives_packed() {
    let Fixture { name, mut h, .. } = Fixture::new("stridedrgba", &[]);
    h.set_src_caps_str("video/x-raw,format=RGBA,width=10,height=6,framerate=25/1");
    let mut reader = open_reader(&name, StartPosition::Oldest);

    const ROW: usize = 10 * 4;
    const STRIDE: usize = 64;
    let mut packed = vec![0u8; ROW * 6];
    fill_frame(7, &mut packed);
    let mut padded = vec![0xEEu8; STRIDE * 6];
    for (row, src) in packed.chunks(ROW).enumerate() {
        padded[row * STRIDE..row * STRIDE + ROW].copy_from_slice(src);
    }
    let mut buffer = gst::Buffer::from_mut_slice(padded);
    gst_video::VideoMeta::add_full(
        buffer.get_mut().unwrap(),
        gst_video::VideoFrameFlags::empty(),
        gst_video::VideoFormat::Rgba,
        10,
        6,
        &[0],
        &[STRIDE as i32],
    )
    .unwrap();
    h.push(buffer).unwrap();

    let (info, data) = read_frame(&mut reader);
    assert_eq!(info.size, (ROW * 6) as u64);
    assert_eq!(data, packed);
}

#[test]
fn strided_i420_planes_arrive_packed() {
    let Fixture { name, mut h, .. } = Fixture::new("stridedi420", &[]);
    let caps = "video/x-raw,format=I420,width=16,height=8,framerate=25/1";
    h.set_src_caps_str(caps);
    let mut reader = open_reader(&name, StartPosition::Oldest);

    // Default layout: Y 16x8 (stride 16) at 0, U 8x4 (stride 8) at 128, V at 160; 192 bytes.
    let default = gst_video::VideoInfo::from_caps(&gst::Caps::from_str(caps).unwrap()).unwrap();
    assert_eq!(default.size(), 192);
    let mut packed = vec![0u8; 192];
    fill_frame(3, &mut packed);
    // Input: every plane with a wider stride, planes apart from each other.
    let planes = [
        (0usize, 16usize, 8usize, 32usize),
        (128, 8, 4, 24),
        (160, 8, 4, 24),
    ];
    let offsets = [0usize, 272, 376];
    let mut input = vec![0xABu8; 472];
    for ((packed_offset, row, rows, stride), offset) in planes.iter().zip(offsets) {
        for r in 0..*rows {
            let src = &packed[packed_offset + r * row..packed_offset + (r + 1) * row];
            input[offset + r * stride..offset + r * stride + row].copy_from_slice(src);
        }
    }
    let mut buffer = gst::Buffer::from_mut_slice(input);
    gst_video::VideoMeta::add_full(
        buffer.get_mut().unwrap(),
        gst_video::VideoFrameFlags::empty(),
        gst_video::VideoFormat::I420,
        16,
        8,
        &offsets,
        &[32, 24, 24],
    )
    .unwrap();
    // After a pause the slot counts as out of cache and the rows are streamed in
    // (`copy_rows` with `cold`); the same buffer pushed right after is copied plainly, most
    // likely: both arrive the same.
    std::thread::sleep(Duration::from_millis(5));
    h.push(buffer.clone()).unwrap();
    h.push(buffer).unwrap();

    for _ in 0..2 {
        let (info, data) = read_frame(&mut reader);
        assert_eq!(info.size, 192);
        assert_eq!(data, packed);
    }
}

#[test]
fn eos_reaches_the_reader_after_the_frames() {
    let Fixture { name, mut h, .. } = Fixture::new("eos", &[("shape", "64x48:RGBA")]);
    let mut reader = open_reader(&name, StartPosition::Oldest);
    h.set_src_caps_str(RGBA_64X48);
    for n in 0..3 {
        h.push(rgba_frame(n, RGBA_64X48_SIZE)).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    for n in 0..3 {
        let (info, data) = read_frame(&mut reader);
        assert_eq!(info.number, n);
        check_frame(n, &data).unwrap();
    }
    assert_eq!(reader.read_next(LIMIT, |_, _| {}).unwrap(), ReadResult::Eos);
    // Still EOS (not "writer gone") once the sink has stopped and unlinked the segment.
    drop(h);
    assert!(!name.path().exists());
    assert_eq!(reader.read_next(LIMIT, |_, _| {}).unwrap(), ReadResult::Eos);
}

#[test]
fn missing_shm_name_fails_to_start_with_the_reason() {
    init();
    let sink = gst::ElementFactory::make("shmframesink").build().unwrap();
    sink.set_bus(Some(&gst::Bus::new()));
    assert!(sink.set_state(gst::State::Playing).is_err());
    let text = error_text(&sink);
    assert!(text.contains("No shm-name set"), "{text}");
    assert!(text.contains("shm-name=cam0"), "{text}");
    sink.set_state(gst::State::Null).unwrap();
}

#[test]
fn invalid_shm_name_fails_to_start_naming_the_rule() {
    init();
    for (bad, rule) in [
        ("cam/0", "only letters, digits"),
        ("../etc/passwd", "starts with '.'"),
        (".hidden", "starts with '.'"),
    ] {
        let sink = new_sink(bad, &[]);
        assert!(sink.set_state(gst::State::Playing).is_err(), "{bad}");
        let text = error_text(&sink);
        assert!(text.contains("invalid shm-name"), "{text}");
        assert!(text.contains(rule), "{text}");
        sink.set_state(gst::State::Null).unwrap();
    }
}

#[test]
fn a_second_sink_on_the_same_name_fails_naming_the_pid() {
    let Fixture {
        name,
        sink: first,
        mut h,
    } = Fixture::new("second", &[("shape", "64x48:RGBA")]);
    h.set_src_caps_str(RGBA_64X48);
    h.push(rgba_frame(0, RGBA_64X48_SIZE)).unwrap();

    for props in [&[("shape", "64x48:RGBA")][..], &[][..]] {
        let second = new_sink(&name, props);
        assert!(second.set_state(gst::State::Playing).is_err());
        let text = error_text(&second);
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{props:?}: {text}"
        );
        assert!(text.contains("already used by a live writer"), "{text}");
        second.set_state(gst::State::Null).unwrap();
    }
    // The first sink's segment was left alone.
    let mut reader = open_reader(&name, StartPosition::Oldest);
    let (info, data) = read_frame(&mut reader);
    assert_eq!(info.number, 0);
    check_frame(0, &data).unwrap();
    assert_eq!(stats(&first).get::<u64>("frames-written").unwrap(), 1);
}

#[test]
fn a_foreign_file_is_refused_and_left_untouched() {
    init();
    let name = ShmName::new("foreign");
    std::fs::write(name.path(), b"not a segment, but somebody's data").unwrap();
    let sink = new_sink(&name, &[("shape", "8x8:GRAY8")]);
    assert!(sink.set_state(gst::State::Playing).is_err());
    let text = error_text(&sink);
    assert!(text.contains("not a shmframe segment"), "{text}");
    sink.set_state(gst::State::Null).unwrap();
    assert_eq!(
        std::fs::read(name.path()).unwrap(),
        b"not a segment, but somebody's data"
    );
}

#[test]
fn a_caps_change_to_larger_frames_recreates_the_segment_and_a_subscriber_follows() {
    let Fixture { name, sink, mut h } = Fixture::new("recreate", &[("depth", "8")]);
    h.set_src_caps_str(RGBA_32X24);
    let mut subscriber = Subscriber::new(
        &name,
        ReaderOptions {
            start: StartPosition::Oldest,
            ..Default::default()
        },
    )
    .unwrap();
    let mut data = Vec::new();
    let next = |subscriber: &mut Subscriber, data: &mut Vec<u8>| {
        subscriber
            .next(LIMIT, |_, view| {
                data.resize(view.len(), 0);
                view.copy_to(data);
            })
            .unwrap()
    };
    let pid = std::process::id();
    assert!(matches!(
        next(&mut subscriber, &mut data),
        SubscriberEvent::WriterAttached { pid: p, .. } if p == pid
    ));
    h.push(rgba_frame(0, RGBA_32X24_SIZE)).unwrap();
    let SubscriberEvent::Frame(info) = next(&mut subscriber, &mut data) else {
        panic!("expected frame 0");
    };
    assert_eq!((info.number, info.size), (0, RGBA_32X24_SIZE as u64));
    check_frame(0, &data).unwrap();
    let old_slot = stats(&sink).get::<u64>("slot-size").unwrap();
    assert!(old_slot < RGBA_64X48_SIZE as u64);

    h.set_src_caps_str(RGBA_64X48);
    assert_eq!(
        next(&mut subscriber, &mut data),
        SubscriberEvent::WriterLost { pid, clean: true }
    );
    // The same writer in a new segment: a renegotiation, not a restart.
    assert!(matches!(
        next(&mut subscriber, &mut data),
        SubscriberEvent::WriterAttached { pid: p, restart: false, .. } if p == pid
    ));
    h.push(rgba_frame(1, RGBA_64X48_SIZE)).unwrap();
    let SubscriberEvent::Frame(info) = next(&mut subscriber, &mut data) else {
        panic!("expected the first frame of the new segment");
    };
    assert_eq!((info.number, info.size), (0, RGBA_64X48_SIZE as u64));
    check_frame(1, &data).unwrap();
    let reader = subscriber.reader().unwrap();
    assert_eq!(
        caps_of(reader, &info),
        gst::Caps::from_str(RGBA_64X48).unwrap()
    );

    let recreated = element_messages(&sink, "shmframe-segment-recreated");
    assert_eq!(recreated.len(), 1, "{recreated:?}");
    assert_eq!(recreated[0].get::<u64>("old-slot-size").unwrap(), old_slot);
    let new_slot = recreated[0].get::<u64>("slot-size").unwrap();
    assert!(new_slot >= RGBA_64X48_SIZE as u64);
    let s = stats(&sink);
    assert_eq!(
        s.get::<u64>("frames-written").unwrap(),
        2,
        "over both segments"
    );
    assert_eq!(s.get::<u64>("slot-size").unwrap(), new_slot);
}

#[test]
fn a_caps_change_that_fits_keeps_the_segment() {
    let Fixture { name, sink, mut h } = Fixture::new("capsfit", &[("depth", "8")]);
    h.set_src_caps_str(RGBA_64X48);
    let mut reader = open_reader(&name, StartPosition::Oldest);
    h.push(rgba_frame(0, RGBA_64X48_SIZE)).unwrap();
    h.set_src_caps_str(RGBA_32X24);
    h.push(rgba_frame(1, RGBA_32X24_SIZE)).unwrap();

    let (first, data) = read_frame(&mut reader);
    check_frame(0, &data).unwrap();
    let (second, data) = read_frame(&mut reader);
    assert_eq!(second.number, 1);
    assert_eq!(second.size, RGBA_32X24_SIZE as u64);
    check_frame(1, &data).unwrap();
    assert_eq!(second.caps_gen, first.caps_gen + 1);
    assert_eq!(
        caps_of(&reader, &first),
        gst::Caps::from_str(RGBA_64X48).unwrap()
    );
    assert_eq!(
        caps_of(&reader, &second),
        gst::Caps::from_str(RGBA_32X24).unwrap()
    );
    assert!(element_messages(&sink, "shmframe-segment-recreated").is_empty());
}

/// The shape comes first in the caps the sink accepts (so converters upstream produce it);
/// caps of another shape are then refused, naming both shapes.
#[test]
fn the_shape_constrains_the_caps() {
    let Fixture {
        name: _name,
        sink,
        h,
    } = Fixture::new("shapecaps", &[("shape", "64x48:RGBA")]);
    let caps = sink.static_pad("sink").unwrap().query_caps(None);
    let preferred = caps.structure(0).unwrap();
    assert_eq!(preferred.get::<&str>("format").unwrap(), "RGBA");
    assert_eq!(preferred.get::<i32>("width").unwrap(), 64);
    assert_eq!(preferred.get::<i32>("height").unwrap(), 48);
    // Caps of another shape are refused.
    let other = gst::event::Caps::new(&gst::Caps::from_str(RGBA_32X24).unwrap());
    assert!(!sink.static_pad("sink").unwrap().send_event(other));
    assert_eq!(
        error_text(&sink).split(" (").next().unwrap(),
        "The stream's shape 32x24:RGBA does not fit the shape property 64x48:RGBA: set shape to \
         32x24:RGBA or leave it empty, or convert the stream"
    );
    drop(h);
}

/// A `shape` without a format reserves slots for the largest frame among the formats upstream
/// can send at that size, not for the largest format there is: an 8192x8192 GRAY8 stream,
/// which works without a shape, works with `shape=8192x8192` (64 MiB slots, where 8 bytes per
/// pixel would exceed the largest slot), and `shape=5000x5000` gives a GRAY8 stream 25 MB
/// slots, not 200 MB ones.
#[test]
fn a_shape_without_a_format_reserves_slots_for_the_formats_upstream_sends() {
    init();
    for (size, depth) in [(8192u64, 1), (5000, 4)] {
        let name = ShmName::new("shape-sizing");
        let (pipeline, sink) = common::launch_with::<gst::Element>(
            &format!(
                "videotestsrc num-buffers=2 pattern=black ! \
                 video/x-raw,format=GRAY8,width={size},height={size} ! shmframesink name=out \
                 shm-name={} shape={size}x{size} depth={depth} spare-slots=0",
                name.as_str()
            ),
            "out",
        );
        pipeline.set_state(gst::State::Playing).unwrap();
        common::wait_for_eos(&pipeline, &format!("shape={size}x{size}"), LIMIT * 3);
        let stats = stats(&sink);
        pipeline.set_state(gst::State::Null).unwrap();
        assert_eq!(stats.get::<u64>("slot-size").unwrap(), size * size);
        assert_eq!(stats.get::<u64>("frames-written").unwrap(), 2);
        assert!(!name.path().exists());
    }
}

#[test]
fn clear_empties_the_depot() {
    let Fixture { name, sink, mut h } =
        Fixture::new("clear", &[("shape", "64x48:RGBA"), ("depth", "8")]);
    let mut reader = open_reader(&name, StartPosition::Oldest);
    h.set_src_caps_str(RGBA_64X48);
    for n in 0..5 {
        h.push(rgba_frame(n, RGBA_64X48_SIZE)).unwrap();
    }
    let observer = Observer::open(&name).unwrap();
    assert!(observer.read_frame(2, |_, _| {}).unwrap().is_some());
    sink.emit_by_name::<()>("clear", &[]);
    assert!(
        observer.read_frame(2, |_, _| {}).unwrap().is_none(),
        "frame 2 is gone from the depot"
    );
    for n in 5..7 {
        h.push(rgba_frame(n, RGBA_64X48_SIZE)).unwrap();
    }
    let (info, data) = read_frame(&mut reader);
    assert_eq!((info.number, info.missed_before), (5, 5));
    check_frame(5, &data).unwrap();
    let (info, _) = read_frame(&mut reader);
    assert_eq!(info.number, 6);
    assert_eq!(reader.frames_missed(), 5);
}

#[test]
fn clear_frees_a_write_blocked_on_a_full_depot() {
    let (Fixture { name, sink, mut h }, outcomes) = Fixture::with_setup(
        "clearblocked",
        &[
            ("shape", "64x48:RGBA"),
            ("depth", "2"),
            ("backpressure", "block"),
            // Never evict the idle reader during this test.
            ("reader-timeout", "600000"),
        ],
        record_backpressure,
    );
    let mut reader = open_reader(&name, StartPosition::Oldest);
    h.set_src_caps_str(RGBA_64X48);
    for n in 0..2 {
        h.push(rgba_frame(n, RGBA_64X48_SIZE)).unwrap();
    }
    let srcpad = h.srcpad().unwrap();
    let pusher = std::thread::spawn(move || srcpad.push(rgba_frame(2, RGBA_64X48_SIZE)));
    // The write found the depot full (counted before it waits).
    assert!(wait_for(LIMIT, || {
        stats(&sink).get::<u64>("full-events").unwrap() == 1
    }));
    sink.emit_by_name::<()>("clear", &[]);
    assert_eq!(pusher.join().unwrap(), Ok(gst::FlowSuccess::Ok));

    let (info, data) = read_frame(&mut reader);
    assert_eq!((info.number, info.missed_before), (2, 2));
    check_frame(2, &data).unwrap();
    let s = stats(&sink);
    assert_eq!(s.get::<u64>("frames-written").unwrap(), 3);
    assert_eq!(s.get::<u64>("frames-dropped").unwrap(), 0);
    assert_eq!(
        *outcomes.lock().unwrap(),
        vec![("waited".to_string(), 0u64, 0u64)]
    );
}

#[test]
fn a_flush_interrupts_a_write_blocked_on_a_full_depot() {
    let Fixture { name, sink, mut h } = Fixture::new(
        "flushblocked",
        &[
            ("shape", "64x48:RGBA"),
            ("depth", "1"),
            ("backpressure", "block"),
            ("reader-timeout", "600000"),
        ],
    );
    let mut reader = open_reader(&name, StartPosition::Oldest);
    h.set_src_caps_str(RGBA_64X48);
    h.push(rgba_frame(0, RGBA_64X48_SIZE)).unwrap();
    let srcpad = h.srcpad().unwrap();
    let pusher = std::thread::spawn(move || srcpad.push(rgba_frame(1, RGBA_64X48_SIZE)));
    assert!(wait_for(LIMIT, || {
        stats(&sink).get::<u64>("full-events").unwrap() == 1
    }));
    let sinkpad = sink.static_pad("sink").unwrap();
    assert!(sinkpad.send_event(gst::event::FlushStart::new()));
    assert_eq!(pusher.join().unwrap(), Err(gst::FlowError::Flushing));
    assert!(sinkpad.send_event(gst::event::FlushStop::new(false)));

    let (info, _) = read_frame(&mut reader);
    assert_eq!(info.number, 0);
    assert_eq!(stats(&sink).get::<u64>("frames-written").unwrap(), 1);
    // After the flush, writing goes on once the reader has made room.
    h.push(rgba_frame(1, RGBA_64X48_SIZE)).unwrap();
    let (info, data) = read_frame(&mut reader);
    assert_eq!(info.number, 1);
    check_frame(1, &data).unwrap();
}

/// A sink waiting for one reader, with a frame pushed from another thread and its
/// `shmframe-waiting-for-readers` message seen; returns the harness and the push's result.
fn sink_waiting_for_a_reader(
    name: &str,
    props: &[(&str, &str)],
) -> (
    gst::Element,
    Harness,
    std::thread::JoinHandle<Result<gst::FlowSuccess, gst::FlowError>>,
) {
    let mut all = vec![
        ("shape", "64x48:RGBA"),
        ("backpressure", "block"),
        ("wait-for-readers", "1"),
    ];
    all.extend_from_slice(props);
    let sink = new_sink(name, &all);
    let mut h = harness(&sink);
    h.set_src_caps_str(RGBA_64X48);
    let srcpad = h.srcpad().unwrap();
    let pusher = std::thread::spawn(move || srcpad.push(rgba_frame(0, RGBA_64X48_SIZE)));
    let mut waiting = Vec::new();
    assert!(wait_for(LIMIT, || {
        waiting.extend(element_messages(&sink, "shmframe-waiting-for-readers"));
        !waiting.is_empty()
    }));
    assert_eq!(waiting[0].get::<u32>("wanted").unwrap(), 1);
    assert_eq!(waiting[0].get::<u32>("attached").unwrap(), 0);
    // The sleep only gives a sink that would not wait the time to publish.
    std::thread::sleep(Duration::from_millis(50));
    assert!(!pusher.is_finished(), "the frame waits for its reader");
    assert_eq!(stats(&sink).get::<u64>("frames-written").unwrap(), 0);
    (sink, h, pusher)
}

#[test]
fn waiting_for_readers_holds_the_first_frame_until_one_attaches() {
    init();
    let name = ShmName::new("waitreaders");
    let (sink, mut h, pusher) = sink_waiting_for_a_reader(&name, &[]);
    // Started with the default start=newest, the reader gets the frame that waited for it.
    let mut reader = open_reader(&name, StartPosition::Newest);
    assert_eq!(pusher.join().unwrap(), Ok(gst::FlowSuccess::Ok));
    h.push(rgba_frame(1, RGBA_64X48_SIZE)).unwrap();
    for n in 0..2 {
        let (info, data) = read_frame(&mut reader);
        assert_eq!(info.number, n);
        check_frame(n, &data).unwrap();
    }
    assert_eq!(stats(&sink).get::<u64>("frames-written").unwrap(), 2);
}

#[test]
fn a_flush_ends_the_wait_for_readers_and_writing_goes_on_once_a_reader_attaches() {
    init();
    let name = ShmName::new("waitreadersflush");
    let (sink, mut h, pusher) = sink_waiting_for_a_reader(&name, &[]);
    let sinkpad = sink.static_pad("sink").unwrap();
    assert!(sinkpad.send_event(gst::event::FlushStart::new()));
    assert_eq!(pusher.join().unwrap(), Err(gst::FlowError::Flushing));
    assert!(sinkpad.send_event(gst::event::FlushStop::new(false)));
    assert_eq!(stats(&sink).get::<u64>("frames-written").unwrap(), 0);
    let mut reader = open_reader(&name, StartPosition::Newest);
    h.push(rgba_frame(7, RGBA_64X48_SIZE)).unwrap();
    let (info, data) = read_frame(&mut reader);
    assert_eq!(info.number, 0);
    check_frame(7, &data).unwrap();
}

#[test]
fn stopping_ends_the_wait_for_readers_and_removes_the_segment() {
    init();
    let name = ShmName::new("waitreadersstop");
    let (sink, h, pusher) = sink_waiting_for_a_reader(&name, &[]);
    sink.set_state(gst::State::Null).unwrap();
    assert_eq!(pusher.join().unwrap(), Err(gst::FlowError::Flushing));
    assert!(!name.path().exists());
    assert_eq!(stats(&sink).get::<u64>("frames-written").unwrap(), 0);
    drop(h);
}

#[test]
fn a_wait_for_readers_that_times_out_warns_and_publishes() {
    init();
    let name = ShmName::new("waitreaderstimeout");
    let sink = new_sink(
        &name,
        &[
            ("shape", "64x48:RGBA"),
            ("wait-for-readers", "2"),
            ("wait-for-readers-timeout", "100"),
        ],
    );
    let mut h = harness(&sink);
    let mut reader = open_reader(&name, StartPosition::Oldest);
    h.set_src_caps_str(RGBA_64X48);
    h.push(rgba_frame(0, RGBA_64X48_SIZE)).unwrap();
    let (info, _) = read_frame(&mut reader);
    assert_eq!(info.number, 0, "published after the timeout");
    let warning = sink
        .bus()
        .unwrap()
        .pop_filtered(&[gst::MessageType::Warning])
        .expect("a warning on the bus");
    let gst::MessageView::Warning(warning) = warning.view() else {
        unreachable!()
    };
    let text = warning.error().to_string();
    assert!(
        text.starts_with(&format!(
            "only 1 of the 2 readers waited for attached to shm-name {:?} within ",
            name.as_str()
        )),
        "{text}"
    );
}

#[test]
fn stopping_ends_a_blocked_write_and_removes_the_segment() {
    let Fixture { name, sink, mut h } = Fixture::new(
        "stopblocked",
        &[
            ("shape", "64x48:RGBA"),
            ("depth", "1"),
            ("backpressure", "block"),
            ("reader-timeout", "600000"),
        ],
    );
    let _reader = open_reader(&name, StartPosition::Oldest);
    h.set_src_caps_str(RGBA_64X48);
    h.push(rgba_frame(0, RGBA_64X48_SIZE)).unwrap();
    let srcpad = h.srcpad().unwrap();
    let pusher = std::thread::spawn(move || srcpad.push(rgba_frame(1, RGBA_64X48_SIZE)));
    assert!(wait_for(LIMIT, || {
        stats(&sink).get::<u64>("full-events").unwrap() == 1
    }));
    sink.set_state(gst::State::Null).unwrap();
    assert_eq!(pusher.join().unwrap(), Err(gst::FlowError::Flushing));
    assert!(!name.path().exists());
    // The last run's statistics stay readable.
    assert_eq!(stats(&sink).get::<u64>("frames-written").unwrap(), 1);
    drop(h);
}

#[test]
fn drop_newest_reports_every_dropped_frame() {
    let (Fixture { name, sink, mut h }, outcomes) = Fixture::with_setup(
        "dropnewest",
        &[
            ("shape", "64x48:RGBA"),
            ("depth", "2"),
            ("backpressure", "drop-newest"),
        ],
        record_backpressure,
    );
    let mut reader = open_reader(&name, StartPosition::Oldest);
    h.set_src_caps_str(RGBA_64X48);
    for n in 0..4 {
        h.push(rgba_frame(n, RGBA_64X48_SIZE)).unwrap();
    }
    // The first full event is announced at once; the second, within 100 ms of it, once the
    // interval is over.
    assert_eq!(
        announced(&outcomes, 2),
        vec![
            ("dropped-newest".to_string(), 1u64, 0u64),
            ("dropped-newest".to_string(), 2u64, 0u64)
        ]
    );
    let messages = element_messages(&sink, "shmframe-backpressure");
    assert_eq!(messages.len(), 2);
    assert_eq!(
        messages[1].get::<&str>("outcome").unwrap(),
        "dropped-newest"
    );
    assert_eq!(messages[1].get::<u64>("frames-dropped").unwrap(), 2);
    assert_eq!(messages[1].get::<u64>("suppressed").unwrap(), 0);
    let s = stats(&sink);
    assert_eq!(s.get::<u64>("frames-written").unwrap(), 2);
    assert_eq!(s.get::<u64>("frames-dropped").unwrap(), 2);
    assert_eq!(s.get::<u64>("full-events").unwrap(), 2);
    for n in 0..2 {
        let (info, data) = read_frame(&mut reader);
        assert_eq!(info.number, n);
        check_frame(n, &data).unwrap();
    }
}

#[test]
fn a_full_ring_is_announced_at_most_every_100_ms_and_every_full_event_is_counted_once() {
    let (Fixture { name, sink, mut h }, outcomes) = Fixture::with_setup(
        "fullratelimit",
        &[
            ("shape", "64x48:RGBA"),
            ("depth", "2"),
            ("backpressure", "drop-newest"),
            // The reader never reads: keep it from being evicted meanwhile.
            ("reader-timeout", "600000"),
        ],
        record_backpressure,
    );
    let _reader = open_reader(&name, StartPosition::Oldest);
    h.set_src_caps_str(RGBA_64X48);
    const FRAMES: u64 = 3000;
    let started = Instant::now();
    for n in 0..FRAMES {
        h.push(rgba_frame(n, RGBA_64X48_SIZE)).unwrap();
    }
    let full = stats(&sink).get::<u64>("full-events").unwrap();
    assert_eq!(
        full,
        FRAMES - 2,
        "every frame after the first two met a full ring"
    );
    // Stopping announces what is still held back (or the periodic check, if it ran then).
    sink.set_state(gst::State::Null).unwrap();
    let counted = || {
        outcomes
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, suppressed)| 1 + suppressed)
            .sum::<u64>()
    };
    assert!(
        wait_for(LIMIT, || counted() == full),
        "each full event counted once: {:?}",
        outcomes.lock().unwrap()
    );
    let elapsed = started.elapsed();
    let seen = outcomes.lock().unwrap().clone();
    assert_eq!(
        seen[0],
        ("dropped-newest".to_string(), 1, 0),
        "the first at once"
    );
    assert_eq!(
        seen.last().unwrap().1,
        FRAMES - 2,
        "the last one counts every drop"
    );
    assert!(
        seen.len() as u128 <= elapsed.as_millis() / 100 + 2,
        "{} announcements in {elapsed:?}: {seen:?}",
        seen.len()
    );
    let messages = element_messages(&sink, "shmframe-backpressure");
    assert_eq!(messages.len(), seen.len(), "a bus message with each signal");
    drop(h);
}

#[test]
fn drop_oldest_overwrites_and_the_reader_counts_what_it_missed() {
    let (Fixture { name, sink, mut h }, outcomes) = Fixture::with_setup(
        "dropoldest",
        &[("shape", "64x48:RGBA"), ("depth", "2")],
        record_backpressure,
    );
    let mut reader = open_reader(&name, StartPosition::Oldest);
    h.set_src_caps_str(RGBA_64X48);
    for n in 0..4 {
        h.push(rgba_frame(n, RGBA_64X48_SIZE)).unwrap();
    }
    assert_eq!(
        announced(&outcomes, 2),
        vec![
            ("overwrote-oldest".to_string(), 0u64, 0u64),
            ("overwrote-oldest".to_string(), 0u64, 0u64)
        ]
    );
    let (info, data) = read_frame(&mut reader);
    assert_eq!((info.number, info.missed_before), (2, 2));
    check_frame(2, &data).unwrap();
    let (info, _) = read_frame(&mut reader);
    assert_eq!(info.number, 3);
    assert_eq!(stats(&sink).get::<u64>("frames-written").unwrap(), 4);
}

#[test]
fn double_layout_gives_the_newest_frame() {
    let Fixture { name, mut h, .. } =
        Fixture::new("double", &[("shape", "64x48:RGBA"), ("layout", "double")]);
    let mut reader = open_reader(&name, StartPosition::Newest);
    h.set_src_caps_str(RGBA_64X48);
    for n in 0..3 {
        h.push(rgba_frame(n, RGBA_64X48_SIZE)).unwrap();
    }
    let (info, data) = read_frame(&mut reader);
    assert_eq!(info.number, 2);
    check_frame(2, &data).unwrap();
    assert_eq!(
        Observer::open(&name).unwrap().info().layout,
        gstshmframe::transport::Layout::Double
    );
}

#[test]
fn reader_attach_and_detach_are_signalled_with_the_pid() {
    let (Fixture { name, sink, h: _h }, (attached, detached)) =
        Fixture::with_setup("readersignals", &[("shape", "64x48:RGBA")], |sink| {
            (
                record_pids(sink, "reader-attached"),
                record_pids(sink, "reader-detached"),
            )
        });
    let pid = std::process::id();

    let reader = open_reader(&name, StartPosition::Newest);
    // Reading stats checks the reader table.
    assert_eq!(stats(&sink).get::<u32>("readers").unwrap(), 1);
    assert_eq!(*attached.lock().unwrap(), vec![pid]);
    let messages = element_messages(&sink, "shmframe-reader-attached");
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].get::<u32>("pid").unwrap(), pid);

    drop(reader);
    assert_eq!(stats(&sink).get::<u32>("readers").unwrap(), 0);
    assert_eq!(*detached.lock().unwrap(), vec![pid]);
    let messages = element_messages(&sink, "shmframe-reader-detached");
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].get::<u32>("pid").unwrap(), pid);
    assert!(!messages[0].get::<bool>("died").unwrap());
}

#[test]
fn reader_events_are_also_reported_while_frames_flow() {
    let (Fixture { name, mut h, .. }, attached) =
        Fixture::with_setup("readerrender", &[("shape", "64x48:RGBA")], |sink| {
            record_pids(sink, "reader-attached")
        });
    h.set_src_caps_str(RGBA_64X48);
    let _reader = open_reader(&name, StartPosition::Newest);
    // The writer looks at its reader table at least every 100 ms while writing.
    let mut n = 0;
    assert!(wait_for(LIMIT, || {
        h.push(rgba_frame(n, RGBA_64X48_SIZE)).unwrap();
        n += 1;
        !attached.lock().unwrap().is_empty()
    }));
    assert_eq!(*attached.lock().unwrap(), vec![std::process::id()]);
}

#[test]
fn timestamps_are_monotonic_times_of_the_running_time() {
    let Fixture { name, sink, mut h } =
        Fixture::new("timestamps", &[("shape", "64x48:RGBA"), ("depth", "8")]);
    h.set_src_caps_str(RGBA_64X48);
    let mut reader = open_reader(&name, StartPosition::Oldest);

    // The system clock is CLOCK_MONOTONIC: pts_mono = running time + base time exactly, but
    // for the two clock reads the mapping makes (both between `before` and `after`).
    h.use_systemclock();
    let clock = sink.clock().expect("system clock");
    let base_time = clock.time() - gst::ClockTime::from_seconds(1);
    sink.set_base_time(base_time);
    let mut buffer = rgba_frame(0, RGBA_64X48_SIZE);
    buffer
        .get_mut()
        .unwrap()
        .set_dts(gst::ClockTime::from_mseconds(500));
    let before = monotonic_ns();
    h.push(buffer).unwrap();
    let after = monotonic_ns();
    let (info, _) = read_frame(&mut reader);
    let expected_pts = base_time.nseconds(); // running time 0 (pts 0 in a segment from 0)
    let expected_dts = expected_pts + 500_000_000;
    let jitter = after - before;
    assert!(
        info.pts.unwrap().abs_diff(expected_pts) <= jitter,
        "pts {:?}, expected {expected_pts} ± {jitter}",
        info.pts
    );
    assert!(info.dts.unwrap().abs_diff(expected_dts) <= jitter);
    assert!(info.write_time_ns >= before && info.write_time_ns <= after);

    // Without a clock (no running time to map), the write time stands in.
    sink.set_clock(None::<&gst::Clock>).unwrap();
    let before = monotonic_ns();
    h.push(rgba_frame(1, RGBA_64X48_SIZE)).unwrap();
    let (info, _) = read_frame(&mut reader);
    let pts = info.pts.unwrap();
    assert!(pts >= before && pts <= info.write_time_ns, "pts {pts}");
    assert_eq!(info.duration, Some(FRAME_DURATION.nseconds()));
}

/// The mapping from running time to CLOCK_MONOTONIC is kept between frames, and taken again
/// when the clock or the base time changes, and at least every 100 ms: a pipeline clock that
/// is not CLOCK_MONOTONIC (here the harness's test clock, which moves only when told) is
/// followed within that bound.
#[test]
fn timestamps_follow_a_clock_that_is_not_monotonic_within_100_ms() {
    let Fixture { name, sink, mut h } = Fixture::new(
        "timestamps-drift",
        &[("shape", "64x48:RGBA"), ("depth", "8")],
    );
    h.set_src_caps_str(RGBA_64X48);
    let mut reader = open_reader(&name, StartPosition::Oldest);
    h.set_time(gst::ClockTime::from_seconds(100)).unwrap();
    sink.set_base_time(gst::ClockTime::from_seconds(90));
    // Running time 0 maps to CLOCK_MONOTONIC `now - 10 s` (the clock says 10 s have run).
    let mut push_at_running_zero = |h: &mut Harness| {
        let before = monotonic_ns();
        h.push(rgba_frame(0, RGBA_64X48_SIZE)).unwrap();
        let after = monotonic_ns();
        let (info, _) = read_frame(&mut reader);
        (info.pts.unwrap(), before, after)
    };
    let ten_s = 10_000_000_000;
    let (pts, before, after) = push_at_running_zero(&mut h);
    assert!((before - ten_s..=after - ten_s).contains(&pts), "pts {pts}");
    // The clock jumps 5 s ahead: 15 s have run, once the sink takes the mapping again.
    h.set_time(gst::ClockTime::from_seconds(105)).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let (pts, before, after) = push_at_running_zero(&mut h);
    let fifteen_s = ten_s + 5_000_000_000;
    assert!(
        (before - fifteen_s..=after - fifteen_s).contains(&pts),
        "pts {pts}: not {fifteen_s} before [{before}, {after}]"
    );
    // A new base time is seen at once: 5 s have run.
    sink.set_base_time(gst::ClockTime::from_seconds(100));
    let (pts, before, after) = push_at_running_zero(&mut h);
    let five_s = 5_000_000_000;
    assert!(
        (before - five_s..=after - five_s).contains(&pts),
        "pts {pts}"
    );
}

#[test]
fn stop_removes_the_segment_and_keeps_the_last_statistics() {
    let Fixture { name, sink, mut h } = Fixture::new("stop", &[]);
    h.set_src_caps_str(RGBA_32X24);
    for n in 0..3 {
        h.push(rgba_frame(n, RGBA_32X24_SIZE)).unwrap();
    }
    assert!(name.path().exists());
    drop(h);
    assert_eq!(sink.current_state(), gst::State::Null);
    assert!(!name.path().exists());
    let s = stats(&sink);
    assert_eq!(s.get::<u64>("frames-written").unwrap(), 3);
    assert_eq!(
        gst::Caps::from_str(&s.get::<String>("caps").unwrap()).unwrap(),
        gst::Caps::from_str(RGBA_32X24).unwrap()
    );
    // And it starts again on the same name.
    sink.set_state(gst::State::Paused).unwrap();
    sink.set_state(gst::State::Null).unwrap();
}

/// The sink's answer to an allocation query for `caps` asking for a pool.
fn allocation_answer(h: &mut Harness, caps: &str) -> gst::query::Allocation<gst::Query> {
    let caps = gst::Caps::from_str(caps).unwrap();
    let mut query = gst::query::Allocation::new(Some(&caps), true);
    assert!(h.srcpad().unwrap().peer_query(&mut query));
    query
}

/// The pool the sink proposes for `caps` (sent first), activated.
fn proposed_pool(h: &mut Harness, caps: &str) -> gst::BufferPool {
    h.set_src_caps_str(caps);
    let query = allocation_answer(h, caps);
    let caps = gst::Caps::from_str(caps).unwrap();
    let (pool, size, min, max) = query
        .allocation_pools()
        .next()
        .expect("the sink proposes a pool");
    let pool = pool.expect("a pool object");
    assert_eq!(
        size as usize,
        gst_video::VideoInfo::from_caps(&caps).unwrap().size()
    );
    assert_eq!(min, 0);
    assert!(
        max >= 2,
        "the pool has as many buffers as the segment has slots"
    );
    pool.set_active(true).unwrap();
    pool
}

/// Frame `n` written by "upstream" into a buffer of `pool`.
fn pool_frame(pool: &gst::BufferPool, n: u64) -> gst::Buffer {
    let mut buffer = pool.acquire_buffer(None).unwrap();
    {
        let buffer = buffer.get_mut().unwrap();
        fill_frame(n, &mut buffer.map_writable().unwrap());
        buffer.set_pts(FRAME_DURATION * n);
        buffer.set_duration(FRAME_DURATION);
    }
    buffer
}

/// The number `fill_frame` wrote into a frame, after checking the whole frame holds it.
fn pushed_number(data: &[u8]) -> u64 {
    let n = u32::from_le_bytes(data[..4].try_into().unwrap()) as u64;
    check_frame(n, data).unwrap();
    n
}

fn frames_in_place(sink: &gst::Element) -> u64 {
    stats(sink).get::<u64>("frames-in-place").unwrap()
}

#[test]
fn the_proposed_pool_has_as_many_buffers_as_the_segment_has_slots() {
    // `double` has 2 ring slots whatever `depth` says; a ring has `depth`; both add the spares.
    for (layout, depth, spare, slots) in [("double", "7", "3", 5), ("ring", "4", "2", 6)] {
        let Fixture {
            name,
            sink: _sink,
            mut h,
        } = Fixture::new(
            &format!("pool-size-{layout}"),
            &[("layout", layout), ("depth", depth), ("spare-slots", spare)],
        );
        h.set_src_caps_str(RGBA_64X48);
        let query = allocation_answer(&mut h, RGBA_64X48);
        let (_, _, min, max) = query.allocation_pools().next().expect("a proposed pool");
        assert_eq!(
            (min, max),
            (0, slots),
            "{layout} depth={depth} spare-slots={spare}"
        );
        h.push(rgba_frame(0, RGBA_64X48_SIZE)).unwrap();
        let segment = gstshmframe::transport::inspect(name.as_str()).unwrap();
        assert_eq!(segment.slot_count, slots, "{layout}: the segment made");
    }
}

#[test]
fn frames_upstream_writes_into_the_proposed_pool_are_published_without_a_copy() {
    let Fixture { name, sink, mut h } = Fixture::new("pool-in-place", &[("depth", "4")]);
    let pool = proposed_pool(&mut h, RGBA_64X48);
    let mut reader = open_reader(&name, StartPosition::Oldest);
    for n in 0..40 {
        h.push(pool_frame(&pool, n)).unwrap();
        let (info, data) = read_frame(&mut reader);
        assert_eq!((info.number, info.size), (n, RGBA_64X48_SIZE as u64));
        assert_eq!(info.duration, Some(FRAME_DURATION.nseconds()));
        check_frame(n, &data).unwrap();
    }
    assert_eq!(
        frames_in_place(&sink),
        40,
        "every pool frame was published in place"
    );
    // A buffer from elsewhere still takes the copy path.
    h.push(rgba_frame(40, RGBA_64X48_SIZE)).unwrap();
    let (info, data) = read_frame(&mut reader);
    assert_eq!(info.number, 40);
    check_frame(40, &data).unwrap();
    let s = stats(&sink);
    assert_eq!(s.get::<u64>("frames-written").unwrap(), 41);
    assert_eq!(s.get::<u64>("frames-in-place").unwrap(), 40);
    pool.set_active(false).unwrap();
}

#[test]
fn a_pool_buffer_pushed_twice_is_published_in_place_then_copied_and_never_overwritten() {
    let Fixture { name, sink, mut h } =
        Fixture::new("pool-twice", &[("depth", "4"), ("spare-slots", "1")]);
    let pool = proposed_pool(&mut h, RGBA_64X48);
    let mut reader = open_reader(&name, StartPosition::Oldest);
    // What imagefreeze does: keep one buffer and push it again and again.
    let frozen = pool_frame(&pool, 7);
    for _ in 0..3 {
        h.push(frozen.clone()).unwrap();
    }
    // A tee branch that keeps a copy: it shares the slot's memory.
    let copy = pool_frame(&pool, 8).copy();
    h.push(copy.clone()).unwrap();
    for expected in [7, 7, 7, 8] {
        let (_, data) = read_frame(&mut reader);
        check_frame(expected, &data).unwrap();
    }
    assert_eq!(frames_in_place(&sink), 2, "the first push of each buffer");
    // Many frames later, in a ring of five slots, neither held buffer was overwritten.
    for n in 100..130 {
        h.push(rgba_frame(n, RGBA_64X48_SIZE)).unwrap();
        let (info, data) = read_frame(&mut reader);
        assert_eq!(info.missed_before, 0);
        check_frame(n, &data).unwrap();
    }
    check_frame(7, &frozen.map_readable().unwrap()).unwrap();
    check_frame(8, &copy.map_readable().unwrap()).unwrap();
    // Once released, their slots rotate again: pool frames go in place once more.
    drop((frozen, copy));
    for n in 200..210 {
        h.push(pool_frame(&pool, n)).unwrap();
        let (_, data) = read_frame(&mut reader);
        check_frame(n, &data).unwrap();
    }
    assert_eq!(frames_in_place(&sink), 12);
    pool.set_active(false).unwrap();
}

#[test]
fn pool_frames_keep_every_policy_exact() {
    init();
    for (layout, policy) in [
        ("ring", "block"),
        ("ring", "drop-oldest"),
        ("ring", "drop-newest"),
        ("double", "drop-oldest"),
    ] {
        let Fixture { name, sink, mut h } = Fixture::new(
            &format!("pool-{layout}-{policy}"),
            &[("layout", layout), ("backpressure", policy), ("depth", "3")],
        );
        let pool = proposed_pool(&mut h, RGBA_64X48);
        let mut reader = open_reader(&name, StartPosition::Oldest);
        let frames = 30;
        let block = policy == "block";
        // The reader reads every other frame as they come (block: one frame behind at
        // most, so the writer never waits for long), the rest at the end.
        let mut read = Vec::new();
        for n in 0..frames {
            h.push(pool_frame(&pool, n)).unwrap();
            if block || n % 3 == 0 {
                let (info, data) = read_frame(&mut reader);
                read.push((info.number, pushed_number(&data)));
            }
        }
        loop {
            let mut data = Vec::new();
            let result = reader
                .read_next(Duration::from_millis(50), |_, view| {
                    data.resize(view.len(), 0);
                    view.copy_to(&mut data);
                })
                .unwrap();
            let ReadResult::Frame(info) = result else {
                break;
            };
            read.push((info.number, pushed_number(&data)));
        }
        let s = stats(&sink);
        let written = s.get::<u64>("frames-written").unwrap();
        let dropped = s.get::<u64>("frames-dropped").unwrap();
        assert_eq!(written + dropped, frames, "{layout}/{policy}");
        assert_eq!(
            reader.frames_read() + reader.frames_missed(),
            written,
            "{layout}/{policy}: read + missed == written"
        );
        assert!(
            read.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
            "{layout}/{policy}: frame numbers and contents in order: {read:?}"
        );
        if block {
            assert_eq!(read, (0..frames).map(|n| (n, n)).collect::<Vec<_>>());
        }
        assert_eq!(frames_in_place(&sink), written, "{layout}/{policy}");
        pool.set_active(false).unwrap();
    }
}

#[test]
fn the_pool_hands_out_system_memory_when_every_slot_is_held() {
    let Fixture { name, sink, mut h } =
        Fixture::new("pool-exhausted", &[("depth", "2"), ("spare-slots", "2")]);
    let pool = proposed_pool(&mut h, RGBA_64X48);
    let mut reader = open_reader(&name, StartPosition::Oldest);
    // Upstream holding more buffers than the segment has slots (a deep queue).
    let held: Vec<gst::Buffer> = (0..6).map(|n| pool_frame(&pool, n)).collect();
    for (n, buffer) in held.iter().enumerate() {
        h.push(buffer.clone()).unwrap();
        let (info, data) = read_frame(&mut reader);
        assert_eq!(info.number, n as u64);
        check_frame(n as u64, &data).unwrap();
    }
    let s = stats(&sink);
    assert_eq!(s.get::<u64>("frames-written").unwrap(), 6);
    assert_eq!(
        s.get::<u64>("frames-in-place").unwrap(),
        2,
        "two slots (those beyond depth) were lent; the other buffers were ordinary memory, \
         copied"
    );
    pool.set_active(false).unwrap();
}

/// Runs `source` (12 frames of 64x48 `format`) into a sink with `sink_props` whose reader
/// checks every frame against what the same source gives an appsink; returns the sink's
/// `frames-in-place`.
fn frames_through_the_pool(label: &str, source: &str, format: &str, sink_props: &str) -> u64 {
    let name = ShmName::new(label);
    let expected: Vec<Vec<u8>> = {
        let pipeline =
            gst::parse::launch(&format!("{source} ! appsink name=out sync=false")).unwrap();
        let pipeline = pipeline.downcast::<gst::Pipeline>().unwrap();
        let appsink = pipeline
            .by_name("out")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let frames =
            std::iter::from_fn(|| appsink.try_pull_sample(gst::ClockTime::from_seconds(20)))
                .map(|s| s.buffer().unwrap().map_readable().unwrap().to_vec())
                .collect();
        pipeline.set_state(gst::State::Null).unwrap();
        frames
    };
    assert_eq!(expected.len(), 12);

    let pipeline = gst::parse::launch(&format!(
        "{source} ! shmframesink name=sink sync=false {sink_props} \
         shape=64x48:{format} shm-name={}",
        name.as_str()
    ))
    .unwrap();
    let pipeline = pipeline.downcast::<gst::Pipeline>().unwrap();
    let sink = pipeline.by_name("sink").unwrap();
    // With a shape the segment exists once the sink starts; nothing is lost once the reader
    // is attached (under block, or while it keeps up), so attach before the first frame is
    // rendered.
    pipeline.set_state(gst::State::Paused).unwrap();
    let mut subscriber = Subscriber::new(
        &name,
        ReaderOptions {
            start: StartPosition::Oldest,
            ..Default::default()
        },
    )
    .unwrap();
    let mut got = Vec::new();
    let mut data = Vec::new();
    let first = subscriber
        .next(LIMIT, |_, _| {})
        .expect("attach to the segment");
    assert!(
        matches!(first, SubscriberEvent::WriterAttached { .. }),
        "{first:?}"
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    loop {
        match subscriber
            .next(LIMIT, |_, view| {
                data.resize(view.len(), 0);
                view.copy_to(&mut data);
            })
            .unwrap()
        {
            SubscriberEvent::Frame(_) => got.push(data.clone()),
            SubscriberEvent::Eos => break,
            other => panic!("unexpected {other:?} after {} frames", got.len()),
        }
    }
    let in_place = frames_in_place(&sink);
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(got.len(), expected.len(), "{label}");
    assert!(
        got == expected,
        "{label}: the frames read differ from the source's own"
    );
    in_place
}

#[test]
fn upstream_elements_fill_the_segment_directly_with_the_same_frames() {
    init();
    let caps =
        |format: &str| format!("video/x-raw,format={format},width=64,height=48,framerate=30/1");
    for (label, source, format) in [
        (
            "pool-videotestsrc",
            format!(
                "videotestsrc num-buffers=12 pattern=ball ! {}",
                caps("RGBA")
            ),
            "RGBA",
        ),
        (
            "pool-videoconvert",
            format!(
                "videotestsrc num-buffers=12 pattern=ball ! {} ! videoconvert ! {}",
                caps("I420"),
                caps("BGRx")
            ),
            "BGRx",
        ),
        (
            "pool-jpegdec",
            format!(
                "videotestsrc num-buffers=12 pattern=ball ! {} ! jpegenc ! jpegdec ! {}",
                caps("I420"),
                caps("I420")
            ),
            "I420",
        ),
    ] {
        let in_place =
            frames_through_the_pool(label, &source, format, "backpressure=block depth=4");
        assert_eq!(in_place, 12, "{label}: every frame was written in place");
    }
}

/// The sink keeps the newest frame's buffer as its last sample (basesink's
/// `enable-last-sample`, on by default) until the next one is rendered. That frame is in the
/// ring, so holding it costs no spare slot: one spare slot is enough for upstream to draw every
/// frame in place. (It once counted as gone from the ring: no slot was ever lent, every frame
/// was copied, and under `block` each acquire first waited `reader-timeout` for a slot that only
/// its own frame could free.)
#[test]
fn one_spare_slot_lends_every_frame_while_the_sink_keeps_its_last_sample() {
    init();
    let source = "videotestsrc num-buffers=12 pattern=ball ! \
                  video/x-raw,format=RGBA,width=64,height=48,framerate=30/1";
    // Under `block` the reader sees every frame however slow it is; the multi-process test
    // `the_smallest_ring_draws_in_place_with_a_zero_copy_reader` covers the dropping policies.
    for (depth, spare) in [(1, 1), (3, 1)] {
        let label = format!("pool-one-spare-depth{depth}");
        let started = Instant::now();
        let in_place = frames_through_the_pool(
            &label,
            source,
            "RGBA",
            &format!("backpressure=block depth={depth} spare-slots={spare} reader-timeout=2000"),
        );
        assert_eq!(in_place, 12, "{label}: every frame was written in place");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{label}: 12 frames took {:?}: an acquire waited for a slot",
            started.elapsed()
        );
    }
}

#[test]
fn no_pool_is_proposed_when_no_slot_can_be_lent() {
    let Fixture {
        name: _name, mut h, ..
    } = Fixture::new("pool-none", &[("spare-slots", "0")]);
    h.set_src_caps_str(RGBA_64X48);
    let query = allocation_answer(&mut h, RGBA_64X48);
    assert_eq!(query.allocation_pools().count(), 0);
    assert!(
        query
            .find_allocation_meta::<gst_video::VideoMeta>()
            .is_some(),
        "strided input is still welcome"
    );
}

#[test]
fn a_pool_proposed_before_the_segment_exists_lends_slots_once_it_does() {
    let Fixture { name, sink, mut h } = Fixture::new("pool-early", &[]);
    // An element such as imagefreeze forwards the allocation query before the caps event.
    let query = allocation_answer(&mut h, RGBA_64X48);
    let (pool, _, _, _) = query.allocation_pools().next().expect("a pool");
    let pool = pool.unwrap();
    pool.set_active(true).unwrap();
    assert!(!name.path().exists(), "no segment before caps");
    let early = pool_frame(&pool, 0);
    h.set_src_caps_str(RGBA_64X48);
    let mut reader = open_reader(&name, StartPosition::Oldest);
    let mut early = Some(early);
    for n in 0..5 {
        h.push(early.take().unwrap_or_else(|| pool_frame(&pool, n)))
            .unwrap();
        let (info, data) = read_frame(&mut reader);
        assert_eq!(info.number, n);
        check_frame(n, &data).unwrap();
    }
    assert_eq!(
        frames_in_place(&sink),
        4,
        "the buffer acquired before the segment existed was ordinary memory, copied"
    );
    pool.set_active(false).unwrap();
}

#[test]
fn under_block_a_pool_acquire_waits_for_a_slot_and_stopping_ends_the_wait() {
    let Fixture { name, sink, mut h } = Fixture::new(
        "pool-wait",
        &[
            ("backpressure", "block"),
            ("depth", "2"),
            ("spare-slots", "1"),
            // Long enough that only a slot coming back or the stop can end the waits below.
            ("reader-timeout", "600000"),
        ],
    );
    let pool = proposed_pool(&mut h, RGBA_64X48);
    let mut reader = open_reader(&name, StartPosition::Oldest);
    h.push(rgba_frame(0, RGBA_64X48_SIZE)).unwrap();
    h.push(rgba_frame(1, RGBA_64X48_SIZE)).unwrap();
    // The one slot beyond depth is lent: nothing more may be lent until it comes back.
    let held = pool_frame(&pool, 99);
    let acquire_in_thread = || {
        let (pool, (done, finished)) = (pool.clone(), std::sync::mpsc::channel());
        std::thread::spawn(move || {
            let _ = done.send(pool.acquire_buffer(None).unwrap());
        });
        finished
    };
    let waiting = acquire_in_thread();
    drop(held);
    let mut lent = waiting
        .recv_timeout(LIMIT)
        .expect("the acquire got the slot given back");
    fill_frame(2, &mut lent.get_mut().unwrap().map_writable().unwrap());
    let (info, _) = read_frame(&mut reader);
    assert_eq!(info.number, 0);
    h.push(lent).unwrap();
    for n in 1..3 {
        let (info, data) = read_frame(&mut reader);
        assert_eq!(info.number, n);
        check_frame(n, &data).unwrap();
    }
    assert_eq!(
        frames_in_place(&sink),
        1,
        "the slot waited for was published in place"
    );

    // Lent again and kept: an acquire that may not wait gets ordinary memory at once, and
    // stopping the sink ends the wait of one that may.
    let _held = pool_frame(&pool, 99);
    let (done, finished) = std::sync::mpsc::channel();
    let impatient = pool.clone();
    std::thread::spawn(move || {
        let params =
            gst::BufferPoolAcquireParams::with_flags(gst::BufferPoolAcquireFlags::DONTWAIT);
        let _ = done.send(impatient.acquire_buffer(Some(&params)).unwrap());
    });
    let at_once = finished.recv_timeout(LIMIT).expect("DONTWAIT never waits");
    assert_eq!(at_once.size(), RGBA_64X48_SIZE);
    let waiting = acquire_in_thread();
    sink.set_state(gst::State::Null).unwrap();
    let fallback = waiting
        .recv_timeout(LIMIT)
        .expect("stopping ended the wait");
    assert_eq!(fallback.size(), RGBA_64X48_SIZE);
}

#[test]
fn the_pool_takes_any_minimum_upstream_asks_for_and_stops_cleanly() {
    let Fixture { name, mut h, .. } = Fixture::new("pool-min", &[]);
    let pool = proposed_pool(&mut h, RGBA_64X48);
    pool.set_active(false).unwrap();
    // A decoder asks for as many buffers as it keeps reference frames.
    let mut config = pool.config();
    let caps = gst::Caps::from_str(RGBA_64X48).unwrap();
    config.set_params(Some(&caps), RGBA_64X48_SIZE as u32, 8, 0);
    pool.set_config(config).unwrap();
    pool.set_active(true).unwrap();
    let frames: Vec<gst::Buffer> = (0..3).map(|n| pool_frame(&pool, n)).collect();
    let mut reader = open_reader(&name, StartPosition::Oldest);
    for (n, frame) in frames.into_iter().enumerate() {
        h.push(frame).unwrap();
        let (_, data) = read_frame(&mut reader);
        check_frame(n as u64, &data).unwrap();
    }
    pool.set_active(false).expect("the pool stops");
}

/// Every writer command in the README and docs/ that draws with videotestsrc says which
/// `format` it sends: without one videotestsrc negotiates AYUV64 (8 bytes per pixel), so a
/// reader copying the example gets a segment several times larger than the frames need.
#[test]
fn documented_writer_pipelines_name_a_format() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut documents = vec![root.join("README.md")];
    documents.extend(
        std::fs::read_dir(root.join("docs"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "md")),
    );
    let mut formatless = Vec::new();
    for document in &documents {
        let text = std::fs::read_to_string(document).unwrap();
        // Shell commands, with their backslash continuations joined.
        for command in text.replace("\\\n", " ").lines() {
            if command.contains("gst-launch-1.0")
                && command.contains("videotestsrc")
                && command.contains("shmframesink")
                && !command.contains("format=")
            {
                formatless.push(format!("{}: {}", document.display(), command.trim()));
            }
        }
    }
    assert!(formatless.is_empty(), "{formatless:#?}");
}
